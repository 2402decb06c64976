//! `promptbatch merge OUT_0 … OUT_N-1 -o ALL`: joins the outputs of a sharded run (`--shard K/N`)
//! into one file and checks that every row is present exactly once: no (id, model) pair in two
//! records (in one file or across files; with `--model a,b` a row has one record per model), and,
//! with `--expect-rows N`, exactly N distinct pairs. The format of ALL
//! follows its extension, as for `run`; the inputs may mix JSONL and CSV.
//!
//! Memory: one 64-bit hash per record (ids are compared by FNV-1a hash; a collision between two
//! different ids, about 1 in 10⁸ at 10 M rows, would be reported as a duplicate, never missed).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{exit_code, Error};
use crate::events::notice;
use crate::output::format;
use crate::output::read::Records;
use crate::output::{Record, Status};
use crate::util::fingerprint::fnv1a;
use crate::util::human::group;

/// What the merge found.
#[derive(Debug, Default)]
pub(crate) struct Merged {
    pub records: u64,
    pub errors: u64,
    /// `(id, first file, second file)` of the first ids seen twice.
    pub duplicates: Vec<(String, String, String)>,
    pub duplicate_count: u64,
    /// The models each file's records were sent to (sorted): shards run with other `--model`
    /// lists show here.
    pub models: Vec<Vec<String>>,
}

/// What `merge` is asked (the flags of `promptbatch merge`).
#[derive(Debug, Clone)]
pub struct MergeOptions {
    /// The shards' output files (.jsonl or .csv).
    pub outputs: Vec<std::path::PathBuf>,
    /// The merged file; `.csv` writes CSV, anything else JSONL.
    pub output: std::path::PathBuf,
    /// Exit 1 unless the merged file has exactly this many records.
    pub expect_rows: Option<u64>,
    /// Replace `output` when it exists.
    pub force: bool,
}

/// Duplicates named one by one; the rest are counted.
const SHOWN: usize = 10;

/// Runs `promptbatch merge`; returns the exit code.
pub fn run(opts: &MergeOptions) -> Result<i32, Error> {
    for (i, a) in opts.outputs.iter().enumerate() {
        if let Some(b) = opts.outputs[i + 1..].iter().find(|b| same_file(a, b)) {
            return Err(Error::Config(format!(
                "{} and {} are the same file: give each shard's output once",
                a.display(),
                b.display()
            )));
        }
    }
    for input in &opts.outputs {
        if same_file(input, &opts.output) {
            return Err(Error::Config(format!(
                "-o {} is one of the outputs to merge; choose another file",
                opts.output.display()
            )));
        }
    }
    if opts.output.exists() && !opts.force {
        return Err(Error::Config(format!(
            "{} exists; choose another file, or pass --force to replace it",
            opts.output.display()
        )));
    }
    let (merged, tmp) = merge(&opts.outputs, &opts.output)?;
    let ok = report(&merged, opts);
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        notice!(
            "{} was not written ({} records read from {} files)",
            opts.output.display(),
            group(merged.records),
            opts.outputs.len()
        );
        return Ok(exit_code::FAILURE);
    }
    std::fs::rename(&tmp, &opts.output)
        .map_err(|e| Error::io(format!("cannot rename {}", tmp.display()), e))?;
    Ok(exit_code::OK)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Copies every record of `inputs` into a temporary file next to `output` (in `output`'s
/// format) and checks the ids; returns what it found and the temporary file, which the caller
/// renames to `output` when the checks pass.
pub(crate) fn merge(
    inputs: &[std::path::PathBuf],
    output: &Path,
) -> Result<(Merged, std::path::PathBuf), Error> {
    let tmp = crate::paths::suffixed(output, ".merge-tmp");
    let io = |what: &str, e| Error::io(format!("{what} {}", tmp.display()), e);
    let mut out = BufWriter::new(File::create(&tmp).map_err(|e| io("cannot create", e))?);
    // A CSV output's extra columns (kept input columns): the first shard's; every record's own
    // must be among them, or they would be lost.
    let columns = match inputs.first() {
        Some(first) => kept_columns_of(first)?,
        None => Vec::new(),
    };
    let csv_output = crate::paths::is_csv(output);
    let mut encoder = format::for_path_with(output, columns.clone());
    let mut buf = encoder.header();
    // (hash of the id, index of the file it came from)
    let mut seen: Vec<(u64, u32)> = Vec::new();
    let mut merged = Merged::default();
    for (file, path) in inputs.iter().enumerate() {
        let mut records = Records::<Record>::open(path)?;
        let mut models: Vec<String> = Vec::new();
        while let Some(item) = records.next() {
            let (line, mut record) = item?;
            record.kept = records.last_extras();
            if !models.contains(&record.model) {
                models.push(record.model.clone());
            }
            if let Some(name) = record
                .kept
                .as_deref()
                .and_then(|kept| kept.keys().find(|name| !columns.contains(name)))
                .filter(|_| csv_output)
            {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::input(
                    path,
                    line,
                    format!(
                        "the record's kept column `{name}` is not a column of the first shard's                          output, so a CSV merge would drop it: merge into a .jsonl file, or merge                          shards run with the same --keep-columns"
                    ),
                ));
            }
            merged.records += 1;
            if record.status == Status::Error {
                merged.errors += 1;
            }
            seen.push((pair_key(&record), file as u32));
            encoder.encode(&record, &mut buf);
            if buf.len() >= 1 << 20 {
                out.write_all(&buf).map_err(|e| io("cannot write", e))?;
                buf.clear();
            }
        }
        models.sort();
        merged.models.push(models);
        if let Some(torn) = records.torn() {
            notice!(
                "warning: {}:{}: a torn last record was skipped ({}); finish that shard's run first",
                path.display(),
                torn.line,
                torn.reason
            );
        }
    }
    out.write_all(&buf).map_err(|e| io("cannot write", e))?;
    let file = out
        .into_inner()
        .map_err(|e| io("cannot write", e.into_error()))?;
    file.sync_all().map_err(|e| io("cannot sync", e))?;
    find_duplicates(&mut seen, inputs, &mut merged)?;
    Ok((merged, tmp))
}

