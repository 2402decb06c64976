//! The resume plan in bounded memory, by sorting and merge-joining instead of an in-memory
//! index (`resume.rs` keeps the index for inputs that mix rows with and without ids).
//!
//! The earlier output is scanned once into sorted runs (`crate::util::spill`) while the input's row
//! keys are sorted on another thread; the two sorted streams are then merged:
//! - every input row has an explicit id: each (row, model) unit meets the records with
//!   `explicit_key(id, model)` whose id is not their row number (the last such record in the
//!   file, as the index did); a unit with a numeric id and no such record meets the record of
//!   its model whose id is its row number `n` (the same tie-break as the index). Claims on one
//!   record happen in row order, as before.
//! - no input row has an id: the k-th input unit with a fingerprint (whose body names the
//!   model) meets the k-th record (by `row`) with that fingerprint whose id is its row number.
//!
//! - a unit with an explicit id that met no record of its model meets the last *foreign* record
//!   (of a model no unit goes to) with its id and its request fingerprint: an earlier output
//!   may name a model as a gateway answered it (`resume.rs`). Only when the output has foreign
//!   records and such units exist is the output read a second time, for those records alone.
//!
//! Foreign records no unit met (of a model dropped from `--model`'s list) are kept unclaimed:
//! the scan keeps one bitset of record indices per model for that.
//!
//! The results: the done rows as a bitset (1 bit per row), the plan's counts, the kept records
//! as a bitset (1 bit per record) and the relabels `(record index, claiming row)` sorted by
//! record index (on disk when many) for the rewrite (`rewrite.rs`), which streams the output and
//! these side by side. Memory: the sorters' buffers (a few
//! MB each) and the bitset, whatever the sizes of input and output.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::api::request::RequestOptions;
use crate::error::Error;
use crate::input::InputOptions;
use crate::input::{Row, RowSet};
use crate::output::read::{file_ends_with_newline, Records, Torn};
use crate::output::record::Status;
use crate::output::resume::{
    explicit_key, id_fp_key, model_key, number_key, scan_alongside, suggest_fresh,
    unit_fingerprint, Claim, Earlier, ModelNames, Plan,
};
use crate::output::rewrite::rewrite;
use crate::util::fingerprint::PreHashed;
use crate::util::spill::{self, Item, Sorted, Sorter};

/// Items each sorter holds in memory (48 bytes each: 3 MB).
const SORT_ITEMS: usize = 1 << 16;
const NONE: u64 = u64::MAX;
const OK: u64 = 1;
const SIMULATED: u64 = 2;

fn sorter<T: Item>() -> Sorter<T> {
    Sorter::new(spill::dir(), spill::memory_items(SORT_ITEMS))
}

/// A plan made by sorting; `None` from [`plan`] when the input mixes rows with and without ids.
pub(crate) struct SortedResume {
    path: PathBuf,
    /// Claimed record indices, and `[record index, claiming row, 1 if the row has no explicit
    /// id, model_key to rename it to or NONE]` of those whose row or model changes, by record
    /// index.
    claims: Option<(RowSet, Sorted<[u64; 4]>)>,
    /// The names of the models this run sends to (for the renamed records).
    names: ModelNames,
    needs_rewrite: bool,
    /// Models each row goes to (for the rewrite's encoder).
    models: u64,
    torn: Option<Torn>,
}

/// What the output scan collected.
struct Scanned {
    /// Records whose id is not their row: `[explicit_key(id, model), index, fingerprint, row,
    /// flags, cost]`.
    by_id: Sorted<[u64; 6]>,
    /// Records whose id is their row: `[fingerprint, row, index, flags, cost, model_key]`.
    anonymous: Sorted<[u64; 6]>,
    census: Census,
}

/// What the output scan learned besides the sorted records: what the plan needs once the units
/// have met their records.
struct Census {
    /// Per `model_key`: the indices of its records.
    by_model: HashMap<u64, RowSet, PreHashed>,
    records: u64,
    torn: Option<Torn>,
    old_header: bool,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| {
        Error::io(
            format!(
                "cannot sort the resume index of {} in a temporary file in {}",
                path.display(),
                spill::dir().display()
            ),
            e,
        )
    }
}

/// A record's `OK` and `SIMULATED` bits.
fn flags(record: &Earlier) -> u64 {
    (if record.status == Status::Ok { OK } else { 0 })
        | if record.simulated { SIMULATED } else { 0 }
}

