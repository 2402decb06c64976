//! The orchestrator of `promptbatch run`: lock the output (then work on its real path), back it
//! up with --fresh, plan a resume (the prepare stage, shared with `--via batch`, which branches
//! to `batch::run` here), then reader thread → bounded queue → dispatcher (one task,
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
use crate::batch::{BatchEnd, Via};
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
use crate::output::{backup, order, replace, writer, Finished, Record, Writer};
use crate::progress::{self, Counters, Reporter, StopReason, Summary};
use crate::repeats::Repeats;
use crate::shutdown::Shutdown;
use crate::sim;
use crate::worker::{self, AnswerSchema, RowPlace, Slots, WorkerContext};

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

/// Runs a whole dataset (see [`Job::run`]): prepare, start the pipeline, dispatch, wait for the
/// workers, then conclude with one stop reason.
async fn run(opts: &Job, shutdown: Shutdown) -> Result<Summary, Error> {
    let started = Instant::now();
    if opts.via == Via::Batch && opts.input.reads_once() {
        return Err(Error::Config(format!(
            "--via batch reads the input again when its batches finish (to write their records), and {} can be read only once: save it to a file and pass that file",
            if crate::paths::is_stdin(&opts.input.path) { "standard input" } else { "rows in memory" }
        )));
    }
    let mut prepared = prepare(opts).await?;
    if opts.via == Via::Batch {
        match crate::batch::run(opts, prepared, &shutdown, started).await? {
            BatchEnd::Done(summary) => return Ok(summary),
            BatchEnd::Live(rest) => prepared = rest,
        }
    }
    run_live(opts, prepared, shutdown, started).await
}

/// The live pipeline on a prepared run: reader, dispatcher, workers, writer.
async fn run_live(
    opts: &Job,
    prepared: Prepared,
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
    let writer = Writer::start(
        &output,
        concurrency * 2,
        output_format,
        kept_columns,
        writer_hooks(opts, &counters),
    )?;
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
        keep_response: opts.output.keep_response,
        schema,
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
    let kept_columns = csv_kept_columns(opts)?;
    let schema = answer_schema(opts)?;
    let (lock, output) = take_output(opts)?;
    check_output_columns(&output, &kept_columns)?;
    let output_format = output_format(opts, &output)?;
    let (done_rows, plan) = plan_resume(opts, &output)?;
    let done = done_rows.clone();
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
        kept_columns,
        schema,
        output_format,
        done,
    })
}

/// The shape of the output's lines: `--output-format`, else the shape an existing output has,
/// else by extension. A shape other than the existing output's is refused (the file would mix
/// them), and so is a shape the extension contradicts (it is read back by extension).
fn output_format(opts: &Job, output: &Path) -> Result<crate::output::format::OutputFormat, Error> {
    use crate::output::format::OutputFormat;
    let csv_path = crate::paths::is_csv(output);
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
        let parsed = crate::schema::csv_columns(schema, &columns);
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
    Ok(names
        .iter()
        .map(|name| crate::output::record::kept_name(name).into_owned())
        .collect())
}

/// `--json-schema`: the compiled checker, and for a CSV output the parsed answer's
/// `(column, property)` columns.
fn answer_schema(opts: &Job) -> Result<Option<AnswerSchema>, Error> {
    let Some(schema) = &opts.request.json_schema else {
        return Ok(None);
    };
    let columns = match crate::paths::is_csv(&opts.output.path) {
        true => Some(crate::schema::csv_columns(
            schema,
            &kept_input_columns(opts)?,
        )),
        false => None,
    };
    Ok(Some((schema.checker()?, columns)))
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

/// What the writer does with each record once it is in the file (count it, and hand it to the
/// caller's callback if the job has one), and how it sees the requests in flight.
pub(crate) fn writer_hooks(opts: &Job, counters: &Arc<Counters>) -> writer::WriterHooks {
    let callback = opts.on_record.clone();
    let written = counters.clone();
    let in_flight = counters.clone();
    writer::WriterHooks {
        written: Box::new(move |record| {
            written.record_written(record);
            if let Some(callback) = &callback {
                if let Ok(mut callback) = callback.lock() {
                    callback(record);
                }
            }
        }),
        in_flight: Box::new(move || in_flight.in_flight.load(Relaxed)),
    }
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
pub(crate) fn put_in_input_order(output: &Path) -> Result<(), Error> {
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
pub(crate) type Chunk = Vec<Result<Row, Error>>;

/// Reads rows on a thread of its own into a bounded queue of chunks (the reader blocks when it
/// is full). An `Err` item is the last one sent.
pub(crate) fn spawn_reader(rows: input::RowStream, chunk_rows: usize) -> mpsc::Receiver<Chunk> {
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
                    say!(
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
        kept: row.kept,
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
