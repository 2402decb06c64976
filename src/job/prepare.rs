//! The prepare stage of a run, shared by both transports (live requests and `--via batch`):
//! everything that can fail before the first request — the input's header and columns, the key
//! (or the `--dry-run` simulator), the output's lock and real path, `--fresh`, the resume plan,
//! the output's shape and extra columns, `--json-schema` compiled, `--notify-url` — ending in
//! [`Prepared`].

use std::path::{Path, PathBuf};

use crate::api::schema::AnswerSchema;
use crate::api::{ApiClient, ApiKey, ClientOptions};
use crate::error::Error;
use crate::events::notice;
use crate::input::{self, InputOptions, RowSet};
use crate::job::Job;
use crate::money::cost::PriceTable;
use crate::output::lock::OutputLock;
use crate::output::resume::{Plan, ResumeIndex};
use crate::output::resume_sorted;
use crate::output::{backup, replace, writer, Record};
use crate::sim;

/// What a run has once it is ready to send: everything that can fail before the first request.
/// The live pipeline and the batch path (`batch::run`) both start from it.
pub(crate) struct Prepared {
    pub client: ApiClient,
    /// The --dry-run simulator, kept alive for the run.
    pub _simulator: Option<sim::SimHandle>,
    /// The lock on the output, held for the run.
    pub _lock: OutputLock,
    /// The output's real path.
    pub output: PathBuf,
    /// The resume plan when the output had records.
    pub plan: Option<Plan>,
    /// The rows still to send.
    pub rows: input::RowStream,
    pub prices: PriceTable,
    /// The rows the resume plan found done (`None` for a new output).
    pub done: Option<RowSet>,
    /// A CSV output's extra columns (output names).
    pub kept_columns: Vec<String>,
    /// `--json-schema`, compiled.
    pub schema: Option<AnswerSchema>,
    /// The shape of the output's lines.
    pub output_format: crate::output::format::OutputFormat,
    /// Rows that repeat a row being sent, answered from its record after the send
    /// (`reuse::before_send` sets it).
    pub followers: Option<Followers>,
    /// `--via batch --fallback live`: what the batch part paid for the rows handed to the live
    /// runner (answers that failed `--json-schema`), for their live records.
    pub carried: crate::money::spent::Carried,
}

/// Rows the send skips because they repeat a row that is sent: after the send, each gets the
/// record of the row it repeats (`reuse::after_send`).
pub(crate) struct Followers {
    /// Their units (`row × models + slot`).
    pub units: RowSet,
    pub count: u64,
    /// Simulated answers may answer them (a run against a simulator).
    pub simulated: bool,
}

/// Checks the input (header, columns) and the options, connects (or starts the simulator),
/// locks the output (backing it up with --fresh) and plans the resume.
pub(crate) async fn prepare(opts: &Job) -> Result<Prepared, Error> {
    // Options checked on their own first (`--notify-url`): nothing is read or locked for a
    // run that cannot start.
    opts.monitor.check()?;
    opts.reuse.check(&opts.input)?;
    // Open (and so validate: header, columns) the input before anything else. A file is opened
    // again after the resume plan, to skip the rows it found done; standard input cannot be read
    // twice (and cannot be resumed), so its first opening is the one that is read.
    let early_rows = input::open(&opts.input, &opts.request, None)?;
    let prices = PriceTable::load(opts.cost.prices.as_deref())?;
    crate::money::budget::check_models_priced(opts.cost.max_cost, &opts.request.models, &prices)?;
    let (client, simulator) = connect(opts).await?;
    refuse_output_over_input(opts)?;
    writer::check_folder(&opts.output.path)?;
    // Temporary sorted runs (duplicate ids of a large input) go next to the output.
    crate::util::spill::set_dir(match opts.output.path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    });
    let kept_columns = csv_kept_columns(opts)?;
    let schema = answer_schema(opts)?;
    let (lock, output) = take_output(opts, &client)?;
    let kept_columns = with_existing_marker_columns(opts, &output, kept_columns)?;
    check_output_columns(&output, &kept_columns)?;
    let output_format = output_format(opts, &output)?;
    let (done_rows, plan) = plan_with_every_row_readable(opts, &output, &client).await?;
    let done = done_rows.clone();
    let rows = match done_rows {
        Some(done) => {
            drop(early_rows);
            input::open(&opts.input, &opts.request, Some(done))?
        }
        None => early_rows,
    };
    if let Some(plan) = &plan {
        notice!("{}", plan.describe());
    }
    let carried = crate::batch::before_run::carried_into_live_run(opts, &output, done.as_ref())?;
    Ok(Prepared {
        client,
        _simulator: simulator,
        _lock: lock,
        output,
        plan,
        rows,
        prices,
        kept_columns,
        schema,
        output_format,
        done,
        followers: None,
        carried,
    })
}

