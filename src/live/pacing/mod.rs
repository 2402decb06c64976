//! Adaptive pacing shared by all workers. A 429 alone does not say whether *our rate* caused it:
//! a gateway that sheds a few percent of requests for its own reasons (upstream capacity, a key
//! shared with other jobs) refuses as many at any rate, and loss-based control collapses under
//! random loss (TCP learned it on lossy links). So the pace drops only on evidence of a limit,
//! and each cut is put on trial.
//!
//! - **Unpaced** until told otherwise: only `--concurrency` (and `--rpm`/`--tpm`, in `limit.rs`)
//!   bound the sends. A 429'd row waits its own advice (the worker does that); the others go on.
//!   When answers are slow enough that a `--concurrency` wave lasts (under 2,000 sends/s), the
//!   sends are spread over the answer time (1.25 × in flight ÷ latency, no slower than the
//!   concurrency allows): a wave that meets a full window is then stopped after a few 429s
//!   instead of being answered 429 almost whole.
//! - **Shares, fairly counted**: a 429 comes back at once, a success only after the answer time,
//!   so a 429 enters the shares when its request's success would have come (`unripe`).
//! - **Multiplicative decrease**, at most once per window: when 429s make up more of the answers
//!   (at least 3 of them, over at least 1 s) to requests sent since the last decrease than the
//!   *background* share by 5 points (or 3 standard errors), the pace drops to 97 % of the lower
//!   of the current send rate and the rate the server served over its last window (ok answers of
//!   the last 10 s, a pool pause's time left out), never below a quarter of the send rate. That
//!   served rate is the limit as far as it is known (*learned*). Nothing served: no cut.
//! - **The trial** ([`Verdict`]): the answers to requests sent after a cut show whether it
//!   lowered the share of 429s above the background. A limit's 429s fall away below it; when
//!   ≥ 60 % of the excess stayed, the 429s do not depend on our rate: the pace before the cut
//!   comes back, and 2,000 answers at that pace ([`Calibration`]) measure the background share
//!   later cuts and bursts are judged against.
//! - **Increase** while answers succeed and the pace is what holds the sends back: towards the
//!   learned limit (1 % of it per second) up to 98 % of it, held there for 8 s from the cut;
//!   then a probe above it, 10 % a second. The probe's first 429s beyond the background end it
//!   (a decrease, and the pool waits that 429's advice: the window is full until then). Like
//!   TCP's congestion avoidance after ssthresh. The pace never rises above `--rpm` or the
//!   server's announced limit; it is dropped once it reaches them.
//! - **Pool pause** only when the server says the window is exhausted: a burst (of the requests
//!   sent after a 429 arrived, more are refused than the background share would refuse once in
//!   30,000), or a *successful* answer with `x-ratelimit-remaining-requests: 0` / `-tokens: 0`
//!   and a reset time (a 429's own headers never pause or pace the pool). The pool then waits
//!   until that advice and resumes at 97 % of the rate the server served over the window the
//!   429 implies (`window_for`): what it took and the window still holds, divided by the
//!   window's length — LiteLLM's 30 a minute then `retry-after: 60` is 30 a minute however the
//!   30 were spread; a sliding 10-s window's 200 taken in 0.6 s then a 9.4-s advice is 20/s.
//!   With nothing served over the window there is no rate to resume at: the pause alone.
//! - **Probes grow by time**, not by answers: at a low pace answers are far apart.
//! - **Proactive**: successes' `x-ratelimit-limit-requests` / `-tokens` (per minute, as OpenAI
//!   sends them) pace requests at 97 % of the announced limit (tokens: by each request's
//!   estimate).
//!
//! Every attempt passes [`Pacer::acquire`] once (from `Limits::acquire`): at once, without the
//! gate, when its slot has come and nobody queues; else waiters queue on a FIFO gate and re-read
//! the pace at least every 50 ms, so a change applies at once.

mod aimd;
mod burst;
mod display;
mod sending;
mod state;
#[cfg(test)]
mod tests;
mod trial;
mod window;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::RateLimitHeaders;
use crate::progress::Counters;

