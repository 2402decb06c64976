//! The circuit breaker: a systematic refusal must not become a file of error records, and a
//! model that works must never be taken for one that does not.
//!
//! A wrong key behind a gateway that answers it with 400 ("No connected db."), an unknown model
//! (400 "Invalid model name", 404), a permission the account lacks: every row fails the same
//! way, and retrying or recording them helps no one. The breaker watches the *permanent*
//! failures of each model (the row's requested model):
//!
//! - a model **trips** after [`FIRST_STREAK`] permanent failures with the same error (status and
//!   message, numbers ignored) before any success of that model, or after [`LONG_STREAK`] in a row
//!   with no success in between once it has succeeded. A model *has succeeded* when it answered
//!   a row ok in this run or an ok record of it was kept from an earlier run
//!   ([`Breaker::new`]);
//! - a first streak trips only once the requests of that model in flight have answered: fast
//!   refusals of a few bad rows arrive before the slower answers of good ones, and meanwhile the
//!   model's other rows wait (they are not sent). One success and the streak is a row problem;
//! - until a model has succeeded, the error records of such a streak are *parked* here
//!   (`FIRST_STREAK`, and those of the model's requests in flight then): a success or another error releases them to the writer, the end
//!   of the run writes them, and so does a trip — an error record is retried by the next run
//!   anyway, and a row whose earlier record the resume plan took out to send again must not
//!   lose it. Only with `--keep-errors` (where a written error record would stay) does a trip
//!   drop them, so the next run sends those rows;
//! - failures about one row's size (413, "context length", "too large", "too long") never count:
//!   they are the row's own problem;
//! - once a model has tripped, its rows are not sent and get no record (the next run sends
//!   them), its in-flight rows that fail get no record either, and the run ends with exit 1,
//!   quoting the server's message once with the first refused row;
//! - the other models go on; when every model the run has used has tripped and nothing has
//!   succeeded at all, the run stops reading its input.

use std::collections::HashMap;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Mutex, OnceLock};

use crate::api::{Failure, FailureKind};
use crate::output::resume::KnownModels;
use crate::output::Record;
use crate::progress::refusal::{FirstRow, Refusal};
use crate::util::error_kind::normalize_error;
use crate::util::fingerprint::fnv1a;

/// Identical permanent failures, before a model's first success, that trip it.
pub const FIRST_STREAK: u32 = 5;
/// Identical permanent failures in a row, after a model has succeeded, that trip it.
pub const LONG_STREAK: u32 = 50;
/// Requests in flight are counted in this many buckets by the model's name (a shared bucket
/// only makes a suspect model wait for another model's answers too).
const IN_FLIGHT_BUCKETS: usize = 64;

#[derive(Debug, Default)]
struct ModelState {
    successes: u64,
    /// Ok records of this model were kept from an earlier run.
    worked_before: bool,
    streak: u32,
    /// The normalized error of the current streak.
    streak_error: String,
    /// The first row and message of the current streak.
    streak_start: Option<(FirstRow, String)>,
    /// A first streak reached [`FIRST_STREAK`] while requests were in flight: the model's rows
    /// wait for their answers.
    suspect: bool,
    tripped: Option<(FirstRow, String)>,
    held_back: u64,
    /// Error records of the current streak, before the model's first success.
    parked: Vec<Record>,
}

impl ModelState {
    /// Ends the current streak; its parked records are to be written.
    fn end_streak(&mut self) -> Vec<Record> {
        self.streak = 0;
        self.streak_start = None;
        self.suspect = false;
        std::mem::take(&mut self.parked)
    }

    fn has_worked(&self) -> bool {
        self.successes > 0 || self.worked_before
    }
}