fn scan(path: &Path) -> Result<Scanned, Error> {
    let io = io_error(path);
    let mut by_id = sorter::<[u64; 6]>();
    let mut anonymous = sorter::<[u64; 6]>();
    let mut by_model: HashMap<u64, RowSet, PreHashed> = HashMap::default();
    let mut records = Records::<Earlier>::open(path)?;
    let old_header = !records.has_current_header();
    let mut n = 0u64;
    let mut row_text = String::new();
    for item in &mut records {
        let (_, record) = item.map_err(suggest_fresh)?;
        let fp = unit_fingerprint(&record.fingerprint, &record.model);
        let flags = flags(&record);
        let cost = record.cost_usd.unwrap_or(0.0).to_bits();
        let model = model_key(&record.model);
        by_model.entry(model).or_default().insert(n);
        row_text.clear();
        use std::fmt::Write as _;
        let _ = write!(row_text, "{}", record.row);
        if record.id == row_text {
            anonymous
                .push([fp, record.row, n, flags, cost, model])
                .map_err(&io)?;
        } else {
            by_id
                .push([
                    explicit_key(&record.id, &record.model),
                    n,
                    fp,
                    record.row,
                    flags,
                    cost,
                ])
                .map_err(&io)?;
        }
        n += 1;
    }
    Ok(Scanned {
        by_id: by_id.finish().map_err(&io)?,
        anonymous: anonymous.finish().map_err(&io)?,
        census: Census {
            by_model,
            records: n,
            torn: records.torn().cloned(),
            old_header,
        },
    })
}

/// The input's keys, one per (row, model) unit.
struct Keys {
    /// Units with an explicit id: `[explicit_key(id, model), row, fingerprint, id as a number
    /// or NONE, unit, model_key, id_fp_key(id, fingerprint)]`.
    explicit: Sorted<[u64; 7]>,
    /// Units without: `[fingerprint, row, unit, model_key]`.
    anonymous: Sorted<[u64; 4]>,
    /// The units' models.
    names: ModelNames,
    mixed: bool,
    with_ids: bool,
    /// `[128-bit id key (high, low), row]` of the rows read, for the duplicate-id check.
    ids: Sorter<[u64; 3]>,
}

fn keys<I>(path: &Path, rows: I, models: u64) -> Result<Keys, Error>
where
    I: Iterator<Item = Result<Row, Error>>,
{
    let io = io_error(path);
    let mut explicit = sorter::<[u64; 7]>();
    let mut anonymous = sorter::<[u64; 4]>();
    let mut ids = sorter::<[u64; 3]>();
    let mut names = ModelNames::default();
    let (mut with_id, mut without) = (0u64, 0u64);
    for row in rows {
        let row = row?;
        let model = model_key(row.model());
        names.note(model, row.model());
        let unit = crate::input::models::unit(row.row, u64::from(row.slot), models);
        // A row's id once, whatever the number of its models.
        if row.explicit_id && row.slot == 0 {
            let key = crate::input::duplicate_ids::key(&row.id);
            ids.push([(key >> 64) as u64, key as u64, row.row])
                .map_err(&io)?;
        }
        let fp = unit_fingerprint(row.fingerprint(), row.model());
        if row.explicit_id {
            with_id += 1;
            let number = row.id.parse::<u64>().unwrap_or(NONE);
            explicit
                .push([
                    explicit_key(&row.id, row.model()),
                    row.row,
                    fp,
                    number,
                    unit,
                    model,
                    id_fp_key(&row.id, fp),
                ])
                .map_err(&io)?;
        } else {
            without += 1;
            anonymous.push([fp, row.row, unit, model]).map_err(&io)?;
        }
        if with_id > 0 && without > 0 {
            return Ok(Keys {
                explicit: explicit.finish().map_err(&io)?,
                anonymous: anonymous.finish().map_err(&io)?,
                names,
                mixed: true,
                with_ids: true,
                ids,
            });
        }
    }
    Ok(Keys {
        explicit: explicit.finish().map_err(&io)?,
        anonymous: anonymous.finish().map_err(&io)?,
        names,
        mixed: false,
        with_ids: with_id > 0,
        ids,
    })
}

/// A sorted stream with one item of look-ahead.
struct Peek<T: Item> {
    items: Sorted<T>,
    next: Option<T>,
}

impl<T: Item> Peek<T> {
    fn new(mut items: Sorted<T>) -> Result<Self, std::io::Error> {
        let next = items.next().transpose()?;
        Ok(Peek { items, next })
    }

