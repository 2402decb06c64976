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
//! (`job::answer::check_answer`) and an accepted one completed the same way (`job::answer::complete_ok`:
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
pub(crate) mod before_run;
mod cancel;
mod claims;
mod client;
mod collect;
pub(crate) mod options;
mod split;
mod state;
mod submit;
mod unmatched;

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::api::schema::AnswerSchema;
use crate::api::{ApiClient, ChatRequest};
use crate::error::Error;
use crate::events::notice;
use crate::input::{self, RowSet};
use crate::job::prepare::Prepared;
use crate::job::Job;
use crate::money::cost::{Billing, PriceTable};
use crate::money::spent::{Carried, Spent};
use crate::output::Writer;
use crate::progress::shutdown::Shutdown;
use crate::progress::{Counters, Display, StopReason, Summary};
use client::{BatchClient, BatchObject};
use state::State;

pub use crate::batch::options::{
    parse_batch_of_file, BatchOptions, Fallback, Via, DEFAULT_COMPLETION_WINDOW,
    DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_BYTES, DEFAULT_MAX_PENDING, DEFAULT_MAX_REQUESTS,
    DEFAULT_POLL_EVERY,
};
use before_run::load_state;
pub use before_run::{beside, Beside};
pub use cancel::cancel;

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
    counters: &Arc<Counters>,
    shutdown: &Shutdown,
    started: Instant,
) -> Result<BatchEnd, Error> {
    let counters = counters.clone();
    let rows = std::mem::replace(&mut prepared.rows, Box::new(std::iter::empty()));
    let batch_run = BatchRun::new(opts, &prepared, &counters)?;
    let (drive, skip) = drive_batches(batch_run, rows, shutdown).await?;
    match drive {
        Drive::GoLive(handover) => {
            let prepared = hand_to_live(opts, prepared, skip, handover, &counters)?;
            Ok(BatchEnd::Live(prepared, counters))
        }
        Drive::Stopped(stop) => {
            let followers = prepared.followers.take();
            let fill_into = crate::reuse::WriteTo::of(&prepared);
            let stop = match crate::reuse::after_send(opts, followers, fill_into, &counters).await {
                Ok(()) => stop,
                Err(e) => StopReason::Failed(e),
            };
            Ok(BatchEnd::Done(conclude(
                opts, &prepared, stop, &counters, started,
            )))
        }
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
            notice!("stopped at once (second interrupt); the same command resumes where this run stopped");
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
    notice!(
        "--fallback live: {} batch records written; the rows left are sent live now (at the live price)",
        crate::util::human::group(counters.done())
    );
    // Rows answered before the send (`reuse`) are counted as dispatched already.
    counters.dispatched.fetch_max(counters.done(), Relaxed);
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
                None => match self.next_pass()? {
                    ControlFlow::Continue(pass) => pass,
                    ControlFlow::Break(end) => return Ok(end),
                },
            };
            if let Some(pass) = pass {
                if let Some(end) = self.submit_pass(pass, shutdown).await? {
                    return Ok(end);
                }
            }
            if self.state.batches.is_empty() {
                if self.state.retry.is_empty() && !self.unsubmitted {
                    return Ok(Drive::Stopped(StopReason::Completed));
                }
                continue;
            }
            let finals = self.poll().await?;
            if finals.is_empty() && self.only_deferred_left() {
                return Ok(Drive::Stopped(StopReason::Failed(self.deferred_error())));
            }
            if !finals.is_empty() {
                self.collect_in_groups(finals).await?;
                continue;
            }
            if let Some(end) = self.wait_to_poll(shutdown).await {
                return Ok(end);
            }
        }
    }

    /// Another pass over the input, when one is due: the rows a pass stopped before
    /// (`--batch-max-pending`), once half are collected, and with them the rows to retry; or,
    /// when no batch is left, the rows to retry (and any row an earlier pass missed) — which
    /// `--fallback live` hands to the live runner instead.
    fn next_pass(&mut self) -> Result<ControlFlow<Drive, Option<input::RowStream>>, Error> {
        let again = self.unsubmitted && self.may_submit_again();
        let retry = self.state.batches.is_empty() && !self.state.retry.is_empty();
        if !again && retry && self.opts.batch.fallback == Fallback::Live {
            // The state keeps the rows' spend until their live records hold it.
            self.state.retry.clear();
            self.save()?;
            return Ok(ControlFlow::Break(Drive::GoLive(Handover {
                spent: self.state.spent.clone(),
                earlier: std::mem::take(&mut self.earlier),
            })));
        }
        if !again && !retry {
            return Ok(ControlFlow::Continue(None));
        }
        let rows = input::open(
            &self.opts.input,
            &self.opts.request,
            Some(self.skip.clone()),
        )?;
        Ok(ControlFlow::Continue(Some(rows)))
    }

    /// Submits one pass over the input; the run's end when the pass ends it (budget with no
    /// batch in flight, interrupt, failure, `--detach`).
    async fn submit_pass(
        &mut self,
        pass: input::RowStream,
        shutdown: &Shutdown,
    ) -> Result<Option<Drive>, Error> {
        match self.submit(pass, shutdown).await? {
            Submitted::All => (self.unsubmitted, self.budget_bound) = (false, false),
            Submitted::Full => (self.unsubmitted, self.budget_bound) = (true, false),
            Submitted::Budget if self.state.batches.is_empty() => {
                let cap = self.opts.cost.max_cost.unwrap_or_default();
                return Ok(Some(Drive::Stopped(StopReason::Budget { cap })));
            }
            Submitted::Budget => {
                // The batches in flight are paid for whatever happens: they are
                // collected, and what they cost decides whether more fit.
                notice!(
                    "--max-cost: no more batches are submitted while the {} in flight ({} rows) run; they are collected first",
                    self.state.batches.len(),
                    crate::util::human::group(self.pending_rows())
                );
                (self.unsubmitted, self.budget_bound) = (true, true);
            }
            Submitted::Halted => return Ok(Some(Drive::Stopped(StopReason::Interrupted))),
            Submitted::Failed(e) => return Ok(Some(Drive::Stopped(StopReason::Failed(e)))),
        }
        if self.opts.batch.detach {
            let rows: usize = self.state.batches.iter().map(|b| b.rows.len()).sum();
            return Ok(Some(Drive::Stopped(StopReason::Detached {
                batches: self.state.batches.len() as u64,
                rows: rows as u64,
                state: self.state_path.clone(),
            })));
        }
        Ok(None)
    }

    /// Why the run stops when only batches whose files stayed short are left.
    fn deferred_error(&self) -> Error {
        Error::FatalApi(format!(
            "the files of {} finished batches stayed shorter than they report ({}); they are kept in {} and their rows are not submitted again: run the same command later to download them again",
            self.deferred.len(),
            self.deferred.iter().cloned().collect::<Vec<_>>().join(", "),
            self.state_path.display()
        ))
    }

    /// Collects the final batches, last entry first (so the earlier entries keep their
    /// places), a few batches per pass over the input (memory: their answers), up to
    /// `COLLECT_ROWS` rows.
    async fn collect_in_groups(
        &mut self,
        mut finals: Vec<(usize, BatchObject)>,
    ) -> Result<(), Error> {
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
        self.collect(group).await
    }

    /// Waits `--poll-every` before the next poll; the run's end when a signal stops the wait
    /// (the batches keep running at the provider).
    async fn wait_to_poll(&self, shutdown: &Shutdown) -> Option<Drive> {
        tokio::select! {
            biased;
            _ = shutdown.stop_dispatch.cancelled() => {
                notice!(
                    "stopped waiting: {} batches keep running at the provider (state in {}); the same command collects them later, `promptbatch cancel {}` cancels them",
                    self.state.batches.len(),
                    self.state_path.display(),
                    self.output.display()
                );
                Some(Drive::Stopped(StopReason::Interrupted))
            }
            _ = tokio::time::sleep(self.opts.batch.poll_every) => None,
        }
    }

    /// The worst-case cost of a request at batch prices (0 without --max-cost).
    fn worst_case(&self, request: &ChatRequest) -> Result<f64, Error> {
        if self.opts.cost.max_cost.is_none() {
            return Ok(0.0);
        }
        let price = self
            .prices
            .get(&request.model)
            .ok_or_else(|| crate::money::budget::unenforceable(&request.model))?;
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
        notice!("PROMPTBATCH_TEST_ABORT_AT={point}: aborting the process");
        std::process::abort();
    }
}
