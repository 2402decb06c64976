//! The live pool on a prepared run: reader thread → bounded queue → dispatcher (one task,
//! `--concurrency` permits, budget check) → worker tasks → bounded queue → writer thread; with
//! --ordered, the output sorted by row at the end.
//!
//! Invariants: at most `concurrency` requests are in flight (and at most 17 times that many rows
//! open: a row waiting out a 429 lends its slot, see `worker::Slots`); the queues are bounded, so
//! memory does not grow with the input; every dispatched row gets exactly one record unless the
//! run is halting (interrupt, fatal API error), in which case unfinished rows get none and stay
//! for resume; rows an earlier run finished are never dispatched.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::error::Error;
use crate::events::notice;
use crate::input::{self, InputOptions, Row, RowContent};
use crate::job::pipeline::{put_in_input_order, spawn_reader, writer_hooks, Chunk, CHUNK_ROWS};
use crate::job::prepare::Prepared;
use crate::job::Job;
use crate::live::breaker::Breaker;
use crate::live::limit::Limits;
use crate::live::worker::{self, RowPlace, Slots, WorkerContext};
use crate::money::budget::{Budget, Reservation};
use crate::output::resume::Plan;
use crate::output::{Finished, Record, Writer};
use crate::progress::repeated_warnings::Repeats;
use crate::progress::shutdown::Shutdown;
use crate::progress::{Counters, Reporter, StopReason, Summary};

/// The live pipeline on a prepared run: reader, dispatcher, workers, writer, counting into
/// `counters`.
pub(crate) async fn run(
    opts: &Job,
    prepared: Prepared,
    counters: Arc<Counters>,
    shutdown: Shutdown,
    started: Instant,
) -> Result<Summary, Error> {
    let Prepared {
        client,
        _simulator,
        _lock,
        output,
        plan,
        rows,
        prices,
        kept_columns,
        schema,
        output_format,
        done: _,
        followers,
        carried,
    } = prepared;
    let fill_into = crate::reuse::WriteTo {
        output: output.clone(),
        format: output_format,
        kept_columns: kept_columns.clone(),
    };
    if !matches!(opts.display, crate::progress::Display::Quiet) {
        spawn_row_count(
            &opts.input,
            opts.request.models_per_row(),
            plan.as_ref(),
            counters.clone(),
        );
    }
    let concurrency = opts.limits.concurrency as usize;
    let writer = Writer::start(
        &output,
        concurrency * 2,
        output_format,
        kept_columns,
        opts.request.models_per_row(),
        writer_hooks(opts, &counters),
    )?;
    let reporter = Reporter::start(counters.clone(), opts.display);
    let permits = Arc::new(Semaphore::new(concurrency));
    let shared = Shared {
        client,
        prices,
        schema,
        carried,
    };
    let ctx = context(opts, shared, plan.as_ref(), &permits, &counters, shutdown);
    let ctx = Arc::new(ctx);
    let chunk_rows = if opts.input.reads_once() {
        1
    } else {
        CHUNK_ROWS
    };
    let row_queue = spawn_reader(rows, chunk_rows);
    let mut workers = Workers::default();
    let dispatched = dispatch(row_queue, &ctx, &permits, &writer.sender, &mut workers).await;
    if matches!(dispatched, DispatchEnd::Budget) {
        counters.log_event("budget", serde_json::json!({"cap": opts.cost.max_cost}));
        notice!("budget cap reached: no new rows are sent; waiting for the ones in flight");
    }
    wait_for_workers(&mut workers, &ctx.shutdown, opts.grace).await;
    // Error records the circuit breaker still holds (streaks too short to trip) are written.
    send_released(&ctx, ctx.breaker.take_parked(), &writer.sender).await;
    let mut written = writer.finish();
    if written.is_ok() {
        written = crate::reuse::after_send(opts, followers, fill_into, &counters).await;
    }
    reporter.finish().await;
    if opts.output.ordered && written.is_ok() {
        written = put_in_input_order(&output, &opts.request.models);
    }

    let (stop, unrecorded) = settle(&ctx, &workers, written, dispatched, &output);
    let mut summary = summarize(&ctx, plan.as_ref(), started, stop, unrecorded);
    summary.models = opts.request.models_per_row();
    Ok(summary)
}