    fn take(&mut self) -> Result<Option<T>, std::io::Error> {
        let item = self.next;
        if item.is_some() {
            self.next = self.items.next().transpose()?;
        }
        Ok(item)
    }
}

/// Records sorted by a key (their first item), met by units in key order: the last record with
/// each key (the one the in-memory index keeps: the last in file order), and whether a unit
/// claimed it.
struct LastByKey {
    records: Peek<[u64; 6]>,
    current: Option<([u64; 6], bool)>,
}

impl LastByKey {
    fn new(records: Sorted<[u64; 6]>) -> Result<Self, std::io::Error> {
        Ok(LastByKey {
            records: Peek::new(records)?,
            current: None,
        })
    }

    /// The last record with `key` and whether it is claimed; keys come in increasing order.
    fn last_with(&mut self, key: u64) -> Result<&mut Option<([u64; 6], bool)>, std::io::Error> {
        if self.current.is_none_or(|(r, _)| r[0] != key) {
            self.current = None;
            while let Some(r) = self.records.next {
                if r[0] > key {
                    break;
                }
                self.records.take()?;
                if r[0] == key && self.records.next.is_none_or(|next| next[0] != key) {
                    self.current = Some((r, false));
                }
            }
        }
        Ok(&mut self.current)
    }
}

/// Tallies the claims as they are decided.
struct Tally {
    keep_errors: bool,
    accept_simulated: bool,
    limit: u64,
    plan: Plan,
    done: RowSet,
    kept: RowSet,
    /// The records a unit met (claimed or not): none of them is foreign.
    met: RowSet,
    /// `[record index, claiming row, 1 if the row has no explicit id, the model_key its
    /// record is renamed to or NONE]`.
    relabels: Sorter<[u64; 4]>,
    claimed: u64,
    relabelled: u64,
}

impl Tally {
    /// A tally with nothing decided yet; rows past `limit` are met but not counted.
    fn new(keep_errors: bool, accept_simulated: bool, limit: Option<u64>, models: u64) -> Self {
        Tally {
            keep_errors,
            accept_simulated,
            limit: limit.unwrap_or(u64::MAX),
            plan: Plan {
                models,
                ..Plan::default()
            },
            done: RowSet::default(),
            kept: RowSet::default(),
            met: RowSet::default(),
            relabels: sorter(),
            claimed: 0,
            relabelled: 0,
        }
    }

    /// Row `row`'s unit `unit` (fingerprint `fp`) meets an unclaimed record; true when it
    /// claims it. `rename`: the unit's model, when the record names a foreign one.
    fn meet(
        &mut self,
        (row, unit): (u64, u64),
        fp: u64,
        (anonymous, rename): (bool, Option<u64>),
        record: (u64, u64, u64, u64, u64),
        model: u64,
    ) -> Result<bool, std::io::Error> {
        let (index, record_fp, record_row, flags, cost) = record;
        self.met.insert(index);
        let claim = if record_fp != fp {
            Claim::Changed
        } else if flags & OK == 0 && !self.keep_errors {
            Claim::RetryError
        } else if flags & SIMULATED != 0 && !self.accept_simulated {
            Claim::Simulated
        } else {
            Claim::Done
        };
        self.count((row, unit), claim);
        if claim == Claim::Done {
            self.kept.insert(index);
            self.claimed += 1;
            if record_row != row || rename.is_some() {
                let model = rename.unwrap_or(NONE);
                self.relabels
                    .push([index, row, u64::from(anonymous), model])?;
                self.relabelled += 1;
            }
            self.plan.spent += f64::from_bits(cost);
            if flags & OK == 0 {
                self.plan.kept_errors += 1;
            } else {
                self.plan.worked.insert(model);
            }
        }
        Ok(claim == Claim::Done)
    }

    fn count(&mut self, (row, unit): (u64, u64), claim: Claim) {
        if row > self.limit {
            return;
        }
        self.plan.rows += 1;
        match claim {
            Claim::Done => {
                self.plan.done += 1;
                self.done.insert(unit);
            }
            Claim::Changed => self.plan.changed += 1,
            Claim::RetryError => self.plan.retried_errors += 1,
            Claim::Simulated => self.plan.simulated += 1,
            Claim::New => {}
        }
    }

