//! Which rows need no request: the join of the rows still to send with the answers already
//! held, by request, in bounded memory.
//!
//! Every answer a source holds (an earlier output given to `--reuse`, or this run's own output)
//! and every unit still to send becomes one fixed-size key — the request fingerprint (model,
//! messages, options) and a second hash of (model, prompt), so that two different requests
//! would have to collide in both 64-bit hashes — sorted on disk (`util/spill.rs`) and merged:
//! - a unit whose key a source holds is *filled* from it: `(unit, source, byte offset)`, sorted
//!   again by unit so the fill pass (`fill.rs`) reads the input once, in order;
//! - of the units with no such answer, the first of each key is sent and, with dedup, each
//!   later one is a *follower*: skipped by the send, filled from the first one's record after
//!   it (one bit per unit, as the resume plan's done rows).
//!
//! Memory: the sorters' buffers (2 MB each) and the bitset, whatever the sizes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::error::Error;
use crate::input::models::unit;
use crate::input::{Row, RowContent, RowSet};
use crate::output::read::{RecordAt, Records};
use crate::output::record::Status;
use crate::util::fingerprint::{fnv1a, parse};
use crate::util::spill::{self, Sorted, Sorter, SpillFile};

/// Items each sorter holds in memory (32 bytes each: 2 MB).
const SORT_ITEMS: usize = 1 << 16;
/// Bits of a sorted item's value that hold a byte offset (the rest: the source's index).
const OFFSET_BITS: u32 = 48;
const ANSWER: u64 = 0;
/// A unit someone else answers (a batch in flight): its request's first row.
const HELD: u64 = 1;
const UNIT: u64 = 2;

/// Tells the units another transport holds (`batch::before_run::rows_held`).
pub(crate) type Held = Box<dyn FnMut(&Row) -> bool + Send>;

/// Where an answer may come from.
#[derive(Clone)]
pub(crate) struct AnswerSource {
    pub path: PathBuf,
    /// This run's own output (its records are duplicates' answers), or an earlier one.
    pub own: bool,
    /// Error records count as answers (after the send: a duplicate gets its first row's error).
    pub errors: bool,
    /// A Parquet output without its checkpoint: its records copied as JSONL, read instead.
    pub copy: Option<Arc<SpillFile>>,
}

impl AnswerSource {
    /// An output's answers, read from the file itself or, for a Parquet output without its
    /// checkpoint, from a JSONL copy made now.
    pub(crate) fn of(path: &Path, own: bool, errors: bool) -> Result<Self, Error> {
        let bare_parquet =
            crate::paths::is_parquet(path) && !crate::paths::checkpoint(path).exists();
        let copy = match bare_parquet {
            true => Some(Arc::new(crate::output::read::parquet_records_copy(path)?)),
            false => None,
        };
        Ok(AnswerSource {
            path: path.to_path_buf(),
            own,
            errors,
            copy,
        })
    }

    fn records<T: serde::de::DeserializeOwned>(&self) -> Result<Records<T>, Error> {
        match &self.copy {
            Some(copy) => Records::of_copy(&copy.file, &self.path),
            None => Records::open(&self.path),
        }
    }

    /// Whether the first of its first 100 records that could answer a row is simulated: the
    /// cheap guess whether to ask the endpoint if it is a simulator before planning.
    pub(crate) fn looks_simulated(&self) -> bool {
        let Ok(records) = self.records::<Indexed>() else {
            return false;
        };
        records
            .take(100)
            .map_while(Result::ok)
            .find(|(_, r)| r.status == Status::Ok)
            .is_some_and(|(_, r)| r.simulated)
    }

    pub(crate) fn record_at(&self) -> Result<RecordAt, Error> {
        match &self.copy {
            Some(copy) => RecordAt::of_copy(&copy.file, &self.path),
            None => RecordAt::open(&self.path),
        }
    }
}

/// Which records may answer other rows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Accept {
    /// Simulated answers (`--dry-run`) may answer a run against the simulator only.
    pub simulated: bool,
}

/// The fields of a record the plan reads.
#[derive(Deserialize)]
struct Indexed {
    #[serde(default)]
    fingerprint: String,
    model: String,
    prompt: String,
    status: Status,
    #[serde(default, deserialize_with = "crate::output::record::any_bool")]
    simulated: bool,
}

/// What the plan found.
pub(crate) struct Planned {
    /// `[unit, source << 48 | offset]` by unit: the units a source answers.
    pub fills: Sorted<[u64; 2]>,
    /// Units with the same request as an earlier unit still to send.
    pub followers: RowSet,
    pub counts: Counts,
}

/// How many units each way takes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Units still to send that the plan saw.
    pub units: u64,
    /// Units a source answers, by source kind.
    pub from_own: u64,
    pub from_earlier: u64,
    /// Units that wait for an identical unit's answer.
    pub followers: u64,
    /// Answers left out because they are simulated.
    pub simulated_left_out: u64,
}