/// What the prepare stage hands the workers.
struct Shared {
    client: crate::api::ApiClient,
    prices: crate::money::cost::PriceTable,
    schema: Option<crate::api::schema::AnswerSchema>,
    carried: crate::money::spent::Carried,
}

/// Everything the workers share: the slots, the pacing, the budget (earlier runs' spend
/// counted), the breaker (which models an earlier run saw work).
fn context(
    opts: &Job,
    shared: Shared,
    plan: Option<&Plan>,
    permits: &Arc<Semaphore>,
    counters: &Arc<Counters>,
    shutdown: Shutdown,
) -> WorkerContext {
    let budget = opts
        .cost
        .max_cost
        .map(|cap| Budget::new(cap, plan.map_or(0.0, |p| p.spent)));
    WorkerContext {
        slots: Slots::new(permits.clone(), opts.limits.concurrency),
        client: shared.client,
        limits: Limits::new(opts.limits.rpm, opts.limits.tpm).with_progress(counters.clone()),
        counters: counters.clone(),
        shutdown,
        retry: opts.retry,
        prices: shared.prices,
        budget,
        fatal: Mutex::new(None),
        simulated: opts.dry_run.is_some(),
        keep_response: opts.output.keep_response,
        schema: shared.schema,
        breaker: Breaker::new(
            plan.map(|p| p.worked).unwrap_or_default(),
            opts.output.keep_errors,
        )
        .reporting_to(counters.clone()),
        carried: shared.carried,
        warnings: Repeats::default(),
        recovery: worker::Recovery::default(),
        prefix_gate: crate::live::prefix_gate::PrefixGate::from_env(),
    }
}

/// Why the pool stopped, and how many dispatched rows have no record. Rows of a refused model
/// get none on purpose (the next run sends them). A completed run drops the spend its rows
/// carried from the batch state (their records hold it now).
fn settle(
    ctx: &WorkerContext,
    workers: &Workers,
    written: Result<(), Error>,
    dispatched: DispatchEnd,
    output: &std::path::Path,
) -> (StopReason, u64) {
    let counters = &ctx.counters;
    let unrecorded = counters
        .dispatched
        .load(Relaxed)
        .saturating_sub(counters.done() + ctx.breaker.held_back());
    let mut stop = stop_reason(ctx, workers, written, dispatched, unrecorded);
    if matches!(stop, StopReason::Completed) {
        if let Err(e) = crate::batch::before_run::forget_carried_spend(output, &ctx.carried) {
            stop = StopReason::Failed(e);
        }
    }
    (stop, unrecorded)
}

/// The run's summary: the counters, what the resume plan found, and why it stopped.
fn summarize(
    ctx: &WorkerContext,
    plan: Option<&Plan>,
    started: Instant,
    stop: StopReason,
    unrecorded: u64,
) -> Summary {
    let mut summary = Summary::new(&ctx.counters, started.elapsed(), stop);
    if let Some(plan) = plan {
        summary.done_before = plan.done;
        summary.kept_errors = plan.kept_errors;
    }
    summary.simulated = ctx.simulated;
    summary.unrecorded = unrecorded;
    summary.warnings_suppressed = ctx.warnings.suppressed();
    (summary.rate_limited, summary.paused) = ctx.limits.pacer().totals();
    summary
}

/// Lets every row's task end; after an interrupt or a fatal error, only for `grace`, then
/// aborts them. (The tasks, not the concurrency permits: a row waiting out a 429 lends its
/// permit, so the permits can all be back while that row is still open.)
async fn wait_for_workers(workers: &mut Workers, shutdown: &Shutdown, grace: std::time::Duration) {
    let ended = tokio::select! {
        _ = workers.join_all() => true,
        _ = halted_past_grace(shutdown, grace) => false,
    };
    if !ended {
        shutdown.abort.cancel();
        workers.join_all().await;
    }
}

