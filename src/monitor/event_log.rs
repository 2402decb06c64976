//! The run's event log, `OUTPUT.events.jsonl` beside the output: one JSON object per line, each
//! with `at` (RFC 3339, UTC, ms), `event` and `run` (an id shared by the lines of one run).
//!
//! - `start`: `pid`, `via`, `models`, `concurrency`, `rpm`, `tpm`, `max_cost`
//! - `interval`: every `--event-interval` (10 s), what happened in it: `seconds`, `ok`,
//!   `errors`, `retries`, `rate_limited` (429 answers), `server_errors` (5xx answers),
//!   `paused_s`, then the state at its end: `done` (records this run), `in_flight`, `pace_rpm`
//!   (null when not paced), `limit_rpm` (the server's request limit as the pacing knows it:
//!   announced in its headers, less a 3 % margin, else learned from what it served; null while
//!   unknown), `cost_usd` (this run, simulated included)
//! - `pace`: the pacing changed: `rpm` (null: no pace), `why`
//! - `pause`: the pool paused for the server's window, `until`
//! - `batch_submitted` (`batch`, `rows`) and `batch_collected` (`batch`, `status`: the batch's
//!   final status, `rows`), for `--via batch`
//! - `breaker_trip`: the circuit breaker stopped sending to `model` after identical permanent
//!   failures (`error`, `had_worked`: whether the model had answered ok before)
//! - `budget`: `--max-cost` (`cap`) stopped the dispatch
//! - `pay_once`: the dedup plan before the send (`rows` still to send, `reused` from `--reuse`
//!   outputs, `from_output` answered by this output's records, `duplicates` waiting for a row
//!   with the same request, `plan_s`); `duplicates_copied` after the send (`rows`, `left`)
//! - `stop`: `reason` (`completed`, `interrupted`, `budget`, `refused`, `fatal`,
//!   `unreachable`, `failed`, `crashed`, `detached`), `message`, `ok`, `errors`, `done_before`
//!   (rows an earlier run had finished: a resume), `unrecorded`, `cost_usd`, `elapsed_s`
//!
//! Appended, never rewritten, so earlier runs' lines stay (a resumed night is one file). Each
//! line is one `write` of a whole line to a file opened for appending: a `kill -9` can at most
//! leave a torn last line, which readers skip. Bounded: past [`MAX_BYTES`] the file is renamed
//! to `OUTPUT.events.1.jsonl` (replacing an older one) and a new one begins, so the two hold at
//! most twice that. A line that cannot be written is dropped after one notice: the log never
//! stops a run.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::events::notice;
use crate::job::Job;
use crate::progress::{Counters, Summary};

/// Size past which the log moves to `OUTPUT.events.1.jsonl` and starts again.
pub(crate) const MAX_BYTES: u64 = 16 * 1024 * 1024;

/// How often the sampler looks for a pace change or a pause between intervals.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The event log of `output`.
pub(crate) fn path_for(output: &Path) -> PathBuf {
    let [log, _] = crate::paths::event_logs(output);
    log
}

/// The log's previous part, after it passed [`MAX_BYTES`].
pub(crate) fn rotated_path_for(output: &Path) -> PathBuf {
    let [_, rotated] = crate::paths::event_logs(output);
    rotated
}

/// Appends whole lines to one output's event log.
pub(crate) struct EventLog {
    path: PathBuf,
    rotated: PathBuf,
    file: Option<File>,
    run: String,
    failed: bool,
}

impl EventLog {
    /// The log of `output`, for one run.
    pub(crate) fn open(output: &Path) -> Self {
        let run = format!("{:016x}", rand::random::<u64>());
        EventLog {
            path: path_for(output),
            rotated: rotated_path_for(output),
            file: None,
            run,
            failed: false,
        }
    }