/// The shape of the output's lines: `--output-format`, else the shape an existing output has,
/// else by extension. A shape other than the existing output's is refused (the file would mix
/// them), and so is a shape the extension contradicts (it is read back by extension).
fn output_format(opts: &Job, output: &Path) -> Result<crate::output::format::OutputFormat, Error> {
    use crate::output::format::OutputFormat;
    let csv_path = crate::paths::is_csv(output);
    if let (None, Some(ext)) = (
        opts.output.format,
        crate::paths::foreign_output_extension(output),
    ) {
        return Err(Error::Config(format!(
            "--output {}: promptbatch writes JSONL, CSV (.csv) or Parquet (.parquet), not .{ext}: name the output .jsonl, .csv or .parquet (`promptbatch export` converts it later), or pass --output-format jsonl to write JSONL under this name anyway",
            opts.output.path.display()
        )));
    }
    if let Some(asked) = opts.output.format {
        if (asked == OutputFormat::Csv) != csv_path {
            return Err(Error::Config(format!(
                "--output-format {} does not fit {}: a .csv output is CSV, any other is JSONL or openai-batch",
                asked.name(),
                opts.output.path.display()
            )));
        }
    }
    let has_records = std::fs::metadata(output).is_ok_and(|m| m.len() > 0);
    let existing =
        has_records.then(|| crate::output::read::Format::for_path(output).output_format());
    match (opts.output.format, existing) {
        (Some(asked), Some(existing)) if asked != existing => Err(Error::Config(format!(
            "{} holds {} records, and this run asks for --output-format {}: use the format it was \
             written in, or --fresh to start a new output (the old one is kept as a backup)",
            opts.output.path.display(),
            existing.name(),
            asked.name()
        ))),
        (Some(asked), _) => Ok(asked),
        (None, Some(existing)) => Ok(existing),
        (None, None) => Ok(OutputFormat::for_path(output)),
    }
}

/// The extra columns a CSV output gets after the schema's: the kept input columns (output
/// names, in order), the parsed answer's (--json-schema), then `response` (--keep-response).
/// None for a JSONL output, whose records carry their own.
fn csv_kept_columns(opts: &Job) -> Result<Vec<String>, Error> {
    if !crate::paths::is_csv(&opts.output.path) {
        return Ok(Vec::new());
    }
    let mut columns = kept_input_columns(opts)?;
    if let Some(schema) = &opts.request.json_schema {
        let parsed = crate::output::record::parsed_csv_columns(schema, &columns);
        columns.extend(parsed.into_iter().map(|(column, _)| column));
    }
    if opts.output.keep_response {
        columns.push(crate::output::record::RESPONSE.to_string());
    }
    Ok(columns)
}

/// The kept input columns of a CSV output, by output name.
fn kept_input_columns(opts: &Job) -> Result<Vec<String>, Error> {
    let names = match &opts.input.keep_columns {
        None => Vec::new(),
        Some(input::KeepColumns::Named(names)) => names.clone(),
        Some(input::KeepColumns::All) => input::csv_column_names(&opts.input)?,
    };
    Ok(crate::output::record::kept_names(
        names.iter().map(String::as_str),
    ))
}

/// `--json-schema`: the compiled checker, and for a CSV output the parsed answer's
/// `(column, property)` columns.
pub(crate) fn answer_schema(opts: &Job) -> Result<Option<AnswerSchema>, Error> {
    let Some(schema) = &opts.request.json_schema else {
        return Ok(None);
    };
    let columns = match crate::paths::is_csv(&opts.output.path) {
        true => Some(crate::output::record::parsed_csv_columns(
            schema,
            &kept_input_columns(opts)?,
        )),
        false => None,
    };
    Ok(Some((schema.checker()?, columns)))
}

/// A CSV output's extra columns: `kept`, and the markers of records answered without a
/// request (`reuse`) when the output has them. A new output gets them only once a run has such
/// records (`reuse::before_send` adds them), so a run without any writes the columns it always
/// did.
fn with_existing_marker_columns(
    opts: &Job,
    output: &Path,
    kept: Vec<String>,
) -> Result<Vec<String>, Error> {
    use crate::output::record::{with_marker_columns, MARKERS};
    let has_records = std::fs::metadata(output).is_ok_and(|m| m.len() > 0);
    if !crate::paths::is_csv(output) || !has_records {
        return Ok(kept);
    }
    let existing = crate::output::read::Records::<Record>::open(output)?.extra_columns();
    if existing == with_marker_columns(&kept) {
        return Ok(existing);
    }
    if opts.reuse.any() && existing == kept {
        notice!(
            "{} has no {} columns (it was written without them): rows answered without a request still get cost 0, but their records do not say where the answer comes from",
            output.display(),
            MARKERS.join("/")
        );
    }
    Ok(kept)
}

