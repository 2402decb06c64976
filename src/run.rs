//! The orchestrator of `promptbatch run`: lock the output (then work on its real path), back it
//! up with --fresh, plan a resume (the prepare stage, shared with `--via batch`, which branches
//! to `batch::run` here), then the live pool (`live::pool`) for the rows a batch did not take.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::{BatchEnd, Via};
use crate::error::Error;
use crate::events::notice;
use crate::job::prepare::prepare;
use crate::job::Job;
use crate::monitor::Monitor;
use crate::output::export;
use crate::output::lock::OutputLock;
use crate::paths;
use crate::progress::shutdown::Shutdown;
use crate::progress::{Counters, StopReason, Summary};

impl Job {
    /// Runs the job to its end. Errors found before anything is sent (options, key, input
    /// header, output path, a locked output) are `Err`; everything after that ends in a
    /// [`Summary`] whose `stop` says why the run ended.
    pub async fn run(&self) -> Result<Summary, Error> {
        self.run_until(&StopHandle::new()).await
    }

    /// [`Job::run`], which `stop` can also end from elsewhere (another task, a thread, a
    /// callback) as a first Ctrl-C does: no new rows are sent, the ones in flight finish within
    /// [`Job::grace`](Job#structfield.grace), and the summary's `stop` is
    /// [`StopReason::Interrupted`]; the output resumes like any interrupted run.
    pub async fn run_until(&self, stop: &StopHandle) -> Result<Summary, Error> {
        let shutdown = stop.0.clone();
        if self.handle_signals {
            shutdown.listen_for_signals(self.grace);
        }
        run(self, shutdown).await
    }
}

/// Ends a [`Job::run_until`] from elsewhere; clones stop the same run.
#[derive(Clone, Default)]
pub struct StopHandle(Shutdown);

impl StopHandle {
    /// A handle that has not stopped anything yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first call stops dispatching (in-flight rows finish); a second one abandons what is
    /// still in flight, as a second Ctrl-C does.
    pub fn stop(&self) {
        self.0.interrupt();
    }
}

impl std::fmt::Debug for StopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StopHandle")
            .field("stopped", &self.0.interrupted())
            .finish()
    }
}

/// Runs a whole dataset (see [`Job::run`]). `-o x.parquet`: the run works on its JSONL
/// checkpoint (`x.parquet.jsonl`: the lock, `--fresh`, resume and the writer all apply to it,
/// exactly as to a JSONL output) and writes the Parquet file from it once every row has a record.
async fn run(opts: &Job, shutdown: Shutdown) -> Result<Summary, Error> {
    if !paths::is_parquet(&opts.output.path) {
        return run_leaving_no_empty_output(opts, shutdown).await;
    }
    let dest = opts.output.path.clone();
    let checkpoint = paths::checkpoint(&dest);
    check_parquet_output(opts, &dest, &checkpoint)?;
    let mut job = opts.clone();
    job.output.path = checkpoint;
    let mut summary = run_leaving_no_empty_output(&job, shutdown).await?;
    if matches!(summary.stop, StopReason::Completed) {
        // Under the lock: run_to's lock is released, so take the checkpoint's again.
        let lock = OutputLock::acquire(&job.output.path)?;
        match export::export(lock.path(), &dest) {
            Ok(exported) => notice!(
                "wrote {} records to {} (from its checkpoint {})",
                crate::util::human::group(exported.records),
                dest.display(),
                job.output.path.display()
            ),
            Err(e) => summary.stop = StopReason::Failed(e),
        }
    } else {
        let now = match crate::input::parquet_rows(&dest) {
            Some(rows) => format!(
                "{} still holds the {} records of an earlier run, and is replaced only once every row has a record",
                dest.display(),
                crate::util::human::group(rows)
            ),
            None => format!("{} is not written yet", dest.display()),
        };
        notice!(
            "{now}: this run's records are in its checkpoint {} (run the same command again to \
             finish, or `promptbatch export {} {}` for what is there now)",
            job.output.path.display(),
            job.output.path.display(),
            dest.display()
        );
    }
    Ok(summary)
}

/// [`run_to`], removing the output again when the run created it and wrote nothing to it (a
/// run that failed before its first record leaves no empty file behind).
async fn run_leaving_no_empty_output(opts: &Job, shutdown: Shutdown) -> Result<Summary, Error> {
    let existed = std::fs::symlink_metadata(&opts.output.path).is_ok();
    let result = run_to(opts, shutdown).await;
    let failed = match &result {
        Err(_) => true,
        // Detached batches belong to this output: it stays, empty, for their records.
        Ok(summary) => !matches!(
            summary.stop,
            StopReason::Completed | StopReason::Detached { .. }
        ),
    };
    let empty = std::fs::metadata(&opts.output.path).is_ok_and(|m| m.len() == 0);
    if failed && empty && !existed {
        let _ = std::fs::remove_file(&opts.output.path);
    }
    result
}

/// `-o x.parquet` may not replace its own input, nor a Parquet file that has no checkpoint (it
/// was not written by a run of this output, or its checkpoint is gone).
fn check_parquet_output(opts: &Job, dest: &Path, checkpoint: &Path) -> Result<(), Error> {
    crate::job::prepare::refuse_output_over_input(opts)?;
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
    if opts.via == Via::Batch && opts.input.reads_once() {
        return Err(Error::Config(format!(
            "--via batch reads the input again when its batches finish (to write their records), and {} can be read only once: save it to a file and pass that file",
            if crate::paths::is_stdin(&opts.input.path) { "standard input" } else { "rows in memory" }
        )));
    }
    let prepared = prepare(opts).await?;
    // One set of counters for the whole run: with `--fallback live` the live part adds to the
    // batch part's, so the summary counts both.
    let counters = Arc::new(Counters::default());
    let monitor = Monitor::start(opts, &prepared.output, &counters).await;
    let summary = run_prepared(opts, prepared, counters, shutdown, started).await;
    match &summary {
        Ok(summary) => monitor.finish(opts, summary).await,
        Err(e) => monitor.failed(opts, e).await,
    }
    summary
}

/// The batch part of a `--via batch` run, then the live pool for the rows it did not take.
async fn run_prepared(
    opts: &Job,
    mut prepared: crate::job::prepare::Prepared,
    mut counters: Arc<Counters>,
    shutdown: Shutdown,
    started: Instant,
) -> Result<Summary, Error> {
    let output = prepared.output.clone();
    let held = || crate::batch::before_run::rows_held(&output);
    prepared.followers = crate::reuse::before_send(opts, &mut prepared, &counters, &held).await?;
    if opts.via == Via::Batch {
        match crate::batch::run(opts, prepared, &counters, &shutdown, started).await? {
            BatchEnd::Done(summary) => return Ok(summary),
            BatchEnd::Live(rest, batch_counters) => (prepared, counters) = (rest, batch_counters),
        }
    }
    crate::live::pool::run(opts, prepared, counters, shutdown, started).await
}
