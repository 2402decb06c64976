//! Resume: the output file is the checkpoint. An existing output is scanned once into an index
//! of its records; each input row then *claims* the earlier record with its identity, and is
//! skipped when that record is ok (or an error, with --keep-errors) and its request fingerprint
//! matches what would be sent now.
//!
//! The unit is a (row, model) pair (`--model a,b` sends each row to each model; a record's
//! `model` is the model its request was sent to). Row identity: the explicit id when the input
//! has one, paired with the model; otherwise the request fingerprint (whose body names the
//! model) plus its occurrence number among identical requests (so inserting or deleting rows
//! never shifts another row's identity). Earlier records whose `id` equals their `row` may be of
//! either kind, so they can be found both ways: by row number, and by fingerprint, where their
//! occurrence number is their rank by `row` among the earlier records with the same fingerprint.
//!
//! A record whose model is none this run sends to is *foreign*. Outputs written before a
//! record's `model` was the requested one hold the name the answer gave, which a gateway may
//! rename (`openai/gpt-4o` for `gpt-4o`); such a record still holds the request's fingerprint,
//! whose body names the model sent. So a unit with an explicit id that found no record of its
//! model meets the last foreign record with its id and its fingerprint (anonymous units meet
//! records by fingerprint whatever their model). A foreign record no unit meets (one of a model
//! dropped from the list) is kept as it is, neither claimed nor counted.
//!
//! The plan indexes the output on one thread while another computes the input's row keys, then
//! claims every row and yields the done row numbers (one bit per row); the index is dropped and
//! the run skips those rows by number. Before the run appends, the output is rewritten
//! crash-safely and in place (`rewrite.rs`, through `replace.rs`: the file keeps its inode,
//! links, mode and owner) without the records that will be redone and without a torn last
//! record, so the output never holds two records for one row.
//! Memory during the plan: about 100 bytes per earlier record and 32 per input row (213 MB peak
//! measured at 1,000,000 of each, allocator overhead included). This index
//! is used only when the input mixes rows with and without ids; otherwise `resume_sorted.rs`
//! makes the same plan by sorting on disk, in bounded memory.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::input::{Row, RowSet};
use crate::output::read::{file_ends_with_newline, Records, Torn};
use crate::output::record::{Record, Status};
use crate::output::rewrite::rewrite;
use crate::util::fingerprint::{self, fnv1a, PreHashed};
use crate::util::human::group;

/// The fields of an earlier record that resuming reads (the rest is skipped, not allocated).
#[derive(Debug, Deserialize)]
pub(crate) struct Earlier {
    pub id: String,
    pub row: u64,
    pub status: Status,
    #[serde(default)]
    pub cost_usd: Option<f64>,
    #[serde(default)]
    pub fingerprint: String,
    #[serde(default, deserialize_with = "crate::output::record::any_bool")]
    pub simulated: bool,
    #[serde(default)]
    pub model: String,
}

/// One earlier record, as far as resuming needs it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    fingerprint: u64,
    ok: bool,
    /// Answered by the simulator (`--dry-run`).
    simulated: bool,
    cost: f64,
    /// The record's `row`.
    row: u64,
    /// The input row that claimed it (0: none; rows are 1-based).
    claimed_by: u64,
    /// Whether the claiming row has no explicit id (its id is its row number).
    claimed_anonymously: bool,
    /// `model_key` of the record's model; once a unit meets it, the unit's model.
    model: u64,
    /// `id_fp_key(id, fingerprint)`: how a unit finds it when its model is foreign.
    id_fp: u64,
    /// Its model is none this run sends to and no unit met it: kept as is, unclaimed.
    foreign: bool,
    /// Claimed though its model was foreign: the rewrite names the unit's model.
    renamed: bool,
    /// A unit met it (claimed it, or found it changed, an error to retry, simulated): a record
    /// no unit met is of no row of this input (a smaller input, rows of another shard) and is
    /// kept as it is — a paid record is never deleted.
    met: bool,
}