    /// Keeps the records no unit met, as they are: those of foreign models (counted as other
    /// models'), then any other (of no row of this input: a smaller input, another shard's
    /// rows — a paid record is never deleted). Returns how many it kept.
    fn keep_unmet(&mut self, census: &Census, foreign_models: &HashSet<u64>) -> u64 {
        let mut foreign = 0;
        for model in foreign_models {
            for index in census.by_model[model].iter() {
                if !self.met.contains(index) {
                    foreign += 1;
                    self.kept.insert(index);
                }
            }
        }
        self.plan.other_models += foreign;
        let mut unclaimed = 0;
        for index in 0..census.records {
            if !self.met.contains(index) && !self.kept.contains(index) {
                self.kept.insert(index);
                unclaimed += 1;
            }
        }
        self.plan.unclaimed += unclaimed;
        foreign + unclaimed
    }

    /// The plan made: the resume (holding what its rewrite needs, when the output must change),
    /// the counts and the done rows. `unmet`: the records [`Tally::keep_unmet`] kept.
    fn finish(
        self,
        path: &Path,
        census: Census,
        names: ModelNames,
        unmet: u64,
    ) -> Result<(SortedResume, Plan, RowSet), Error> {
        let unterminated = !file_ends_with_newline(path);
        let needs_rewrite = census.torn.is_some()
            || unterminated
            || census.old_header
            || self.claimed + unmet < census.records
            || self.relabelled > 0;
        let claims = if needs_rewrite {
            let relabels = self.relabels.finish().map_err(io_error(path))?;
            Some((self.kept, relabels))
        } else {
            None
        };
        let resume = SortedResume {
            path: path.to_path_buf(),
            claims,
            names,
            needs_rewrite,
            models: self.plan.models,
            torn: census.torn,
        };
        Ok((resume, self.plan, self.done))
    }
}

/// Makes the plan by sorting; `Ok(None)` when the input mixes rows with and without ids (the
/// caller then uses the in-memory index).
///
/// `unchecked`: the rows come from `input::open_unchecked` of this (whole, unsharded) input, so
/// duplicate ids are found here, by sorting their 128-bit keys, and handed to later readings
/// (`duplicate_ids::remember`) — one pass over the input instead of two. When the pass finds a
/// duplicate or stops at an error, the input is read again with the check on, and its first
/// error (the same as without this shortcut) is returned.
pub(crate) fn plan<I>(
    path: &Path,
    keep_errors: bool,
    accept_simulated: bool,
    limit: Option<u64>,
    models: u64,
    rows: I,
    unchecked: Option<(&InputOptions, &RequestOptions)>,
) -> Result<Option<(SortedResume, Plan, RowSet)>, Error>
where
    I: Iterator<Item = Result<Row, Error>>,
{
    let (scanned, keys) = scan_alongside(|| scan(path), || keys(path, rows, models));
    let keys = match (keys, unchecked) {
        (Ok(keys), _) => keys,
        // An input problem is re-read with the usual checks, for the same message as a run;
        // anything else (a spill file that cannot be written) is the error itself.
        (Err(Error::Input { .. }), Some(input)) => return Err(first_input_error(input)),
        (Err(e), _) => return Err(e),
    };
    let scanned = scanned?;
    if keys.mixed {
        // The pass stopped early: its ids are not all there; the caller reads with the check on.
        return Ok(None);
    }
    if let Some(input) = unchecked {
        check_duplicate_ids(path, keys.ids, input)?;
    }
    let mut tally = Tally::new(keep_errors, accept_simulated, limit, models);
    let census = scanned.census;
    let foreign_models: HashSet<u64> = census
        .by_model
        .keys()
        .filter(|model| !keys.names.contains(**model))
        .copied()
        .collect();
    if keys.with_ids {
        let records = (scanned.by_id, scanned.anonymous);
        join_with_ids(&mut tally, path, records, keys.explicit, &foreign_models)?;
    } else {
        join_anonymous(&mut tally, scanned.anonymous, keys.anonymous, &keys.names)
            .map_err(io_error(path))?;
    }
    let unmet = tally.keep_unmet(&census, &foreign_models);
    tally.finish(path, census, keys.names, unmet).map(Some)
}

/// The first error a checked reading of the input gives (`input::open`, duplicate ids checked).
fn first_input_error((opts, request): (&InputOptions, &RequestOptions)) -> Error {
    match crate::input::open(opts, request, None) {
        Ok(rows) => rows.filter_map(Result::err).next().unwrap_or_else(|| {
            Error::Config(
                "the resume plan's pass over the input failed, a second pass did not".into(),
            )
        }),
        Err(e) => e,
    }
}

