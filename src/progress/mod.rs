//! Run counters (atomics updated by workers and the writer) and how they are shown: an
//! `indicatif` bar on a terminal (redrawn at most 10 times a second), one plain line every
//! `--log-every` otherwise, nothing with `--quiet`; and the end-of-run summary.

pub(crate) mod refusal;
pub(crate) mod repeated_warnings;
pub(crate) mod shutdown;

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio_util::sync::CancellationToken;

use crate::api::TokenUsage;
use crate::events::notice;
use crate::money::ledger::Ledger;
use crate::output::{Record, Status};
use crate::util::human::{format_usd, group};

/// Live counters of a run.
#[derive(Debug, Default)]
pub struct Counters {
    /// Rows handed to a worker or turned into an error record by the dispatcher.
    pub dispatched: AtomicU64,
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    /// Error records of rows that failed on transient errors after every retry.
    pub transient_errors: AtomicU64,
    /// Error records of rows whose last answer failed `--json-schema` (paid for).
    pub unaccepted: AtomicU64,
    pub in_flight: AtomicU64,
    pub retries: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub cached_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    pub reasoning_tokens: AtomicU64,
    /// While the pool is paused (the server's window is exhausted): the end of the pause, in
    /// ms since the Unix epoch.
    pub paused_until_ms: AtomicU64,
    /// Rows waiting to retry (their own backoff or the server's advice), and the latest end of
    /// those waits, in ms since the Unix epoch.
    pub waiting_rows: AtomicU64,
    pub waiting_until_ms: AtomicU64,
    /// 429 answers received.
    pub rate_limited: AtomicU64,
    /// 5xx answers received (every attempt, retried or not).
    pub server_errors: AtomicU64,
    /// The server's request limit as the pacing knows it (announced in its headers, else
    /// learned from what it served before refusing), requests per minute as `f64` bits; 0 while
    /// unknown.
    pub(crate) server_limit_rpm: AtomicU64,
    /// Time the pool spent paused, in ms.
    pub paused_ms: AtomicU64,
    /// The current pace and why it last changed.
    pub pace: Mutex<PaceNote>,
    /// Units to send (rows × models), once the background pre-count finishes (0 = unknown
    /// yet); read it through [`Counters::total`].
    pub total_rows: AtomicU64,
    /// Units a pre-counted total holds for each row that names its own model and so has one
    /// (the list's length − 1; 0 when the total is exact, as a resume plan's is).
    pub total_per_own_model_row: AtomicU64,
    /// Rows naming their own model handed out so far.
    pub own_model_rows: AtomicU64,
    /// Cost of the records written, by model.
    pub costs: Mutex<Ledger>,
    /// What records written this run hold of answers paid by earlier runs (answers that
    /// failed `--json-schema`, kept in a batch state file): not this run's spend.
    pub paid_earlier: Mutex<Ledger>,
    /// Records written with another row's answer (`duplicate_of`) or an earlier output's
    /// (`reused_from`), and what those answers cost when bought (nano-dollars): nothing was
    /// sent for them.
    pub deduplicated: AtomicU64,
    pub reused: AtomicU64,
    pub(crate) saved_nanos: AtomicU64,
    /// Of those records, the ones whose answer had no price (nothing in `saved_nanos`).
    pub unpriced_copies: AtomicU64,
    /// Records written with a simulated answer (the endpoint is a simulator).
    pub(crate) simulated_records: AtomicU64,
    /// Events a stage reports for the event log (a batch submitted or collected), with their
    /// fields, until the monitor's sampler writes them (at most [`PENDING_EVENTS`] wait).
    pub(crate) pending_events: Mutex<Vec<serde_json::Value>>,
}

/// Events that may wait for the event log's sampler; more are dropped (the log is a record of
/// the run, never a reason to hold memory).
pub(crate) const PENDING_EVENTS: usize = 10_000;

impl Counters {
    /// Hands an event for the event log: `event` with `fields` (an object), stamped now.
    pub(crate) fn log_event(&self, event: &str, fields: serde_json::Value) {
        let mut line = serde_json::json!({
            "at": crate::output::record::timestamp(SystemTime::now()),
            "event": event,
        });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), fields) {
            line.extend(fields);
        }
        if let Ok(mut pending) = self.pending_events.lock() {
            if pending.len() < PENDING_EVENTS {
                pending.push(line);
            }
        }
    }
}