/// A CSV output that already has records must have the columns this run appends.
fn check_output_columns(output: &Path, kept: &[String]) -> Result<(), Error> {
    if !crate::paths::is_csv(output) || !std::fs::metadata(output).is_ok_and(|m| m.len() > 0) {
        return Ok(());
    }
    let existing = crate::output::read::Records::<Record>::open(output)?.extra_columns();
    if existing != kept {
        let list = |names: &[String]| match names {
            [] => "none".to_string(),
            names => names.join(", "),
        };
        return Err(Error::Config(format!(
            "{} has the extra columns [{}] but this run writes [{}]: run with the --keep-columns \
             (and --keep-response) that wrote it, or pass --fresh to start a new output (the old \
             one is kept as a backup)",
            output.display(),
            list(&existing),
            list(kept)
        )));
    }
    Ok(())
}

/// The API client: the real endpoint with the user's key, or a fresh simulator for --dry-run
/// (kept alive by the returned handle).
async fn connect(opts: &Job) -> Result<(ApiClient, Option<sim::SimHandle>), Error> {
    let (base_url, key, simulator) = if let Some(options) = &opts.dry_run {
        let handle = sim::start("127.0.0.1:0", options.clone())
            .await
            .map_err(|e| Error::io("cannot start the built-in simulator for --dry-run", e))?;
        (handle.base_url(), ApiKey::new("dry-run"), Some(handle))
    } else {
        (opts.endpoint.base_url.clone(), opts.endpoint.key()?, None)
    };
    let options = ClientOptions {
        concurrency: opts.limits.concurrency,
        timeout: opts.endpoint.timeout,
        connect_timeout: opts.endpoint.connect_timeout,
        ca_certs: opts.endpoint.ca_certs.clone(),
    };
    let client = ApiClient::new(&base_url, key, &options)?;
    match client.proxy() {
        Some(proxy) => tracing::info!("sending to {} through the proxy {proxy}", client.url()),
        None => tracing::info!("sending to {}", client.url()),
    }
    Ok((client, simulator))
}

/// Locks the output and returns its real path, after finishing a rewrite a crash interrupted,
/// checking the batch state beside it and, with --fresh, moving the earlier output to a new backup.
fn take_output(opts: &Job, client: &ApiClient) -> Result<(OutputLock, PathBuf), Error> {
    let lock = OutputLock::acquire(&opts.output.path)?;
    let output = lock.path().to_path_buf();
    replace::finish_interrupted(&output)?;
    // Batches an earlier `--via batch` run left running are this output's too.
    crate::batch::before_run::check_state_before_run(opts, &output, client)?;
    if opts.output.fresh {
        if let Some(backup) = backup::move_aside(&output)? {
            // The new, empty output is locked before the old one's lock is released.
            let lock = OutputLock::acquire(&output)?;
            notice!(
                "starting over (--fresh): the earlier output is kept as {}",
                backup.display()
            );
            return Ok((lock, output));
        }
    }
    Ok((lock, output))
}

/// An output that is the input file itself would be read as earlier results and appended to.
pub(crate) fn refuse_output_over_input(opts: &Job) -> Result<(), Error> {
    let same = match (
        std::fs::canonicalize(&opts.input.path),
        std::fs::canonicalize(&opts.output.path),
    ) {
        (Ok(input), Ok(output)) => input == output,
        _ => false,
    };
    if same {
        return Err(Error::Config(format!(
            "--output {} is the input file; choose another output file",
            opts.output.path.display()
        )));
    }
    Ok(())
}

/// The resume plan, once every record of a file input is known to be readable (unless
/// `--skip-invalid`): a malformed line at row 900,000 must not stop a night after the rows
/// before it were paid. A new output gets a reading pass that lists every unreadable record
/// (`validate::refuse_unreadable_rows`); a resumed one needs none — its plan reads every row
/// strictly — unless that plan stops at a bad record, which the pass then lists with the rest.
async fn plan_with_every_row_readable(
    opts: &Job,
    output: &Path,
    client: &ApiClient,
) -> Result<(Option<RowSet>, Option<Plan>), Error> {
    let check = || crate::input::validate::refuse_unreadable_rows(&opts.input, &opts.request);
    match plan_resume(opts, output, client).await {
        Ok((None, None)) => {
            check()?;
            Ok((None, None))
        }
        Err(e @ Error::Input { .. }) => {
            check()?;
            Err(e)
        }
        planned => planned,
    }
}