/// Per-model breakers of one run.
#[derive(Debug)]
pub(crate) struct Breaker {
    models: Mutex<HashMap<String, ModelState>>,
    /// Models with ok records kept from earlier runs.
    worked_before: KnownModels,
    /// `--keep-errors`: a trip drops its parked records instead of writing them.
    keep_errors: bool,
    /// A model has tripped or is suspect (until then, no row is held back or waits).
    any_held: AtomicBool,
    /// Every model used so far has tripped and nothing has succeeded: stop reading.
    all_refused: AtomicBool,
    held_back: AtomicU64,
    /// A permanent failure has been noted (until then, no model has a streak or parked records).
    any_failure: AtomicBool,
    /// The first model that succeeded (its state already says so).
    first_success: OnceLock<String>,
    /// Requests in flight by model (hashed into buckets).
    in_flight: [AtomicU32; IN_FLIGHT_BUCKETS],
    /// Where a trip is reported for the event log (`breaker_trip`), when set.
    events: Option<std::sync::Arc<crate::progress::Counters>>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker::new(KnownModels::default(), false)
    }
}

/// What [`Breaker::admit`] says of a row about to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Send it.
    Send,
    /// Its model's first streak waits for the answers in flight: ask again shortly.
    Wait,
    /// Its model has tripped: no request, no record (counted as held back).
    Refused,
}

/// A request of a model in flight; counted out when dropped (after the breaker heard its
/// answer, so a success is never missed by a streak deciding meanwhile).
#[derive(Debug)]
pub(crate) struct InFlight<'a> {
    bucket: &'a AtomicU32,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.bucket.fetch_sub(1, Release);
    }
}

impl Breaker {
    /// A breaker for a run whose output keeps ok records of the models in `worked_before`.
    pub(crate) fn new(worked_before: KnownModels, keep_errors: bool) -> Self {
        Breaker {
            models: Mutex::default(),
            worked_before,
            keep_errors,
            any_held: AtomicBool::new(false),
            all_refused: AtomicBool::new(false),
            held_back: AtomicU64::new(0),
            any_failure: AtomicBool::new(false),
            first_success: OnceLock::new(),
            in_flight: std::array::from_fn(|_| AtomicU32::new(0)),
            events: None,
        }
    }

    /// The breaker, reporting each trip to `counters` for the event log.
    pub(crate) fn reporting_to(
        mut self,
        counters: std::sync::Arc<crate::progress::Counters>,
    ) -> Self {
        self.events = Some(counters);
        self
    }

    fn bucket(&self, model: &str) -> &AtomicU32 {
        &self.in_flight[fnv1a(model.as_bytes()) as usize % IN_FLIGHT_BUCKETS]
    }

    /// Whether a row of `model` may be sent now (see [`Admission`]).
    pub(crate) fn admit(&self, model: &str) -> Admission {
        if !self.any_held.load(Acquire) {
            return Admission::Send;
        }
        let mut models = self.lock();
        let Some(state) = models.get_mut(model) else {
            return Admission::Send;
        };
        if state.tripped.is_none() && state.suspect && self.bucket(model).load(Acquire) == 0 {
            // The answers in flight came back and none succeeded (a retried one is not in
            // flight while it waits): the streak stands.
            // Its parked records stay parked: the end of the run writes them.
            self.trip(model, state);
            self.note_all_refused(&models);
            let state = models.get_mut(model).expect("just seen");
            return self.refuse(state);
        }
        match (&state.tripped, state.suspect) {
            (Some(_), _) => self.refuse(state),
            (None, true) => Admission::Wait,
            (None, false) => Admission::Send,
        }
    }

    fn refuse(&self, state: &mut ModelState) -> Admission {
        state.held_back += 1;
        self.held_back.fetch_add(1, Relaxed);
        Admission::Refused
    }