/// What the pacing does now (`pacing.rs` sets it), for the progress display.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PaceNote {
    /// Requests per minute, when paced.
    pub per_minute: Option<f64>,
    /// Why it last changed.
    pub why: String,
}

/// `$1.23`, with a note when some rows are unpriced (simulated rows count: a --dry-run's
/// summary says separately that nothing was spent).
pub(crate) fn describe_cost(ledger: &Ledger) -> String {
    let total = format_usd(ledger.spent_usd() + ledger.simulated_usd());
    match ledger.unpriced_rows() {
        0 => total,
        unpriced => format!("{total} + {unpriced} unpriced rows"),
    }
}

impl Counters {
    /// Units to send (0 = unknown yet): the pre-count, less what rows naming their own model
    /// did not split into.
    pub fn total(&self) -> u64 {
        let total = self.total_rows.load(Relaxed);
        let fewer = self.own_model_rows.load(Relaxed) * self.total_per_own_model_row.load(Relaxed);
        total.saturating_sub(fewer)
    }

    /// Counts a record as written.
    pub fn record_written(&self, record: &Record) {
        match record.status {
            Status::Ok => self.ok.fetch_add(1, Relaxed),
            Status::Error => self.errors.fetch_add(1, Relaxed),
        };
        if record.simulated {
            self.simulated_records.fetch_add(1, Relaxed);
        }
        // A copy of another row's answer used no tokens: only its row and $0 are counted.
        if record.kept.as_deref().is_some_and(|e| self.count_unsent(e)) {
            if let Ok(mut costs) = self.costs.lock() {
                let none = TokenUsage::default();
                costs.add(&record.model, &none, Some(0.0), record.simulated);
            }
            return;
        }
        self.prompt_tokens.fetch_add(record.prompt_tokens, Relaxed);
        self.cached_tokens.fetch_add(record.cached_tokens, Relaxed);
        self.completion_tokens
            .fetch_add(record.completion_tokens, Relaxed);
        self.reasoning_tokens
            .fetch_add(record.reasoning_tokens, Relaxed);
        if let Ok(mut costs) = self.costs.lock() {
            costs.add(
                &record.model,
                &record.usage(),
                record.cost_usd,
                record.simulated,
            );
        }
    }

    /// Counts a record answered without a request by its markers (`reuse`); whether it is one.
    fn count_unsent(&self, extras: &serde_json::Map<String, serde_json::Value>) -> bool {
        use crate::output::record::{DUPLICATE_OF, REUSED_FROM, SAVED_USD};
        if extras.contains_key(DUPLICATE_OF) {
            self.deduplicated.fetch_add(1, Relaxed);
        } else if extras.contains_key(REUSED_FROM) {
            self.reused.fetch_add(1, Relaxed);
        } else {
            return false;
        }
        match extras.get(SAVED_USD).and_then(serde_json::Value::as_f64) {
            Some(saved) => self
                .saved_nanos
                .fetch_add(crate::money::nanos::nearest(saved), Relaxed),
            None => self.unpriced_copies.fetch_add(1, Relaxed),
        };
        true
    }

    /// Notes that a record of `model` this run writes holds `spent`, paid by an earlier run.
    pub fn paid_by_an_earlier_run(
        &self,
        model: &str,
        spent: &crate::money::spent::Spent,
        simulated: bool,
    ) {
        if spent.answers == 0 {
            return;
        }
        if let Ok(mut earlier) = self.paid_earlier.lock() {
            earlier.add(model, &spent.usage, spent.cost, simulated);
        }
    }

