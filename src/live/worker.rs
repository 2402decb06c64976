//! One row's life in the worker pool: wait for the rate limiter, send, and on a transient failure
//! back off (exponential, full jitter, at least the server's advised wait) and try again, up to
//! `--max-retries`. Produces the row's record, or nothing when the run is halting (the row then
//! stays unsent, for resume).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::api::retry::RetryPolicy;
use crate::api::schema::AnswerSchema;
use crate::api::{ApiClient, ChatRequest, Failure, FailureKind};
use crate::job::answer::{check_answer, complete_ok, cost_of};
use crate::live::breaker::{Admission, Breaker, InFlight};
use crate::live::limit::Limits;
use crate::live::pacing::Answer;
use crate::live::prefix_gate::{Pass, PrefixGate, Wait};
use crate::money::budget::Budget;
use crate::money::cost::PriceTable;
use crate::money::spent::Spent;
use crate::output::record::RowInfo;
use crate::output::Record;
use crate::progress::repeated_warnings::Repeats;
use crate::progress::shutdown::Shutdown;
use crate::progress::Counters;

/// Slots lent at once, per `--concurrency` slot. One each capped the pool: at 20 % of random
/// 429s advising 1 s and 100-ms answers, 64 slots lent held ≈ 130 rows waiting and left the
/// pool at 0.55 of its clean rate. A waiting row costs its prompt's memory, nothing more.
const LEND_FACTOR: usize = 16;
/// How often a row of a suspect model asks the breaker again.
const BREAKER_POLL: Duration = Duration::from_millis(10);

/// The run's concurrency slots, as seen by a row waiting out a 429: while it waits for the
/// server's advised time it is not in flight, so it lends its slot to another row (at most
/// `LEND_FACTOR` (16) × `--concurrency` slots are lent at once, so at most that plus one times as
/// many rows are open), and takes one back before its next attempt. Requests in flight never
/// exceed `--concurrency`; a 429'd attempt is not billed, so the rows paid for without a record
/// stay within it too. A row waiting for its prompt prefix's first request (`prefix_gate.rs`)
/// lends its slot the same way.
pub(crate) struct Slots {
    slots: Arc<tokio::sync::Semaphore>,
    lendable: Arc<tokio::sync::Semaphore>,
}

impl Slots {
    /// `slots` is the dispatcher's semaphore of `concurrency` permits.
    pub(crate) fn new(slots: Arc<tokio::sync::Semaphore>, concurrency: u32) -> Self {
        Slots {
            slots,
            lendable: Arc::new(tokio::sync::Semaphore::new(
                concurrency as usize * LEND_FACTOR,
            )),
        }
    }

    /// Waits `wait` (ended early by `stop`: `false`), with the row's slot lent out meanwhile
    /// when one may be lent, and taken back before returning.
    async fn wait_lending(
        &self,
        wait: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) -> bool {
        self.lend_while(tokio::time::sleep(wait), stop)
            .await
            .is_some()
    }

    /// Waits for `until` (ended early by `stop`: `None`), with the row's slot lent out meanwhile
    /// when one may be lent, and taken back before returning.
    async fn lend_while<T>(
        &self,
        until: impl std::future::Future<Output = T>,
        stop: impl std::future::Future<Output = ()>,
    ) -> Option<T> {
        let lent = self.lendable.try_acquire().ok();
        if lent.is_some() {
            self.slots.add_permits(1);
        }
        let waited = tokio::select! {
            biased;
            _ = stop => None,
            done = until => Some(done),
        };
        // Taken back even when stopping, so the run's count of free slots stays right (the
        // rows holding them finish or are aborted).
        if lent.is_some() {
            if let Ok(back) = self.slots.acquire().await {
                back.forget();
            }
        }
        waited
    }
}