    /// Counts a request of `model` in flight until the guard is dropped.
    pub(crate) fn sending(&self, model: &str) -> InFlight<'_> {
        let bucket = self.bucket(model);
        bucket.fetch_add(1, Release);
        InFlight { bucket }
    }

    /// Notes an answer for `model`: it works, so it restarts the count. Returns the parked
    /// error records, to be written.
    pub(crate) fn success(&self, model: &str) -> Vec<Record> {
        // Without any failure, another success of a model that has succeeded changes nothing
        // (only whether a model has succeeded counts): no lock.
        if !self.any_failure.load(Acquire) && self.first_success.get().is_some_and(|m| m == model) {
            return Vec::new();
        }
        let mut models = self.lock();
        let state = self.state(&mut models, model);
        state.successes += 1;
        let released = state.end_streak();
        drop(models);
        if self.first_success.get().is_none() {
            let _ = self.first_success.set(model.to_string());
        }
        released
    }

    fn state<'m>(
        &self,
        models: &'m mut HashMap<String, ModelState>,
        model: &str,
    ) -> &'m mut ModelState {
        if !models.contains_key(model) {
            let state = ModelState {
                worked_before: self.worked_before.has(model),
                ..ModelState::default()
            };
            models.insert(model.to_string(), state);
        }
        models.get_mut(model).expect("just inserted")
    }

    /// Notes a permanent failure for `model`, whose error record is `record` (the row starts at
    /// input `line`). Returns the records to write now: none when the record is parked or the
    /// model is refused, else this one and any it releases.
    pub(crate) fn failure(
        &self,
        model: &str,
        failure: &Failure,
        record: Record,
        line: u64,
    ) -> Vec<Record> {
        debug_assert_eq!(failure.kind, FailureKind::Permanent);
        let mut models = self.lock();
        self.any_failure.store(true, Release);
        let state = self.state(&mut models, model);
        if state.tripped.is_some() {
            state.held_back += 1;
            self.held_back.fetch_add(1, Relaxed);
            return Vec::new();
        }
        if is_about_the_row(failure) {
            let mut write = state.end_streak();
            write.push(record);
            return write;
        }
        let key = normalize_error(&failure.message);
        let mut write = Vec::new();
        if state.streak == 0 || state.streak_error != key {
            write = state.end_streak();
            state.streak_error = key;
            let first = FirstRow {
                row: record.row,
                line,
                id: record.id.clone(),
            };
            state.streak_start = Some((first, failure.message.clone()));
        }
        state.streak += 1;
        let worked = state.has_worked();
        let limit = if worked { LONG_STREAK } else { FIRST_STREAK };
        if worked {
            write.push(record);
        } else {
            state.parked.push(record);
        }
        if state.streak < limit {
            return write;
        }
        if !worked && self.bucket(model).load(Acquire) > 0 {
            // Answers of this model are on their way: one success makes this a row problem.
            state.suspect = true;
            self.any_held.store(true, Release);
            return write;
        }
        self.trip(model, state);
        write.extend(std::mem::take(&mut state.parked));
        self.note_all_refused(&models);
        write
    }

    /// Trips the model: its streak is the refusal. Its parked records stay to be written, but
    /// with `--keep-errors` (which would keep them) they are dropped and their rows sent by the
    /// next run.
    fn trip(&self, model: &str, state: &mut ModelState) {
        state.tripped = state.streak_start.take();
        if let (Some(counters), Some((_, error))) = (&self.events, &state.tripped) {
            counters.log_event(
                "breaker_trip",
                serde_json::json!({"model": model, "error": error, "had_worked": state.has_worked()}),
            );
        }
        state.suspect = false;
        self.any_held.store(true, Release);
        if self.keep_errors {
            let dropped = std::mem::take(&mut state.parked).len() as u64;
            state.held_back += dropped;
            self.held_back.fetch_add(dropped, Relaxed);
        }
    }

    fn note_all_refused(&self, models: &HashMap<String, ModelState>) {
        let all_tripped = models.values().all(|m| m.tripped.is_some());
        if all_tripped && !models.values().any(ModelState::has_worked) {
            self.all_refused.store(true, Relaxed);
        }
    }

    /// At the end of the run: the records still parked (streaks too short to trip, or a
    /// suspect model's).
    pub(crate) fn take_parked(&self) -> Vec<Record> {
        self.lock()
            .values_mut()
            .flat_map(|state| std::mem::take(&mut state.parked))
            .collect()
    }

    /// Whether `model` has tripped.
    pub(crate) fn refused(&self, model: &str) -> bool {
        self.any_held.load(Acquire)
            && self
                .lock()
                .get(model)
                .is_some_and(|state| state.tripped.is_some())
    }

    /// Whether the run should stop reading: every model used has tripped, nothing succeeded.
    pub(crate) fn all_refused(&self) -> bool {
        self.all_refused.load(Relaxed)
    }

    /// Rows that got no record because their model was refused.
    pub(crate) fn held_back(&self) -> u64 {
        self.held_back.load(Relaxed)
    }

    /// The models that tripped, by name.
    pub(crate) fn refusals(&self) -> Vec<Refusal> {
        let models = self.lock();
        let mut refused: Vec<Refusal> = models
            .iter()
            .filter_map(|(model, state)| {
                let (first, message) = state.tripped.clone()?;
                Some(Refusal {
                    model: model.clone(),
                    message,
                    first,
                    rows_held_back: state.held_back,
                    successes: state.successes,
                    worked_before: state.worked_before,
                })
            })
            .collect();
        refused.sort_by(|a, b| a.model.cmp(&b.model));
        refused
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ModelState>> {
        self.models.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Failures about one request's size: never systematic.
fn is_about_the_row(failure: &Failure) -> bool {
    let message = failure.message.to_ascii_lowercase();
    failure.status == Some(413)
        || [
            "context length",
            "context_length",
            "too large",
            "too long",
            "maximum context",
        ]
        .iter()
        .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::record::RowInfo;

    fn refused(message: &str) -> Failure {
        Failure {
            kind: FailureKind::Permanent,
            message: message.to_string(),
            status: Some(400),
            retry_after: None,
            rate_limit: None,
        }
    }

    fn record(n: u64, f: &Failure) -> Record {
        let info = RowInfo {
            id: format!("r{n}"),
            row: n,
            line: n + 1,
            prompt: String::new(),
            model: "m".into(),
            fingerprint: String::new(),
            simulated: false,
            kept: None,
            started: None,
        };
        Record::error(info, f.message.clone(), 1, 1)
    }

    fn fail(b: &Breaker, model: &str, n: u64, message: &str) -> Vec<u64> {
        let f = refused(message);
        b.failure(model, &f, record(n, &f), n + 1)
            .iter()
            .map(|r| r.row)
            .collect()
    }

    #[test]
    fn the_same_refusal_from_the_start_trips_the_model_and_writes_the_streak() {
        let b = Breaker::default();
        for n in 1..FIRST_STREAK as u64 {
            let written = fail(
                &b,
                "m",
                n,
                &format!("HTTP 400: No connected db. (request {n})"),
            );
            assert!(written.is_empty(), "parked until the breaker knows");
        }
        let written = fail(&b, "m", 9, "HTTP 400: No connected db. (request 99)");
        assert_eq!(
            written,
            vec![1, 2, 3, 4, 9],
            "a trip writes the streak's records"
        );
        assert_eq!(b.admit("m"), Admission::Refused);
        assert!(b.all_refused(), "the only model, nothing succeeded");
        let r = &b.refusals()[0];
        assert_eq!((r.first.row, r.first.line), (1, 2));
        assert_eq!(r.rows_held_back, 1, "the row refused after the trip");
        assert!(!r.had_worked());
        assert!(r.message.contains("No connected db"));
        assert!(b.take_parked().is_empty());
    }

    #[test]
    fn with_keep_errors_a_trip_drops_the_streak_so_the_next_run_sends_it() {
        let b = Breaker::new(KnownModels::default(), true);
        for n in 0..FIRST_STREAK as u64 {
            assert!(fail(&b, "m", n, "HTTP 400: No connected db.").is_empty());
        }
        assert_eq!(b.admit("m"), Admission::Refused);
        assert_eq!(b.held_back(), FIRST_STREAK as u64 + 1);
    }

    /// Fast refusals of a few bad rows arrive before the slower answers of good ones: the
    /// streak waits for the answers in flight, and one success makes it a row problem.
    #[test]
    fn a_first_streak_waits_for_the_answers_in_flight() {
        let b = Breaker::default();
        let slow = b.sending("m");
        for n in 0..FIRST_STREAK as u64 {
            assert!(fail(&b, "m", n, "HTTP 400: bad row").is_empty());
        }
        assert_eq!(b.admit("m"), Admission::Wait, "suspect, not tripped");
        assert_eq!(b.admit("other"), Admission::Send);
        let released: Vec<u64> = b.success("m").iter().map(|r| r.row).collect();
        drop(slow);
        assert_eq!(released, vec![0, 1, 2, 3, 4]);
        assert_eq!(b.admit("m"), Admission::Send);
        assert!(b.refusals().is_empty());

        // The same, but the answer in flight fails too (or ends without a success): it trips
        // once nothing of the model is in flight, and the parked records are written at the end.
        let b = Breaker::default();
        let slow = b.sending("m");
        for n in 0..FIRST_STREAK as u64 {
            assert!(fail(&b, "m", n, "HTTP 400: no such model").is_empty());
        }
        assert_eq!(b.admit("m"), Admission::Wait);
        drop(slow);
        assert_eq!(b.admit("m"), Admission::Refused);
        assert_eq!(b.take_parked().len(), FIRST_STREAK as usize);
    }

    /// Ok records of the model kept from an earlier run: it works, so the long streak applies
    /// and the message can say so.
    #[test]
    fn ok_records_of_earlier_runs_count_as_successes() {
        let mut worked = KnownModels::default();
        worked.insert(crate::output::resume::model_key("m"));
        let b = Breaker::new(worked, false);
        for n in 0..(LONG_STREAK - 1) as u64 {
            assert_eq!(fail(&b, "m", n, "HTTP 400: x"), vec![n], "written at once");
        }
        assert_eq!(b.admit("m"), Admission::Send);
        assert_eq!(fail(&b, "m", 99, "HTTP 400: x"), vec![99], "never dropped");
        assert_eq!(b.admit("m"), Admission::Refused);
        let r = &b.refusals()[0];
        assert!(r.had_worked() && r.worked_before && r.successes == 0);
        assert!(!b.all_refused());
    }

    #[test]
    fn parked_records_are_released_by_a_success_another_error_or_the_end() {
        let b = Breaker::default();
        assert!(fail(&b, "m", 1, "HTTP 400: a").is_empty());
        assert!(fail(&b, "m", 2, "HTTP 400: a").is_empty());
        assert_eq!(fail(&b, "m", 3, "HTTP 400: b"), vec![1, 2], "another error");
        let released: Vec<u64> = b.success("m").iter().map(|r| r.row).collect();
        assert_eq!(released, vec![3], "a success");
        assert!(fail(&b, "n", 4, "HTTP 400: c").is_empty());
        let at_end: Vec<u64> = b.take_parked().iter().map(|r| r.row).collect();
        assert_eq!(at_end, vec![4], "the end of the run");
    }

    #[test]
    fn sizes_and_successes_do_not_trip() {
        let b = Breaker::default();
        for n in 0..20u64 {
            let big = Failure {
                status: Some(413),
                ..refused("HTTP 413: too large")
            };
            assert_eq!(b.failure("m", &big, record(n, &big), n).len(), 1);
        }
        let _ = b.success("m");
        for n in 0..(LONG_STREAK - 1) as u64 {
            assert_eq!(fail(&b, "m", n, "HTTP 400: x"), vec![n], "written at once");
        }
        assert_eq!(b.admit("m"), Admission::Send);
        assert_eq!(fail(&b, "m", 0, "HTTP 400: x"), vec![0], "never dropped");
        assert_eq!(b.admit("m"), Admission::Refused);
        assert!(!b.all_refused(), "the model had succeeded");
    }

    #[test]
    fn a_model_that_has_succeeded_needs_the_long_streak() {
        let b = Breaker::default();
        let _ = b.success("m");
        for n in 0..FIRST_STREAK as u64 * 2 {
            assert_eq!(fail(&b, "m", n, "HTTP 400: x"), vec![n]);
        }
        assert_eq!(b.admit("m"), Admission::Send);
    }

    #[test]
    fn one_refused_model_leaves_the_others_running() {
        let b = Breaker::default();
        let _ = b.success("good");
        for n in 0..FIRST_STREAK as u64 {
            fail(&b, "typo", n, "HTTP 404: model not found");
        }
        assert_eq!(b.admit("typo"), Admission::Refused);
        assert_eq!(b.admit("good"), Admission::Send);
        assert!(!b.all_refused());
    }
}
