//! The orchestrator of `promptbatch run`: reader thread → bounded queue → dispatcher (one task,
//! `--concurrency` permits) → worker tasks → bounded queue → writer thread.
//!
//! Invariants: at most `concurrency` rows are in flight; the queues are bounded, so memory does
//! not grow with the input; every row that is dispatched gets exactly one record unless the run is
//! halting (interrupt, fatal API error), in which case unfinished rows get none.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{mpsc, Semaphore};

use crate::api::{ApiClient, ApiKey};
use crate::cli::{InputOptions, RunOptions};
use crate::cost::PriceTable;
use crate::error::Error;
use crate::input::{self, Row, RowContent};
use crate::limit::Limits;
use crate::output::record::RowInfo;
use crate::output::{writer, Record, Sequenced, Writer};
use crate::progress::{self, Counters, Reporter, StopReason, Summary};
use crate::shutdown::Shutdown;
use crate::sim;
use crate::worker::{self, RetryPolicy, WorkerContext};

/// Runs a whole dataset. Errors found before anything is sent (flags, key, header, output path)
/// are returned as `Err`; everything after that ends in a [`Summary`] whose `stop` says why the
/// run ended.
pub async fn run(opts: &RunOptions, shutdown: Shutdown) -> Result<Summary, Error> {
    let started = Instant::now();
    let rows = input::open(&opts.input, &opts.request)?;
    let prices = PriceTable::load(opts.prices.as_deref())?;
    let (client, _simulator) = connect(opts).await?;
    writer::prepare(&opts.output, opts.fresh)?;

    let counters = Arc::new(Counters::default());
    spawn_row_count(&opts.input, counters.clone());
    let concurrency = opts.concurrency as usize;
    let window = opts
        .ordered
        .then(|| Arc::new(Semaphore::new(reorder_window(concurrency))));
    let writer = Writer::start(
        &opts.output,
        concurrency * 2,
        window.clone(),
        counters.clone(),
    )?;
    let reporter = Reporter::start(
        counters.clone(),
        progress::Display::choose(opts.quiet, opts.log_every),
    );
    let ctx = Arc::new(WorkerContext {
        client,
        limits: Limits::new(opts.rpm, opts.tpm, opts.concurrency),
        counters: counters.clone(),
        shutdown: shutdown.clone(),
        retry: RetryPolicy {
            max_retries: opts.max_retries,
            base: opts.backoff_base,
            max: opts.backoff_max,
        },
        prices,
        fatal: Mutex::new(None),
    });

    let row_queue = spawn_reader(rows, concurrency.max(64));
    let permits = Arc::new(Semaphore::new(concurrency));
    let input_error = dispatch(
        row_queue,
        &ctx,
        &permits,
        window.as_deref(),
        &writer.sender,
        &opts.request.model,
    )
    .await;

    // Let in-flight rows finish; after an interrupt or a fatal error, only for --grace.
    let all_done = permits.acquire_many(opts.concurrency);
    tokio::pin!(all_done);
    tokio::select! {
        _ = &mut all_done => {}
        _ = halted_past_grace(&shutdown, opts.grace) => {
            shutdown.abort.cancel();
            let _ = all_done.await;
        }
    }
    let write_result = writer.finish();
    reporter.finish().await;

    let fatal = ctx.fatal.lock().ok().and_then(|mut f| f.take());
    let stop = match (write_result, input_error, fatal) {
        (Err(e), _, _) => StopReason::Failed(e),
        (_, _, Some(message)) => StopReason::Fatal(message),
        (_, Some(e), _) => StopReason::Failed(e),
        _ if shutdown.interrupted() => StopReason::Interrupted,
        _ => StopReason::Completed,
    };
    Ok(Summary::new(&counters, started.elapsed(), stop))
}