/// The one reason the run stopped, from everything that can stop it, most serious first: the
/// output could not be written, a worker crashed, the API refused the run (or could not be
/// reached), the input was malformed, every model was refused, the budget, an interrupt, rows
/// without a record; else the run completed.
fn stop_reason(
    ctx: &WorkerContext,
    workers: &Workers,
    written: Result<(), Error>,
    dispatched: DispatchEnd,
    unrecorded: u64,
) -> StopReason {
    let fatal = ctx.fatal.lock().ok().and_then(|mut f| f.take());
    let refusals = ctx.breaker.refusals();
    match (written, dispatched, fatal) {
        (Err(e), _, _) => StopReason::Failed(e),
        _ if workers.failed() => StopReason::Crashed(workers.describe_failures()),
        (_, _, Some(message)) => match ctx.client.network_fault() {
            Some(fault) => StopReason::Unreachable(fault.to_string()),
            None => StopReason::Fatal(message),
        },
        (_, DispatchEnd::Failed(e), _) => StopReason::Failed(e),
        _ if !refusals.is_empty() => StopReason::Refused(refusals),
        (_, DispatchEnd::Budget, _) => StopReason::Budget {
            cap: ctx.budget.as_ref().map_or(0.0, Budget::cap),
        },
        _ if ctx.shutdown.interrupted() => StopReason::Interrupted,
        _ if unrecorded > 0 => StopReason::Crashed(format!(
            "{} dispatched rows have no record",
            crate::util::human::group(unrecorded)
        )),
        _ => StopReason::Completed,
    }
}

/// Counts the rows to send in the background, for the progress total (only shown when not quiet:
/// it is a second pass over the input).
fn spawn_row_count(opts: &InputOptions, models: u64, plan: Option<&Plan>, counters: Arc<Counters>) {
    if let Some(plan) = plan {
        counters.total_rows.store(plan.rows_to_send(), Relaxed);
        return;
    }
    let opts = opts.clone();
    std::thread::spawn(move || {
        if let Some(n) = input::count_rows(&opts) {
            // One unit per (row, model); a row naming its own model is one, which the
            // dispatcher counts as it hands such rows out.
            counters.total_per_own_model_row.store(models - 1, Relaxed);
            counters.total_rows.store(n * models, Relaxed);
        }
    });
}

/// Why dispatching ended.
enum DispatchEnd {
    /// Every row was handed out.
    Exhausted,
    /// Interrupt, fatal API error or a failed writer.
    Halted,
    /// The next row would have passed --max-cost.
    Budget,
    /// A malformed input record (or a budget that cannot be enforced).
    Failed(Error),
    /// Every model the run used was refused and nothing succeeded: reading stopped.
    Refused,
}

/// Hands rows to workers until the input ends, the run halts, the budget is reached or a row is
/// malformed: each row is read, admitted (a budget reservation, then a concurrency permit) and
/// started.
async fn dispatch(
    chunks: mpsc::Receiver<Chunk>,
    ctx: &Arc<WorkerContext>,
    permits: &Arc<Semaphore>,
    records: &mpsc::Sender<Finished>,
    workers: &mut Workers,
) -> DispatchEnd {
    let mut feed = RowFeed {
        chunks,
        pending: Vec::new().into_iter(),
        ids_announced: false,
    };
    loop {
        if ctx.breaker.all_refused() {
            return DispatchEnd::Refused;
        }
        let row = match feed.next(&ctx.shutdown).await {
            Ok(row) => row,
            Err(end) => return end,
        };
        if row.own_model {
            ctx.counters.own_model_rows.fetch_add(1, Relaxed);
        }
        let admitted = match admit(row, ctx, permits).await {
            Ok(admitted) => admitted,
            Err(end) => return end,
        };
        ctx.counters.dispatched.fetch_add(1, Relaxed);
        workers.reap();
        if let Err(end) = start(admitted, ctx, records, workers).await {
            return end;
        }
        if records.is_closed() {
            return DispatchEnd::Halted;
        }
    }
}

