//! `--via batch`: the same run through the provider's Batch API, at its batch price (half the
//! live price at OpenAI), answers within the completion window instead of seconds.
//!
//! After the live runner's prepare stage (input checked, key, output locked, `--fresh`, resume
//! plan: rows done in OUTPUT are never submitted), the rows become Batch input files
//! (`split.rs`, within `--batch-max-requests` / `--batch-max-bytes`), each is uploaded and made
//! a batch (`client.rs`), and the run polls them every `--poll-every`, printing a line per batch
//! when its status changes. A final batch's output and error files become the same records a
//! live run writes (token counts from each answer's usage, cost at the batch rates, `attempts` =
//! the batches the row went through, an error file's message as the record's `error`), appended
//! through the output writer — so `report`, `estimate --from-output` and resume need nothing
//! special.
//!
//! Never paying twice: every step is recorded in the state file (`state.rs`, `OUTPUT.batch.json`)
//! before the next one starts, so a re-run after Ctrl-C, `kill -9` or a reboot resumes where the
//! last one stopped: an uploaded file whose batch was not recorded is looked up among the
//! batches created since its upload (by input file id) before a batch is created for it; a created
//! batch is polled, never created again; a batch whose records were only partly written is
//! downloaded again and only the rows without a record are written. Rows of an expired, failed
//! or cancelled batch, rows the error file reports with a transient error (429, 5xx,
//! `batch_expired`) and rows missing from both files go into a new batch (or, with
//! `--fallback live`, are sent live), up to [`DEFAULT_MAX_ATTEMPTS`] batches per row; after that
//! they get an error record. Rows the error file reports with a permanent error (400, …) get an
//! error record with the API's message, as a live run would write.
//!
//! `--json-schema`: every answer is checked with the live worker's checker
//! (`worker::check_answer`) and an accepted one completed the same way (`worker::complete_ok`:
//! `parsed`, or a CSV output's columns). An answer that fails the schema was paid for: its
//! tokens and cost are kept in the state (`spent`, per unit) and the row goes into a new batch
//! like a transient failure, up to the same batches per row; the row's record — ok, or the
//! error naming the rule — then carries every paid answer, and `--max-cost` counts the kept
//! spend before it submits another batch. With `--fallback live`, the rows handed to the live
//! runner take their kept spend with them (`spent::Carried`) and their live records hold it;
//! the state keeps it until the live part completes (`forget_carried_spend`), and a later run
//! drops the spend of rows that have a record by then.
//!
//! Debug builds only: `PROMPTBATCH_TEST_ABORT_AT=after-upload|create-unsaved|after-create|
//! during-download` aborts the process at that point (as `kill -9` would), for the tests.

mod answers;
mod claims;
mod client;
pub(crate) mod options;
mod split;
mod state;
mod unmatched;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::api::schema::AnswerSchema;
use crate::api::{ApiClient, ChatRequest};
use crate::error::Error;
use crate::input::{self, RowContent, RowSet};
use crate::job::prepare::Prepared;
use crate::job::Job;
use crate::money::cost::{Billing, PriceTable};
use crate::money::spent::{Carried, Spent};
use crate::output::record::RowInfo;
use crate::output::{Finished, Record, Writer};
use crate::progress::shutdown::Shutdown;
use crate::progress::{Counters, Display, StopReason, Summary};
use answers::{Answers, LineOutcome};
use claims::Claims;
use client::{BatchClient, BatchObject, Created};
use split::Splitter;
use state::{Entry, RowRef, State};

pub use crate::batch::options::{
    parse_batch_of_file, BatchOptions, Fallback, Via, DEFAULT_COMPLETION_WINDOW,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BYTES, DEFAULT_MAX_PENDING, DEFAULT_MAX_REQUESTS,
    DEFAULT_POLL_EVERY,
};

/// How the batch part of a run ended (returned once per run: its size does not matter).
#[allow(clippy::large_enum_variant)]
pub(crate) enum BatchEnd {
    /// Done (or stopped): the run's summary.
    Done(Summary),
    /// `--fallback live`: these rows are to be sent live by the live runner, which goes on
    /// counting into the batch part's counters (one summary for the whole run).
    Live(Prepared, Arc<Counters>),
}

/// Rows of final batches collected in one pass over the input (where their answers lie in the
/// downloaded files is held in memory meanwhile: `answers.rs`).
const COLLECT_ROWS: usize = 200_000;

/// Downloads of a final batch's files before it is left for a later try (when they hold
/// fewer lines than the batch reports done).
const DOWNLOADS: u32 = 3;

/// Output tokens assumed for the worst case of a request without `max_tokens`.
const WORST_OUTPUT_TOKENS: u64 = 4096;

/// Runs the batch part of a job on a prepared run.
pub(crate) async fn run(
    opts: &Job,
    mut prepared: Prepared,
    shutdown: &Shutdown,
    started: Instant,
) -> Result<BatchEnd, Error> {
    let counters = Arc::new(Counters::default());
    let rows = std::mem::replace(&mut prepared.rows, Box::new(std::iter::empty()));
    let batch_run = BatchRun::new(opts, &prepared, &counters)?;
    let (drive, skip) = drive_batches(batch_run, rows, shutdown).await?;
    match drive {
        Drive::GoLive(handover) => {
            let prepared = hand_to_live(opts, prepared, skip, handover, &counters)?;
            Ok(BatchEnd::Live(prepared, counters))
        }
        Drive::Stopped(stop) => Ok(BatchEnd::Done(conclude(
            opts, &prepared, stop, &counters, started,
        ))),
    }
}

/// Submits, polls and collects until every row has a record, the run stops, or rows are left
/// for `--fallback live`; returns how it ended and the rows with a record.
async fn drive_batches(
    mut batch_run: BatchRun<'_>,
    rows: input::RowStream,
    shutdown: &Shutdown,
) -> Result<(Drive, RowSet), Error> {
    // A second interrupt drops whatever step is under way: every step is saved before the next
    // starts, so stopping anywhere is as safe as `kill -9`, and the same command resumes.
    let drive = tokio::select! {
        drive = batch_run.drive(rows, shutdown) => drive?,
        _ = shutdown.abort.cancelled() => {
            say!("stopped at once (second interrupt); the same command resumes where this run stopped");
            Drive::Stopped(StopReason::Interrupted)
        }
    };
    Ok((drive, batch_run.skip))
}

/// `--fallback live`: the rows without a record go to the live runner, whose `--max-cost`
/// counts what the batch part of this run spent. The batch part's records count as dispatched
/// rows, so the live runner's "dispatched but no record" check stays true on shared counters.
fn hand_to_live(
    opts: &Job,
    mut prepared: Prepared,
    skip: RowSet,
    handover: Handover,
    counters: &Counters,
) -> Result<Prepared, Error> {
    prepared.rows = input::open(&opts.input, &opts.request, Some(skip.clone()))?;
    say!(
        "--fallback live: {} batch records written; the rows left are sent live now (at the live price)",
        crate::util::human::group(counters.done())
    );
    counters.dispatched.fetch_add(counters.done(), Relaxed);
    // Answers of rows going live that failed --json-schema were paid: their live records
    // will hold them, and --max-cost counts them from the start.
    prepared.carried = Carried::new(
        handover.spent,
        handover.earlier,
        opts.request.models_per_row(),
    );
    let batch_spent = counters.cost_totals().spent_usd() + prepared.carried.cost_usd();
    prepared.plan = match prepared.plan.take() {
        Some(mut plan) => {
            plan.spent += batch_spent;
            Some(plan)
        }
        None if opts.cost.max_cost.is_some() => Some(crate::output::resume::Plan {
            spent: batch_spent,
            ..Default::default()
        }),
        None => None,
    };
    prepared.done = Some(skip);
    Ok(prepared)
}