use self::state::State;
#[cfg(doc)]
use self::trial::{Calibration, Verdict};

/// A waiter re-reads the pace at least this often.
const POLL: Duration = Duration::from_millis(50);

/// What one answer said, for [`Pacer::on_answer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    /// A success.
    Ok,
    /// A 429 (rate limit), with the server's advised wait.
    RateLimited(Option<Duration>),
    /// Any other answer: only its headers count.
    Other,
}

pub(crate) use crate::progress::PaceNote;

/// The shared pacing state (see the module docs).
pub(crate) struct Pacer {
    state: Mutex<State>,
    /// Waiters for a paced slot queue here (FIFO): no thundering herd.
    gate: tokio::sync::Mutex<()>,
    progress: Option<Arc<Counters>>,
}

impl Pacer {
    /// Unpaced, never above `rpm` requests per minute when given.
    pub(crate) fn new(rpm: Option<u32>) -> Self {
        Pacer {
            state: Mutex::new(State::new(rpm)),
            gate: tokio::sync::Mutex::new(()),
            progress: None,
        }
    }

    /// Also shows the pace, pauses and 429s in these counters.
    pub(crate) fn with_progress(mut self, counters: Arc<Counters>) -> Self {
        self.progress = Some(counters);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one request of `tokens` estimated tokens may be sent: after any pool pause,
    /// and one pace step after the previous send. A send whose slot has come goes at once,
    /// without the gate, when nobody queues on it (a pace far above what the pool sends then
    /// costs one lock, never a timer).
    pub(crate) async fn acquire(&self, tokens: u64) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            if s.waiting == 0 && s.pause.paused_until.is_none_or(|p| p <= now) {
                let slot = s.next_slot(now);
                if slot <= now {
                    s.record_send(now, slot, tokens);
                    return;
                }
            }
            s.waiting += 1;
        }
        // Counts this task out of `waiting` however the wait ends (a cancelled future too).
        struct Waiting<'a>(&'a Pacer);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting -= 1;
            }
        }
        let _waiting = Waiting(self);
        let _gate = self.gate.lock().await;
        loop {
            let now = Instant::now();
            let wait = {
                let mut s = self.lock();
                match s.pause.paused_until.filter(|p| *p > now) {
                    Some(until) => until,
                    None => {
                        let slot = s.next_slot(now);
                        if slot <= now {
                            s.record_send(now, slot, tokens);
                            return;
                        }
                        // Growth needs the adaptive pace, not the spreading, to hold sends back.
                        s.pace.binding =
                            s.pace().is_some_and(|p| s.smooth().is_none_or(|m| p <= m));
                        slot
                    }
                }
            };
            tokio::time::sleep_until(wait.min(now + POLL)).await;
        }
    }

    /// Takes one answer into account. `sent_at`: when its request passed [`Self::acquire`].
    /// Returns whether a 429'd row may lend its concurrency slot while it waits: not when its
    /// 429 is part of a burst or the pool is paused (more rows would only meet the same limit).
    ///
    /// One lock per answer, the display updated under it; the note is cloned only when its
    /// reason changed.
    pub(crate) fn on_answer(
        &self,
        sent_at: Instant,
        answer: Answer,
        headers: Option<&RateLimitHeaders>,
    ) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        let lend = s.answer(now, sent_at, answer, headers);
        if let Some(counters) = &self.progress {
            s.publish(counters);
        }
        lend
    }

    /// The current note.
    #[cfg(test)]
    pub(crate) fn note(&self) -> PaceNote {
        self.lock().display.note.clone()
    }

    /// 429s received and the time the pool spent paused (a pause still running counts up to
    /// now).
    pub(crate) fn totals(&self) -> (u64, Duration) {
        let s = self.lock();
        let ahead = s.pause.paused_until.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        });
        (s.totals.rate_limited, s.totals.paused.saturating_sub(ahead))
    }

    /// The pool pause in force, if any.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.lock()
            .pause
            .paused_until
            .filter(|p| *p > Instant::now())
    }
}