/// The reader's chunks, one row at a time.
struct RowFeed {
    chunks: mpsc::Receiver<Chunk>,
    pending: std::vec::IntoIter<Result<Row, Error>>,
    /// Whether the first row identified by its row number was announced.
    ids_announced: bool,
}

impl RowFeed {
    /// The next row; `Err` with why dispatching ends (input exhausted or malformed, halted).
    async fn next(&mut self, shutdown: &Shutdown) -> Result<Row, DispatchEnd> {
        loop {
            if let Some(item) = self.pending.next() {
                let row = item.map_err(DispatchEnd::Failed)?;
                if !row.explicit_id && !self.ids_announced {
                    self.ids_announced = true;
                    notice!(
                        "note: rows without an `id` or `custom_id` are identified by their row number \
                         (row {} is the first); to use a column of yours, pass --id-column NAME, or \
                         copy it into the output with --keep-columns NAME",
                        row.row
                    );
                }
                return Ok(row);
            }
            let chunk = tokio::select! {
                biased;
                _ = shutdown.stop_dispatch.cancelled() => return Err(DispatchEnd::Halted),
                chunk = self.chunks.recv() => chunk,
            };
            match chunk {
                None => return Err(DispatchEnd::Exhausted),
                Some(chunk) => self.pending = chunk.into_iter(),
            }
        }
    }
}

/// A row admitted to the pool: it holds its concurrency permit (released once its record is
/// written) and, under --max-cost, its worst-case budget reservation (released if dropped
/// unsettled).
struct Admitted {
    row: Row,
    permit: OwnedSemaphorePermit,
    reservation: Option<Reservation>,
}

/// Reserves the row's worst case under --max-cost, then waits for a concurrency permit.
async fn admit(
    row: Row,
    ctx: &WorkerContext,
    permits: &Arc<Semaphore>,
) -> Result<Admitted, DispatchEnd> {
    let stop = &ctx.shutdown.stop_dispatch;
    let reservation = match (&ctx.budget, &row.content) {
        (Some(budget), RowContent::Request(request)) => {
            let worst = budget
                .worst_case(&ctx.prices, request)
                .map_err(DispatchEnd::Failed)?;
            let reserved = tokio::select! {
                biased;
                _ = stop.cancelled() => return Err(DispatchEnd::Halted),
                reserved = budget.reserve(worst) => reserved,
            };
            Some(reserved.ok_or(DispatchEnd::Budget)?)
        }
        _ => None,
    };
    let permit = tokio::select! {
        biased;
        _ = stop.cancelled() => return Err(DispatchEnd::Halted),
        permit = permits.clone().acquire_owned() => permit.expect("never closed"),
    };
    Ok(Admitted {
        row,
        permit,
        reservation,
    })
}

/// Starts an admitted row: a worker task for a request; an invalid row's error record goes
/// straight to the writer (`worker::invalid_record` makes it).
async fn start(
    admitted: Admitted,
    ctx: &Arc<WorkerContext>,
    records: &mpsc::Sender<Finished>,
    workers: &mut Workers,
) -> Result<(), DispatchEnd> {
    let Admitted {
        row,
        permit,
        reservation,
    } = admitted;
    let place = RowPlace {
        id: row.id,
        row: row.row,
        slot: row.slot,
        line: row.line,
        kept: row.kept,
    };
    let request = match row.content {
        RowContent::Invalid {
            prompt,
            message,
            model,
        } => {
            let record = worker::invalid_record(ctx, place, prompt, &model, message);
            let finished = Finished {
                record,
                slot: Some(permit),
            };
            return records
                .send(finished)
                .await
                .map_err(|_| DispatchEnd::Halted);
        }
        RowContent::Request(request) => request,
    };
    let ctx = ctx.clone();
    let records = records.clone();
    workers.spawn(place.row, async move {
        let outcome = worker::process(&ctx, place, request).await;
        if let Some(reservation) = reservation {
            let own = outcome.own.as_ref();
            // What the batch part paid for the row is on the books already.
            if outcome.cost_unknown {
                reservation.spend_all();
            } else {
                reservation.settle(
                    own.and_then(|r| r.cost_usd)
                        .map(|cost| (cost - outcome.carried_usd).max(0.0)),
                    own.map_or(0, |r| r.completion_tokens),
                );
            }
        }
        if let Some(record) = outcome.own {
            let finished = Finished {
                record,
                slot: Some(permit),
            };
            let _ = records.send(finished).await;
        }
        // Only now: the row's cost is on the books before its extra reservations go.
        drop(outcome.extra_reservations);
        send_released(&ctx, outcome.released, &records).await;
    });
    Ok(())
}