/// Everything the workers share.
pub(crate) struct WorkerContext {
    /// Concurrency slots a row waiting out a 429 lends.
    pub slots: Slots,
    pub client: ApiClient,
    pub limits: Limits,
    pub counters: Arc<Counters>,
    pub shutdown: Shutdown,
    pub retry: RetryPolicy,
    pub prices: PriceTable,
    /// The --max-cost cap, if any.
    pub budget: Option<Budget>,
    /// The first fatal error; once set, no new attempt starts.
    pub fatal: Mutex<Option<String>>,
    /// The API is the built-in simulator (`--dry-run`): records are marked simulated.
    pub simulated: bool,
    /// `--keep-response`: ok records hold the whole response body.
    pub keep_response: bool,
    /// `--json-schema`: every answer is checked; with a CSV output, the parsed answer's
    /// `(column, property)` columns (else it is written as `parsed`).
    pub schema: Option<AnswerSchema>,
    /// Per-model circuit breakers: a systematic refusal stops that model's rows.
    pub breaker: Breaker,
    /// `--via batch --fallback live`: what rows handed over were paid in batches (their
    /// answers failed `--json-schema`); each row's record adds its own.
    pub carried: crate::money::spent::Carried,
    /// Row-failure warnings: the first few of each kind are printed.
    pub warnings: Repeats,
    /// Rows backing off after a failure without advice, woken when an answer succeeds.
    pub recovery: Recovery,
    /// Warm-first order for prompt caches: a row whose long prefix is cold waits for the
    /// prefix's first request in flight (`prefix_gate.rs`).
    pub prefix_gate: PrefixGate,
}

/// An outage (every request 5xx) ends while its rows back off exponentially (up to
/// `--backoff-max`): the pool then sat idle for up to a minute after the server was back, every
/// slot held by a row still waiting. So the first success after `OUTAGE_GAP` without one
/// wakes them: each retries within `RECOVERY_SPREAD` (spread, not at once), unless its own
/// backoff ends sooner. A server failing only part of the requests (successes keep coming)
/// wakes nobody: its rows keep backing off, so their retries are not used up faster. Only
/// backoffs the server did not ask for (no `Retry-After`), never a 429's.
#[derive(Debug)]
pub(crate) struct Recovery {
    waiting: std::sync::atomic::AtomicU64,
    answered: tokio::sync::Notify,
    started: tokio::time::Instant,
    /// Milliseconds from `started` to the last success.
    last_success_ms: std::sync::atomic::AtomicU64,
}

impl Default for Recovery {
    fn default() -> Self {
        Recovery {
            waiting: Default::default(),
            answered: Default::default(),
            started: tokio::time::Instant::now(),
            last_success_ms: Default::default(),
        }
    }
}

/// A woken row retries within this (uniformly spread).
const RECOVERY_SPREAD: Duration = Duration::from_secs(1);
/// No success for this long, then one: an outage has ended.
const OUTAGE_GAP: Duration = Duration::from_secs(5);

impl Recovery {
    /// An answer succeeded: after an outage, rows backing off retry soon. Two atomic operations
    /// when none waits.
    fn success(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        let last = self.last_success_ms.swap(now, Relaxed);
        if now.saturating_sub(last) >= OUTAGE_GAP.as_millis() as u64
            && self.waiting.load(Relaxed) > 0
        {
            self.answered.notify_waiters();
        }
    }

    /// Waits `wait`, or until a success and then a spread share of `RECOVERY_SPREAD`.
    async fn backoff(&self, wait: Duration) {
        let answered = self.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        self.waiting.fetch_add(1, Relaxed);
        let until = tokio::time::Instant::now() + wait;
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = answered => {
                let soon = tokio::time::Instant::now() + RECOVERY_SPREAD.mul_f64(rand::random::<f64>());
                tokio::time::sleep_until(until.min(soon)).await;
            }
        }
        self.waiting.fetch_sub(1, Relaxed);
    }
}

impl WorkerContext {
    /// Whether new attempts must not start (interrupt or fatal error).
    fn halting(&self) -> bool {
        self.shutdown.stop_dispatch.is_cancelled()
    }

    /// Stops the run because of a fatal API error (the first one is kept).
    fn fail_run(&self, message: String) {
        if let Ok(mut fatal) = self.fatal.lock() {
            fatal.get_or_insert(message);
        }
        self.shutdown.stop_dispatch.cancel();
    }
}