    /// A copy of the cost totals.
    pub fn cost_totals(&self) -> Ledger {
        self.costs.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Rows with a record so far.
    pub fn done(&self) -> u64 {
        self.ok.load(Relaxed) + self.errors.load(Relaxed)
    }

    /// Token totals of the records written so far.
    pub fn usage(&self) -> TokenUsage {
        let prompt = self.prompt_tokens.load(Relaxed);
        let completion = self.completion_tokens.load(Relaxed);
        TokenUsage {
            prompt,
            cached: self.cached_tokens.load(Relaxed),
            completion,
            reasoning: self.reasoning_tokens.load(Relaxed),
            total: prompt + completion,
        }
    }

    /// Notes that every worker pauses for `pause` (a 429's advice), for the progress line.
    pub fn paused_for(&self, pause: Duration) {
        self.paused_until_ms
            .fetch_max(unix_ms(SystemTime::now() + pause), Relaxed);
    }

    /// Notes a row that waits `wait` before its next attempt; the wait ends when the returned
    /// guard is dropped.
    pub fn row_waits(&self, wait: Duration) -> WaitingRow<'_> {
        self.waiting_rows.fetch_add(1, Relaxed);
        self.waiting_until_ms
            .fetch_max(unix_ms(SystemTime::now() + wait), Relaxed);
        WaitingRow { counters: self }
    }

    /// `3 rows wait to retry until 14:03:07 UTC · ` while rows wait, else empty.
    fn waiting_note(&self) -> String {
        let rows = self.waiting_rows.load(Relaxed);
        let until = self.waiting_until_ms.load(Relaxed);
        if rows == 0 || until <= unix_ms(SystemTime::now()) {
            return String::new();
        }
        let verb = if rows == 1 { "waits" } else { "wait" };
        format!(
            "{} {verb} to retry until {} · ",
            crate::util::human::count(rows, "row"),
            clock(until)
        )
    }

    /// `pace 1,164 req/min (slowed: 3 429s in 40 answers) · ` once the pacing has done
    /// something, else empty.
    fn pace_note(&self) -> String {
        let Ok(note) = self.pace.lock() else {
            return String::new();
        };
        if note.why.is_empty() {
            return String::new();
        }
        let pace = match note.per_minute {
            Some(per_minute) => format!("{} req/min", group(per_minute.round() as u64)),
            None => "unpaced".to_string(),
        };
        let limited = self.rate_limited.load(Relaxed);
        format!("pace {pace} ({}) · 429s {} · ", note.why, group(limited))
    }

    /// `paused until 14:03:07 UTC (rate limited) · ` while a pause lasts, else empty.
    fn pause_note(&self) -> String {
        let until_ms = self.paused_until_ms.load(Relaxed);
        if until_ms <= unix_ms(SystemTime::now()) {
            return String::new();
        }
        format!("paused until {} (rate limited) · ", clock(until_ms))
    }

    fn status_line(&self) -> String {
        let u = self.usage();
        format!(
            "{}{}{}{} · in flight {} · retries {} · errors {} · tokens prompt {} (cached {}) completion {} (reasoning {})",
            self.pause_note(),
            self.waiting_note(),
            self.pace_note(),
            describe_cost(&self.cost_totals()),
            group(self.in_flight.load(Relaxed)),
            group(self.retries.load(Relaxed)),
            group(self.errors.load(Relaxed)),
            group(u.prompt),
            group(u.cached),
            group(u.completion),
            group(u.reasoning)
        )
    }
}

/// A row waiting to retry, counted in the progress line until dropped.
pub struct WaitingRow<'a> {
    counters: &'a Counters,
}