/// A live run on an output whose batch state holds no batch but paid answers that failed
/// `--json-schema` (an earlier batch run stopped before resending their rows): the live
/// records of those rows take that spend, as after `--fallback live`; rows with a record
/// (`done`) hold theirs already.
pub(crate) fn carried_into_live_run(
    opts: &Job,
    output: &std::path::Path,
    done: Option<&RowSet>,
) -> Result<Carried, Error> {
    if opts.via != Via::Live {
        return Ok(Carried::default());
    }
    let Some(state) = State::load(&state::path_for(output))? else {
        return Ok(Carried::default());
    };
    if state.simulated || !state.same_models(&opts.request.models) {
        return Ok(Carried::default());
    }
    let mut spent = state.spent;
    if let Some(done) = done {
        spent.retain(|unit, _| !done.contains(*unit));
    }
    Ok(Carried::new(
        spent.clone(),
        spent,
        opts.request.models_per_row(),
    ))
}

/// Paid `--via batch` work beside an output that no record holds (yet), for `report`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Beside {
    /// Batches the state names that may be running (not collected yet), and their rows.
    pub batches_running: u64,
    pub rows_in_batches: u64,
    /// Paid answers kept in `OUTPUT.unmatched.jsonl` and what they cost (priced ones).
    pub unmatched_answers: u64,
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub unmatched_usd: f64,
    pub unmatched_file: String,
}

/// What [`Beside`] finds next to `output`.
pub fn beside(output: &std::path::Path) -> Result<Beside, Error> {
    let mut found = Beside::default();
    if let Some(state) = State::load(&state::path_for(output))? {
        for entry in state.batches.iter().filter(|b| state.may_have_batch(b)) {
            if !state.simulated {
                found.batches_running += 1;
                found.rows_in_batches += entry.rows.len() as u64;
            }
        }
    }
    let kept = unmatched::path_for(output);
    (found.unmatched_answers, found.unmatched_usd) = unmatched::totals(&kept)?;
    found.unmatched_file = kept.display().to_string();
    Ok(found)
}

/// After a live run completed (the live part of a `--fallback live` run, or a live run on an
/// output with a batch state): every row has a record, and those the batch part paid failed
/// `--json-schema` answers for hold them, so the state file forgets that spend and the rows to
/// retry (and goes, once empty). Spend no live attempt took is said.
pub(crate) fn forget_carried_spend(
    output: &std::path::Path,
    carried: &Carried,
) -> Result<(), Error> {
    let path = state::path_for(output);
    let Some(mut state) = State::load(&path)? else {
        return Ok(());
    };
    let (rows, left) = carried.left();
    Carried::say_unrecorded(rows, &left);
    state.spent.clear();
    // Every row has a record: no row is left to send again, and an uploaded file whose
    // batch was never created will not be.
    let with_batch: Vec<bool> = state
        .batches
        .iter()
        .map(|b| state.may_have_batch(b))
        .collect();
    let mut keep = with_batch.into_iter();
    state.batches.retain(|_| keep.next().unwrap_or(true));
    if state.batches.is_empty() {
        state.retry.clear();
    }
    state.save(&path)
}

/// The batch run's summary (after `--ordered`'s sort, when it completed).
fn conclude(
    opts: &Job,
    prepared: &Prepared,
    stop: StopReason,
    counters: &Counters,
    started: Instant,
) -> Summary {
    let stop = match stop {
        StopReason::Completed if opts.output.ordered => {
            match crate::job::pipeline::put_in_input_order(&prepared.output, &opts.request.models) {
                Ok(()) => StopReason::Completed,
                Err(e) => StopReason::Failed(e),
            }
        }
        stop => stop,
    };
    let mut summary = Summary::new(counters, started.elapsed(), stop);
    if let Some(plan) = &prepared.plan {
        summary.done_before = plan.done;
        summary.kept_errors = plan.kept_errors;
    }
    summary.simulated = opts.dry_run.is_some();
    summary.models = opts.request.models_per_row();
    summary
}

/// Checks, before the resume plan touches the output, that this run may go on with the batch
/// state an earlier run left beside it: a live run never starts while batches of the output
/// may be running (it would buy their rows a second time and the batch answers would be
/// thrown away), and a batch run collects only batches it can (same endpoint, same `--model`
/// list, not a `--dry-run` over real batches).
pub(crate) fn check_state_before_run(
    opts: &Job,
    output: &std::path::Path,
    client: &ApiClient,
) -> Result<(), Error> {
    let path = state::path_for(output);
    let Some(state) = State::load(&path)? else {
        return Ok(());
    };
    let endpoint = client.scrub(client.api_base().as_str());
    match opts.via {
        Via::Batch => refuse_conflicts(
            &path,
            &state,
            &endpoint,
            opts.dry_run.is_some(),
            &opts.request.models,
        ),
        Via::Live => refuse_live_over_batches(&path, &state, output),
    }
}

/// A live run on an output whose batches may still be running is refused, with what to do.
fn refuse_live_over_batches(
    path: &std::path::Path,
    state: &State,
    output: &std::path::Path,
) -> Result<(), Error> {
    // A --dry-run's batches went to a simulator that is gone; an entry whose create was never
    // sent holds no batch.
    let live: Vec<&Entry> = state
        .batches
        .iter()
        .filter(|b| state.may_have_batch(b))
        .collect();
    if state.simulated || live.is_empty() {
        return Ok(());
    }
    let rows: u64 = live.iter().map(|b| b.rows.len() as u64).sum();
    Err(Error::Config(format!(
        "{} names {} batches ({} rows) a `--via batch` run submitted to {} and has not collected: \
         a live run would buy those rows a second time. Collect them first: run this command \
         with --via batch (it writes their answers and submits the other rows; add --fallback \
         live to send the rows they do not answer live), or `promptbatch cancel {}` and then \
         run with --via batch to collect what they finished",
        path.display(),
        live.len(),
        crate::util::human::group(rows),
        state.endpoint,
        output.display()
    )))
}

/// Why this batch run cannot collect the batches of an earlier one (`Ok` when it can, or
/// when they are only a `--dry-run`'s).
fn refuse_conflicts(
    path: &std::path::Path,
    state: &State,
    endpoint: &str,
    simulated: bool,
    model_list: &[String],
) -> Result<(), Error> {
    if state.simulated || state.batches.is_empty() {
        return Ok(());
    }
    if simulated {
        return Err(Error::Config(format!(
            "{} names {} batches submitted to {}; a --dry-run cannot collect them: run without --dry-run to collect them, or `promptbatch cancel` them first",
            path.display(),
            state.batches.len(),
            state.endpoint
        )));
    }
    if !state.same_models(model_list) {
        let was = if state.model_list.is_empty() {
            format!("{} models", state.models_per_row())
        } else {
            state.model_list.join(",")
        };
        let now = model_list.join(",");
        return Err(Error::Config(format!(
            "{} names {} batches submitted with --model {was}, and this run has --model {now}: run with --model {was} to collect them (or `promptbatch cancel` them), then change the list",
            path.display(),
            state.batches.len(),
        )));
    }
    if state.endpoint != endpoint {
        return Err(Error::Config(format!(
            "{} names {} batches submitted to {}, not to {endpoint}: run with --base-url {} to collect them (or `promptbatch cancel` them there)",
            path.display(),
            state.batches.len(),
            state.endpoint,
            state.endpoint
        )));
    }
    Ok(())
}

/// The state of an earlier run on the same output, checked against this one.
fn load_state(
    path: &std::path::Path,
    endpoint: &str,
    simulated: bool,
    model_list: &[String],
) -> Result<State, Error> {
    let Some(mut state) = State::load(path)? else {
        return Ok(State::new(endpoint.to_string(), simulated, model_list));
    };
    refuse_conflicts(path, &state, endpoint, simulated, model_list)?;
    if state.simulated {
        if !state.batches.is_empty() {
            say!(
                "{}: dropping {} batches of an earlier --dry-run (its simulator is gone); their rows are submitted again",
                path.display(),
                state.batches.len()
            );
        }
        return Ok(State::new(endpoint.to_string(), simulated, model_list));
    }
    if state.batches.is_empty() && !state.same_models(model_list) {
        // Only rows to retry: they may go anywhere (with another model list, their unit
        // numbers mean other units: they are read again as rows without a record instead).
        state.retry.clear();
        state.drop_spent_not_in_flight();
    }
    Ok(State {
        endpoint: endpoint.to_string(),
        models: model_list.len().max(1) as u64,
        model_list: model_list.to_vec(),
        ..state
    })
}