impl Entry {
    fn claimed(&self) -> bool {
        self.claimed_by > 0
    }

    /// Whether the rewrite keeps the record.
    fn kept(&self) -> bool {
        self.claimed() || self.foreign || !self.met
    }

    /// Whether the kept record must be relabelled with the claiming row's number.
    fn relabel(&self) -> bool {
        self.claimed() && self.claimed_by != self.row
    }
}

/// What a row's claim decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// An earlier record covers it: do not send.
    Done,
    /// No earlier record.
    New,
    /// An earlier record exists but the request changed.
    Changed,
    /// An earlier error record: send again.
    RetryError,
    /// An earlier answer from the simulator (`--dry-run`), and this run is real: send.
    Simulated,
}

/// Counts of a resume plan (from a first pass over the input).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Plan {
    pub rows: u64,
    pub done: u64,
    pub changed: u64,
    pub retried_errors: u64,
    /// Earlier error records kept by --keep-errors.
    pub kept_errors: u64,
    /// Earlier simulated (`--dry-run`) answers that this real run sends for real.
    pub simulated: u64,
    /// Cost of the records kept.
    pub spent: f64,
    /// Models each row goes to (`--model`'s list): the counts are of (row, model) pairs.
    pub models: u64,
    /// Earlier records of models this run sends nothing to, kept as they are.
    pub other_models: u64,
    /// Earlier records no row of this input claims (a smaller input, another shard's rows),
    /// kept as they are.
    pub unclaimed: u64,
    /// Models (`model_key`) with an ok record kept: they work (the circuit breaker counts
    /// them as having succeeded).
    pub worked: KnownModels,
}

/// A few model keys (`model_key`), in a fixed size: models past the first [`KnownModels::CAP`]
/// are not remembered (a row naming its own model can name many).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KnownModels {
    keys: [u64; KnownModels::CAP],
    len: usize,
}

impl KnownModels {
    pub(crate) const CAP: usize = 16;

    pub(crate) fn insert(&mut self, key: u64) {
        if !self.contains(key) && self.len < Self::CAP {
            self.keys[self.len] = key;
            self.len += 1;
        }
    }

    pub(crate) fn contains(&self, key: u64) -> bool {
        self.keys[..self.len].contains(&key)
    }

    /// Whether the model named `name` is one of them.
    pub(crate) fn has(&self, name: &str) -> bool {
        self.contains(model_key(name))
    }

    #[cfg(test)]
    pub(crate) fn sorted(&self) -> Vec<u64> {
        let mut keys = self.keys[..self.len].to_vec();
        keys.sort_unstable();
        keys
    }
}

impl Plan {
    /// Rows that will be sent.
    pub(crate) fn rows_to_send(&self) -> u64 {
        self.rows - self.done
    }

