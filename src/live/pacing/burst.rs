//! Bursts of 429s: whether a 429'd row may lend its slot, and the pool pause when the
//! requests sent after a 429 show the server's window exhausted.

use std::time::Duration;

use tokio::time::Instant;

use super::aimd::{window_for, RESUME_SHARE};
use super::state::State;
use super::Answer;

/// A burst (window exhausted): this many 429s for requests sent after a 429 arrived …
const BURST_429S: u32 = 3;
/// … before this many successes.
const BURST_CLEARED_BY: u32 = 3;
/// A 429'd row lends its slot unless its 429 is part of a run of 429s in a row less likely
/// than this from the background share alone (3 in a row when none is known, 6 at 20 %) …
pub(super) const LEND_CHANCE: f64 = 1e-4;
/// … or of the requests sent since a 429 arrived, less likely than this (2 of 3 when none is
/// known; 4 of 5 at 20 %).
const LEND_WATCH_CHANCE: f64 = 1e-2;
/// A burst without any advice pauses the pool this long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// A burst is a run of 429s less likely than this from the background share alone …
const BURST_CHANCE: f64 = 3e-5;
/// … taken to be at least this (before any is learned).
const MIN_BACKGROUND: f64 = 0.02;

/// A burst watch, started by a 429: the answers to requests sent after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Burst {
    pub(super) since: Instant,
    pub(super) limited: u32,
    pub(super) ok: u32,
    /// Requests sent since.
    pub(super) sent: u32,
}

impl State {
    /// A burst: the requests sent after a 429 arrived are answered 429 too, more of them than
    /// the background share of 429s would ever give (3 of 3 when none is known, 7 of 7 at
    /// 20 %).
    /// Returns whether this answer belongs to one, and the burst when it shows the window
    /// exhausted.
    pub(super) fn track_burst(
        &mut self,
        now: Instant,
        sent_at: Instant,
        limited: bool,
    ) -> (bool, Option<Burst>) {
        let mut in_burst = false;
        let mut exhausted = None;
        let background = self.background_for_runs();
        if let Some(b) = self.burst.as_mut() {
            if sent_at > b.since {
                if limited {
                    b.limited += 1;
                } else {
                    b.ok += 1;
                }
            }
            // Out of the requests *sent* since, not the answers: a 429 comes back at once, a
            // success only after the answer time, so the first answers after a 429 are 429s
            // whenever a few percent are (at 5 % and 600 sends/s, 3 within the 100 ms before
            // any success). An exhausted window refuses every one of them.
            let sent = b.sent.max(b.limited + b.ok);
            let chance = at_least(b.limited, sent, background);
            in_burst = limited && sent_at > b.since && chance < LEND_WATCH_CHANCE;
            if b.limited >= BURST_429S && chance < BURST_CHANCE {
                exhausted = Some(*b);
                self.burst = None;
            } else if b.ok >= BURST_CLEARED_BY {
                self.burst = None;
            }
        }
        if limited && exhausted.is_none() && self.burst.is_none() {
            self.burst = Some(Burst {
                since: now,
                limited: 0,
                ok: 0,
                sent: 0,
            });
        }
        (in_burst, exhausted)
    }

    /// The window is exhausted: the pool pauses for the 429's advice, then resumes at the rate
    /// the server served.
    pub(super) fn pause_for_burst(&mut self, now: Instant, burst: &Burst, answer: Answer) {
        let advice = match answer {
            Answer::RateLimited(advice) => advice,
            _ => None,
        };
        let pause = advice.unwrap_or(DEFAULT_PAUSE);
        // Measured before the pause is recorded: its span starts after the previous one.
        let served = self.served_in_window(
            now,
            pause,
            burst.sent.saturating_sub(burst.limited + burst.ok),
        );
        self.pause_until(now, now + pause);
        let (lookback, _) = window_for(pause);
        if self
            .answers
            .oks
            .count_since(now.checked_sub(lookback).unwrap_or(now))
            == 0
        {
            // Nothing succeeded over the window: no rate to resume at (the served rate would
            // be none, and a pace of one request a minute kept a proxy that refuses every
            // request busy for hours instead of letting its rows end on their retries). The
            // pause alone answers the burst; each row waits its own advice.
            self.set_why("paused: every request refused (a burst of 429s)".into());
            return;
        }
        // The pace the pool resumes at is what the server served, not a cut of the pace
        // that overran it: that rate is what the window lets through, and a cut below it
        // (then a slow creep back) left the tail at about half the server's rate after a
        // long pause. Answers to requests sent before now cause no further cut. The trial
        // compares the share of 429s after the pause with the recent one's.
        let excess = match self.answers.sample.total() {
            0 => 0.0,
            n => self.answers.sample.marked() as f64 / n as f64 - self.trial.background,
        };
        self.cut_to(
            now,
            served * RESUME_SHARE,
            served,
            excess,
            "paused: window exhausted (a burst of 429s); resuming at the rate served".into(),
        );
    }

    /// The share of 429s a run of them is judged against: the background, or the share lately
    /// when higher (before a trial has learned it, 10 % of random 429s give 3 of 3 once in a
    /// thousand watches; a cut clears the sample, not this), at least [`MIN_BACKGROUND`].
    pub(super) fn background_for_runs(&self) -> f64 {
        self.trial
            .background
            .max(self.trial.lately)
            .max(MIN_BACKGROUND)
    }
}

/// The chance of at least `k` 429s among `n` answers when each is a 429 with chance `p` alone.
pub(super) fn at_least(k: u32, n: u32, p: f64) -> f64 {
    let p = p.clamp(1e-9, 0.999);
    let mut term = p.powi(k as i32) * (1.0 - p).powi((n - k) as i32);
    for i in 0..k {
        term *= f64::from(n - i) / f64::from(i + 1);
    }
    let mut sum = 0.0;
    for i in k..=n {
        sum += term;
        if i < n {
            term *= f64::from(n - i) / f64::from(i + 1) * p / (1.0 - p);
        }
    }
    sum.min(1.0)
}