/// Finds the input's duplicate ids by sorting their keys (`ids`, `[128-bit id key (high, low),
/// row]`) and hands them to later readings of the input (`duplicate_ids::remember`); when there
/// is one, returns the error a checked reading of the input gives.
fn check_duplicate_ids(
    path: &Path,
    ids: Sorter<[u64; 3]>,
    (opts, request): (&InputOptions, &RequestOptions),
) -> Result<(), Error> {
    let io = io_error(path);
    let mut duplicates = RowSet::default();
    let mut any = false;
    let mut last = None;
    for item in ids.finish().map_err(&io)? {
        let [high, low, row] = item.map_err(&io)?;
        if last == Some((high, low)) {
            duplicates.insert(row);
            any = true;
        }
        last = Some((high, low));
    }
    crate::input::duplicate_ids::remember(opts, duplicates);
    if any {
        return Err(first_input_error((opts, request)));
    }
    Ok(())
}

/// Units with explicit ids against the records (`join_explicit`); then, when the output has
/// foreign records (of `foreign_models`), the units that met none against those, read again for
/// that (`scan_foreign`, `join_foreign`).
fn join_with_ids(
    tally: &mut Tally,
    path: &Path,
    (by_id, anonymous): (Sorted<[u64; 6]>, Sorted<[u64; 6]>),
    units: Sorted<[u64; 7]>,
    foreign_models: &HashSet<u64>,
) -> Result<(), Error> {
    let io = io_error(path);
    let foreign = !foreign_models.is_empty();
    let unmet = join_explicit(tally, by_id, anonymous, units, foreign).map_err(&io)?;
    if let Some(unmet) = unmet {
        let records = scan_foreign(path, foreign_models)?;
        join_foreign(tally, records, unmet).map_err(&io)?;
    }
    Ok(())
}

/// Units that met no record, for the foreign records: `[id_fp_key(id, fingerprint), row,
/// fingerprint, unit, model_key]`.
type Unmet = Sorter<[u64; 5]>;

/// Rows with explicit ids against the records: by id, then (numeric ids without such a record)
/// by the row number of records whose id is their row. The units that met no record are
/// returned when `foreign` (the output has foreign records), and counted new otherwise.
fn join_explicit(
    tally: &mut Tally,
    by_id: Sorted<[u64; 6]>,
    anonymous: Sorted<[u64; 6]>,
    rows: Sorted<[u64; 7]>,
    foreign: bool,
) -> Result<Option<Peek<[u64; 5]>>, std::io::Error> {
    let mut unmet: Option<Unmet> = foreign.then(sorter);
    let mut none = |tally: &mut Tally, [id_fp, row, fp, unit, model]: [u64; 5]| match &mut unmet {
        Some(unmet) => unmet.push([id_fp, row, fp, unit, model]),
        None => {
            tally.count((row, unit), Claim::New);
            Ok(())
        }
    };
    let mut records = LastByKey::new(by_id)?;
    // Units to look up by number: `[number_key(number, model), row, fingerprint, unit, id_fp,
    // model]`.
    let mut by_number = sorter::<[u64; 6]>();
    for row in rows {
        let [key, row, fp, number, unit, model, id_fp] = row?;
        match records.last_with(key)? {
            Some((_, true)) => tally.count((row, unit), Claim::New),
            Some((r, claimed)) => {
                let record = (r[1], r[2], r[3], r[4], r[5]);
                *claimed = tally.meet((row, unit), fp, (false, None), record, model)?;
            }
            None if number != NONE => {
                by_number.push([number_key(number, model), row, fp, unit, id_fp, model])?
            }
            None => none(tally, [id_fp, row, fp, unit, model])?,
        }
    }
    let mut lookups = Peek::new(by_number.finish()?)?;
    if lookups.next.is_none() {
        return unmet.map(|u| Peek::new(u.finish()?)).transpose();
    }
    // Records whose id is their row, by (row, model):
    // `[number_key(row, model), fingerprint, index, flags, cost, row]`; of several with one
    // key, the last (largest fingerprint, then index) is the one the in-memory index found.
    let mut by_row = sorter::<[u64; 6]>();
    for r in anonymous {
        let [fp, row, index, flags, cost, model] = r?;
        by_row.push([number_key(row, model), fp, index, flags, cost, row])?;
    }
    let mut records = LastByKey::new(by_row.finish()?)?;
    while let Some([number, row, fp, unit, id_fp, model]) = lookups.take()? {
        match records.last_with(number)? {
            Some((_, true)) => tally.count((row, unit), Claim::New),
            Some((r, claimed)) => {
                let record = (r[2], r[1], r[5], r[3], r[4]);
                *claimed = tally.meet((row, unit), fp, (false, None), record, model)?;
            }
            None => none(tally, [id_fp, row, fp, unit, model])?,
        }
    }
    unmet.map(|u| Peek::new(u.finish()?)).transpose()
}