    /// The one line printed before a resumed run starts.
    pub(crate) fn describe(&self) -> String {
        let mut notes = Vec::new();
        if self.retried_errors > 0 {
            notes.push(format!(
                "{} earlier errors retried",
                group(self.retried_errors)
            ));
        }
        if self.changed > 0 {
            notes.push(format!("{} changed rows re-sent", group(self.changed)));
        }
        if self.simulated > 0 {
            notes.push(format!(
                "{} simulated answers from --dry-run sent for real",
                group(self.simulated)
            ));
        }
        if self.other_models > 0 {
            notes.push(format!(
                "{} records of models not in --model kept as they are",
                group(self.other_models)
            ));
        }
        if self.unclaimed > 0 {
            notes.push(format!(
                "{} records of rows not in this input kept as they are",
                group(self.unclaimed)
            ));
        }
        let unit = if self.models > 1 {
            "(row, model) pairs"
        } else {
            "rows"
        };
        if self.rows_to_send() == 0 {
            let mut kept = String::new();
            if self.other_models > 0 {
                kept += &format!(
                    "; {} records of models not in --model kept as they are",
                    group(self.other_models)
                );
            }
            if self.unclaimed > 0 {
                kept += &format!(
                    "; {} records of rows not in this input kept as they are",
                    group(self.unclaimed)
                );
            }
            return format!(
                "already complete: all {} {unit} have a record, nothing to send{kept} (use --fresh to start over)",
                group(self.rows)
            );
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        format!(
            "resuming: {} of {} {unit} done, {} to send{notes}",
            group(self.done),
            group(self.rows),
            group(self.rows_to_send())
        )
    }
}

/// The identity and fingerprint of one input unit (a row for one model), as resuming compares
/// them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RowKey {
    row: u64,
    /// `models::unit` of (row, slot): the bit the done set gets.
    unit: u64,
    fingerprint: u64,
    /// `model_key` of the unit's model.
    model: u64,
    /// `explicit_key(id, model)` for rows with an explicit id.
    id_hash: Option<u64>,
    /// `id_fp_key(id, fingerprint)` for rows with an explicit id.
    id_fp: Option<u64>,
    /// The explicit id as a number, when it is one (it may name a record whose id is its row).
    id_number: Option<u64>,
}

impl RowKey {
    /// The key of a row's unit, when each row goes to `models` models.
    pub(crate) fn of(row: &Row, models: u64) -> Self {
        let explicit = row.explicit_id;
        let fingerprint = unit_fingerprint(row.fingerprint(), row.model());
        RowKey {
            row: row.row,
            unit: crate::input::models::unit(row.row, u64::from(row.slot), models),
            fingerprint,
            model: model_key(row.model()),
            id_hash: explicit.then(|| explicit_key(&row.id, row.model())),
            id_fp: explicit.then(|| id_fp_key(&row.id, fingerprint)),
            id_number: if explicit { row.id.parse().ok() } else { None },
        }
    }
}

/// Earlier anonymous candidates with one fingerprint: `members[start..start + len]`, by row.
#[derive(Debug, Clone, Copy)]
struct Group {
    start: u32,
    len: u32,
    /// Occurrences of this fingerprint claimed so far in the input.
    next: u32,
}

/// The index of an existing output.
#[derive(Debug)]
pub(crate) struct ResumeIndex {
    path: PathBuf,
    /// Every earlier record, in file order.
    entries: Vec<Entry>,
    /// Records whose id is not their row number, by `explicit_key(id, model)`.
    by_id: HashMap<u64, u32, PreHashed>,
    /// Records whose id is their row number (either kind of identity), by
    /// `number_key(row, model)`.
    by_row: HashMap<u64, u32, PreHashed>,
    /// Foreign records (of a model this run sends nothing to), by `id_fp_key(id, fingerprint)`.
    foreign_by_id_fp: HashMap<u64, u32, PreHashed>,
    /// Those same records grouped by fingerprint, for anonymous rows.
    groups: HashMap<u64, Group, PreHashed>,
    members: Vec<u32>,
    keep_errors: bool,
    /// Simulated answers count as done (this run is a `--dry-run` too).
    accept_simulated: bool,
    /// Models each row goes to (for the rewrite's encoder).
    models: u64,
    /// The names of the models this run sends to, for the records claimed under another.
    names: ModelNames,
    /// A torn last record that the rewrite drops.
    torn: Option<Torn>,
    /// The last record lacks its line ending (the rewrite adds it).
    unterminated: bool,
    /// A CSV header of an older schema (the rewrite writes today's).
    old_header: bool,
}

/// The names of the models a run sends to, by `model_key`: a record claimed although it named
/// another model (a gateway's name for it) is rewritten under the name its request went to.
#[derive(Debug, Default, Clone)]
pub(crate) struct ModelNames(HashMap<u64, String, PreHashed>);

impl ModelNames {
    /// Notes a unit's model (a lookup per unit; a few distinct names).
    pub(crate) fn note(&mut self, key: u64, name: &str) {
        self.0.entry(key).or_insert_with(|| name.to_string());
    }