/// The kept input columns of an output: a CSV file's extra columns, or the kept fields of a
/// JSONL file's first record.
fn kept_columns_of(path: &Path) -> Result<Vec<String>, Error> {
    let mut records = Records::<Record>::open(path)?;
    let extra = records.extra_columns();
    if !extra.is_empty() || records.format() == crate::output::read::Format::Csv {
        return Ok(extra);
    }
    Ok(match records.next() {
        Some(Ok(_)) => records
            .last_extras()
            .map(|kept| kept.keys().cloned().collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

/// Sorts the id hashes and names the ids that appear twice (read back from their files).
fn find_duplicates(
    seen: &mut [(u64, u32)],
    inputs: &[std::path::PathBuf],
    merged: &mut Merged,
) -> Result<(), Error> {
    seen.sort_unstable();
    let mut twice: Vec<(u64, u32, u32)> = Vec::new();
    for pair in seen.windows(2) {
        if pair[0].0 == pair[1].0 {
            merged.duplicate_count += 1;
            if twice.len() < SHOWN {
                twice.push((pair[0].0, pair[0].1, pair[1].1));
            }
        }
    }
    for (hash, first, second) in twice {
        let id = id_with_hash(&inputs[first as usize], hash)?.unwrap_or_default();
        merged.duplicates.push((
            id,
            inputs[first as usize].display().to_string(),
            inputs[second as usize].display().to_string(),
        ));
    }
    Ok(())
}

/// The hash of a record's (id, model) pair: a row's records for several models are not
/// duplicates of each other.
fn pair_key(record: &Record) -> u64 {
    let mut bytes = Vec::with_capacity(record.id.len() + record.model.len() + 1);
    bytes.extend_from_slice(record.id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(record.model.as_bytes());
    fnv1a(&bytes)
}

/// The id (and model) of the record with this pair hash, as the duplicate message names it.
fn id_with_hash(path: &Path, hash: u64) -> Result<Option<String>, Error> {
    for item in Records::<Record>::open(path)? {
        let (_, record) = item?;
        if pair_key(&record) == hash {
            return Ok(Some(format!("{}` for model `{}", record.id, record.model)));
        }
    }
    Ok(None)
}

/// Prints what the merge found; whether every check passed.
fn report(merged: &Merged, opts: &MergeOptions) -> bool {
    let mut ok = true;
    // Shards of one run send to the same models; other ones were run with another --model.
    if let Some(first) = merged.models.first() {
        for (i, models) in merged.models.iter().enumerate().skip(1) {
            if models != first && !models.is_empty() && !first.is_empty() {
                notice!(
                    "warning: {} holds records of models {}, and {} of models {}: were the shards run with different --model lists? (rows naming their own model may differ by shard)",
                    opts.outputs[0].display(),
                    first.join(", "),
                    opts.outputs[i].display(),
                    models.join(", ")
                );
            }
        }
    }
    for (id, first, second) in &merged.duplicates {
        notice!("error: id `{id}` is in {first} and in {second}");
    }
    if merged.duplicate_count > 0 {
        notice!(
            "error: {} records repeat an id: the shards overlap (were they run with the same --shard N and the same input?)",
            group(merged.duplicate_count)
        );
        ok = false;
    }
    let distinct = merged.records - merged.duplicate_count;
    match opts.expect_rows {
        Some(rows) if distinct < rows => {
            notice!(
                "error: {} distinct rows, but the input has {}: {} missing; re-run the shards that did not finish",
                group(distinct),
                group(rows),
                group(rows - distinct)
            );
            ok = false;
        }
        Some(rows) if distinct > rows => {
            notice!(
                "error: {} distinct rows, but the input has only {}: are these outputs of another input?",
                group(distinct),
                group(rows)
            );
            ok = false;
        }
        Some(rows) => notice!("every one of the {} rows is present exactly once", group(rows)),
        None if ok => notice!(
            "no id repeats; to check that none is missing, pass --expect-rows N (the row count `promptbatch validate INPUT` prints)"
        ),
        None => {}
    }
    if ok {
        notice!(
            "merged {} records from {} files into {} ({} error records)",
            group(merged.records),
            opts.outputs.len(),
            opts.output.display(),
            group(merged.errors)
        );
    }
    ok
}