/// Reads the output again for its foreign records (of `models`):
/// `[id_fp_key(id, fingerprint), index, fingerprint, row, flags, cost]`, sorted.
fn scan_foreign(path: &Path, models: &HashSet<u64>) -> Result<Sorted<[u64; 6]>, Error> {
    let io = io_error(path);
    let mut foreign = sorter::<[u64; 6]>();
    let mut records = Records::<Earlier>::open(path)?;
    for (index, item) in (&mut records).enumerate() {
        let (_, record) = item.map_err(suggest_fresh)?;
        if !models.contains(&model_key(&record.model)) {
            continue;
        }
        let fp = unit_fingerprint(&record.fingerprint, &record.model);
        foreign
            .push([
                id_fp_key(&record.id, fp),
                index as u64,
                fp,
                record.row,
                flags(&record),
                record.cost_usd.unwrap_or(0.0).to_bits(),
            ])
            .map_err(&io)?;
    }
    foreign.finish().map_err(&io)
}

/// Units that met no record against the foreign records with their id and fingerprint (the
/// last in the file of each).
fn join_foreign(
    tally: &mut Tally,
    records: Sorted<[u64; 6]>,
    mut units: Peek<[u64; 5]>,
) -> Result<(), std::io::Error> {
    let mut records = LastByKey::new(records)?;
    while let Some([key, row, fp, unit, model]) = units.take()? {
        match records.last_with(key)? {
            Some((_, true)) | None => tally.count((row, unit), Claim::New),
            Some((r, claimed)) => {
                let record = (r[1], r[2], r[3], r[4], r[5]);
                *claimed = tally.meet((row, unit), fp, (false, Some(model)), record, model)?;
            }
        }
    }
    Ok(())
}

/// Rows without ids against the records whose id is their row: the k-th row with a
/// fingerprint meets the k-th such record (by row) with it.
fn join_anonymous(
    tally: &mut Tally,
    records: Sorted<[u64; 6]>,
    rows: Sorted<[u64; 4]>,
    names: &ModelNames,
) -> Result<(), std::io::Error> {
    let mut records = Peek::new(records)?;
    for row in rows {
        let [fp, row, unit, model] = row?;
        while records.next.is_some_and(|r| r[0] < fp) {
            records.take()?;
        }
        match records.next {
            Some(r) if r[0] == fp => {
                records.take()?;
                let [fp, record_row, index, flags, cost, record_model] = r;
                let rename = (!names.contains(record_model)).then_some(model);
                let record = (index, fp, record_row, flags, cost);
                tally.meet((row, unit), fp, (true, rename), record, model)?;
            }
            _ => tally.count((row, unit), Claim::New),
        }
    }
    Ok(())
}

impl SortedResume {
    /// The torn last record that the rewrite drops, if there was one.
    pub(crate) fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }

    /// Rewrites the output crash-safely, in place, with only the claimed records (relabelled),
    /// when anything must change.
    pub(crate) fn rewrite_if_needed(self) -> Result<(), Error> {
        if !self.needs_rewrite {
            return Ok(());
        }
        let sort_io = io_error(&self.path);
        let (kept, relabels) = self.claims.expect("kept for the rewrite");
        let mut relabels = Peek::new(relabels).map_err(&sort_io)?;
        rewrite(&self.path, self.models, u64::MAX, |index, record| {
            if !kept.contains(index) {
                return Ok(false);
            }
            if let Some([i, row, anonymous, model]) = relabels.next {
                if i == index {
                    relabels.take().map_err(&sort_io)?;
                    record.row = row;
                    if anonymous == 1 {
                        record.id = row.to_string();
                    }
                    if model != NONE {
                        self.names.rename(record, model);
                    }
                }
            }
            Ok(true)
        })
    }
}