/// The key of a request: its fingerprint and the hash of (model, prompt).
fn key(fingerprint: &str, model: &str, prompt: &str) -> Option<(u64, u64)> {
    let fingerprint = parse(fingerprint)?;
    let mut bytes = Vec::with_capacity(model.len() + prompt.len() + 1);
    bytes.extend_from_slice(model.as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(prompt.as_bytes());
    Some((fingerprint, fnv1a(&bytes)))
}

fn sorter<T: spill::Item>() -> Sorter<T> {
    Sorter::new(spill::dir(), spill::memory_items(SORT_ITEMS))
}

fn spill_error(e: std::io::Error) -> Error {
    Error::io(
        format!(
            "cannot sort requests on disk in {} (the output's folder)",
            spill::dir().display()
        ),
        e,
    )
}

/// Joins `units` (the rows still to send; only those in `only` when given) with the answers
/// `sources` hold. `models`: units per row. `dedup`: later units of a request wait for the
/// first one's answer.
pub(crate) fn plan(
    sources: &[AnswerSource],
    accept: Accept,
    units: impl Iterator<Item = Result<Row, Error>>,
    models: u64,
    only: Option<&RowSet>,
    dedup: bool,
    mut held: Option<Held>,
) -> Result<Planned, Error> {
    if sources.len() >= 1 << (64 - OFFSET_BITS) {
        return Err(Error::Config(format!(
            "--reuse names {} outputs; at most {} are taken",
            sources.len(),
            (1u64 << (64 - OFFSET_BITS)) - 1
        )));
    }
    let mut keys: Sorter<[u64; 4]> = sorter();
    let mut counts = Counts::default();
    for (index, source) in sources.iter().enumerate() {
        counts.simulated_left_out += index_answers(index as u64, source, accept, &mut keys)?;
    }
    for row in units {
        // A row that stops the run (a malformed line, a duplicate id) stops the plan there: the
        // rows before it are planned, and the transport meets it and stops as without a plan.
        let Ok(row) = row else { break };
        let RowContent::Request(request) = &row.content else {
            continue;
        };
        let unit = unit(row.row, u64::from(row.slot), models);
        if only.is_some_and(|only| !only.contains(unit)) {
            continue;
        }
        let Some((fingerprint, second)) =
            key(&request.fingerprint, &request.model, &request.prompt)
        else {
            continue;
        };
        counts.units += 1;
        let kind = match held.as_mut().is_some_and(|held| held(&row)) {
            true => HELD,
            false => UNIT,
        };
        keys.push([fingerprint, second, kind, unit])
            .map_err(spill_error)?;
    }
    let mut fills: Sorter<[u64; 2]> = sorter();
    let mut followers = RowSet::default();
    let mut group: Option<(u64, u64)> = None;
    let (mut answer, mut first_sent) = (None, false);
    for item in keys.finish().map_err(spill_error)? {
        let [fingerprint, second, kind, value] = item.map_err(spill_error)?;
        if group != Some((fingerprint, second)) {
            group = Some((fingerprint, second));
            (answer, first_sent) = (None, false);
        }
        match (kind, answer) {
            (ANSWER, None) => answer = Some(value),
            (ANSWER, Some(_)) => {}
            (HELD, _) => first_sent = true,
            (_, Some(answer)) => {
                if sources[(answer >> OFFSET_BITS) as usize].own {
                    counts.from_own += 1;
                } else {
                    counts.from_earlier += 1;
                }
                fills.push([value, answer]).map_err(spill_error)?;
            }
            (_, None) if !first_sent || !dedup => first_sent = true,
            (_, None) => {
                counts.followers += 1;
                followers.insert(value);
            }
        }
    }
    Ok(Planned {
        fills: fills.finish().map_err(spill_error)?,
        followers,
        counts,
    })
}

/// Pushes the key of each answer `source` holds; returns the simulated answers left out.
fn index_answers(
    index: u64,
    source: &AnswerSource,
    accept: Accept,
    keys: &mut Sorter<[u64; 4]>,
) -> Result<u64, Error> {
    let mut simulated = 0;
    let mut records = source.records::<Indexed>()?;
    while let Some(item) = records.next() {
        let (_, record) = item?;
        let usable = match record.status {
            Status::Ok => true,
            Status::Error => source.errors,
        };
        if !usable {
            continue;
        }
        if record.simulated && !accept.simulated {
            simulated += 1;
            continue;
        }
        let start = records.last_start();
        if start >= 1 << OFFSET_BITS {
            break;
        }
        if let Some((fingerprint, second)) = key(&record.fingerprint, &record.model, &record.prompt)
        {
            keys.push([fingerprint, second, ANSWER, index << OFFSET_BITS | start])
                .map_err(spill_error)?;
        }
    }
    Ok(simulated)
}

/// The source and byte offset of a fill's answer.
pub(crate) fn answer_place(value: u64) -> (usize, u64) {
    (
        (value >> OFFSET_BITS) as usize,
        value & ((1 << OFFSET_BITS) - 1),
    )
}
