//! The orchestrator of `promptbatch run`: lock the output (then work on its real path), back it
//! up with --fresh, plan a resume, then reader thread → bounded queue → dispatcher (one task,
//! `--concurrency` permits, budget check) → worker tasks → bounded queue → writer thread; with
//! --ordered, sort the output by row at the end.
//!
//! Invariants: at most `concurrency` requests are in flight (and at most twice that many rows
//! open: a row waiting out a 429 lends its slot, see `worker::Slots`); the queues are bounded, so
//! memory does
//! not grow with the input; every dispatched row gets exactly one record unless the run is
//! halting (interrupt, fatal API error), in which case unfinished rows get none and stay for
//! resume; rows an earlier run finished are never dispatched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use crate::api::{ApiClient, ApiKey, ClientOptions};
use crate::breaker::Breaker;
use crate::budget::{Budget, Reservation};
use crate::cost::PriceTable;
use crate::error::Error;
use crate::input::{self, InputOptions, Row, RowContent, RowSet};
use crate::job::Job;
use crate::limit::Limits;
use crate::output::lock::OutputLock;
use crate::output::resume::{Plan, ResumeIndex};
use crate::output::resume_sorted;
use crate::output::{backup, export, order, replace, writer, Finished, Record, Writer};
use crate::paths;
use crate::progress::{self, Counters, Reporter, StopReason, Summary};
use crate::repeats::Repeats;
use crate::shutdown::Shutdown;
use crate::sim;
use crate::worker::{self, RowPlace, Slots, WorkerContext};

impl Job {
    /// Runs the job to its end. Errors found before anything is sent (options, key, input
    /// header, output path, a locked output) are `Err`; everything after that ends in a
    /// [`Summary`] whose `stop` says why the run ended.
    pub async fn run(&self) -> Result<Summary, Error> {
        let shutdown = Shutdown::new();
        if self.handle_signals {
            shutdown.listen_for_signals(self.grace);
        }
        run(self, shutdown).await
    }
}

/// Runs a whole dataset (see [`Job::run`]). `-o x.parquet`: the run works on its JSONL
/// checkpoint (`x.parquet.jsonl`: the lock, `--fresh`, resume and the writer all apply to it,
/// exactly as to a JSONL output) and writes the Parquet file from it once every row has a record.
async fn run(opts: &Job, shutdown: Shutdown) -> Result<Summary, Error> {
    if !paths::is_parquet(&opts.output.path) {
        return run_to(opts, shutdown).await;
    }
    let dest = opts.output.path.clone();
    let checkpoint = paths::checkpoint(&dest);
    check_parquet_output(opts, &dest, &checkpoint)?;
    let mut job = opts.clone();
    job.output.path = checkpoint;
    let mut summary = run_to(&job, shutdown).await?;
    if matches!(summary.stop, StopReason::Completed) {
        // Under the lock: run_to's lock is released, so take the checkpoint's again.
        let lock = OutputLock::acquire(&job.output.path)?;
        match export::export(lock.path(), &dest) {
            Ok(exported) => say!(
                "wrote {} records to {} (from its checkpoint {})",
                crate::human::group(exported.records),
                dest.display(),
                job.output.path.display()
            ),
            Err(e) => summary.stop = StopReason::Failed(e),
        }
    } else {
        say!(
            "{} is not written yet: the records so far are in its checkpoint {} (run the same \
             command again to finish, or `promptbatch export {} {}` for what is there now)",
            dest.display(),
            job.output.path.display(),
            job.output.path.display(),
            dest.display()
        );
    }
    Ok(summary)
}