/// What processing one row produced for the writer.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// The row's own record; `None` when the run is halting, the row's model is refused, or its
    /// error record is parked by the circuit breaker.
    pub own: Option<Record>,
    /// Earlier rows' error records that the circuit breaker released (they hold no slot).
    pub released: Vec<Record>,
    /// Budget reserved for the row's extra attempts (`--json-schema` retries under
    /// `--max-cost`): released only after the row's own reservation is settled with its cost.
    pub extra_reservations: Vec<crate::money::budget::Reservation>,
    /// What the record holds of answers paid before this run's live attempts (`Carried`):
    /// already counted by `--max-cost`.
    pub carried_usd: f64,
    /// The answer reported no usage: `--max-cost` counts the row's worst case as spent.
    pub cost_unknown: bool,
}

/// Where a row is in the input: its id, number and line.
#[derive(Debug, Clone)]
pub(crate) struct RowPlace {
    pub id: String,
    pub row: u64,
    /// The position of the row's model in `--model`'s list (`Row::slot`).
    pub slot: u32,
    pub line: u64,
    /// `--keep-columns`: the row's kept input values.
    pub kept: Option<crate::input::Kept>,
}

impl RowPlace {
    /// What the row's record carries about it.
    fn info(
        self,
        ctx: &WorkerContext,
        prompt: String,
        model: String,
        fingerprint: String,
    ) -> RowInfo {
        RowInfo {
            id: self.id,
            row: self.row,
            line: self.line,
            prompt,
            model,
            fingerprint,
            simulated: ctx.simulated,
            kept: self.kept.map(crate::output::record::rename_kept),
            started: None,
        }
    }
}

/// The error record of a row that cannot be sent (malformed under --skip-invalid, empty prompt,
/// …): no attempt, no cost.
pub(crate) fn invalid_record(
    ctx: &WorkerContext,
    place: RowPlace,
    prompt: String,
    model: &str,
    message: String,
) -> Record {
    // The first few of each kind, like failed rows' warnings (50 malformed lines are one kind).
    if ctx.warnings.show(&message) {
        tracing::warn!(id = %place.id, row = place.row, "row not sent: {message}");
    }
    let info = place.info(ctx, prompt, model.to_string(), String::new());
    Record::error(info, message, 0, 0)
}

/// Under `--max-cost`, the worst case of one more attempt of `request`, reserved now; `Err`
/// says why there is none (it does not fit under the cap).
fn reserve_retry(
    ctx: &WorkerContext,
    request: &ChatRequest,
) -> Result<Option<crate::money::budget::Reservation>, &'static str> {
    let Some(budget) = &ctx.budget else {
        return Ok(None);
    };
    let worst = budget
        .worst_case(&ctx.prices, request)
        .map_err(|_| "the model has no price for --max-cost")?;
    match budget.try_reserve(worst) {
        Some(reservation) => Ok(Some(reservation)),
        None => Err("another attempt could pass --max-cost"),
    }
}

/// Sends one row until it has an answer, a permanent error or no retries left.
pub(crate) async fn process(
    ctx: &WorkerContext,
    place: RowPlace,
    mut request: ChatRequest,
) -> Outcome {
    let (carried, paid_earlier) = ctx.carried.take(place.row, place.slot);
    let carried_usd = carried.cost.unwrap_or(0.0);
    let earlier_model = (paid_earlier.answers > 0).then(|| request.model.clone());
    let info = place.info(
        ctx,
        std::mem::take(&mut request.prompt),
        request.model.clone(),
        std::mem::take(&mut request.fingerprint),
    );
    let outcome = process_row(ctx, info, request, carried).await;
    if let (Some(model), Some(_)) = (earlier_model, &outcome) {
        // Its record holds them: the summary's cost this run leaves them out.
        ctx.counters
            .paid_by_an_earlier_run(&model, &paid_earlier, ctx.simulated);
    }
    Outcome {
        carried_usd,
        ..outcome.unwrap_or_default()
    }
}

