//! The circuit breaker: a systematic refusal must not become a file of error records.
//!
//! A wrong key behind a gateway that answers it with 400 ("No connected db."), an unknown model
//! (400 "Invalid model name", 404), a permission the account lacks: every row fails the same
//! way, and retrying or recording them helps no one. The breaker watches the *permanent*
//! failures of each model (the row's requested model):
//!
//! - a model **trips** after [`FIRST_STREAK`] permanent failures with the same error (status and
//!   message, numbers ignored) before any success of that model, or after [`LONG_STREAK`] in a row
//!   with no success in between once it has succeeded;
//! - until a model has succeeded, the error records of such a streak are *parked* here (at most
//!   `FIRST_STREAK - 1` per model, holding no concurrency slot): a success or another error
//!   releases them to the writer, the end of the run writes them, a trip drops them — so a
//!   refused model leaves no error record at all;
//! - failures about one row's size (413, "context length", "too large", "too long") never count:
//!   they are the row's own problem;
//! - once a model has tripped, its rows are not sent and get no record (the next run sends
//!   them), its in-flight rows that fail get no record either, and the run ends with exit 1,
//!   quoting the server's message once with the first refused row;
//! - the other models go on; when every model the run has used has tripped and nothing has
//!   succeeded at all, the run stops reading its input.

use std::collections::HashMap;
use std::sync::atomic::{
    AtomicBool, AtomicU64,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::{Mutex, OnceLock};

use crate::api::{Failure, FailureKind};
use crate::output::Record;
use crate::report::normalize_error;

/// Identical permanent failures, before a model's first success, that trip it.
pub const FIRST_STREAK: u32 = 5;
/// Identical permanent failures in a row, after a model has succeeded, that trip it.
pub const LONG_STREAK: u32 = 50;

/// The row a refusal was first seen on.
#[derive(Debug, Clone)]
pub struct RowRef {
    pub row: u64,
    pub line: u64,
    pub id: String,
}

#[derive(Debug, Default)]
struct ModelState {
    successes: u64,
    streak: u32,
    /// The normalized error of the current streak.
    streak_error: String,
    /// The first row and message of the current streak.
    streak_start: Option<(RowRef, String)>,
    tripped: Option<(RowRef, String)>,
    held_back: u64,
    /// Error records of the current streak, before the model's first success.
    parked: Vec<Record>,
}

impl ModelState {
    /// Ends the current streak; its parked records are to be written.
    fn end_streak(&mut self) -> Vec<Record> {
        self.streak = 0;
        self.streak_start = None;
        std::mem::take(&mut self.parked)
    }
}

/// Per-model breakers of one run.
#[derive(Debug, Default)]
pub struct Breaker {
    models: Mutex<HashMap<String, ModelState>>,
    any_success: AtomicBool,
    /// A model has tripped (until then, no row is held back).
    any_tripped: AtomicBool,
    /// Every model used so far has tripped and nothing has succeeded: stop reading.
    all_refused: AtomicBool,
    held_back: AtomicU64,
    /// A permanent failure has been noted (until then, no model has a streak or parked records).
    any_failure: AtomicBool,
    /// The first model that succeeded (its state already says so).
    first_success: OnceLock<String>,
}

/// A refused model, for the end-of-run message.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub model: String,
    pub message: String,
    pub first: RowRef,
    /// Rows of this model that got no record because of the refusal.
    pub rows_held_back: u64,
}

impl Refusal {
    /// One line: which model, the server's message, where it was first seen, what was left.
    pub fn describe(&self) -> String {
        format!(
            "model `{}` was refused: {} (first at input line {}, row {}, id `{}`); its rows that have no record are sent by the next run",
            self.model,
            self.message,
            self.first.line,
            self.first.row,
            self.first.id,
        )
    }
}

impl Breaker {
    /// Whether `model` has tripped (its rows must not be sent). Counts the row as held back.
    pub fn hold_back(&self, model: &str) -> bool {
        if !self.any_tripped.load(Relaxed) {
            return false;
        }
        let mut models = self.lock();
        match models.get_mut(model) {
            Some(state) if state.tripped.is_some() => {
                state.held_back += 1;
                self.held_back.fetch_add(1, Relaxed);
                true
            }
            _ => false,
        }
    }

