//! Request pacing shared by all workers: the RPM and TPM caps — governor paces requests evenly
//! (no start-up burst), and a log of the last minute's sends guarantees that no 60-second window
//! ever holds more than the cap — and the shared 429 cool-down that pauses every worker until
//! the server's advised time, then ramps back up gradually.
//!
//! Invariant: every attempt (first try or retry) passes through [`Limits::acquire`] exactly once
//! before it is sent, so the caps bound attempts, not rows.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// After a cool-down, the paused workers restart spread over this long (or over the cool-down's
/// own length, when that is shorter).
const RAMP_UP: Duration = Duration::from_secs(2);

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

/// The RPM/TPM caps and the shared cool-down.
pub struct Limits {
    rpm: Option<(DefaultDirectRateLimiter, u64)>,
    tpm: Option<(DefaultDirectRateLimiter, NonZeroU32, u64)>,
    cooldown: Mutex<Cooldown>,
    /// Waiters queue here (FIFO) so only one polls the limiters at a time: no thundering herd.
    gate: tokio::sync::Mutex<Windows>,
    concurrency: u32,
}

#[derive(Default)]
struct Cooldown {
    /// No attempt starts before this instant.
    until: Option<Instant>,
    /// During the ramp after a cool-down, the next attempt may start at this instant.
    next_slot: Option<Instant>,
    /// Spacing of the ramp's slots.
    step: Duration,
    /// Attempts still to be spaced out by the ramp.
    slots_left: u32,
}

impl Limits {
    /// Caps for `rpm` requests and `tpm` tokens per minute (either optional); `concurrency` sets
    /// the ramp-up step after a cool-down.
    pub fn new(rpm: Option<u32>, tpm: Option<u32>, concurrency: u32) -> Self {
        let one = NonZeroU32::MIN;
        Limits {
            rpm: rpm.map(|r| (limiter(r, one), u64::from(r))),
            tpm: tpm.map(|t| {
                let chunk = tpm_chunk(t);
                (limiter(t, chunk), chunk, u64::from(t))
            }),
            cooldown: Mutex::new(Cooldown::default()),
            gate: tokio::sync::Mutex::new(Windows::default()),
            concurrency: concurrency.max(1),
        }
    }

    /// Waits until one request of `tokens` estimated tokens may be sent.
    pub async fn acquire(&self, tokens: u64) {
        self.wait_cooldown().await;
        if self.rpm.is_none() && self.tpm.is_none() {
            self.wait_ramp_slot().await;
            return;
        }
        let mut windows = self.gate.lock().await;
        self.wait_cooldown().await;
        self.wait_ramp_slot().await;
        if let Some((rpm, _)) = &self.rpm {
            rpm.until_ready().await;
        }
        let tokens = tokens.max(1);
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

    /// Pauses every worker for `pause` (a 429's advised wait), extending any current cool-down.
    pub fn cool_down(&self, pause: Duration) {
        let until = Instant::now() + pause;
        let mut c = self.cooldown.lock().expect("cooldown lock");
        if c.until.is_none_or(|u| u < until) {
            c.until = Some(until);
            c.next_slot = Some(until);
            c.step = pause.min(RAMP_UP) / self.concurrency;
            c.slots_left = self.concurrency;
        }
    }

    /// The current cool-down's end, if one is in force.
    pub fn cooling_until(&self) -> Option<Instant> {
        let c = self.cooldown.lock().expect("cooldown lock");
        c.until.filter(|u| *u > Instant::now())
    }

    async fn wait_cooldown(&self) {
        while let Some(until) = self.cooling_until() {
            tokio::time::sleep_until(until).await;
        }
    }

    /// During the ramp after a cool-down, spaces the next `concurrency` attempts evenly.
    async fn wait_ramp_slot(&self) {
        let slot = {
            let mut c = self.cooldown.lock().expect("cooldown lock");
            let Some(next) = c.next_slot else {
                return;
            };
            let slot = next.max(Instant::now());
            c.slots_left = c.slots_left.saturating_sub(1);
            c.next_slot = (c.slots_left > 0).then(|| slot + c.step);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rpm_spreads_requests_evenly_without_burst() {
        let limits = Limits::new(Some(600), None, 4);
        let start = Instant::now();
        for _ in 0..11 {
            limits.acquire(1).await;
        }
        // 600/min = one per 100 ms; the first is immediate, the 11th at 1 s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cool_down_blocks_until_advised_time() {
        let limits = Limits::new(None, None, 1);
        limits.cool_down(Duration::from_secs(3));
        let start = Instant::now();
        limits.acquire(1).await;
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_cool_down_the_workers_restart_spread_out() {
        let limits = Limits::new(None, None, 4);
        limits.cool_down(Duration::from_secs(4));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..6 {
            limits.acquire(1).await;
            times.push(start.elapsed());
        }
        // 4 workers over min(4 s, 2 s): one every 500 ms from the end of the cool-down, then free.
        let expected = [4000, 4500, 5000, 5500, 5500, 5500];
        for (t, ms) in times.iter().zip(expected) {
            assert_eq!(t.as_millis(), ms);
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