/// The API client: the real endpoint with the user's key, or a fresh simulator for --dry-run
/// (kept alive by the returned handle).
async fn connect(opts: &RunOptions) -> Result<(ApiClient, Option<sim::SimHandle>), Error> {
    let (base_url, key, simulator) = if opts.dry_run {
        let options = sim::SimOptions {
            latency: opts.dry_run_latency,
            ..Default::default()
        };
        let handle = sim::start("127.0.0.1:0", options)
            .await
            .map_err(|e| Error::io("cannot start the built-in simulator for --dry-run", e))?;
        (handle.base_url(), ApiKey::new("dry-run"), Some(handle))
    } else {
        let key = ApiKey::from_env(opts.api_key_env.as_deref())?;
        (opts.base_url.clone(), key, None)
    };
    let client = ApiClient::new(
        &base_url,
        key,
        opts.concurrency,
        opts.timeout,
        opts.connect_timeout,
    )?;
    tracing::info!("sending to {}", client.url());
    Ok((client, simulator))
}

/// Rows that may wait in the --ordered reorder buffer.
fn reorder_window(concurrency: usize) -> usize {
    (concurrency * 4).max(1024)
}

/// Counts the input's rows in the background, for the progress total.
fn spawn_row_count(opts: &InputOptions, counters: Arc<Counters>) {
    let opts = opts.clone();
    std::thread::spawn(move || {
        if let Some(n) = input::count_rows(&opts) {
            counters.total_rows.store(n, Relaxed);
        }
    });
}

/// Reads rows on a thread of its own into a bounded queue (the reader blocks when it is full).
fn spawn_reader(rows: input::RowStream, capacity: usize) -> mpsc::Receiver<Result<Row, Error>> {
    let (sender, receiver) = mpsc::channel(capacity);
    std::thread::spawn(move || {
        for item in rows {
            let stop = item.is_err();
            if sender.blocking_send(item).is_err() || stop {
                break;
            }
        }
    });
    receiver
}

/// Hands rows to workers until the input ends, the run halts or a row is malformed (returned).
async fn dispatch(
    mut rows: mpsc::Receiver<Result<Row, Error>>,
    ctx: &Arc<WorkerContext>,
    permits: &Arc<Semaphore>,
    window: Option<&Semaphore>,
    records: &mpsc::Sender<Sequenced>,
    default_model: &str,
) -> Option<Error> {
    let stop = &ctx.shutdown.stop_dispatch;
    let mut seq = 0u64;
    loop {
        let item = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            item = rows.recv() => item,
        };
        let row = match item {
            None => return None,
            Some(Err(e)) => return Some(e),
            Some(Ok(row)) => row,
        };
        if let Some(window) = window {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                permit = window.acquire() => permit.expect("never closed").forget(),
            }
        }
        let permit = tokio::select! {
            biased;
            _ = stop.cancelled() => return None,
            permit = permits.clone().acquire_owned() => permit.expect("never closed"),
        };
        let this_seq = seq;
        seq += 1;
        match row.content {
            RowContent::Invalid { prompt, message } => {
                tracing::warn!(id = %row.id, row = row.row, "row not sent: {message}");
                let info = RowInfo {
                    id: row.id,
                    row: row.row,
                    prompt,
                    model: default_model.to_string(),
                    fingerprint: String::new(),
                };
                let record = Record::error(info, message, 0, 0);
                if records
                    .send(Sequenced {
                        seq: this_seq,
                        record,
                    })
                    .await
                    .is_err()
                {
                    return None;
                }
                drop(permit);
            }
            RowContent::Request(request) => {
                let info = RowInfo {
                    id: row.id,
                    row: row.row,
                    prompt: request.prompt.clone(),
                    model: request.model.clone(),
                    fingerprint: request.fingerprint.clone(),
                };
                let ctx = ctx.clone();
                let records = records.clone();
                tokio::spawn(async move {
                    if let Some(record) = worker::process(&ctx, info, request).await {
                        let _ = records
                            .send(Sequenced {
                                seq: this_seq,
                                record,
                            })
                            .await;
                    }
                    drop(permit);
                });
            }
        }
        if records.is_closed() {
            return None;
        }
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