/// [`process`]; `None` when the row gets no record and releases nothing.
/// `spent`: what the row's earlier answers cost (carried from a batch).
async fn process_row(
    ctx: &WorkerContext,
    info: RowInfo,
    request: ChatRequest,
    spent: Spent,
) -> Option<Outcome> {
    #[cfg(debug_assertions)]
    fault_injection::panic_if_asked(info.row);
    // Held over the first attempt: its answer warms the prefix for the rows waiting on it;
    // dropped (whatever ends the attempt), it lets them go.
    let mut pass = Some(match ctx.prefix_gate.enter(request.prefix) {
        Ok(pass) => pass,
        Err(wait) => wait_for_prefix(ctx, wait).await?,
    });
    let mut row = RowAttempts {
        tokens: request.estimated_prompt_tokens + request.max_tokens.unwrap_or(0),
        info,
        request,
        attempts: 0,
        earlier_answers: spent.answers,
        spent,
        extra_reservations: Vec::new(),
        no_more_attempts: false,
        unaccepted: false,
    };
    loop {
        // Counted in flight for the breaker until it has heard this attempt's answer.
        let (outcome, latency_ms, may_lend, in_flight) = row.attempt(ctx).await?;
        if let (Some(pass), true) = (pass.take(), outcome.is_ok()) {
            pass.answered();
        }
        let failure = match outcome {
            Ok(completion) => match row.answered(ctx, completion, latency_ms) {
                Ok(outcome) => return Some(outcome),
                Err(failure) => failure,
            },
            Err(failure) => failure,
        };
        // A backoff the server did not ask for ends early once the server answers again.
        let wakes = !failure.is_rate_limit() && failure.retry_after.is_none();
        let wait = match row.failed(ctx, failure, latency_ms) {
            Next::Done(outcome) => return outcome,
            Next::Retry(wait) => wait,
        };
        drop(in_flight);
        if !wait_to_retry(ctx, wait, may_lend, wakes).await {
            return None;
        }
    }
}

/// One row's attempts so far, and what they cost.
struct RowAttempts {
    info: RowInfo,
    request: ChatRequest,
    /// Estimated tokens of one attempt, for `--tpm`.
    tokens: u64,
    attempts: u32,
    /// Answers that failed `--json-schema`: paid for, so their tokens and cost go on the record.
    spent: Spent,
    /// How many of those were answered before this run's live attempts (in batches, `Carried`):
    /// the record counts them as attempts, `--max-retries` does not.
    earlier_answers: u32,
    /// Under `--max-cost`, each `--json-schema` retry first reserves its own worst case.
    extra_reservations: Vec<crate::money::budget::Reservation>,
    /// A retry would not fit under `--max-cost`.
    no_more_attempts: bool,
    /// The last attempt's answer failed `--json-schema` (paid for: a re-run pays again).
    unaccepted: bool,
}

/// What follows a failed attempt. (One per attempt: the size of `Done` costs nothing.)
#[allow(clippy::large_enum_variant)]
enum Next {
    /// The row is done: its outcome (`None`: no record, the run is halting).
    Done(Option<Outcome>),
    /// Try again after this wait.
    Retry(Duration),
}