impl Drop for WaitingRow<'_> {
    fn drop(&mut self) {
        self.counters.waiting_rows.fetch_sub(1, Relaxed);
    }
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `14:03:07 UTC` for a time in ms since the Unix epoch (rounded up to the second).
fn clock(ms: u64) -> String {
    let secs = ms.div_ceil(1000) % 86_400;
    format!(
        "{:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// How progress is shown.
#[derive(Debug, Clone, Copy)]
pub enum Display {
    /// Nothing until the summary.
    Quiet,
    /// A bar on the terminal.
    Bar,
    /// One line per interval.
    Lines(Duration),
}

impl Display {
    /// A bar when stderr is a terminal, plain lines otherwise, nothing when quiet.
    pub fn choose(quiet: bool, log_every: Duration) -> Self {
        if quiet {
            Display::Quiet
        } else if std::io::stderr().is_terminal() {
            Display::Bar
        } else {
            Display::Lines(log_every)
        }
    }
}

/// Shows progress until [`Reporter::finish`].
pub(crate) struct Reporter {
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Reporter {
    /// Starts showing `counters` in the chosen way.
    pub(crate) fn start(counters: Arc<Counters>, display: Display) -> Self {
        let stop = CancellationToken::new();
        let task = match display {
            Display::Quiet => None,
            #[cfg(feature = "cli")]
            Display::Bar => Some(tokio::spawn(draw_bar(counters, stop.clone()))),
            // Without the `cli` feature there is no bar: plain lines instead.
            #[cfg(not(feature = "cli"))]
            Display::Bar => Some(tokio::spawn(log_lines(
                counters,
                BAR_FALLBACK,
                stop.clone(),
            ))),
            Display::Lines(every) => Some(tokio::spawn(log_lines(counters, every, stop.clone()))),
        };
        Reporter { stop, task }
    }

    /// Stops and clears the display.
    pub(crate) async fn finish(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            let _ = task.await;
        }
    }
}

/// How often a bar that cannot be drawn (no `cli` feature) prints a line instead.
#[cfg(not(feature = "cli"))]
const BAR_FALLBACK: Duration = Duration::from_secs(10);

#[cfg(feature = "cli")]
async fn draw_bar(counters: Arc<Counters>, stop: CancellationToken) {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} rows · ETA {eta}\n  {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let total = counters.total();
        if total > 0 && bar.length() != Some(total) {
            bar.set_length(total);
        }
        let done = counters.done();
        bar.set_position(done);
        let rate = done as f64 / bar.elapsed().as_secs_f64().max(1e-3);
        bar.set_message(format!("{rate:.1} rows/s · {}", counters.status_line()));
    }
    bar.finish_and_clear();
}

async fn log_lines(counters: Arc<Counters>, every: Duration, stop: CancellationToken) {
    let start = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let done = counters.done();
        let total = counters.total();
        let rate = done as f64 / start.elapsed().as_secs_f64().max(1e-9);
        let of_total = if total > 0 {
            format!("/{total} ({:.1}%)", 100.0 * done as f64 / total as f64)
        } else {
            String::new()
        };
        notice!(
            "progress: {done}{of_total} rows · {rate:.1} rows/s · {}",
            counters.status_line()
        );
    }
}

/// Why a run ended.
#[derive(Debug)]
pub enum StopReason {
    /// Every row was processed.
    Completed,
    /// Ctrl-C / SIGTERM / SIGHUP.
    Interrupted,
    /// The API refused the run (bad key, unknown model, no quota); the message says why.
    Fatal(String),
    /// The endpoint could not be used at all: unreachable before any answer, or a certificate
    /// that is not trusted. The message names the address and what to check.
    Unreachable(String),
    /// A malformed input record or an output failure stopped the run.
    Failed(crate::error::Error),
    /// --max-cost would have been passed by the next request.
    Budget { cap: f64 },
    /// A bug: a worker failed, or rows were dispatched without getting a record. The rows
    /// without a record are sent again by the next run.
    Crashed(String),
    /// The circuit breaker stopped one or more models (see `breaker`); their unsent rows have
    /// no record.
    Refused(Vec<refusal::Refusal>),
    /// `--via batch --detach`: the batches were submitted and the run returned without waiting;
    /// `state` names them for the run that collects them.
    Detached {
        batches: u64,
        rows: u64,
        state: std::path::PathBuf,
    },
}