    /// Notes an answer for `model`: it works, so it restarts the count. Returns the parked
    /// error records, to be written.
    pub fn success(&self, model: &str) -> Vec<Record> {
        // Without any failure, another success of a model that has succeeded changes nothing
        // (only whether a model has succeeded counts): no lock.
        if !self.any_failure.load(Acquire) && self.first_success.get().is_some_and(|m| m == model) {
            return Vec::new();
        }
        if !self.any_success.load(Relaxed) {
            self.any_success.store(true, Relaxed);
        }
        let mut models = self.lock();
        let state = match models.get_mut(model) {
            Some(state) => state,
            None => models.entry(model.to_string()).or_default(),
        };
        state.successes += 1;
        let released = state.end_streak();
        drop(models);
        if self.first_success.get().is_none() {
            let _ = self.first_success.set(model.to_string());
        }
        released
    }

    /// Notes a permanent failure for `model`, whose error record is `record` (the row starts at
    /// input `line`). Returns the records to write now: none when the record is parked or the
    /// model is refused, else this one and any it releases.
    pub fn failure(
        &self,
        model: &str,
        failure: &Failure,
        record: Record,
        line: u64,
    ) -> Vec<Record> {
        debug_assert_eq!(failure.kind, FailureKind::Permanent);
        let mut models = self.lock();
        self.any_failure.store(true, Release);
        let state = models.entry(model.to_string()).or_default();
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
            let first = RowRef {
                row: record.row,
                line,
                id: record.id.clone(),
            };
            state.streak_start = Some((first, failure.message.clone()));
        }
        state.streak += 1;
        let limit = if state.successes == 0 {
            FIRST_STREAK
        } else {
            LONG_STREAK
        };
        if state.streak < limit {
            if state.successes == 0 {
                state.parked.push(record);
            } else {
                write.push(record);
            }
            return write;
        }
        state.tripped = state.streak_start.take();
        self.any_tripped.store(true, Relaxed);
        let dropped = 1 + std::mem::take(&mut state.parked).len() as u64;
        state.held_back += dropped;
        self.held_back.fetch_add(dropped, Relaxed);
        let all_tripped = models.values().all(|m| m.tripped.is_some());
        if all_tripped && !self.any_success.load(Relaxed) {
            self.all_refused.store(true, Relaxed);
        }
        write
    }

    /// At the end of the run: the records still parked (streaks too short to trip).
    pub fn take_parked(&self) -> Vec<Record> {
        self.lock()
            .values_mut()
            .flat_map(|state| std::mem::take(&mut state.parked))
            .collect()
    }

    /// Whether the run should stop reading: every model used has tripped, nothing succeeded.
    pub fn all_refused(&self) -> bool {
        self.all_refused.load(Relaxed)
    }

    /// Rows that got no record because their model was refused.
    pub fn held_back(&self) -> u64 {
        self.held_back.load(Relaxed)
    }

    /// The models that tripped, by name.
    pub fn refusals(&self) -> Vec<Refusal> {
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
    fn the_same_refusal_from_the_start_trips_the_model_and_leaves_no_record() {
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
        assert!(fail(&b, "m", 9, "HTTP 400: No connected db. (request 99)").is_empty());
        assert!(b.hold_back("m"));
        assert!(b.all_refused(), "the only model, nothing succeeded");
        let r = &b.refusals()[0];
        assert_eq!((r.first.row, r.first.line), (1, 2));
        assert_eq!(r.rows_held_back, FIRST_STREAK as u64 + 1);
        assert!(r.message.contains("No connected db"));
        assert!(b.take_parked().is_empty());
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
        assert!(!b.hold_back("m"));
        assert!(fail(&b, "m", 0, "HTTP 400: x").is_empty());
        assert!(b.hold_back("m"));
        assert!(!b.all_refused(), "the model had succeeded");
    }

    #[test]
    fn a_model_that_has_succeeded_needs_the_long_streak() {
        let b = Breaker::default();
        let _ = b.success("m");
        for n in 0..FIRST_STREAK as u64 * 2 {
            assert_eq!(fail(&b, "m", n, "HTTP 400: x"), vec![n]);
        }
        assert!(!b.hold_back("m"));
    }

    #[test]
    fn one_refused_model_leaves_the_others_running() {
        let b = Breaker::default();
        let _ = b.success("good");
        for n in 0..FIRST_STREAK as u64 {
            fail(&b, "typo", n, "HTTP 404: model not found");
        }
        assert!(b.hold_back("typo"));
        assert!(!b.hold_back("good"));
        assert!(!b.all_refused());
    }
}
