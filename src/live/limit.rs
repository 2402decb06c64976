//! Request pacing shared by all workers: the adaptive pacing (`pacing.rs`: AIMD on the rate of
//! 429s, pool pauses when the server's window is exhausted, the server's announced limits), then
//! the RPM and TPM caps — governor paces requests evenly (no start-up burst), and a log of the
//! last minute's sends guarantees that no 60-second window ever holds more than the cap.
//!
//! Invariant: every attempt (first try or retry) passes through [`Limits::acquire`] exactly once
//! before it is sent, so the caps bound attempts, not rows.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::live::pacing::Pacer;
use crate::progress::Counters;

/// How many token cells the TPM limiter hands out at once: 1/6000 of a minute's budget
/// (10 ms worth), so no start-up burst is noticeable and a big request waits in small steps.
fn tpm_chunk(tpm: u32) -> NonZeroU32 {
    NonZeroU32::new((tpm / 6000).max(1)).expect("max(1) is non-zero")
}

/// A limiter of `per_minute` cells handed out `step` at a time. Its capacity is two steps, of
/// which one is taken up front: there is no start-up burst beyond one step, and a waiter that
/// wakes a little late does not lose its slot for good (with a capacity of one step, every late
/// wake-up would be lost, and the achieved rate would fall short of the cap).
fn limiter(per_minute: u32, step: NonZeroU32) -> DefaultDirectRateLimiter {
    let period = Duration::from_secs_f64(60.0 / f64::from(per_minute));
    let capacity = step.saturating_mul(NonZeroU32::new(2).expect("2 is non-zero"));
    let quota = Quota::with_period(period)
        .expect("per_minute is at least 1, so the period is non-zero")
        .allow_burst(capacity);
    let limiter = RateLimiter::direct(quota);
    let _ = limiter.check_n(step);
    limiter
}

/// The window the caps are per.
const WINDOW: Duration = Duration::from_secs(60);
/// Extra wait when a window is full, so that a request's arrival at the server (after it is sent,
/// with some jitter: connection pool, scheduling, network) also falls outside the full window.
/// It costs at most 50 ms per minute of rate (0.08 %) at the cap.
const WINDOW_MARGIN: Duration = Duration::from_millis(50);

/// What was sent in the last minute, oldest first: the hard guard that no 60-second window ever
/// holds more than the cap (the governor pacing alone may let one step through early while it
/// catches up a late wake-up).
#[derive(Default)]
struct WindowLog {
    entries: VecDeque<(Instant, u64)>,
    sum: u64,
}

impl WindowLog {
    /// When `amount` more fits under `cap` in every window; `None`: now.
    fn ready_at(&mut self, now: Instant, amount: u64, cap: u64) -> Option<Instant> {
        while let Some(&(at, n)) = self.entries.front() {
            if at + WINDOW > now {
                break;
            }
            self.sum -= n;
            self.entries.pop_front();
        }
        let excess = (self.sum + amount).checked_sub(cap).filter(|e| *e > 0)?;
        let mut freed = 0;
        for &(at, n) in &self.entries {
            freed += n;
            if freed >= excess {
                return Some(at + WINDOW + WINDOW_MARGIN);
            }
        }
        None
    }

    fn record(&mut self, now: Instant, amount: u64) {
        self.entries.push_back((now, amount));
        self.sum += amount;
    }
}

/// The window logs, guarded by the gate.
#[derive(Default)]
struct Windows {
    rpm: WindowLog,
    tpm: WindowLog,
}

/// The adaptive pacing and the RPM/TPM caps.
/// Requests in flight at once unless set.
pub const DEFAULT_CONCURRENCY: u32 = 16;

/// How much a run may send: requests in flight, and per-minute caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOptions {
    /// Requests in flight at once (at least 1).
    pub concurrency: u32,
    /// Requests per minute cap (spread evenly, no burst at start-up).
    pub rpm: Option<u32>,
    /// Tokens per minute cap (estimated prompt tokens + `max_tokens` per request).
    pub tpm: Option<u32>,
}

impl Default for LimitOptions {
    fn default() -> Self {
        LimitOptions {
            concurrency: DEFAULT_CONCURRENCY,
            rpm: None,
            tpm: None,
        }
    }
}

pub(crate) struct Limits {
    rpm: Option<(DefaultDirectRateLimiter, u64)>,
    tpm: Option<(DefaultDirectRateLimiter, NonZeroU32, u64)>,
    pacer: Pacer,
    /// Waiters queue here (FIFO) so only one polls the limiters at a time: no thundering herd.
    gate: tokio::sync::Mutex<Windows>,
}

impl Limits {
    /// Caps for `rpm` requests and `tpm` tokens per minute (either optional), with the adaptive
    /// pacing under them.
    pub(crate) fn new(rpm: Option<u32>, tpm: Option<u32>) -> Self {
        let one = NonZeroU32::MIN;
        Limits {
            rpm: rpm.map(|r| (limiter(r, one), u64::from(r))),
            tpm: tpm.map(|t| {
                let chunk = tpm_chunk(t);
                (limiter(t, chunk), chunk, u64::from(t))
            }),
            pacer: Pacer::new(rpm),
            gate: tokio::sync::Mutex::new(Windows::default()),
        }
    }