    /// Whether a model is one of them.
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.0.contains_key(&key)
    }

    /// Gives `record` the name of model `key`.
    pub(crate) fn rename(&self, record: &mut Record, key: u64) {
        if let Some(name) = self.0.get(&key) {
            record.model.clone_from(name);
        }
    }
}

/// The name resume files a model under: a dated snapshot's (`gpt-5.2-2025-12-11`) is its
/// model's (`gpt-5.2`), because ok records written before a record's `model` was the requested
/// one hold the name the answer gave.
pub(crate) fn model_name(model: &str) -> &str {
    crate::api::model_name::strip_snapshot_date(model).unwrap_or(model)
}

/// The identity of an explicit id's unit for one model.
pub(crate) fn explicit_key(id: &str, model: &str) -> u64 {
    let model = model_name(model);
    let mut bytes = Vec::with_capacity(id.len() + model.len() + 4);
    bytes.extend_from_slice(b"id\0");
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(model.as_bytes());
    fnv1a(&bytes)
}

/// The identity of an explicit id's unit by its request fingerprint, for records whose model
/// is foreign.
pub(crate) fn id_fp_key(id: &str, fingerprint: u64) -> u64 {
    let mut bytes = Vec::with_capacity(id.len() + 12);
    bytes.extend_from_slice(b"fp\0");
    bytes.extend_from_slice(id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&fingerprint.to_le_bytes());
    fnv1a(&bytes)
}

/// The fingerprint resuming compares: the request's, or for a row without a request (its
/// record's fingerprint is empty) its model's key, so that such rows of one model meet only
/// that model's records.
pub(crate) fn unit_fingerprint(fingerprint: &str, model: &str) -> u64 {
    fingerprint::parse(fingerprint).unwrap_or_else(|| model_key(model))
}

/// The key of a model's name.
pub(crate) fn model_key(model: &str) -> u64 {
    fnv1a(model_name(model).as_bytes())
}

/// The identity of the unit (row number, model) for a numeric id that names a record whose id
/// is its row.
pub(crate) fn number_key(row: u64, model: u64) -> u64 {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&row.to_le_bytes());
    bytes[8..].copy_from_slice(&model.to_le_bytes());
    fnv1a(&bytes)
}

impl ResumeIndex {
    /// Scans an existing output. A torn last line is noted (and later dropped); any other
    /// unreadable record is an error naming `file:line`.
    pub(crate) fn scan(
        path: &Path,
        keep_errors: bool,
        accept_simulated: bool,
    ) -> Result<Self, Error> {
        let mut index = ResumeIndex {
            path: path.to_path_buf(),
            entries: Vec::new(),
            by_id: HashMap::default(),
            by_row: HashMap::default(),
            foreign_by_id_fp: HashMap::default(),
            groups: HashMap::default(),
            members: Vec::new(),
            keep_errors,
            accept_simulated,
            models: 1,
            names: ModelNames::default(),
            torn: None,
            unterminated: !file_ends_with_newline(path),
            old_header: false,
        };
        // (fingerprint, row, index, model) of the records whose id is their row number.
        let mut anonymous: Vec<(u64, u64, u32, u64)> = Vec::new();
        let mut records = Records::<Earlier>::open(path)?;
        index.old_header = !records.has_current_header();
        for item in &mut records {
            let (_, record) = item.map_err(suggest_fresh)?;
            let i = index.entries.len() as u32;
            let fp = unit_fingerprint(&record.fingerprint, &record.model);
            let model = model_key(&record.model);
            index.entries.push(Entry {
                fingerprint: fp,
                ok: record.status == Status::Ok,
                simulated: record.simulated,
                cost: record.cost_usd.unwrap_or(0.0),
                row: record.row,
                claimed_by: 0,
                claimed_anonymously: false,
                model,
                id_fp: id_fp_key(&record.id, fp),
                foreign: false,
                renamed: false,
                met: false,
            });
            if record.id == record.row.to_string() {
                anonymous.push((fp, record.row, i, model));
            } else {
                index
                    .by_id
                    .insert(explicit_key(&record.id, &record.model), i);
            }
        }
        index.torn = records.torn().cloned();
        anonymous.sort_unstable();
        index.members = Vec::with_capacity(anonymous.len());
        for (k, &(fp, row, i, model)) in anonymous.iter().enumerate() {
            index.by_row.insert(number_key(row, model), i);
            index.members.push(i);
            let group = index.groups.entry(fp).or_insert(Group {
                start: k as u32,
                len: 0,
                next: 0,
            });
            group.len += 1;
        }
        Ok(index)
    }