/// Why driving the batches ended.
enum Drive {
    Stopped(StopReason),
    /// `--fallback live`, with what the rows handed over were paid.
    GoLive(Handover),
}

/// What rows handed to the live runner were paid in batches, by unit: in all, and the part
/// earlier runs paid.
struct Handover {
    spent: BTreeMap<u64, Spent>,
    earlier: BTreeMap<u64, Spent>,
}

/// Why a submission pass ended.
enum Submitted {
    /// Every row was read.
    All,
    /// `--batch-max-pending` rows are in batches: the rest waits for a later pass.
    Full,
    /// The next batch would pass --max-cost.
    Budget,
    /// Interrupted.
    Halted,
    /// A malformed input record.
    Failed(Error),
}

/// A row of a final batch waiting for its record.
struct Pending {
    /// Why the row has no answer, when neither file has a line for it (the batch's reason).
    missing: Option<Arc<str>>,
    /// Batches the row went through.
    attempts: u32,
    /// The unit it was submitted from (where an unchanged input still has it).
    submitted_as: u64,
    /// Its `custom_id` and request fingerprint, by which an input row claims it.
    custom_id: String,
    fingerprint: String,
    /// The batch's time from creation to its end.
    latency_ms: u64,
    batch_id: Arc<str>,
}

/// The records one collection wrote so far (for the debug-only `during-download` kill point).
struct Midway {
    /// Records the collection writes at most.
    total: usize,
    /// Records of earlier collections of this run.
    done_before: u64,
    written: usize,
}

impl Midway {
    fn new(total: usize, done_before: u64) -> Self {
        Midway {
            total,
            done_before,
            written: 0,
        }
    }
}

/// One batch run in progress.
struct BatchRun<'a> {
    opts: &'a Job,
    api: &'a ApiClient,
    state: State,
    state_path: std::path::PathBuf,
    output: std::path::PathBuf,
    prices: &'a PriceTable,
    counters: Arc<Counters>,
    /// Rows with a record: done before this run, or written by it.
    skip: RowSet,
    /// Cost recorded in the output before this run.
    spent_before: f64,
    /// The spend the state held when this run started (paid by earlier runs), by unit, until
    /// a record takes it.
    earlier: BTreeMap<u64, Spent>,
    simulated: bool,
    /// A CSV output's extra columns.
    kept_columns: Vec<String>,
    /// The shape of the output's lines.
    output_format: crate::output::format::OutputFormat,
    /// `--json-schema`: every answer is checked as the live worker checks it.
    schema: Option<&'a AnswerSchema>,
    quiet: bool,
    /// When every batch's line was last printed (`Display::Lines`: once per interval).
    last_lines: Instant,
    /// The last pass stopped at `--batch-max-pending` or `--max-cost`: rows of the input are
    /// not submitted yet.
    unsubmitted: bool,
    /// The last pass stopped at `--max-cost` with batches in flight.
    budget_bound: bool,
    /// Error records' warnings printed (the first few of each kind).
    warnings: crate::progress::repeated_warnings::Repeats,
    /// Final batches whose files stayed short ([`DOWNLOADS`] tries): not polled again by
    /// this run.
    deferred: std::collections::HashSet<String>,
}

impl<'a> BatchRun<'a> {
    /// A batch run over a prepared run: the state of an earlier run on the same output (checked
    /// against this one), the rows already done.
    fn new(opts: &'a Job, prepared: &'a Prepared, counters: &Arc<Counters>) -> Result<Self, Error> {
        let simulated = opts.dry_run.is_some();
        let state_path = state::path_for(&prepared.output);
        let client = &prepared.client;
        let endpoint = client.scrub(client.api_base().as_str());
        let mut state = load_state(&state_path, &endpoint, simulated, &opts.request.models)?;
        // A row with a record has its failed answers' spend on it (a `--fallback live` run
        // may have stopped before forgetting them).
        let skip = prepared.done.clone().unwrap_or_default();
        let before = state.spent.len();
        state.spent.retain(|unit, _| !skip.contains(*unit));
        if state.spent.len() != before {
            state.save(&state_path)?;
        }
        let earlier = state.spent.clone();
        Ok(BatchRun {
            earlier,
            opts,
            api: client,
            state,
            state_path,
            output: prepared.output.clone(),
            prices: &prepared.prices,
            counters: counters.clone(),
            skip,
            spent_before: prepared.plan.as_ref().map_or(0.0, |p| p.spent),
            simulated,
            kept_columns: prepared.kept_columns.clone(),
            output_format: prepared.output_format,
            schema: prepared.schema.as_ref(),
            quiet: matches!(opts.display, Display::Quiet),
            last_lines: Instant::now(),
            unsubmitted: false,
            budget_bound: false,
            deferred: Default::default(),
            warnings: Default::default(),
        })
    }