/// When OUTPUT (at its real path `output`) has records: index it, claim the rows already done in
/// a first pass over the input, and rewrite it without the records that will be redone. Returns
/// the done rows and the plan; `None` for a new output. Simulated records (`--dry-run`,
/// `mock-server`) are done for a run whose endpoint is the simulator too, and sent again by a
/// run against a real API: when the output holds some, the endpoint is asked which it is
/// before anything is rewritten.
async fn plan_resume(
    opts: &Job,
    output: &Path,
    client: &ApiClient,
) -> Result<(Option<RowSet>, Option<Plan>), Error> {
    let has_records = std::fs::metadata(output).is_ok_and(|m| m.len() > 0);
    if !has_records {
        return Ok((None, None));
    }
    if opts.input.reads_once() {
        return Err(Error::Config(format!(
            "{} exists, and a run reading standard input (or rows in memory) cannot resume it; pass the input as a file, or --fresh to start over",
            opts.output.path.display()
        )));
    }
    refuse_another_shard(opts, output)?;
    let mut accept_simulated = opts.dry_run.is_some();
    loop {
        let planned = plan_once(opts, output, accept_simulated)?;
        if !accept_simulated && planned.plan().simulated > 0 && client.is_simulator().await {
            accept_simulated = true;
            continue;
        }
        return planned.finish(output);
    }
}

/// With `--shard K/N`, an output holding a record of a row outside the shard was written with
/// another shard spec (or none): resuming it would treat that shard's records as rows that
/// left the input. Refused, with what to do.
fn refuse_another_shard(opts: &Job, output: &Path) -> Result<(), Error> {
    let Some(shard) = opts.input.shard else {
        return Ok(());
    };
    let records = crate::output::read::Records::<crate::output::resume::Earlier>::open(output)?;
    for item in records {
        let (_, record) = item?;
        if !shard.holds(&record.id) {
            return Err(Error::Config(format!(
                "{} holds the record of row id `{}`, which is not in --shard {}/{}: it was written with another --shard (or none). Resume it with the --shard it was written with, or write this shard to another output (`promptbatch merge` joins the shards' outputs)",
                opts.output.path.display(),
                record.id,
                shard.index,
                shard.count
            )));
        }
    }
    Ok(())
}

/// A resume plan made, its output not rewritten yet.
enum Planned {
    Sorted(resume_sorted::SortedResume, Plan, RowSet),
    Indexed(ResumeIndex, Plan, RowSet),
}

impl Planned {
    fn plan(&self) -> &Plan {
        match self {
            Planned::Sorted(_, plan, _) | Planned::Indexed(_, plan, _) => plan,
        }
    }

    /// Says a torn last record, rewrites the output if the plan needs it; the done rows and
    /// the plan.
    fn finish(self, output: &Path) -> Result<(Option<RowSet>, Option<Plan>), Error> {
        let say_torn = |torn: Option<&crate::output::read::Torn>| {
            if let Some(torn) = torn {
                notice!(
                    "{}:{}: dropping a torn last record left by an interrupted run ({}); its row is sent again unless another record covers it",
                    output.display(),
                    torn.line,
                    torn.reason
                );
            }
        };
        let (plan, done) = match self {
            Planned::Sorted(sorted, plan, done) => {
                say_torn(sorted.torn());
                sorted.rewrite_if_needed()?;
                (plan, done)
            }
            Planned::Indexed(index, plan, done) => {
                say_torn(index.torn());
                index.rewrite_if_needed()?;
                (plan, done)
            }
        };
        Ok((Some(done), Some(plan)))
    }
}

/// The resume plan of OUTPUT, simulated records taken as done or not.
fn plan_once(opts: &Job, output: &Path, accept_simulated: bool) -> Result<Planned, Error> {
    // The whole input, --limit or not: records of rows beyond the limit are kept.
    let whole_input = InputOptions {
        limit: None,
        ..opts.input.clone()
    };
    // Sorting and merge-joining on disk: memory stays flat (unless the input mixes rows with
    // and without ids: then the in-memory index).
    // Without --shard the plan's pass sees every row, so it finds duplicate ids itself.
    let unchecked = whole_input.shard.is_none();
    let rows = if unchecked {
        input::open_unchecked(&whole_input, &opts.request)?
    } else {
        input::open(&whole_input, &opts.request, None)?
    };
    if let Some((sorted, plan, done_rows)) = resume_sorted::plan(
        output,
        opts.output.keep_errors,
        accept_simulated,
        opts.input.limit,
        opts.request.models_per_row(),
        rows,
        unchecked.then_some((&whole_input, &opts.request)),
    )? {
        return Ok(Planned::Sorted(sorted, plan, done_rows));
    }
    let rows = input::open(&whole_input, &opts.request, None)?;
    let (index, plan, done_rows) = ResumeIndex::plan(
        output,
        opts.output.keep_errors,
        accept_simulated,
        opts.input.limit,
        opts.request.models_per_row(),
        rows,
    )?;
    Ok(Planned::Indexed(index, plan, done_rows))
}