    /// The torn last record that the rewrite drops, if there was one.
    pub(crate) fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }

    /// The earlier record with this row's identity, if any.
    fn find(&mut self, key: &RowKey) -> Option<u32> {
        if let Some(hash) = key.id_hash {
            let by_row = |n: u64| self.by_row.get(&number_key(n, key.model)).copied();
            let foreign = || {
                key.id_fp
                    .and_then(|k| self.foreign_by_id_fp.get(&k).copied())
            };
            return self
                .by_id
                .get(&hash)
                .copied()
                .or_else(|| key.id_number.and_then(by_row))
                .or_else(foreign);
        }
        // The next occurrence of this request; records an explicit id already took are passed
        // over (an input may mix rows with and without ids).
        let group = self.groups.get_mut(&key.fingerprint)?;
        while group.next < group.len {
            let i = self.members[(group.start + group.next) as usize];
            group.next += 1;
            if !self.entries[i as usize].claimed() {
                return Some(i);
            }
        }
        None
    }

    /// Decides whether a row is already done, claiming its earlier record if so.
    pub(crate) fn claim(&mut self, key: &RowKey) -> Claim {
        let Some(i) = self.find(key) else {
            return Claim::New;
        };
        let keep_errors = self.keep_errors;
        let entry = &mut self.entries[i as usize];
        if entry.claimed() {
            return Claim::New;
        }
        entry.met = true;
        // Met: it stands for this unit's model now (claimed, or dropped to be sent again).
        let renamed = !self.names.contains(entry.model);
        entry.model = key.model;
        if entry.fingerprint != key.fingerprint {
            return Claim::Changed;
        }
        if !entry.ok && !keep_errors {
            return Claim::RetryError;
        }
        if entry.simulated && !self.accept_simulated {
            return Claim::Simulated;
        }
        entry.claimed_by = key.row;
        entry.claimed_anonymously = key.id_hash.is_none();
        entry.renamed = renamed;
        Claim::Done
    }

    /// Indexes the output at `path` while the input's row keys are computed on this thread (the
    /// two halves run in parallel), then claims every row. Returns the index, the plan and the
    /// rows that are done. `rows` is the whole input, so that records of rows beyond `--limit`
    /// are claimed (and kept); the plan's counts cover only the rows up to `limit`.
    pub(crate) fn plan<I>(
        path: &Path,
        keep_errors: bool,
        accept_simulated: bool,
        limit: Option<u64>,
        models: u64,
        rows: I,
    ) -> Result<(Self, Plan, RowSet), Error>
    where
        I: Iterator<Item = Result<Row, Error>>,
    {
        let mut names = ModelNames::default();
        let (index, keys) = scan_alongside(
            || ResumeIndex::scan(path, keep_errors, accept_simulated),
            || -> Result<Vec<RowKey>, Error> {
                rows.map(|row| {
                    row.map(|r| {
                        let key = RowKey::of(&r, models);
                        names.note(key.model, r.model());
                        key
                    })
                })
                .collect()
            },
        );
        let (mut index, keys) = (index?, keys?);
        index.models = models;
        index.names = names;
        let mut plan = Plan {
            models,
            ..Plan::default()
        };
        let mut done = RowSet::default();
        let limit = limit.unwrap_or(u64::MAX);
        for (i, entry) in index.entries.iter().enumerate() {
            if !index.names.contains(entry.model) {
                index.foreign_by_id_fp.insert(entry.id_fp, i as u32);
            }
        }
        for key in &keys {
            let claim = index.claim(key);
            if key.row > limit {
                continue;
            }
            plan.rows += 1;
            match claim {
                Claim::Done => {
                    plan.done += 1;
                    done.insert(key.unit);
                }
                Claim::Changed => plan.changed += 1,
                Claim::RetryError => plan.retried_errors += 1,
                Claim::Simulated => plan.simulated += 1,
                Claim::New => {}
            }
        }
        for entry in &mut index.entries {
            if entry.claimed() {
                plan.spent += entry.cost;
                if entry.ok {
                    plan.worked.insert(entry.model);
                } else {
                    plan.kept_errors += 1;
                }
            } else {
                entry.foreign = !index.names.contains(entry.model);
                plan.other_models += u64::from(entry.foreign);
                plan.unclaimed += u64::from(!entry.foreign && !entry.met);
            }
        }
        Ok((index, plan, done))
    }

    /// Whether the output must be rewritten before appending: records to drop, records to
    /// relabel (a kept record now stands for another row number, after rows were inserted or
    /// identical requests finished out of order), a torn or unterminated last line.
    pub(crate) fn needs_rewrite(&self) -> bool {
        self.torn.is_some()
            || self.unterminated
            || self.old_header
            || self
                .entries
                .iter()
                .any(|e| !e.kept() || e.relabel() || e.renamed)
    }

    /// Rewrites the output crash-safely, in place, with only the claimed records (relabelled with the rows
    /// that claimed them), when anything must change.
    pub(crate) fn rewrite_if_needed(&self) -> Result<(), Error> {
        if self.needs_rewrite() {
            self.rewrite()?;
        }
        Ok(())
    }

    /// The rewrite (`rewrite.rs`) with this index's decisions: each record is kept when its
    /// entry is, relabelled with the row that claimed it, renamed to the model it was claimed for.
    fn rewrite(&self) -> Result<(), Error> {
        let known = self.entries.len() as u64;
        rewrite(&self.path, self.models, known, |index, record| {
            let entry = &self.entries[index as usize];
            if !entry.kept() {
                return Ok(false);
            }
            if entry.relabel() {
                record.row = entry.claimed_by;
                if entry.claimed_anonymously {
                    record.id = entry.claimed_by.to_string();
                }
            }
            if entry.renamed {
                self.names.rename(record, entry.model);
            }
            Ok(true)
        })
    }
}