    /// Appends `event` with its fields (an object; an `at` among them replaces now).
    pub(crate) fn write(&mut self, event: &str, fields: Value) {
        let mut line = serde_json::Map::new();
        line.insert(
            "at".into(),
            crate::output::record::timestamp(SystemTime::now()).into(),
        );
        line.insert("event".into(), event.into());
        line.insert("run".into(), self.run.clone().into());
        if let Value::Object(fields) = fields {
            line.extend(fields);
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Err(e) = self.append(text.as_bytes()) {
            self.file = None;
            if !self.failed {
                self.failed = true;
                notice!(
                    "warning: cannot write the event log {}: {e}; the run goes on without it",
                    self.path.display()
                );
            }
        }
    }

    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?,
            );
        }
        let file = self.file.as_mut().expect("opened above");
        if file.metadata()?.len() + line.len() as u64 > MAX_BYTES {
            self.file = None;
            std::fs::rename(&self.path, &self.rotated)?;
            return self.append(line);
        }
        file.write_all(line)
    }
}

/// Hands each line of `output`'s event log to `each`, oldest first (the rotated part, then the
/// current one). Lines that are not JSON objects (a torn last line) are skipped; a log that
/// does not exist is empty.
pub(crate) fn read(output: &Path, mut each: impl FnMut(&serde_json::Map<String, Value>)) {
    use std::io::BufRead as _;
    for path in [rotated_path_for(output), path_for(output)] {
        let Ok(file) = File::open(&path) else {
            continue;
        };
        for line in std::io::BufReader::new(file).lines() {
            let Ok(line) = line else {
                break;
            };
            if let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&line) {
                each(&fields);
            }
        }
    }
}

/// What the sampler remembers between two looks.
#[derive(Default)]
struct Seen {
    ok: u64,
    errors: u64,
    retries: u64,
    rate_limited: u64,
    server_errors: u64,
    paused_ms: u64,
    pace: Option<crate::progress::PaceNote>,
    paused_until_ms: u64,
}

/// Writes the `start` line, then intervals, pace changes and pauses until [`Sampler::finish`].
pub(crate) struct Sampler {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(EventLog, Seen, Instant)>,
    counters: Arc<Counters>,
}

impl Sampler {
    pub(crate) fn start(opts: &Job, output: &Path, counters: Arc<Counters>) -> Self {
        let mut log = EventLog::open(output);
        log.write(
            "start",
            json!({
                "pid": std::process::id(),
                "via": crate::util::choice::Choice::name(opts.via),
                "models": opts.request.models,
                "concurrency": opts.limits.concurrency,
                "rpm": opts.limits.rpm,
                "tpm": opts.limits.tpm,
                "max_cost": opts.cost.max_cost,
            }),
        );
        let stop = CancellationToken::new();
        let task = tokio::spawn(sample(
            log,
            counters.clone(),
            opts.monitor.event_interval.max(LOOK_EVERY),
            stop.clone(),
        ));
        Sampler {
            stop,
            task,
            counters,
        }
    }

    /// Writes the last (partial) interval and a `stop` line for a run that ended in an error.
    pub(crate) async fn failed(self, error: &crate::error::Error) {
        self.stop.cancel();
        let Ok((mut log, mut seen, since)) = self.task.await else {
            return;
        };
        write_interval(&mut log, &self.counters, &mut seen, since.elapsed());
        log.write(
            "stop",
            json!({"reason": "failed", "message": error.to_string()}),
        );
    }

    /// Writes the last (partial) interval and the `stop` line.
    pub(crate) async fn finish(self, summary: &Summary) {
        self.stop.cancel();
        let Ok((mut log, mut seen, since)) = self.task.await else {
            return;
        };
        write_changes(&mut log, &self.counters, &mut seen);
        write_interval(&mut log, &self.counters, &mut seen, since.elapsed());
        let (reason, message) = (summary.stop.word(), summary.stop.message());
        log.write(
            "stop",
            json!({
                "reason": reason,
                "message": message,
                "ok": summary.ok,
                "errors": summary.errors,
                "done_before": summary.done_before,
                "unrecorded": summary.unrecorded,
                "cost_usd": summary.costs.spent_usd() + summary.costs.simulated_usd(),
                "elapsed_s": summary.elapsed.as_secs_f64(),
            }),
        );
    }
}