/// Writes error records the circuit breaker released (their rows' own slots are long gone).
async fn send_released(
    ctx: &WorkerContext,
    released: Vec<Record>,
    records: &mpsc::Sender<Finished>,
) {
    for record in released {
        // A refused model's streak is reported once, with the refusal, not row by row.
        if !ctx.breaker.refused(&record.model) {
            worker::warn_row_failed(ctx, &record);
        }
        let finished = Finished { record, slot: None };
        if records.send(finished).await.is_err() {
            return;
        }
    }
}

/// The worker tasks of a run, so that a task that panics is seen: its row is named, and the
/// run never reports success (the row has no record and is sent again by the next run).
#[derive(Default)]
struct Workers {
    tasks: JoinSet<()>,
    /// Row number of each running task.
    rows: HashMap<tokio::task::Id, u64>,
    /// Rows whose task panicked, with the first panic's message.
    panicked: Vec<u64>,
    first_panic: Option<String>,
}

impl Workers {
    fn spawn(&mut self, row: u64, work: impl std::future::Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(work).id();
        self.rows.insert(id, row);
    }

    /// Collects the tasks that have ended, without waiting.
    fn reap(&mut self) {
        while let Some(result) = self.tasks.try_join_next_with_id() {
            self.ended(result);
        }
    }

    /// Waits for every task to end.
    async fn join_all(&mut self) {
        while let Some(result) = self.tasks.join_next_with_id().await {
            self.ended(result);
        }
    }

    fn ended(&mut self, result: Result<(tokio::task::Id, ()), tokio::task::JoinError>) {
        let id = match result {
            Ok((id, ())) => id,
            Err(e) => {
                let id = e.id();
                if e.is_panic() {
                    self.panicked
                        .push(self.rows.get(&id).copied().unwrap_or_default());
                    self.first_panic
                        .get_or_insert_with(|| panic_message(e.into_panic()));
                }
                id
            }
        };
        self.rows.remove(&id);
    }

    fn failed(&self) -> bool {
        !self.panicked.is_empty()
    }

    /// "a worker failed on rows 3, 9 (internal error: …)".
    fn describe_failures(&self) -> String {
        const SHOWN: usize = 10;
        let mut rows: Vec<u64> = self.panicked.clone();
        rows.sort_unstable();
        let mut named: Vec<String> = rows.iter().take(SHOWN).map(u64::to_string).collect();
        if rows.len() > SHOWN {
            named.push(format!("and {} more", rows.len() - SHOWN));
        }
        format!(
            "internal error: a worker failed on input row{} {} ({}); please report it",
            if rows.len() == 1 { "" } else { "s" },
            named.join(", "),
            self.first_panic.as_deref().unwrap_or("no message")
        )
    }
}

/// The text of a panic payload.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "no message".to_string(), |s| s.to_string()),
    }
}

/// Completes `grace` after the run starts halting (interrupt or fatal error); never otherwise.
async fn halted_past_grace(shutdown: &Shutdown, grace: std::time::Duration) {
    shutdown.stop_dispatch.cancelled().await;
    tokio::select! {
        _ = tokio::time::sleep(grace) => {}
        _ = shutdown.abort.cancelled() => {}
    }
}