#[cfg(test)]
mod tests {
    //! The sorted plan against the in-memory index (`resume.rs`) on random outputs and inputs.
    use super::*;
    use crate::api::request::ChatRequest;
    use crate::input::RowContent;
    use crate::output::record::Record;
    use crate::output::resume::ResumeIndex;

    struct Rng(u64);
    impl Rng {
        fn next(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    /// The models of the test's records and units; a run's list is a prefix of them.
    const MODELS: [&str; 3] = ["m", "n", "o"];
    /// The names a gateway answered for them, which some earlier records hold.
    const RENAMED: [&str; 3] = ["gw/m", "gw/n", "gw/o"];

    /// A unit's request fingerprint: the row's content `fp` (0: a row without a request) sent
    /// to model `m`.
    fn unit_fp(fp: u64, m: usize) -> String {
        if fp == 0 {
            String::new()
        } else {
            format!("{:016x}", fp * 8 + m as u64)
        }
    }

    fn row(row: u64, id: Option<String>, fp: u64, m: usize, slot: u32) -> Row {
        let content = if fp == 0 {
            RowContent::Invalid {
                prompt: String::new(),
                message: "empty prompt".into(),
                model: MODELS[m].into(),
            }
        } else {
            RowContent::Request(ChatRequest {
                body: bytes::Bytes::new(),
                model: MODELS[m].into(),
                prompt: String::new(),
                estimated_prompt_tokens: 0,
                max_tokens: None,
                fingerprint: unit_fp(fp, m),
                prefix: None,
            })
        };
        Row {
            row,
            line: row,
            explicit_id: id.is_some(),
            id: id.unwrap_or_else(|| row.to_string()),
            content,
            kept: None,
            slot,
            more: Vec::new(),
            own_model: false,
        }
    }

    fn id_pool(rng: &mut Rng) -> String {
        match rng.next(4) {
            0 => format!("{}", rng.next(30)),
            1 => format!("0{}", rng.next(30)),
            _ => format!("k{}", rng.next(40)),
        }
    }

    #[test]
    fn same_plan_and_rewrite_as_the_in_memory_index() {
        let dir = std::env::temp_dir().join(format!("pb-resume-sorted-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        crate::util::spill::TEST_ITEMS.with(|n| n.set(Some(3)));
        let mut foreign_kept = 0;
        let mut several_done = 0;
        let mut foreign_met = 0;
        let mut renamed_back = 0;
        for seed in 1..=600u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let explicit = rng.next(2) == 0;
            let n_rows = 1 + rng.next(40);
            let mut used = std::collections::HashSet::new();
            let mut rows = Vec::new();
            for r in 1..=n_rows {
                let id = if explicit {
                    let mut id = id_pool(&mut rng);
                    while !used.insert(id.clone()) {
                        id = format!("{id}x");
                    }
                    Some(id)
                } else {
                    None
                };
                // Content 0: a row without a request; an own model: sent to it alone.
                let own = (rng.next(8) == 0).then(|| rng.next(3) as usize);
                rows.push((r, id, rng.next(4), own));
            }
            // The run sends each row to the first `models` of MODELS (1 to 3).
            let models = 1 + rng.next(3) as usize;
            let mut text = String::new();
            for _ in 0..rng.next(50) {
                let record_row = 1 + rng.next(n_rows + 5);
                let id = match rng.next(3) {
                    0 => record_row.to_string(),
                    1 => id_pool(&mut rng),
                    _ => rows[rng.next(n_rows) as usize]
                        .1
                        .clone()
                        .unwrap_or_else(|| record_row.to_string()),
                };
                let m = rng.next(3) as usize;
                let record = Record {
                    id,
                    row: record_row,
                    prompt: "p".into(),
                    completion: Some("c".into()),
                    finish_reason: None,
                    model: if rng.next(4) == 0 {
                        RENAMED[m].into()
                    } else {
                        MODELS[m].into()
                    },
                    prompt_tokens: 1,
                    cached_tokens: 0,
                    completion_tokens: 1,
                    reasoning_tokens: 0,
                    total_tokens: 2,
                    latency_ms: 1,
                    attempts: 1,
                    status: if rng.next(5) == 0 {
                        Status::Error
                    } else {
                        Status::Ok
                    },
                    error: None,
                    response_id: None,
                    cost_usd: Some(rng.next(100) as f64 / 8.0),
                    fingerprint: unit_fp(rng.next(4), m),
                    simulated: rng.next(6) == 0,
                    kept: None,
                    started_at: None,
                    finished_at: None,
                };
                text.push_str(&serde_json::to_string(&record).unwrap());
                text.push('\n');
            }
            let keep_errors = rng.next(2) == 0;
            let accept_simulated = rng.next(2) == 0;
            let limit = (rng.next(3) == 0).then(|| 1 + rng.next(n_rows));
            let make_rows = || {
                let mut units = Vec::new();
                for (r, id, fp, own) in &rows {
                    match own {
                        Some(m) => units.push(Ok(row(*r, id.clone(), *fp, *m, 0))),
                        None => {
                            for m in 0..models {
                                units.push(Ok(row(*r, id.clone(), *fp, m, m as u32)));
                            }
                        }
                    }
                }
                units.into_iter()
            };
            let models = models as u64;
            let a = dir.join(format!("a{seed}.jsonl"));
            let b = dir.join(format!("b{seed}.jsonl"));
            std::fs::write(&a, &text).unwrap();
            std::fs::write(&b, &text).unwrap();
            let (index, want, want_done) = ResumeIndex::plan(
                &a,
                keep_errors,
                accept_simulated,
                limit,
                models,
                make_rows(),
            )
            .unwrap();
            index.rewrite_if_needed().unwrap();
            let (sorted, got, got_done) = plan(
                &b,
                keep_errors,
                accept_simulated,
                limit,
                models,
                make_rows(),
                None,
            )
            .unwrap()
            .expect("not mixed");
            sorted.rewrite_if_needed().unwrap();
            let what = format!("seed {seed}: {want:?} vs {got:?}");
            assert_eq!(want.rows, got.rows, "{what}");
            assert_eq!(want.done, got.done, "{what}");
            assert_eq!(want.changed, got.changed, "{what}");
            assert_eq!(want.retried_errors, got.retried_errors, "{what}");
            assert_eq!(want.kept_errors, got.kept_errors, "{what}");
            assert_eq!(want.simulated, got.simulated, "{what}");
            assert_eq!(want.other_models, got.other_models, "{what}");
            assert_eq!(want.worked.sorted(), got.worked.sorted(), "{what}");
            assert!((want.spent - got.spent).abs() < 1e-9, "{what}");
            for unit in 0..(n_rows + 3) * models {
                assert_eq!(
                    want_done.contains(unit),
                    got_done.contains(unit),
                    "{what} unit {unit}"
                );
            }
            assert_eq!(
                std::fs::read_to_string(&a).unwrap(),
                std::fs::read_to_string(&b).unwrap(),
                "{what}\n{text}"
            );
            // Records of a model no unit goes to, whose request no unit sends, are all kept,
            // unchanged.
            let (sent, fingerprints): (HashSet<String>, HashSet<String>) = make_rows()
                .map(|r| {
                    let r = r.unwrap();
                    (r.model().to_string(), r.fingerprint().to_string())
                })
                .unzip();
            let foreign = |text: &str, unsent: bool| -> Vec<String> {
                text.lines()
                    .filter(|l| {
                        let record = serde_json::from_str::<serde_json::Value>(l).unwrap();
                        let fp = record["fingerprint"].as_str().unwrap();
                        !sent.contains(record["model"].as_str().unwrap())
                            && (!unsent || fp.is_empty() || !fingerprints.contains(fp))
                    })
                    .map(String::from)
                    .collect()
            };
            let after = std::fs::read_to_string(&a).unwrap();
            assert_eq!(foreign(&text, true), foreign(&after, true), "{what}");
            foreign_kept += usize::from(!foreign(&after, true).is_empty());
            // Foreign records a unit met (an explicit id and its request, or an anonymous
            // row's request) are not counted as other models'.
            foreign_met += usize::from(want.other_models < foreign(&text, false).len() as u64);
            // A claimed renamed record is rewritten under the model its request went to.
            renamed_back += usize::from(after.matches("gw/").count() < text.matches("gw/").count());
            several_done += usize::from(models > 1 && want.done > 0);
            std::fs::remove_file(&a).unwrap();
            std::fs::remove_file(&b).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            foreign_kept > 20,
            "records of dropped models: {foreign_kept}"
        );
        assert!(
            several_done > 20,
            "plans with several models: {several_done}"
        );
        assert!(
            foreign_met > 20,
            "plans meeting foreign records: {foreign_met}"
        );
        assert!(renamed_back > 20, "plans renaming records: {renamed_back}");
    }
}