impl StopReason {
    /// One word for why the run ended: `completed`, `interrupted`, `budget`, `refused`,
    /// `fatal`, `unreachable`, `failed`, `crashed` or `detached` (the event log's `stop` line,
    /// [`Summary::to_json`]'s `stop`).
    pub fn word(&self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::Interrupted => "interrupted",
            StopReason::Budget { .. } => "budget",
            StopReason::Refused(_) => "refused",
            StopReason::Fatal(_) => "fatal",
            StopReason::Unreachable(_) => "unreachable",
            StopReason::Failed(_) => "failed",
            StopReason::Crashed(_) => "crashed",
            StopReason::Detached { .. } => "detached",
        }
    }

    /// What the reason says beyond its word (empty for a completed run).
    pub fn message(&self) -> String {
        match self {
            StopReason::Completed => String::new(),
            StopReason::Interrupted => "Ctrl-C, SIGTERM or SIGHUP".into(),
            StopReason::Budget { cap } => format!("--max-cost {cap} reached"),
            StopReason::Refused(refusals) => refusals
                .iter()
                .map(|r| r.describe())
                .collect::<Vec<_>>()
                .join("; "),
            StopReason::Fatal(message) | StopReason::Unreachable(message) => message.clone(),
            StopReason::Failed(error) => error.to_string(),
            StopReason::Crashed(what) => what.clone(),
            StopReason::Detached { batches, rows, .. } => {
                format!("{batches} batches of {rows} rows submitted")
            }
        }
    }
}

/// The end-of-run summary.
#[derive(Debug)]
pub struct Summary {
    pub ok: u64,
    pub errors: u64,
    /// Tokens and cost of this run's answers (those of its records, less `paid_earlier`).
    pub usage: TokenUsage,
    pub costs: Ledger,
    /// What this run's records hold of answers paid by earlier runs.
    pub paid_earlier: Ledger,
    pub elapsed: Duration,
    pub stop: StopReason,
    /// Rows an earlier run had finished (resume).
    pub done_before: u64,
    /// Earlier error records kept by --keep-errors.
    pub kept_errors: u64,
    /// Rows dispatched this run that have no record (left for the next run).
    pub unrecorded: u64,
    /// Error records of this run that a plain re-run may fix (transient failures).
    pub transient_errors: u64,
    /// Error records of this run whose answers failed `--json-schema` after every retry: each
    /// was paid for, and a plain re-run pays again.
    pub unaccepted: u64,
    /// The answers came from the `--dry-run` simulator: the cost shown was not spent.
    pub simulated: bool,
    /// Row-failure warnings not printed (repeats of the same message).
    pub warnings_suppressed: u64,
    /// 429 answers received.
    pub rate_limited: u64,
    /// Time the whole pool spent paused (the server's window exhausted).
    pub paused: Duration,
    /// Models each row goes to (`--model a,b`): above 1, the counts are of (row, model) pairs.
    pub models: u64,
    /// Records of this run answered with another row's answer (its request repeated) and
    /// with an earlier output's (`--reuse`): no request was sent for them.
    pub deduplicated: u64,
    pub reused: u64,
    /// What the answers those records copy cost when they were bought (USD), and how many of
    /// them had no price (not in `saved_usd`).
    pub saved_usd: f64,
    pub unpriced_copies: u64,
}

impl Summary {
    /// The summary as plain data, for a program, a notification or Python: `stop` (its
    /// [`StopReason::word`]) and `message`, the counts, `cost_usd` (simulated included) and
    /// `spent_usd` (rounded to 1e-9), `tokens` by kind, `rate_limited`, `paused_s`, `elapsed_s`,
    /// and `detached` (`null`, or the batches a `--detach` run submitted and its state file).
    pub fn to_json(&self) -> serde_json::Value {
        let usd = crate::util::human::round_usd;
        let usage = &self.usage;
        let detached = match &self.stop {
            StopReason::Detached {
                batches,
                rows,
                state,
            } => serde_json::json!({"batches": batches, "rows": rows, "state": state}),
            _ => serde_json::Value::Null,
        };
        serde_json::json!({
            "stop": self.stop.word(),
            "message": self.stop.message(),
            "ok": self.ok,
            "errors": self.errors,
            "done_before": self.done_before,
            "kept_errors": self.kept_errors,
            "unrecorded": self.unrecorded,
            "transient_errors": self.transient_errors,
            "simulated": self.simulated,
            "cost_usd": usd(self.costs.spent_usd() + self.costs.simulated_usd()),
            "spent_usd": usd(self.costs.spent_usd()),
            "tokens": {
                "prompt": usage.prompt,
                "cached": usage.cached,
                "completion": usage.completion,
                "reasoning": usage.reasoning,
                "total": usage.total,
            },
            "deduplicated": self.deduplicated,
            "reused": self.reused,
            "saved_usd": usd(self.saved_usd),
            "unpriced_copies": self.unpriced_copies,
            "rate_limited": self.rate_limited,
            "paused_s": self.paused.as_secs_f64(),
            "elapsed_s": self.elapsed.as_secs_f64(),
            "detached": detached,
        })
    }