/// The sampler's loop: a look every second (pace, pause), an interval line every `every`.
async fn sample(
    mut log: EventLog,
    counters: Arc<Counters>,
    every: Duration,
    stop: CancellationToken,
) -> (EventLog, Seen, Instant) {
    let mut seen = Seen {
        pace: counters.pace.lock().ok().map(|p| p.clone()),
        ..Seen::default()
    };
    let mut since = Instant::now();
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = look.tick() => {}
        }
        write_changes(&mut log, &counters, &mut seen);
        if since.elapsed() >= every {
            write_interval(&mut log, &counters, &mut seen, since.elapsed());
            since = Instant::now();
        }
    }
    (log, seen, since)
}

/// A `pace` line when the pacing changed, a `pause` line when a pause began, and the events the
/// stages handed in (`Counters::log_event`).
fn write_changes(log: &mut EventLog, counters: &Counters, seen: &mut Seen) {
    let handed: Vec<Value> = counters
        .pending_events
        .lock()
        .map(|mut pending| std::mem::take(&mut *pending))
        .unwrap_or_default();
    for mut fields in handed {
        let event = fields
            .as_object_mut()
            .and_then(|f| f.remove("event"))
            .and_then(|e| e.as_str().map(str::to_string))
            .unwrap_or_default();
        log.write(&event, fields);
    }
    let pace = counters.pace.lock().ok().map(|p| p.clone());
    if pace != seen.pace {
        if let Some(note) = &pace {
            log.write("pace", json!({"rpm": note.per_minute, "why": note.why}));
        }
        seen.pace = pace;
    }
    let until_ms = counters.paused_until_ms.load(Relaxed);
    let now_ms = crate::progress::unix_ms(SystemTime::now());
    if until_ms > now_ms && until_ms != seen.paused_until_ms {
        let until = SystemTime::UNIX_EPOCH + Duration::from_millis(until_ms);
        log.write(
            "pause",
            json!({"until": crate::output::record::timestamp(until)}),
        );
        seen.paused_until_ms = until_ms;
    }
}

/// One `interval` line: the counts since the last one, the state now.
fn write_interval(log: &mut EventLog, counters: &Counters, seen: &mut Seen, took: Duration) {
    let now = Seen {
        ok: counters.ok.load(Relaxed),
        errors: counters.errors.load(Relaxed),
        retries: counters.retries.load(Relaxed),
        rate_limited: counters.rate_limited.load(Relaxed),
        server_errors: counters.server_errors.load(Relaxed),
        paused_ms: counters.paused_ms.load(Relaxed),
        pace: seen.pace.take(),
        paused_until_ms: seen.paused_until_ms,
    };
    let costs = counters.cost_totals();
    log.write(
        "interval",
        json!({
            "seconds": took.as_secs_f64(),
            "ok": now.ok - seen.ok.min(now.ok),
            "errors": now.errors - seen.errors.min(now.errors),
            "retries": now.retries - seen.retries.min(now.retries),
            "rate_limited": now.rate_limited - seen.rate_limited.min(now.rate_limited),
            "server_errors": now.server_errors - seen.server_errors.min(now.server_errors),
            "paused_s": (now.paused_ms - seen.paused_ms.min(now.paused_ms)) as f64 / 1000.0,
            "done": now.ok + now.errors,
            "in_flight": counters.in_flight.load(Relaxed),
            "pace_rpm": now.pace.as_ref().and_then(|p| p.per_minute),
            "limit_rpm": Some(f64::from_bits(counters.server_limit_rpm.load(Relaxed)))
                .filter(|limit| *limit > 0.0),
            "cost_usd": costs.spent_usd() + costs.simulated_usd(),
        }),
    );
    *seen = now;
}