/// `-o x.parquet` may not replace its own input, nor a Parquet file that has no checkpoint (it
/// was not written by a run of this output, or its checkpoint is gone).
fn check_parquet_output(opts: &Job, dest: &Path, checkpoint: &Path) -> Result<(), Error> {
    if let (Ok(input), Ok(output)) = (
        std::fs::canonicalize(&opts.input.path),
        std::fs::canonicalize(dest),
    ) {
        if input == output {
            return Err(Error::Config(format!(
                "--output {} is the input file; choose another output file",
                dest.display()
            )));
        }
    }
    if dest.exists() && !checkpoint.exists() {
        return Err(Error::Config(format!(
            "{} exists but its checkpoint {} does not: it was not written by a run of this \
             output, or its checkpoint was removed; move it away or choose another --output",
            dest.display(),
            checkpoint.display()
        )));
    }
    Ok(())
}

/// Runs a whole dataset into a JSONL or CSV output: prepare, start the pipeline, dispatch, wait
/// for the workers, then conclude with one stop reason.
async fn run_to(opts: &Job, shutdown: Shutdown) -> Result<Summary, Error> {
    let started = Instant::now();
    let prepared = prepare(opts).await?;
    let Prepared {
        client,
        _simulator,
        _lock,
        output,
        plan,
        rows,
        prices,
    } = prepared;
    let budget = opts
        .cost
        .max_cost
        .map(|cap| Budget::new(cap, plan.as_ref().map_or(0.0, |p| p.spent)));

    let counters = Arc::new(Counters::default());
    if !matches!(opts.display, progress::Display::Quiet) {
        spawn_row_count(&opts.input, plan.as_ref(), counters.clone());
    }
    let concurrency = opts.limits.concurrency as usize;
    let writer = Writer::start(&output, concurrency * 2, record_observer(opts, &counters))?;
    let reporter = Reporter::start(counters.clone(), opts.display);
    let permits = Arc::new(Semaphore::new(concurrency));
    let ctx = Arc::new(WorkerContext {
        slots: Slots::new(permits.clone(), opts.limits.concurrency),
        client,
        limits: Limits::new(opts.limits.rpm, opts.limits.tpm).with_progress(counters.clone()),
        counters: counters.clone(),
        shutdown,
        retry: opts.retry,
        prices,
        budget,
        fatal: Mutex::new(None),
        simulated: opts.dry_run.is_some(),
        breaker: Breaker::default(),
        warnings: Repeats::default(),
    });

    let chunk_rows = if opts.input.reads_once() {
        1
    } else {
        CHUNK_ROWS
    };
    let row_queue = spawn_reader(rows, chunk_rows);
    let mut workers = Workers::default();
    let dispatched = dispatch(
        row_queue,
        &ctx,
        &permits,
        &writer.sender,
        &opts.request.model,
        &mut workers,
    )
    .await;
    if matches!(dispatched, DispatchEnd::Budget) {
        say!("budget cap reached: no new rows are sent; waiting for the ones in flight");
    }
    wait_for_workers(&mut workers, &ctx.shutdown, opts.grace).await;
    // Error records the circuit breaker still holds (streaks too short to trip) are written.
    send_released(&ctx, ctx.breaker.take_parked(), &writer.sender).await;
    let mut written = writer.finish();
    reporter.finish().await;
    if opts.output.ordered && written.is_ok() {
        written = put_in_input_order(&output);
    }

    // Rows of a refused model get no record on purpose (the next run sends them).
    let unrecorded = counters
        .dispatched
        .load(Relaxed)
        .saturating_sub(counters.done() + ctx.breaker.held_back());
    let stop = stop_reason(&ctx, &workers, written, dispatched, unrecorded);
    Ok(summarize(&ctx, plan.as_ref(), started, stop, unrecorded))
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

/// What a run has once it is ready to send: everything that can fail before the first request.
struct Prepared {
    client: ApiClient,
    /// The --dry-run simulator, kept alive for the run.
    _simulator: Option<sim::SimHandle>,
    /// The lock on the output, held for the run.
    _lock: OutputLock,
    /// The output's real path.
    output: PathBuf,
    /// The resume plan when the output had records.
    plan: Option<Plan>,
    /// The rows still to send.
    rows: input::RowStream,
    prices: PriceTable,
}

/// Checks the input (header, columns) and the options, connects (or starts the simulator),
/// locks the output (backing it up with --fresh) and plans the resume.
async fn prepare(opts: &Job) -> Result<Prepared, Error> {
    // Open (and so validate: header, columns) the input before anything else. A file is opened
    // again after the resume plan, to skip the rows it found done; standard input cannot be read
    // twice (and cannot be resumed), so its first opening is the one that is read.
    let early_rows = input::open(&opts.input, &opts.request, None)?;
    let prices = PriceTable::load(opts.cost.prices.as_deref())?;
    let (client, simulator) = connect(opts).await?;
    refuse_output_over_input(opts)?;
    writer::check_folder(&opts.output.path)?;
    // Temporary sorted runs (duplicate ids of a large input) go next to the output.
    crate::spill::set_dir(match opts.output.path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    });
    let (lock, output) = take_output(opts)?;
    let (done_rows, plan) = plan_resume(opts, &output)?;
    let rows = match done_rows {
        Some(done) => {
            drop(early_rows);
            input::open(&opts.input, &opts.request, Some(done))?
        }
        None => early_rows,
    };
    if let Some(plan) = &plan {
        say!("{}", plan.describe());
    }
    Ok(Prepared {
        client,
        _simulator: simulator,
        _lock: lock,
        output,
        plan,
        rows,
        prices,
    })
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
            crate::human::group(unrecorded)
        )),
        _ => StopReason::Completed,
    }
}