    fn client(&self) -> BatchClient<'_> {
        BatchClient::new(self.api, self.opts.retry)
    }

    fn save(&self) -> Result<(), Error> {
        self.state.save(&self.state_path)
    }

    /// A writer appending this run's records to the output (each pass has its own).
    fn start_writer(&self) -> Result<Writer, Error> {
        Writer::start(
            &self.output,
            256,
            self.output_format,
            self.kept_columns.clone(),
            self.opts.request.models_per_row(),
            crate::job::pipeline::writer_hooks(self.opts, &self.counters),
        )
    }

    /// Whether the rows a pass stopped before may be read again: once half of
    /// `--batch-max-pending` is collected, or after `--max-cost`, once every batch is (their
    /// cost known, nothing reserved).
    fn may_submit_again(&self) -> bool {
        if self.budget_bound {
            self.state.batches.is_empty()
        } else {
            self.pending_rows() <= self.opts.batch.max_pending / 2
        }
    }

    /// Whether every batch left is one whose files stayed short this run.
    fn only_deferred_left(&self) -> bool {
        !self.state.batches.is_empty()
            && self.state.batches.iter().all(|b| {
                b.batch_id
                    .as_ref()
                    .is_some_and(|id| self.deferred.contains(id))
            })
    }

    /// Rows in batches now (submitted, not collected).
    fn pending_rows(&self) -> u64 {
        self.state.batches.iter().map(|b| b.rows.len() as u64).sum()
    }

    /// Submits what is not submitted yet, then polls and collects until every row has a record
    /// (or the run stops, detaches or falls back to live requests).
    async fn drive(&mut self, rows: input::RowStream, shutdown: &Shutdown) -> Result<Drive, Error> {
        self.finish_submissions().await?;
        let mut rows = Some(rows);
        loop {
            let pass = match rows.take() {
                Some(rows) => Some(rows),
                // The rows a pass stopped before (`--batch-max-pending`), once half are
                // collected, and with them the rows to retry: one more pass over the input.
                None if self.unsubmitted && self.may_submit_again() => Some(input::open(
                    &self.opts.input,
                    &self.opts.request,
                    Some(self.skip.clone()),
                )?),
                // A later pass sends the rows to retry (and any row an earlier pass missed).
                None if self.state.batches.is_empty() && !self.state.retry.is_empty() => {
                    if self.opts.batch.fallback == Fallback::Live {
                        // The state keeps the rows' spend until their live records hold it.
                        self.state.retry.clear();
                        self.save()?;
                        return Ok(Drive::GoLive(Handover {
                            spent: self.state.spent.clone(),
                            earlier: std::mem::take(&mut self.earlier),
                        }));
                    }
                    Some(input::open(
                        &self.opts.input,
                        &self.opts.request,
                        Some(self.skip.clone()),
                    )?)
                }
                None => None,
            };
            if let Some(pass) = pass {
                match self.submit(pass, shutdown).await? {
                    Submitted::All => (self.unsubmitted, self.budget_bound) = (false, false),
                    Submitted::Full => (self.unsubmitted, self.budget_bound) = (true, false),
                    Submitted::Budget if self.state.batches.is_empty() => {
                        let cap = self.opts.cost.max_cost.unwrap_or_default();
                        return Ok(Drive::Stopped(StopReason::Budget { cap }));
                    }
                    Submitted::Budget => {
                        // The batches in flight are paid for whatever happens: they are
                        // collected, and what they cost decides whether more fit.
                        say!(
                            "--max-cost: no more batches are submitted while the {} in flight ({} rows) run; they are collected first",
                            self.state.batches.len(),
                            crate::util::human::group(self.pending_rows())
                        );
                        (self.unsubmitted, self.budget_bound) = (true, true);
                    }
                    Submitted::Halted => return Ok(Drive::Stopped(StopReason::Interrupted)),
                    Submitted::Failed(e) => return Ok(Drive::Stopped(StopReason::Failed(e))),
                }
                if self.opts.batch.detach {
                    let rows: usize = self.state.batches.iter().map(|b| b.rows.len()).sum();
                    return Ok(Drive::Stopped(StopReason::Detached {
                        batches: self.state.batches.len() as u64,
                        rows: rows as u64,
                        state: self.state_path.clone(),
                    }));
                }
            }
            if self.state.batches.is_empty() {
                if self.state.retry.is_empty() && !self.unsubmitted {
                    return Ok(Drive::Stopped(StopReason::Completed));
                }
                continue;
            }
            let mut finals = self.poll().await?;
            if finals.is_empty() && self.only_deferred_left() {
                return Ok(Drive::Stopped(StopReason::Failed(Error::FatalApi(format!(
                    "the files of {} finished batches stayed shorter than they report ({}); they are kept in {} and their rows are not submitted again: run the same command later to download them again",
                    self.deferred.len(),
                    self.deferred.iter().cloned().collect::<Vec<_>>().join(", "),
                    self.state_path.display()
                )))));
            }
            if !finals.is_empty() {
                // Last entry first, so the earlier entries keep their places; a few batches per
                // pass over the input (memory: their answers), up to COLLECT_ROWS rows.
                finals.sort_by_key(|(index, _)| std::cmp::Reverse(*index));
                let mut group: Vec<(usize, BatchObject)> = Vec::new();
                let mut rows = 0;
                for (index, batch) in finals {
                    let size = self.state.batches[index].rows.len();
                    if !group.is_empty() && rows + size > COLLECT_ROWS {
                        self.collect(std::mem::take(&mut group)).await?;
                        rows = 0;
                    }
                    rows += size;
                    group.push((index, batch));
                }
                self.collect(group).await?;
                continue;
            }
            tokio::select! {
                biased;
                _ = shutdown.stop_dispatch.cancelled() => {
                    say!(
                        "stopped waiting: {} batches keep running at the provider (state in {}); the same command collects them later, `promptbatch cancel {}` cancels them",
                        self.state.batches.len(),
                        self.state_path.display(),
                        self.output.display()
                    );
                    return Ok(Drive::Stopped(StopReason::Interrupted));
                }
                _ = tokio::time::sleep(self.opts.batch.poll_every) => {}
            }
        }
    }

    /// Batches an interrupted run left half-submitted: an entry whose upload did not finish is
    /// dropped (its rows are submitted again: uploads are not billed); an uploaded file whose
    /// create was never sent gets its batch; one whose create got no answer is looked for
    /// first ([`find_created`](Self::find_created)).
    async fn finish_submissions(&mut self) -> Result<(), Error> {
        let before = self.state.batches.len();
        self.state.batches.retain(|e| e.input_file_id.is_some());
        if self.state.batches.len() != before {
            self.save()?;
        }
        for i in 0..self.state.batches.len() {
            let entry = &self.state.batches[i];
            if entry.batch_id.is_some() {
                continue;
            }
            if self.state.maybe_created(entry) {
                if let Some(found) = self.find_created(i).await? {
                    say!(
                        "found batch {} for the uploaded file {} (created before the last run stopped): it is collected, not created again",
                        found.id,
                        found.input_file_id
                    );
                    self.adopt(i, &found)?;
                    continue;
                }
            }
            self.create(i).await?;
        }
        Ok(())
    }

    /// The batch of entry `index`, whose create was sent without an answer coming back:
    /// `--batch-of-file`'s answer for its file, else the batch of that input file among those
    /// created since its upload (`None`: there is none, so one may be created). A server that
    /// cannot list batches leaves it unknowable: the run stops, saying how to decide.
    async fn find_created(&self, index: usize) -> Result<Option<BatchObject>, Error> {
        let entry = &self.state.batches[index];
        let file_id = entry.input_file_id.clone().unwrap_or_default();
        if let Some(told) = self.opts.batch.batch_of_file.get(&file_id) {
            let Some(batch_id) = told else {
                return Ok(None);
            };
            let batch = self.client().get(batch_id).await?;
            if !batch.input_file_id.is_empty() && batch.input_file_id != file_id {
                return Err(Error::Config(format!(
                    "--batch-of-file {file_id}={batch_id}: batch {batch_id} holds the file {}, not {file_id}",
                    batch.input_file_id
                )));
            }
            return Ok(Some(batch));
        }
        // Batches created since the upload (a minute of clock skew allowed).
        let since = entry.submitted_at.saturating_sub(60);
        match self.client().created_since(since).await? {
            Some(recent) => Ok(recent.into_iter().find(|b| b.input_file_id == file_id)),
            None => Err(Error::Config(format!(
                "a batch was being created for the uploaded file {file_id} ({} rows) when the answer was lost (the run was stopped, or the connection dropped), and {} cannot list batches, so promptbatch cannot tell whether that batch exists. \
                 Look for a batch whose input file is {file_id} at the provider: if there is one, run this command again with --batch-of-file {file_id}=BATCH_ID (it is collected); if there is none, with --batch-of-file {file_id}=none (it is created). \
                 Nothing else was sent: a live run or a new batch would pay for these rows twice if that batch exists (the state is in {})",
                crate::util::human::group(entry.rows.len() as u64),
                self.state.endpoint,
                self.state_path.display()
            ))),
        }
    }

    /// Records `batch` as entry `index`'s batch.
    fn adopt(&mut self, index: usize, batch: &BatchObject) -> Result<(), Error> {
        let entry = &mut self.state.batches[index];
        entry.batch_id = Some(batch.id.clone());
        entry.status = batch.status.clone();
        self.save()
    }

    /// One pass over `rows`: every row without a record and not in a batch goes into an input
    /// file; each full file is uploaded and becomes a batch.
    async fn submit(
        &mut self,
        rows: input::RowStream,
        shutdown: &Shutdown,
    ) -> Result<Submitted, Error> {
        let writer = self.start_writer()?;
        // The writer is finished (its records synced) whatever the pass ends with.
        let submitted = self.submit_rows(rows, shutdown, &writer).await;
        let written = writer.finish();
        let submitted = submitted?;
        written?;
        Ok(submitted)
    }

    /// [`submit`](Self::submit)'s pass, writing error records of rows that cannot be sent to
    /// `writer`.
    async fn submit_rows(
        &mut self,
        rows: input::RowStream,
        shutdown: &Shutdown,
        writer: &Writer,
    ) -> Result<Submitted, Error> {
        let mut in_flight = Claims::new();
        for entry in &self.state.batches {
            for r in &entry.rows {
                in_flight.add(r.id(), r.fingerprint(), ());
            }
        }
        let mut pending = self.pending_rows();
        // With --fallback live the rows to retry wait for the live runner, not a new batch.
        let retry_live = self.opts.batch.fallback == Fallback::Live;
        let mut splitter = Splitter::new(self.opts.batch.max_requests, self.opts.batch.max_bytes);
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        let mut end = Submitted::All;
        'reading: while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                if shutdown.stop_dispatch.is_cancelled() {
                    end = Submitted::Halted;
                    break 'reading;
                }
                let row = match item {
                    Ok(row) => row,
                    Err(e) => {
                        end = Submitted::Failed(e);
                        break 'reading;
                    }
                };
                let unit = self.unit(&row);
                if retry_live && self.state.retry.contains_key(&unit) {
                    continue;
                }
                let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
                let place = (row.id, row.row, row.line);
                let request = match row.content {
                    RowContent::Invalid {
                        prompt, message, ..
                    } => {
                        let record = self.error_record(place, prompt, None, message, 0);
                        self.write(writer, record, unit).await;
                        continue;
                    }
                    RowContent::Request(request) => request,
                };
                if in_flight
                    .claim(&custom_id, row.explicit_id, &request.fingerprint)
                    .is_some()
                {
                    continue;
                }
                if pending >= self.opts.batch.max_pending {
                    end = Submitted::Full;
                    break 'reading;
                }
                let line = split::line(&custom_id, &request.body);
                if !splitter.fits(line.len()) {
                    let message = format!(
                        "the request is {} bytes as a Batch API line, more than --batch-max-bytes {}: send this row with --via live",
                        line.len(),
                        self.opts.batch.max_bytes
                    );
                    let prompt = request.prompt.clone();
                    let record = self.error_record(place, prompt, Some(&request), message, 0);
                    self.write(writer, record, unit).await;
                    continue;
                }
                let worst = self.worst_case(&request)?;
                let attempts = self.state.retry.get(&unit).copied().unwrap_or(0) + 1;
                let row_ref = RowRef(unit, custom_id, request.fingerprint, attempts);
                pending += 1;
                if let Some(file) = splitter.push(&request.model, line, row_ref, worst) {
                    if !self.submit_file(file).await? {
                        end = Submitted::Budget;
                        break 'reading;
                    }
                }
            }
        }
        drop(chunks);
        if matches!(end, Submitted::All | Submitted::Full) {
            for file in splitter.finish() {
                if !self.submit_file(file).await? {
                    end = Submitted::Budget;
                    break;
                }
            }
        }
        if matches!(end, Submitted::All) && !retry_live {
            // Every row to retry was read: those not submitted again left the input.
            if !self.state.retry.is_empty() {
                self.state.retry.clear();
                self.state.drop_spent_not_in_flight();
                self.save()?;
            }
        }
        Ok(end)
    }

    /// Uploads a file and creates its batch; `false` when --max-cost refuses it.
    async fn submit_file(&mut self, file: split::InputFile) -> Result<bool, Error> {
        if let Some(cap) = self.opts.cost.max_cost {
            // Answers that failed --json-schema were paid for, though no record holds them yet.
            let spent = self.spent_before
                + self.counters.cost_totals().spent_usd()
                + self.state.unrecorded_spend_usd();
            let reserved: f64 = self.state.batches.iter().map(|b| b.worst_case_usd).sum();
            if spent + reserved + file.worst_case_usd > cap {
                say!(
                    "--max-cost: the next batch ({} rows) could cost up to {} at batch prices, which would pass the cap of {} ({} spent, {} reserved by batches in flight); it was not submitted",
                    crate::util::human::group(file.rows.len() as u64),
                    crate::util::human::format_usd(file.worst_case_usd),
                    crate::util::human::format_usd(cap),
                    crate::util::human::format_usd(spent),
                    crate::util::human::format_usd(reserved)
                );
                return Ok(false);
            }
        }
        for row in &file.rows {
            self.state.retry.remove(&row.row());
        }
        let rows = file.rows.len();
        self.state.batches.push(Entry {
            input_file_id: None,
            batch_id: None,
            status: "uploading".into(),
            submitted_at: unix_now(),
            worst_case_usd: file.worst_case_usd,
            rows: file.rows,
        });
        let index = self.state.batches.len() - 1;
        // Not saved yet: an entry without a file id is dropped on resume anyway (its rows are
        // submitted again; an upload is not billed).
        let name = format!(
            "promptbatch-{}-{}.jsonl",
            self.output
                .file_name()
                .map_or_else(|| "output".into(), |n| n.to_string_lossy()),
            index + 1
        );
        let file_id = match self.client().upload(file.content, &name).await {
            Ok(id) => id,
            Err(e) => {
                self.state.batches.pop();
                self.save()?;
                return Err(e);
            }
        };
        if !self.quiet {
            say!(
                "uploaded {file_id}: {}",
                crate::util::human::count(rows as u64, "request")
            );
        }
        let entry = &mut self.state.batches[index];
        entry.input_file_id = Some(file_id);
        entry.status = "uploaded".into();
        self.save()?;
        abort_at("after-upload");
        self.create(index).await?;
        Ok(true)
    }

    /// Creates the batch of entry `index` (uploaded, no batch yet). The entry is `creating`
    /// in the state from before the request is sent until its answer is saved; a create that
    /// gets no answer is looked for ([`find_created`](Self::find_created)) before it is sent
    /// again.
    async fn create(&mut self, index: usize) -> Result<(), Error> {
        let file_id = self.state.batches[index]
            .input_file_id
            .clone()
            .unwrap_or_default();
        let metadata = serde_json::json!({
            "promptbatch_output": self.output.file_name().map(|n| n.to_string_lossy().into_owned()),
        });
        let mut unanswered = 0;
        let batch = loop {
            self.state.batches[index].status = "creating".into();
            self.save()?;
            let created = self
                .client()
                .create(
                    &file_id,
                    &self.opts.batch.completion_window,
                    metadata.clone(),
                )
                .await?;
            match created {
                Created::Batch(batch) => break *batch,
                Created::Unknown(why) => {
                    say!("creating the batch of {file_id} got no answer ({why}); looking for it before creating another");
                    if let Some(found) = self.find_created(index).await? {
                        break found;
                    }
                    unanswered += 1;
                    if unanswered > self.opts.retry.max_retries {
                        return Err(Error::FatalApi(format!(
                            "creating the batch of {file_id} got no answer {unanswered} times ({why}); the batch state is kept, re-run the same command to go on"
                        )));
                    }
                    tokio::time::sleep(self.opts.retry.backoff(unanswered)).await;
                }
            }
        };
        abort_at("create-unsaved");
        self.adopt(index, &batch)?;
        say!(
            "batch {} submitted: {} rows (state in {})",
            batch.id,
            crate::util::human::group(self.state.batches[index].rows.len() as u64),
            self.state_path.display()
        );
        abort_at("after-create");
        Ok(())
    }

    /// Reads every batch's status once; returns the batches that reached a final status.
    async fn poll(&mut self) -> Result<Vec<(usize, BatchObject)>, Error> {
        let mut finals = Vec::new();
        let mut changed = false;
        // Plain progress lines (stderr not a terminal): every batch once per --log-every, as
        // well as on each change.
        let every_batch = match self.opts.display {
            Display::Lines(every) if self.last_lines.elapsed() >= every => {
                self.last_lines = Instant::now();
                true
            }
            _ => false,
        };
        for i in 0..self.state.batches.len() {
            let Some(id) = self.state.batches[i].batch_id.clone() else {
                continue;
            };
            if self.deferred.contains(&id) {
                continue;
            }
            let batch = self.client().get(&id).await?;
            let entry = &mut self.state.batches[i];
            let moved = batch.status != entry.status;
            if moved || every_batch {
                changed |= moved;
                entry.status = batch.status.clone();
                if !self.quiet || (moved && batch.is_final()) {
                    let counts = batch.request_counts.unwrap_or_default();
                    let elapsed = unix_now().saturating_sub(entry.submitted_at);
                    say!(
                        "batch {id}: {} · {}/{} requests done, {} failed · {} since submitted",
                        batch.status,
                        crate::util::human::group(counts.completed),
                        crate::util::human::group(counts.total.max(entry.rows.len() as u64)),
                        crate::util::human::group(counts.failed),
                        humantime::format_duration(Duration::from_secs(elapsed))
                    );
                }
            }
            if batch.is_final() {
                finals.push((i, batch));
            }
        }
        if changed {
            self.save()?;
        }
        Ok(finals)
    }

    /// Downloads final batches' output and error files and writes one record per row that has
    /// an answer or a permanent error; rows to try again go to `retry`. The batches leave the
    /// state only once their records are on disk. `finals` is sorted by index, last first.
    /// A batch whose files stay shorter than its `request_counts` is left for a later try
    /// (never submitted again: its rows were answered).
    async fn collect(&mut self, finals: Vec<(usize, BatchObject)>) -> Result<(), Error> {
        let mut answers = Answers::new()?;
        let mut pending: HashMap<u64, Pending> = HashMap::new();
        let mut collected = Vec::new();
        let mut deferred = Vec::new();
        // Each batch row of this collection has a key of its own: after an edit of the input,
        // batch rows of two batches may have been submitted from the same row number.
        let mut next_key = 0u64;
        let mut keep = unmatched::Kept::new(&self.output);
        for (index, batch) in &finals {
            let entry = &self.state.batches[*index];
            let first_key = next_key;
            let by_id: HashMap<&str, u64> = entry
                .rows
                .iter()
                .zip(first_key..)
                .map(|(r, key)| (r.id(), key))
                .collect();
            if !self.download(batch, &by_id, &mut answers).await? {
                deferred.push(batch.id.clone());
                continue;
            }
            for (line, custom_id, answer) in answers.take_foreign()? {
                let cost = self.line_cost(&line, answer);
                let why = (custom_id.as_str(), unmatched::Why::Foreign, answer);
                keep.add(&batch.id, why, &line, cost);
            }
            let latency_ms = match (batch.created_at, batch.ended_at()) {
                (Some(start), Some(end)) => end.saturating_sub(start) * 1000,
                _ => 0,
            };
            let missing: Arc<str> = match (batch.status.as_str(), batch.errors_text()) {
                ("failed", Some(why)) => format!("batch {} failed: {why}", batch.id),
                (status, _) => format!("no answer for this row in batch {} ({status})", batch.id),
            }
            .into();
            let batch_id: Arc<str> = batch.id.as_str().into();
            for (row, key) in entry.rows.iter().zip(first_key..) {
                let missing = (!answers.has(key)).then(|| missing.clone());
                pending.insert(
                    key,
                    Pending {
                        submitted_as: row.row(),
                        missing,
                        attempts: row.attempts(),
                        custom_id: row.id().to_string(),
                        fingerprint: row.fingerprint().to_string(),
                        latency_ms,
                        batch_id: batch_id.clone(),
                    },
                );
            }
            next_key += entry.rows.len() as u64;
            collected.push(*index);
        }
        self.keep_contradictions(&answers, &pending, &mut keep)?;
        let left = self.write_outcomes(pending, &answers).await?;
        self.keep_unclaimed(left, &answers, &mut keep)?;
        keep.finish()?;
        self.deferred.extend(deferred);
        for index in collected {
            self.state.batches.remove(index);
        }
        self.save()
    }

    /// Downloads a final batch's output and error files into `answers`; `false` when they
    /// hold fewer lines for its rows than the batch reports answered, after
    /// [`DOWNLOADS`] tries (a 200 with an HTML page, an empty or a half body): the batch is
    /// then left in the state, and its rows are not submitted again.
    async fn download(
        &self,
        batch: &BatchObject,
        by_id: &HashMap<&str, u64>,
        answers: &mut Answers,
    ) -> Result<bool, Error> {
        let counts = batch.request_counts.unwrap_or_default();
        let expected = (counts.completed + counts.failed).min(by_id.len() as u64);
        let mut lines = 0;
        for attempt in 1..=DOWNLOADS {
            let from = answers.end();
            lines = 0;
            for file_id in [&batch.output_file_id, &batch.error_file_id]
                .into_iter()
                .flatten()
            {
                let start = answers.end();
                self.client().download_to(file_id, answers.file()).await?;
                lines += answers.index(start, by_id)?;
            }
            if lines >= expected {
                return Ok(true);
            }
            if self.opts.batch.accept_short.contains(&batch.id) {
                say!(
                    "batch {}: its files hold {lines} lines for its rows, and it reports {expected} requests done; collected as they are (--batch-accept-short): its rows without a line go into a new batch",
                    batch.id
                );
                return Ok(true);
            }
            answers.rollback(from, by_id)?;
            if attempt < DOWNLOADS {
                say!(
                    "batch {}: its files hold {lines} lines for its rows, and it reports {expected} requests done: downloading them again",
                    batch.id
                );
                tokio::time::sleep(self.opts.retry.backoff(attempt)).await;
            }
        }
        say!(
            "batch {}: after {DOWNLOADS} downloads its files still hold {lines} lines for its rows, and it reports {expected} requests done; it is not collected now, and its rows are not submitted again (they were answered: that would pay twice). The same command tries again later; if the provider's files stay short, --batch-accept-short {} collects what they hold and sends the other rows again (paid twice if they were answered)",
            batch.id,
            batch.id
        );
        Ok(false)
    }

    /// Rows with more than one line in their batch's files: the row's answer is its record
    /// (an error line beside it is ignored); a second, different answer was paid for too and
    /// is kept beside the output. Each is said by row.
    fn keep_contradictions(
        &self,
        answers: &Answers,
        pending: &HashMap<u64, Pending>,
        keep: &mut unmatched::Kept,
    ) -> Result<(), Error> {
        for contradiction in &answers.contradictions {
            let Some(row) = pending.get(&contradiction.row) else {
                continue;
            };
            let (at, len) = contradiction.other;
            let line = answers.line_at(at, len)?;
            let why = if contradiction.other_is_answer {
                unmatched::Why::SecondAnswer
            } else {
                unmatched::Why::ErrorBeside
            };
            let answer = contradiction.other_is_answer;
            let cost = self.line_cost(&line, answer);
            keep.add(&row.batch_id, (&row.custom_id, why, answer), &line, cost);
        }
        Ok(())
    }

    /// Paid answers no row of the input claimed (their rows changed or left the input since
    /// they were submitted): kept beside the output, never dropped.
    fn keep_unclaimed(
        &self,
        left: HashMap<u64, Pending>,
        answers: &Answers,
        keep: &mut unmatched::Kept,
    ) -> Result<(), Error> {
        for (key, row) in left {
            if !answers.is_answer(key) {
                continue;
            }
            if let Some(line) = answers.line_of(key)? {
                let why = unmatched::Why::Unclaimed;
                let cost = self.line_cost(&line, true);
                keep.add(&row.batch_id, (&row.custom_id, why, true), &line, cost);
            }
        }
        Ok(())
    }

    /// What the answer on a batch line cost at batch prices (`None` for an error line or an
    /// unpriced model).
    fn line_cost(&self, line: &[u8], answer: bool) -> Option<f64> {
        if !answer {
            return None;
        }
        match answers::read_line(line) {
            Some((_, LineOutcome::Answer(completion))) => {
                let model = completion.model.clone().unwrap_or_default();
                self.batch_cost(&completion, &model)
            }
            _ => None,
        }
    }

    /// Writes the records of the rows of `outcomes` from their lines in `answers`, in two
    /// passes over the input at most: first the rows where they were when submitted (an
    /// input unchanged since), then — for those not found there — every row without a
    /// record, matched by identity (`claims.rs`). Returns the batch rows no input row claimed.
    async fn write_outcomes(
        &mut self,
        mut outcomes: HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<HashMap<u64, Pending>, Error> {
        let writer = self.start_writer()?;
        let mut result = self.write_in_place(&writer, &mut outcomes, answers).await;
        if result.is_ok() && !outcomes.is_empty() {
            result = self
                .write_by_identity(&writer, &mut outcomes, answers)
                .await;
        }
        writer.finish()?;
        result.map(|()| outcomes)
    }

    /// [`write_outcomes`](Self::write_outcomes)' first pass: the rows at the places their
    /// batch rows were submitted from (every other row passed over unparsed; reading stops
    /// after the last). A row there with another id or request is left for the second pass;
    /// one with a record already (a collection an interrupted run had begun) is done.
    async fn write_in_place(
        &mut self,
        writer: &Writer,
        outcomes: &mut HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<(), Error> {
        // Batch rows by the unit they were submitted from (two after an edit, at most a few).
        let mut by_place: HashMap<u64, Vec<u64>> = HashMap::new();
        for (key, pending) in outcomes.iter() {
            by_place.entry(pending.submitted_as).or_default().push(*key);
        }
        let last = by_place.keys().copied().max().unwrap_or(0);
        let mut others = RowSet::default();
        for unit in 1..=last {
            if !by_place.contains_key(&unit) {
                others.insert(unit);
            }
        }
        let pass_started = Instant::now();
        let rows = input::open(&self.opts.input, &self.opts.request, Some(others))?;
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        let mut written = Midway::new(outcomes.len(), self.counters.done());
        while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                let row = item?;
                let unit = self.unit(&row);
                if unit > last || outcomes.is_empty() {
                    return Ok(());
                }
                let RowContent::Request(request) = &row.content else {
                    continue;
                };
                let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
                let found = by_place.get(&unit).and_then(|keys| {
                    keys.iter().copied().find(|key| {
                        outcomes.get(key).is_some_and(|p| {
                            p.custom_id == custom_id && p.fingerprint == request.fingerprint
                        })
                    })
                });
                let Some(pending) = found.and_then(|key| outcomes.remove(&key).map(|p| (key, p)))
                else {
                    continue;
                };
                let (key, pending) = pending;
                // Its record holds what its failed answers cost (it was written with it).
                if self.skip.contains(unit) {
                    self.state.spent.remove(&unit);
                    continue;
                }
                if self
                    .write_outcome(writer, unit, key, row, pending, answers)
                    .await?
                {
                    self.wrote_one(&mut written).await;
                }
            }
        }
        tracing::debug!(
            "collected {} records in one pass over the input up to row {last} ({} ms)",
            written.written,
            pass_started.elapsed().as_millis()
        );
        Ok(())
    }

    /// [`write_outcomes`](Self::write_outcomes)' second pass: every row without a record
    /// claims its batch row by identity. Then rows with a record claim what is left: those
    /// batch rows were written by a collection an interrupted run had begun (not unmatched
    /// answers: they are done).
    async fn write_by_identity(
        &mut self,
        writer: &Writer,
        outcomes: &mut HashMap<u64, Pending>,
        answers: &Answers,
    ) -> Result<(), Error> {
        let mut claims = Claims::new();
        for (unit, pending) in outcomes.iter() {
            claims.add(&pending.custom_id, &pending.fingerprint, *unit);
        }
        // Rows with a record whose request some batch row has: (custom_id, explicit, fingerprint).
        let mut recorded = Vec::new();
        let mut written = Midway::new(outcomes.len(), self.counters.done());
        let rows = input::open(&self.opts.input, &self.opts.request, None)?;
        let mut chunks = crate::job::pipeline::spawn_reader(rows, 64);
        'reading: while let Some(chunk) = chunks.recv().await {
            for item in chunk {
                if claims.unclaimed() == 0 {
                    break 'reading;
                }
                let row = item?;
                let RowContent::Request(request) = &row.content else {
                    continue;
                };
                let custom_id = split::custom_id(&row.id, row.slot, self.state.models_per_row());
                let unit = self.unit(&row);
                if self.skip.contains(unit) {
                    if claims.has_request(&request.fingerprint) {
                        recorded.push((custom_id, row.explicit_id, request.fingerprint.clone()));
                    }
                    continue;
                }
                let Some(key) = claims.claim(&custom_id, row.explicit_id, &request.fingerprint)
                else {
                    continue;
                };
                let Some(pending) = outcomes.remove(&key) else {
                    continue;
                };
                if self
                    .write_outcome(writer, unit, key, row, pending, answers)
                    .await?
                {
                    self.wrote_one(&mut written).await;
                }
            }
        }
        for (custom_id, explicit, fingerprint) in recorded {
            if let Some(done) = claims.claim(&custom_id, explicit, &fingerprint) {
                outcomes.remove(&done);
            }
        }
        Ok(())
    }

    /// Writes the record of the input row `row` (unit `unit` now) from the line of the batch
    /// row `key` (its key in this collection); `false` when the row goes into a new batch
    /// instead.
    async fn write_outcome(
        &mut self,
        writer: &Writer,
        unit: u64,
        key: u64,
        row: input::Row,
        mut pending: Pending,
        answers: &Answers,
    ) -> Result<bool, Error> {
        let outcome = match pending.missing.take() {
            Some(message) => LineOutcome::Transient(message.to_string()),
            None => answers
                .read(key)?
                .unwrap_or_else(|| LineOutcome::Transient("unreadable line for this row".into())),
        };
        let Some(record) = self.record_for(unit, row, outcome, pending) else {
            return Ok(false);
        };
        self.write(writer, record, unit).await;
        Ok(true)
    }

    /// Counts a record a collection wrote. Debug builds: `PROMPTBATCH_TEST_ABORT_AT=
    /// during-download` aborts once half its records are in the output.
    async fn wrote_one(&self, midway: &mut Midway) {
        midway.written += 1;
        if midway.written != midway.total.div_ceil(2) || !abort_requested("during-download") {
            return;
        }
        // The run's records by then, earlier collections' included.
        let written = midway.done_before + midway.written as u64;
        while self.counters.done() < written {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        abort_at("during-download");
    }

    /// The unit number of a row for one model (the row number with one model): what the state,
    /// the rows to retry and the rows with a record count.
    fn unit(&self, row: &input::Row) -> u64 {
        input::models::unit(row.row, u64::from(row.slot), self.state.models_per_row())
    }

    /// Hands a record to the writer and marks its unit as having one.
    async fn write(&mut self, writer: &Writer, record: Record, unit: u64) {
        if record.status == crate::output::Status::Error {
            let message = record.error.as_deref().unwrap_or_default();
            if self.warnings.show(message) {
                tracing::warn!(id = %record.id, row = record.row, "row failed: {message}");
            }
        }
        self.skip.insert(unit);
        let _ = writer.sender.send(Finished { record, slot: None }).await;
    }

    fn info(
        &self,
        (id, row, line): (String, u64, u64),
        prompt: String,
        model: String,
        fingerprint: String,
    ) -> RowInfo {
        RowInfo {
            id,
            row,
            line,
            prompt,
            model,
            fingerprint,
            simulated: self.simulated,
            kept: None,
            started: None,
        }
    }

    /// What an answer cost at batch prices (`None`: the model has no price).
    fn batch_cost(&self, completion: &crate::api::Completion, model: &str) -> Option<f64> {
        let answered = completion.model.as_deref().unwrap_or_default();
        crate::job::answer::cost_of(self.prices, Billing::Batch, &[answered, model], completion)
    }

    /// The record a collected row gets from its line's `outcome`, or `None` when it goes into a
    /// new batch (a transient failure, an answer failing --json-schema, or a row changed since
    /// it was submitted). The record holds what the row's earlier paid answers cost.
    fn record_for(
        &mut self,
        unit: u64,
        row: input::Row,
        outcome: LineOutcome,
        pending: Pending,
    ) -> Option<Record> {
        let (attempts, fingerprint, latency_ms) =
            (pending.attempts, pending.fingerprint, pending.latency_ms);
        let RowContent::Request(request) = row.content else {
            return None;
        };
        let place = (row.id, row.row, row.line);
        let mut kept = row.kept.map(crate::output::record::rename_kept);
        // --json-schema: an answer that fails it was paid for — its tokens and cost wait
        // in the state until the row's record holds them — and is worth another batch.
        let mut parsed = serde_json::Value::Null;
        let mut unaccepted = false;
        let outcome = match outcome {
            LineOutcome::Answer(completion) => {
                match crate::job::answer::check_answer(self.schema, &completion) {
                    Ok(value) => {
                        parsed = value;
                        LineOutcome::Answer(completion)
                    }
                    Err(message) => {
                        let cost = self.batch_cost(&completion, &request.model);
                        let spent = self.state.spent.entry(unit).or_default();
                        spent.add(&completion.usage, cost);
                        unaccepted = true;
                        LineOutcome::Transient(message)
                    }
                }
            }
            other => other,
        };
        let mut record = match outcome {
            LineOutcome::Answer(completion) => {
                let cost = self.batch_cost(&completion, &request.model);
                let body = self
                    .opts
                    .output
                    .keep_response
                    .then(|| completion.body.clone());
                let mut info = self.info(place, request.prompt, request.model, fingerprint);
                info.kept = kept.take();
                let mut record = Record::ok(info, completion, latency_ms, attempts, cost);
                let spent = self.take_spent(unit, &record.model).unwrap_or_default();
                let parsed = self.schema.map(|schema| (parsed, schema));
                crate::job::answer::complete_ok(&mut record, &spent, parsed, body.as_deref());
                record
            }
            LineOutcome::Permanent(message) => {
                let info = (request.prompt, request.model, fingerprint, latency_ms);
                self.answered_error(place, info, message, attempts)
            }
            LineOutcome::Transient(message) if attempts < self.opts.batch.max_attempts => {
                tracing::debug!(row = place.1, "sent again in a new batch: {message}");
                self.counters.retries.fetch_add(1, Relaxed);
                self.state.retry.insert(unit, attempts);
                return None;
            }
            LineOutcome::Transient(message) => {
                let counter = if unaccepted {
                    &self.counters.unaccepted
                } else {
                    &self.counters.transient_errors
                };
                counter.fetch_add(1, Relaxed);
                let message = format!(
                    "gave up after {}: {message}",
                    crate::util::human::count(u64::from(attempts), "batch")
                );
                let info = (request.prompt, request.model, fingerprint, latency_ms);
                self.answered_error(place, info, message, attempts)
            }
        };
        // An error record holds what the row's answers that failed --json-schema cost.
        if let Some(spent) = self.take_spent(unit, &record.model) {
            spent.add_to(&mut record);
        }
        if let Some(kept) = kept {
            record
                .kept
                .get_or_insert_with(Default::default)
                .extend(*kept);
        }
        Some(record)
    }

    /// The error record of a row its batch answered (or gave up on): `(prompt, model,
    /// fingerprint, latency_ms)` of its request and batch.
    /// The spend a unit's record takes from the state; the part earlier runs paid is noted, so
    /// that the summary's "cost this run" leaves it out.
    fn take_spent(&mut self, unit: u64, model: &str) -> Option<Spent> {
        let spent = self.state.spent.remove(&unit)?;
        if let Some(earlier) = self.earlier.remove(&unit) {
            self.counters
                .paid_by_an_earlier_run(model, &earlier, self.simulated);
        }
        Some(spent)
    }

    fn answered_error(
        &self,
        place: (String, u64, u64),
        (prompt, model, fingerprint, latency_ms): (String, String, String, u64),
        message: String,
        attempts: u32,
    ) -> Record {
        let mut record = self.error_record(place, prompt, None, message, attempts);
        record.model = model;
        record.fingerprint = fingerprint;
        record.latency_ms = latency_ms;
        record
    }

    /// An error record for a row (no tokens, no cost).
    fn error_record(
        &self,
        place: (String, u64, u64),
        prompt: String,
        request: Option<&ChatRequest>,
        message: String,
        attempts: u32,
    ) -> Record {
        let model = request.map_or_else(
            || self.opts.request.first_model().to_string(),
            |r| r.model.clone(),
        );
        let fingerprint = request.map_or_else(String::new, |r| r.fingerprint.clone());
        let info = self.info(place, prompt, model, fingerprint);
        Record::error(info, message, 0, attempts)
    }

    /// The worst-case cost of a request at batch prices (0 without --max-cost).
    fn worst_case(&self, request: &ChatRequest) -> Result<f64, Error> {
        if self.opts.cost.max_cost.is_none() {
            return Ok(0.0);
        }
        let price = self.prices.get(&request.model).ok_or_else(|| {
            Error::Config(format!(
                "--max-cost cannot be enforced: model `{}` has no price; add it with --prices FILE",
                request.model
            ))
        })?;
        let prompt = request.estimated_prompt_tokens * 2;
        let output = request.max_tokens.unwrap_or(WORST_OUTPUT_TOKENS);
        let rates = price.rates_via(Billing::Batch, prompt);
        Ok((prompt as f64 * rates.input + output as f64 * rates.output) / 1_000_000.0)
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Debug builds: whether `PROMPTBATCH_TEST_ABORT_AT` names `point`.
fn abort_requested(point: &str) -> bool {
    cfg!(debug_assertions) && std::env::var("PROMPTBATCH_TEST_ABORT_AT").is_ok_and(|v| v == point)
}

/// Debug builds: aborts the process (no cleanup, as `kill -9` would) when
/// `PROMPTBATCH_TEST_ABORT_AT` names `point`.
fn abort_at(point: &str) {
    if abort_requested(point) {
        say!("PROMPTBATCH_TEST_ABORT_AT={point}: aborting the process");
        std::process::abort();
    }
}

/// `promptbatch cancel OUTPUT`: cancels every batch the state of OUTPUT names that is still
/// running. Returns how many were cancelled. The state is kept: a later run collects what the
/// batches finished and submits their other rows again.
pub async fn cancel(
    output: &std::path::Path,
    endpoint: &crate::api::EndpointOptions,
) -> Result<u64, Error> {
    if !state::path_for(output).exists() {
        return Err(Error::Config(format!(
            "{} does not exist: no batch of {} is known (nothing to cancel)",
            state::path_for(output).display(),
            output.display()
        )));
    }
    // The run that collects these batches holds this lock and writes the state too.
    let lock = crate::output::lock::OutputLock::acquire(output).map_err(|e| {
        Error::Config(format!(
            "{e}\nto cancel its batches, stop that run first (Ctrl-C: the batches keep running), then cancel"
        ))
    })?;
    let state_path = state::path_for(lock.path());
    let Some(mut state) = State::load(&state_path)? else {
        return Err(Error::Config(format!(
            "{} does not exist: no batch of {} is known (nothing to cancel)",
            state_path.display(),
            output.display()
        )));
    };
    let options = crate::api::ClientOptions {
        concurrency: 1,
        timeout: endpoint.timeout,
        connect_timeout: endpoint.connect_timeout,
        ca_certs: endpoint.ca_certs.clone(),
    };
    let api = ApiClient::new(&endpoint.base_url, endpoint.key()?, &options)?;
    let shown = api.scrub(api.api_base().as_str());
    if shown != state.endpoint {
        return Err(Error::Config(format!(
            "the batches of {} were submitted to {}, not to {shown}: pass --base-url {}",
            output.display(),
            state.endpoint,
            state.endpoint
        )));
    }
    let client = BatchClient::new(&api, crate::api::retry::RetryPolicy::default());
    let mut cancelled = 0;
    let unknown: Vec<String> = state
        .batches
        .iter()
        .filter(|b| state.maybe_created(b))
        .filter_map(|b| b.input_file_id.clone())
        .collect();
    for file in unknown {
        say!(
            "the uploaded file {file} may have a batch (its create got no answer): the next `run --via batch` looks for it, or cancel the batch of {file} at the provider"
        );
    }
    for entry in &mut state.batches {
        let Some(id) = &entry.batch_id else { continue };
        let batch = client.get(id).await?;
        if batch.is_final() {
            continue;
        }
        let batch = client.cancel(id).await?;
        say!("batch {id}: {} ({} rows)", batch.status, entry.rows.len());
        entry.status = batch.status;
        cancelled += 1;
    }
    state.save(&state_path)?;
    Ok(cancelled)
}