    /// The summary of `counters` after `elapsed`.
    pub fn new(counters: &Counters, elapsed: Duration, stop: StopReason) -> Self {
        let paid_earlier = counters
            .paid_earlier
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        Summary {
            ok: counters.ok.load(Relaxed),
            errors: counters.errors.load(Relaxed),
            usage: counters.usage().less(&paid_earlier.usage()),
            costs: counters.cost_totals().less(&paid_earlier),
            paid_earlier,
            elapsed,
            stop,
            done_before: 0,
            kept_errors: 0,
            transient_errors: counters.transient_errors.load(Relaxed),
            unaccepted: counters.unaccepted.load(Relaxed),
            simulated: false,
            warnings_suppressed: 0,
            // Filled in by the run, which alone knows the rows held back on purpose and the
            // pacer's totals.
            rate_limited: 0,
            paused: Duration::ZERO,
            unrecorded: 0,
            models: 1,
            deduplicated: counters.deduplicated.load(Relaxed),
            reused: counters.reused.load(Relaxed),
            saved_usd: crate::money::nanos::usd(counters.saved_nanos.load(Relaxed)),
            unpriced_copies: counters.unpriced_copies.load(Relaxed),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows = self.ok + self.errors;
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 { rows as f64 / secs } else { 0.0 };
        // With several models a record is a (row, model) pair, not a row.
        let (label, unit) = if self.models > 1 {
            ("(row, model) pairs", "pairs")
        } else {
            ("rows", "rows")
        };
        write!(
            f,
            "{label}: {} ok, {} error this run in {:.1}s, {:.1} {unit}/s",
            group(self.ok),
            group(self.errors),
            secs,
            rate
        )?;
        if self.done_before > 0 {
            write!(f, "; {} done by earlier runs", group(self.done_before))?;
        }
        writeln!(f)?;
        write!(
            f,
            "tokens: prompt {} (cached {}), completion {} (reasoning {}), total {}",
            group(self.usage.prompt),
            group(self.usage.cached),
            group(self.usage.completion),
            group(self.usage.reasoning),
            group(self.usage.total)
        )?;
        if self.deduplicated + self.reused > 0 {
            write!(
                f,
                "\nnot sent: {} repeated another row's request, {} answered from earlier outputs (--reuse); their answers cost {} when bought",
                group(self.deduplicated),
                group(self.reused),
                format_usd(self.saved_usd)
            )?;
            if self.unpriced_copies > 0 {
                write!(f, " (+ {} unpriced)", group(self.unpriced_copies))?;
            }
        }
        if self.rate_limited > 0 || !self.paused.is_zero() {
            write!(
                f,
                "\nrate limits: {} 429s received, workers all paused for {:.1}s in total",
                group(self.rate_limited),
                self.paused.as_secs_f64()
            )?;
        }
        write!(f, "\ncost this run: {}", describe_cost(&self.costs))?;
        if self.simulated {
            write!(f, " (simulated by --dry-run: nothing was spent)")?;
        }
        let earlier = self.paid_earlier.usage();
        if earlier.total > 0 {
            write!(
                f,
                " (the records also hold {} and {} tokens paid by earlier runs: answers that failed --json-schema)",
                describe_cost(&self.paid_earlier),
                group(earlier.total)
            )?;
        }
        for (model, entry) in self.costs.models() {
            if entry.priced() {
                let usd = entry.spent_usd() + entry.simulated_usd();
                write!(f, "\n  {model}: {}", format_usd(usd))?;
            }
        }
        for (model, entry) in self.costs.models() {
            if entry.unpriced_rows > 0 {
                write!(
                    f,
                    "\n  {model}: unpriced ({} rows; add a price with --prices FILE)",
                    group(entry.unpriced_rows)
                )?;
            }
        }
        Ok(())
    }
}