/// What the writer does with each record once it is in the file: count it, and hand it to the
/// caller's callback if the job has one.
fn record_observer(opts: &Job, counters: &Arc<Counters>) -> Box<dyn FnMut(&Record) + Send> {
    let counters = counters.clone();
    let callback = opts.on_record.clone();
    Box::new(move |record| {
        counters.record_written(record);
        if let Some(callback) = &callback {
            if let Ok(mut callback) = callback.lock() {
                callback(record);
            }
        }
    })
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

/// Locks the output and returns its real path, after finishing a rewrite a crash interrupted and,
/// with --fresh, moving the earlier output to a new backup.
fn take_output(opts: &Job) -> Result<(OutputLock, PathBuf), Error> {
    let lock = OutputLock::acquire(&opts.output.path)?;
    let output = lock.path().to_path_buf();
    replace::finish_interrupted(&output)?;
    if opts.output.fresh {
        if let Some(backup) = backup::move_aside(&output)? {
            // The new, empty output is locked before the old one's lock is released.
            let lock = OutputLock::acquire(&output)?;
            say!(
                "starting over (--fresh): the earlier output is kept as {}",
                backup.display()
            );
            return Ok((lock, output));
        }
    }
    Ok((lock, output))
}

/// An output that is the input file itself would be read as earlier results and appended to.
fn refuse_output_over_input(opts: &Job) -> Result<(), Error> {
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

/// When OUTPUT (at its real path `output`) has records: index it, claim the rows already done in
/// a first pass over the input, and rewrite it without the records that will be redone. Returns
/// the done rows and the plan; `None` for a new output.
fn plan_resume(opts: &Job, output: &Path) -> Result<(Option<RowSet>, Option<Plan>), Error> {
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
    // The whole input, --limit or not: records of rows beyond the limit are kept.
    let whole_input = InputOptions {
        limit: None,
        ..opts.input.clone()
    };
    let say_torn = |torn: Option<&crate::output::read::Torn>| {
        if let Some(torn) = torn {
            say!(
                "{}:{}: dropping a torn last record left by an interrupted run ({}); its row is sent again unless another record covers it",
                output.display(),
                torn.line,
                torn.reason
            );
        }
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
        opts.dry_run.is_some(),
        opts.input.limit,
        rows,
        unchecked.then_some((&whole_input, &opts.request)),
    )? {
        say_torn(sorted.torn());
        sorted.rewrite_if_needed()?;
        return Ok((Some(done_rows), Some(plan)));
    }
    let rows = input::open(&whole_input, &opts.request, None)?;
    let (index, plan, done_rows) = ResumeIndex::plan(
        output,
        opts.output.keep_errors,
        opts.dry_run.is_some(),
        opts.input.limit,
        rows,
    )?;
    say_torn(index.torn());
    index.rewrite_if_needed()?;
    Ok((Some(done_rows), Some(plan)))
}

/// --ordered: the output was written as rows finished; now it is put in input order.
fn put_in_input_order(output: &Path) -> Result<(), Error> {
    let moved = order::sort_by_row(output)?;
    if moved > 0 {
        say!(
            "--ordered: put {} records in input order in {}",
            crate::human::group(moved),
            output.display()
        );
    }
    Ok(())
}

/// Counts the rows to send in the background, for the progress total (only shown when not quiet:
/// it is a second pass over the input).
fn spawn_row_count(opts: &InputOptions, plan: Option<&Plan>, counters: Arc<Counters>) {
    if let Some(plan) = plan {
        counters.total_rows.store(plan.to_send(), Relaxed);
        return;
    }
    let opts = opts.clone();
    std::thread::spawn(move || {
        if let Some(n) = input::count_rows(&opts) {
            counters.total_rows.store(n, Relaxed);
        }
    });
}

/// Rows the reader hands over at once (1 for standard input, whose rows may trickle in).
const CHUNK_ROWS: usize = 64;
/// Chunks that may wait in the reader's queue.
const QUEUED_CHUNKS: usize = 4;

/// A few rows, handed from the reader to the dispatcher together (one wake-up, not one per row).
type Chunk = Vec<Result<Row, Error>>;

/// Reads rows on a thread of its own into a bounded queue of chunks (the reader blocks when it
/// is full). An `Err` item is the last one sent.
fn spawn_reader(rows: input::RowStream, chunk_rows: usize) -> mpsc::Receiver<Chunk> {
    let (sender, receiver) = mpsc::channel(QUEUED_CHUNKS);
    std::thread::spawn(move || {
        let mut chunk = Vec::with_capacity(chunk_rows);
        for item in rows {
            let stop = item.is_err();
            chunk.push(item);
            if chunk.len() >= chunk_rows || stop {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(chunk_rows));
                if sender.blocking_send(full).is_err() || stop {
                    return;
                }
            }
        }
        if !chunk.is_empty() {
            let _ = sender.blocking_send(chunk);
        }
    });
    receiver
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
    default_model: &str,
    workers: &mut Workers,
) -> DispatchEnd {
    let mut feed = RowFeed {
        chunks,
        pending: Vec::new().into_iter(),
    };
    loop {
        if ctx.breaker.all_refused() {
            return DispatchEnd::Refused;
        }
        let row = match feed.next(&ctx.shutdown).await {
            Ok(row) => row,
            Err(end) => return end,
        };
        let admitted = match admit(row, ctx, permits).await {
            Ok(admitted) => admitted,
            Err(end) => return end,
        };
        ctx.counters.dispatched.fetch_add(1, Relaxed);
        workers.reap();
        if let Err(end) = start(admitted, ctx, records, default_model, workers).await {
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
}

impl RowFeed {
    /// The next row; `Err` with why dispatching ends (input exhausted or malformed, halted).
    async fn next(&mut self, shutdown: &Shutdown) -> Result<Row, DispatchEnd> {
        loop {
            if let Some(item) = self.pending.next() {
                return item.map_err(DispatchEnd::Failed);
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
    default_model: &str,
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
        line: row.line,
    };
    let request = match row.content {
        RowContent::Invalid { prompt, message } => {
            let record = worker::invalid_record(ctx, place, prompt, default_model, message);
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
            reservation.settle(
                own.and_then(|r| r.cost_usd),
                own.map_or(0, |r| r.completion_tokens),
            );
        }
        if let Some(record) = outcome.own {
            let finished = Finished {
                record,
                slot: Some(permit),
            };
            let _ = records.send(finished).await;
        }
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
        worker::warn_row_failed(ctx, &record);
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