    /// Also shows the pace, pauses and 429s in the run's counters.
    pub(crate) fn with_progress(mut self, counters: Arc<Counters>) -> Self {
        self.pacer = self.pacer.with_progress(counters);
        self
    }

    /// The adaptive pacing, to tell it about answers.
    pub(crate) fn pacer(&self) -> &Pacer {
        &self.pacer
    }

    /// Waits until one request of `tokens` estimated tokens may be sent.
    pub(crate) async fn acquire(&self, tokens: u64) {
        let tokens = tokens.max(1);
        self.pacer.acquire(tokens).await;
        if self.rpm.is_none() && self.tpm.is_none() {
            return;
        }
        let mut windows = self.gate.lock().await;
        if let Some((rpm, _)) = &self.rpm {
            rpm.until_ready().await;
        }
        if let Some((tpm, chunk, _)) = &self.tpm {
            let mut left = tokens;
            while left > 0 {
                let n = left.min(u64::from(chunk.get()));
                let n = NonZeroU32::new(n as u32).expect("n is at least 1");
                tpm.until_n_ready(n)
                    .await
                    .expect("n never exceeds the burst size");
                left -= u64::from(n.get());
            }
        }
        loop {
            let now = Instant::now();
            // A pool pause that began while this request waited for the caps holds it too.
            if let Some(until) = self.pacer.paused_until().filter(|u| *u > now) {
                tokio::time::sleep_until(until).await;
                continue;
            }
            let rpm_ready = self
                .rpm
                .as_ref()
                .and_then(|(_, cap)| windows.rpm.ready_at(now, 1, *cap));
            let tpm_ready = self
                .tpm
                .as_ref()
                .and_then(|(_, _, cap)| windows.tpm.ready_at(now, tokens.min(*cap), *cap));
            match rpm_ready.max(tpm_ready) {
                Some(at) => tokio::time::sleep_until(at).await,
                None => {
                    if self.rpm.is_some() {
                        windows.rpm.record(now, 1);
                    }
                    if let Some((_, _, cap)) = &self.tpm {
                        windows.tpm.record(now, tokens.min(*cap));
                    }
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 600/min is one request per 100 ms with no start-up burst: the k-th acquisition (from 0)
    /// comes no earlier than k × 100 ms after the limiter was made — each one, not only the last.
    ///
    /// On the real clock, not tokio's paused one: the spacing here comes from governor, whose
    /// clock (quanta) and waits (futures-timer) tokio's test clock does not drive. Under
    /// `start_paused` the waits still take real time and `tokio::time::Instant` sees none of
    /// them (every acquisition at 0 ns). (The adaptive pacer, on tokio's clock, adds no spacing
    /// here: with no answers, 429s or announced limits it has no pace; the minute's window log
    /// is far from its cap.) So only lower bounds, which a loaded machine can make later but
    /// never earlier; an upper bound ("the first is immediate") would flake on a busy 2-core CI.
    /// `SKEW` allows for quanta's TSC-based clock against `std::time::Instant`.
    #[tokio::test]
    async fn rpm_spreads_requests_evenly_without_burst() {
        const SKEW: Duration = Duration::from_millis(5);
        let start = std::time::Instant::now();
        let limits = Limits::new(Some(600), None);
        let mut at = Vec::new();
        for _ in 0..11 {
            limits.acquire(1).await;
            at.push(start.elapsed());
        }
        for (k, &t) in at.iter().enumerate() {
            let slot = Duration::from_millis(100) * k as u32;
            assert!(
                t + SKEW >= slot,
                "acquisition {k} at {t:?}, before its slot {slot:?}: {at:?}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn no_window_ever_holds_more_than_the_cap() {
        let mut log = WindowLog::default();
        let start = Instant::now();
        for i in 0..3 {
            assert_eq!(log.ready_at(start, 1, 3), None);
            log.record(start + Duration::from_millis(i), 1);
        }
        // Full: the 4th waits until the first leaves the window (plus the margin).
        let ready = log.ready_at(start + Duration::from_secs(1), 1, 3).unwrap();
        assert_eq!(ready, start + WINDOW + WINDOW_MARGIN);
        // Tokens: 2 + 2 of a cap of 5; 3 more must wait for the first 2 to leave.
        let mut tokens = WindowLog::default();
        tokens.record(start, 2);
        tokens.record(start + Duration::from_secs(10), 2);
        assert_eq!(tokens.ready_at(start, 1, 5), None);
        assert_eq!(
            tokens.ready_at(start + Duration::from_secs(20), 3, 5),
            Some(start + WINDOW + WINDOW_MARGIN)
        );
        assert_eq!(
            tokens.ready_at(start + WINDOW, 3, 5),
            None,
            "the first left the window"
        );
    }

    #[test]
    fn tpm_chunk_is_small_but_positive() {
        assert_eq!(tpm_chunk(100).get(), 1);
        assert_eq!(tpm_chunk(600_000).get(), 100);
    }
}