impl RowAttempts {
    /// Waits for the breaker and the limiter, sends once and tells the pacer; `None` when the
    /// run halts first or the model is refused. Returns the answer, its latency, whether the
    /// row may lend its slot while it waits, and the breaker's count of it in flight.
    async fn attempt<'c>(
        &mut self,
        ctx: &'c WorkerContext,
    ) -> Option<(
        Result<crate::api::Completion, Failure>,
        u64,
        bool,
        InFlight<'c>,
    )> {
        let abort = &ctx.shutdown.abort;
        loop {
            if ctx.halting() {
                return None;
            }
            match ctx.breaker.admit(&self.request.model) {
                Admission::Send => break,
                Admission::Refused => return None,
                // The model's refusals wait for its answers in flight (one success and they are
                // row problems): a short wait, holding the slot.
                Admission::Wait => tokio::select! {
                    biased;
                    _ = abort.cancelled() => return None,
                    _ = ctx.shutdown.stop_dispatch.cancelled() => return None,
                    _ = tokio::time::sleep(BREAKER_POLL) => {}
                },
            }
        }
        let in_flight = ctx.breaker.sending(&self.request.model);
        self.unaccepted = false;
        tokio::select! {
            biased;
            _ = abort.cancelled() => return None,
            // Waiting for the limiter is not being in flight: a first Ctrl-C ends the wait.
            _ = ctx.shutdown.stop_dispatch.cancelled() => return None,
            _ = ctx.limits.acquire(self.tokens) => {}
        }
        if ctx.halting() {
            return None;
        }
        self.attempts += 1;
        if self.attempts == 1 {
            self.info.started = Some(std::time::SystemTime::now());
        }
        ctx.counters.in_flight.fetch_add(1, Relaxed);
        let started = Instant::now();
        let sent_at = tokio::time::Instant::now();
        let outcome = tokio::select! {
            biased;
            _ = abort.cancelled() => None,
            outcome = ctx.client.send_reporting_limits(self.request.body.clone()) => Some(outcome),
        };
        ctx.counters.in_flight.fetch_sub(1, Relaxed);
        let (outcome, headers) = outcome?;
        let latency_ms = started.elapsed().as_millis() as u64;
        let answer = match &outcome {
            Ok(_) => Answer::Ok,
            Err(f) if f.is_rate_limit() => Answer::RateLimited(f.retry_after),
            Err(_) => Answer::Other,
        };
        let headers = headers.or_else(|| outcome.as_ref().err().and_then(|f| f.rate_limit));
        let may_lend = ctx
            .limits
            .pacer()
            .on_answer(sent_at, answer, headers.as_ref());
        if answer == Answer::Ok {
            ctx.recovery.success();
        }
        Some((outcome, latency_ms, may_lend, in_flight))
    }

    /// An answer: the row's ok record, or — when it fails `--json-schema` — a transient
    /// failure (paid for: its tokens and cost are kept for the record). (One per attempt: the
    /// size of the `Err` costs nothing.)
    #[allow(clippy::result_large_err)]
    fn answered(
        &mut self,
        ctx: &WorkerContext,
        completion: crate::api::Completion,
        latency_ms: u64,
    ) -> Result<Outcome, Failure> {
        let model = &self.request.model;
        let answered_model = completion.model.as_deref().unwrap_or(model);
        let cost = cost_of(
            &ctx.prices,
            crate::money::cost::Billing::Live,
            &[answered_model, model],
            &completion,
        );
        let cost_unknown = !completion.usage_reported;
        let parsed = match check_answer(ctx.schema.as_ref(), &completion) {
            Ok(parsed) => parsed,
            Err(message) => {
                self.unaccepted = true;
                self.spent.add(&completion.usage, cost);
                return Err(match reserve_retry(ctx, &self.request) {
                    Ok(reservation) => {
                        self.extra_reservations.extend(reservation);
                        Failure::transient(message)
                    }
                    Err(why) => {
                        self.no_more_attempts = true;
                        Failure::transient(format!("{message}; not retried: {why}"))
                    }
                });
            }
        };
        let released = ctx.breaker.success(model);
        let body = ctx.keep_response.then(|| completion.body.clone());
        // The row is done: its info moves into the record (no copy of the prompt per answer).
        let info = std::mem::take(&mut self.info);
        let attempts = self.attempts_on_record();
        let mut own = Record::ok(info, completion, latency_ms, attempts, cost);
        let parsed = ctx.schema.as_ref().map(|schema| (parsed, schema));
        complete_ok(&mut own, &self.spent, parsed, body.as_deref());
        Ok(Outcome {
            own: Some(own),
            released,
            extra_reservations: std::mem::take(&mut self.extra_reservations),
            cost_unknown,
            ..Outcome::default()
        })
    }

    /// The record's `attempts`: this run's, and the batch answers its spend carries.
    fn attempts_on_record(&self) -> u32 {
        self.attempts + self.earlier_answers
    }

    /// A failed attempt: stop the run (fatal), the row's error record (permanent, or no retries
    /// left), or a retry after the server's advice or the backoff, whichever is longer.
    fn failed(&mut self, ctx: &WorkerContext, failure: Failure, latency_ms: u64) -> Next {
        let attempts = self.attempts;
        let on_record = self.attempts_on_record();
        if failure.status.is_some_and(|status| status >= 500) {
            ctx.counters.server_errors.fetch_add(1, Relaxed);
        }
        let error_record = |message: String| {
            let mut record = Record::error(self.info.clone(), message, latency_ms, on_record);
            self.spent.add_to(&mut record);
            record
        };
        match failure.kind {
            FailureKind::Fatal => {
                ctx.fail_run(failure.message);
                Next::Done(None)
            }
            FailureKind::Permanent => {
                let record = error_record(failure.message.clone());
                let released =
                    ctx.breaker
                        .failure(&self.request.model, &failure, record, self.info.line);
                Next::Done(Some(Outcome {
                    own: None,
                    released,
                    extra_reservations: std::mem::take(&mut self.extra_reservations),
                    ..Outcome::default()
                }))
            }
            FailureKind::Transient if attempts > ctx.retry.max_retries || self.no_more_attempts => {
                let message = format!(
                    "gave up after {}: {}",
                    crate::util::human::count(u64::from(on_record), "attempt"),
                    failure.message
                );
                if self.unaccepted {
                    ctx.counters.unaccepted.fetch_add(1, Relaxed);
                } else {
                    ctx.counters.transient_errors.fetch_add(1, Relaxed);
                }
                let record = error_record(message);
                warn_row_failed(ctx, &record);
                Next::Done(Some(Outcome {
                    own: Some(record),
                    extra_reservations: std::mem::take(&mut self.extra_reservations),
                    ..Outcome::default()
                }))
            }
            FailureKind::Transient => {
                // This row waits at least the server's advice; the others go on, paced
                // (`pacing.rs` decides whether the whole pool must pause).
                let wait = ctx.retry.wait(&failure, attempts);
                ctx.counters.retries.fetch_add(1, Relaxed);
                debug!(
                    id = %self.info.id,
                    row = self.info.row,
                    attempt = attempts,
                    "retrying in {:?}: {}",
                    wait,
                    failure.message
                );
                Next::Retry(wait)
            }
        }
    }
}