/// Runs `scan` (of the output) on another thread while `keys` (of the input) runs on this one,
/// and returns both results; a scan that panicked is an error.
pub(crate) fn scan_alongside<S: Send, K>(
    scan: impl FnOnce() -> Result<S, Error> + Send,
    keys: impl FnOnce() -> K,
) -> (Result<S, Error>, K) {
    std::thread::scope(|scope| {
        let scanning = scope.spawn(scan);
        let keys = keys();
        let scanned = scanning
            .join()
            .unwrap_or_else(|_| Err(Error::Config("the resume scan panicked".into())));
        (scanned, keys)
    })
}

/// Adds the way out to an unreadable-output error: start over, keeping the file as a backup.
pub(crate) fn suggest_fresh(error: Error) -> Error {
    match error {
        Error::Input { location, message } => Error::Input {
            location,
            message: format!(
                "{message}; or pass --fresh to start over (the file is kept as a backup: OUTPUT.bak, or the first free OUTPUT.bak.N)"
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_line() {
        let plan = Plan {
            rows: 10_000,
            done: 8_231,
            retried_errors: 12,
            ..Plan::default()
        };
        assert_eq!(
            plan.describe(),
            "resuming: 8,231 of 10,000 rows done, 1,769 to send (12 earlier errors retried)"
        );
    }
}