/// Waits for the first request of the row's prompt prefix to end (`prefix_gate.rs`), lending
/// the row's concurrency slot meanwhile when it may; `None` when the run halts first.
async fn wait_for_prefix<'c>(ctx: &'c WorkerContext, wait: Wait<'c>) -> Option<Pass<'c>> {
    let abort = &ctx.shutdown.abort;
    let stop = async {
        tokio::select! {
            _ = abort.cancelled() => {}
            _ = ctx.shutdown.stop_dispatch.cancelled() => {}
        }
    };
    ctx.slots.lend_while(wait.until_released(), stop).await
}

/// Waits before a row's next attempt, lending its concurrency slot while it does when the
/// pacer allows it, and ending early once an answer succeeds when `wakes` ([`Recovery`]);
/// `false` when the run halts meanwhile.
async fn wait_to_retry(ctx: &WorkerContext, wait: Duration, may_lend: bool, wakes: bool) -> bool {
    let abort = &ctx.shutdown.abort;
    let _waiting = ctx.counters.row_waits(wait);
    if may_lend {
        let stop = async {
            tokio::select! {
                _ = abort.cancelled() => {}
                _ = ctx.shutdown.stop_dispatch.cancelled() => {}
            }
        };
        return ctx.slots.wait_lending(wait, stop).await;
    }
    let backoff = async {
        if wakes {
            ctx.recovery.backoff(wait).await;
        } else {
            tokio::time::sleep(wait).await;
        }
    };
    tokio::select! {
        biased;
        _ = abort.cancelled() => false,
        _ = ctx.shutdown.stop_dispatch.cancelled() => false,
        _ = backoff => true,
    }
}

/// A warning for an error record about to be written: the first few of each kind (repeats are
/// counted for the summary, so a night of identical failures does not flood stderr).
pub(crate) fn warn_row_failed(ctx: &WorkerContext, record: &Record) {
    let message = record.error.as_deref().unwrap_or_default();
    if ctx.warnings.show(message) {
        warn!(id = %record.id, row = record.row, "row failed: {message}");
    }
}

/// Debug builds only: lets the end-to-end tests make a worker panic on a chosen row
/// (`PROMPTBATCH_TEST_PANIC_ON_ROW=N`), to check that a failed worker is seen and never
/// reported as success. Release builds contain none of this.
#[cfg(debug_assertions)]
mod fault_injection {
    pub(super) fn panic_if_asked(row: u64) {
        let asked = std::env::var("PROMPTBATCH_TEST_PANIC_ON_ROW")
            .ok()
            .and_then(|v| v.parse::<u64>().ok());
        if asked == Some(row) {
            panic!("injected by PROMPTBATCH_TEST_PANIC_ON_ROW={row}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After an outage (no success for 5 s), the first success wakes the rows backing off:
    /// they retry within a second, not at the end of their backoff. While successes keep
    /// coming (a server failing part of the requests), nobody is woken.
    #[tokio::test(start_paused = true)]
    async fn the_first_success_after_an_outage_wakes_the_rows_backing_off() {
        let recovery = std::sync::Arc::new(Recovery::default());
        recovery.success();
        let start = tokio::time::Instant::now();
        let waits: Vec<_> = (0..8)
            .map(|_| {
                let r = recovery.clone();
                tokio::spawn(async move {
                    r.backoff(Duration::from_secs(60)).await;
                    tokio::time::Instant::now()
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        recovery.success(); // 2 s after the last success: not an outage's end
        tokio::time::sleep(Duration::from_secs(10)).await;
        recovery.success(); // 10 s without one: the outage ended
        for wait in waits {
            let ended = wait.await.unwrap() - start;
            assert!(
                ended >= Duration::from_secs(12),
                "{ended:?}: woken too early"
            );
            assert!(ended <= Duration::from_secs(13), "{ended:?}: not woken");
        }
    }

    /// Full jitter: every wait lies in [0, ceiling], where the ceiling doubles per attempt up to
    /// `max`, and the waits spread over that whole range (a backoff that always waits zero, always
    /// the ceiling, never grows or ignores the cap fails). 2,000 uniform samples per attempt: the
    /// bounds below are more than 10 standard deviations wide, so the test does not flake.
    #[test]
    fn backoff_is_capped_full_jitter() {
        let p = RetryPolicy {
            max_retries: 8,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for attempt in 1..20 {
            let ceiling = Duration::from_secs(1u64 << (attempt - 1).min(30)).min(p.max);
            let c = ceiling.as_secs_f64();
            let waits: Vec<f64> = (0..2000)
                .map(|_| p.backoff(attempt))
                .inspect(|w| assert!(*w <= ceiling, "attempt {attempt}: {w:?} > {ceiling:?}"))
                .map(|w| w.as_secs_f64())
                .collect();
            let max = waits.iter().copied().fold(0.0, f64::max);
            let min = waits.iter().copied().fold(f64::INFINITY, f64::min);
            let mean = waits.iter().sum::<f64>() / waits.len() as f64;
            assert!(
                max >= 0.9 * c,
                "attempt {attempt}: max {max} s never nears {c} s"
            );
            assert!(
                min <= 0.1 * c,
                "attempt {attempt}: min {min} s never nears 0"
            );
            assert!(
                (0.4 * c..=0.6 * c).contains(&mean),
                "attempt {attempt}: mean {mean} s is not about half of {c} s"
            );
            let mut distinct = waits.clone();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            assert!(
                distinct.len() > 1000,
                "attempt {attempt}: waits barely vary"
            );
        }
    }
}
