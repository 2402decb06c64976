//! The adaptive pace: a multiplicative decrease on evidence of a limit, growth towards the
//! limit learned and probes above it, and the rate the server served that both rest on.

use std::time::Duration;

use tokio::time::Instant;

use super::sending::SEND_SPAN;
use super::state::State;
use super::trial::{Verdict, VERIFY_EXPECTED};
use super::Answer;

/// The share of 429s is measured over the answers of this long (since the last decrease).
pub(super) const SAMPLE_SPAN: Duration = Duration::from_secs(10);
/// A decrease needs at least this many 429s …
const DECREASE_MIN_429S: u32 = 3;
/// … making up at least this share of the answers …
const DECREASE_SHARE: f64 = 0.05;
/// … of a sample at least this long (a few random 429s among the first answers are no trend).
const DECREASE_MIN_SPAN: Duration = Duration::from_secs(1);
/// … or, once a limit has been learned and the pace probes above it, this many (any share): a
/// probe that found the limit where it was ends at its first 429, not after 5 % of answers.
const PROBE_END_429S: u32 = 1;
/// New pace: this share of min(send rate, the rate the server served over its last window).
/// Near 1: the served rate of a window-limited server *is* its limit, so cutting deep below it
/// only loses throughput (a cut to 90 % of a goodput measured since the last cut, pauses
/// included, left the pace at 65–85 % of the limit for 10–20 s after each probe).
pub(super) const DECREASE_FACTOR: f64 = 0.97;
/// … but never below this share of the send rate in one step.
pub(super) const MAX_CUT: f64 = 0.25;
/// After a cut or pause the pace rises towards the limit it learned (the rate the server
/// served) by this share of it per second …
const APPROACH: f64 = 0.01;
/// … up to this share of it, and holds there for [`HOLD`] from the cut: just below a
/// window-limited server's rate little is lost and the 2 % of slack absorbs the unevenness of
/// what leaves its window. Each probe above costs ≈ 1–2 429s; probing right after a cut
/// overran a sliding window every ≈ 10 s with 4–6 429s each time, holding 8 s (1,200 RPM over
/// 10 s, 2,000 rows) cost 19 429s in all against 43 with 5 s, while a limit that doubled was
/// still found within 7 s (10 s of hold: 10 s).
pub(super) const HOLD_SHARE: f64 = 0.98;
pub(super) const HOLD: Duration = Duration::from_secs(8);
/// Then it probes above: the pace grows by this share per second (multiplicative: a limit that
/// doubled is found again within ≈ 7 s of the hold, and a limit that did not move is met again
/// with ≈ 2 429s, which end the probe).
const PROBE_GROWTH: f64 = 0.10;
/// After a pool pause, the pace resumes at this share of the rate the server served over the
/// window its 429 implies (what the window still holds, divided by its length: `window_for`).
pub(super) const RESUME_SHARE: f64 = 0.97;
/// Ok answers a served rate must rest on before a probe's 429 may cut the pace to it.
const RESUME_MIN_ANSWERS: u64 = 10;
/// Ok answers are remembered this long, for the rate a server served over a window that a
/// 429's advice says is full (LiteLLM's minute; longer windows are measured over this much).
pub(super) const OK_HISTORY: Duration = Duration::from_secs(120);
/// Less of a window than this left past a 429's advice: the advice covers the whole window.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// A probe's growth per answer is at most this factor, however long since the last answer: at
/// a low pace the answers are far apart, and growth clocked per answer (at most 1 s of it each)
/// left a pace of 1 a minute growing 10 % a minute.
const PROBE_MAX_STEP: f64 = 2.0;
/// The slowest pace: one request a minute.
pub(super) const MIN_PACE: f64 = 1.0 / 60.0;

/// The pace and the limits it stays under.
#[derive(Debug)]
pub(super) struct Pace {
    /// `--rpm`, per second.
    pub(super) ceiling: Option<f64>,
    /// The adaptive (AIMD) pace, per second.
    pub(super) adaptive: Option<f64>,
    /// The pace the last decrease set.
    pub(super) base: f64,
    /// The server's announced request limit (× margin), per second.
    pub(super) announced: Option<f64>,
    /// The server's announced token limit (× margin), per second.
    pub(super) token_rate: Option<f64>,
    /// The rate the server served over its last window, measured at the last cut or pool
    /// pause: the limit as far as we know it. A probe above it ends at its first 429s.
    pub(super) learned: Option<f64>,
    pub(super) last_decrease: Option<Instant>,
    pub(super) last_growth: Instant,
    /// A waiter had to wait for the pace since the last growth.
    pub(super) binding: bool,
}

impl Pace {
    /// Unpaced, never above `rpm` requests per minute when given.
    pub(super) fn new(rpm: Option<u32>, now: Instant) -> Self {
        Pace {
            ceiling: rpm.map(|r| f64::from(r) / 60.0),
            adaptive: None,
            base: 0.0,
            announced: None,
            token_rate: None,
            learned: None,
            last_decrease: None,
            last_growth: now,
            binding: false,
        }
    }
}

impl State {
    /// AIMD on the recent answers: a cut when 429s pass their share of them above the
    /// background (or end a probe), growth while answers succeed. No cut but a probe's end
    /// while the last one is on trial.
    pub(super) fn react(&mut self, now: Instant, limited: bool, answer: Answer) {
        self.answers.sample.push(now, limited);
        self.answers.sample.prune(now, SAMPLE_SPAN);
        if !limited {
            self.grow(now);
            return;
        }
        let total = self.answers.sample.total() as f64;
        let n429 = self.answers.sample.marked() as u32;
        let share = f64::from(n429) / total;
        let background = self.trial.background;
        // Three standard errors of the background's share over this many answers.
        let noise = 3.0 * (background * (1.0 - background) / total).sqrt();
        let long_enough = self
            .answers
            .sample
            .first()
            .is_some_and(|t| t + DECREASE_MIN_SPAN <= now);
        if long_enough && share + noise < background && total * background >= VERIFY_EXPECTED {
            self.trial.background = share; // fewer random 429s than before
        }
        // Above the limit learned at the last cut, 429s beyond the background's mean the probe
        // found it again (also while that cut is on trial: the probe is above it).
        let probing = self.probing();
        if (self.trial.verdict.is_some() || self.trial.calibration.is_some()) && !probing {
            return;
        }
        let cut = if probing {
            f64::from(n429) >= f64::from(PROBE_END_429S) + 2.0 * background * total
        } else {
            n429 >= DECREASE_MIN_429S && share >= background + DECREASE_SHARE.max(noise)
        };
        if !(long_enough && cut) {
            return;
        }
        let why = format!("{n429} 429s in {} answers", self.answers.sample.total());
        self.decrease(now, &why, share - background);
        if probing {
            self.end_probe(now, answer);
        }
    }

    /// Whether the pace probes above the limit learned at the last cut.
    pub(super) fn probing(&self) -> bool {
        self.pace
            .learned
            .is_some_and(|l| self.pace().is_some_and(|p| p > l))
    }

    /// The probe met the limit where it was: the window is full until the 429's advice, so the
    /// pool waits for it rather than send more into it (each costing a 429, and a burst's pause
    /// only after 3 of them).
    pub(super) fn end_probe(&mut self, now: Instant, answer: Answer) {
        self.burst = None;
        if let Answer::RateLimited(Some(advice)) = answer {
            // A long advice says the limit itself fell (a window holding more than its new
            // capacity): then what the server took over its window and the pause is the better
            // measure, as for a burst — when there is something to measure. Right after a pool
            // pause only a few answers are in the span, and their count over a per-minute
            // advice would collapse the pace to a request every half minute (a LiteLLM proxy
            // at 30 rpm left 8 of 40 rows unsent for minutes): then the pause alone answers it.
            let (lookback, _) = window_for(advice);
            let from = now.checked_sub(lookback).unwrap_or(now);
            let measured = self.answers.oks.count_since(from) >= RESUME_MIN_ANSWERS;
            let served = self.served_in_window(now, advice, 0);
            self.pause_until(now, now + advice);
            if measured
                && self
                    .pace
                    .adaptive
                    .is_some_and(|a| a > served * RESUME_SHARE)
            {
                self.pace.adaptive = Some(served * RESUME_SHARE);
                self.pace.base = served * RESUME_SHARE;
                self.pace.learned = Some(served);
                self.show_pace();
            }
        }
    }

    /// Multiplicative decrease (none when nothing succeeded over the span: there is no rate to
    /// cut to): to [`DECREASE_FACTOR`] of the lower of the send rate and the
    /// rate the server served over its last window ([`SAMPLE_SPAN`] back, not before the last
    /// pool pause ended), never below [`MAX_CUT`] of the send rate in one step.
    pub(super) fn decrease(&mut self, now: Instant, why: &str, excess: f64) {
        let measured = self.send_rate(now);
        let rate = match (self.pace(), measured) {
            (Some(p), Some(m)) => p.min(m),
            (Some(p), None) => p,
            (None, Some(m)) => m,
            (None, None) => {
                // Nothing to measure from yet: the first sends of the run.
                let n = self.sending.sends.total().max(1) as f64;
                n / SEND_SPAN.as_secs_f64()
            }
        };
        let (from, span) = self.served_span(now);
        if self.answers.oks.count_since(from) == 0 {
            // Nothing succeeded over the span: no rate to cut to (see `pause_for_burst`).
            return;
        }
        let served = (span >= DECREASE_MIN_SPAN)
            .then(|| self.answers.oks.count_since(from) as f64 / span.as_secs_f64());
        let new = (DECREASE_FACTOR * served.map_or(rate, |s| rate.min(s)))
            .max(MAX_CUT * rate)
            .max(MIN_PACE);
        self.cut_to(
            now,
            new,
            served.unwrap_or(rate),
            excess,
            format!("slowed: {why}"),
        );
    }

    /// Sets the pace to `new` after 429s, `learned` the limit as measured; the next increase
    /// starts gently from there, and only answers to requests sent from now on may cut again.
    /// The cut goes on trial when the share of 429s above the background that caused it
    /// (`excess`) is known: a cut that does not lower it is undone ([`Self::judge`]).
    pub(super) fn cut_to(
        &mut self,
        now: Instant,
        new: f64,
        learned: f64,
        excess: f64,
        why: String,
    ) {
        let new = new.max(MIN_PACE);
        self.trial.calibration = None;
        if excess > 0.0 && self.trial.verdict.is_none() {
            self.trial.verdict = Some(Verdict {
                since: now,
                pace_before: self.pace.adaptive,
                learned_before: self.pace.learned,
                excess,
                answers: 0,
                limited: 0,
            });
        }
        self.pace.adaptive = Some(new);
        self.pace.base = new;
        self.pace.learned = Some(learned);
        self.pace.last_decrease = Some(now);
        self.pace.last_growth = now;
        self.pace.binding = false;
        self.answers.sample.clear();
        self.trial.unripe.clear();
        self.answers.ok_since = 0;
        self.set_why(why);
    }

    /// Increase while answers succeed and the pace holds sends back: towards the limit learned
    /// at the last cut or pause ([`APPROACH`], up to [`HOLD_SHARE`] of it, for [`HOLD`]), then
    /// a probe above it ([`PROBE_GROWTH`] per second). A pause's time is neither growth nor
    /// hold.
    pub(super) fn grow(&mut self, now: Instant) {
        let Some(adaptive) = self.pace.adaptive else {
            return;
        };
        let resumed = self.pause.paused_until.filter(|p| *p <= now);
        let from = resumed.map_or(self.pace.last_growth, |p| p.max(self.pace.last_growth));
        let dt = now.saturating_duration_since(from).as_secs_f64();
        self.pace.last_growth = now;
        let binding = std::mem::take(&mut self.pace.binding);
        let others = [self.pace.ceiling, self.pace.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        if !binding || others.is_some_and(|o| adaptive >= o) {
            return;
        }
        let since = self.pace.last_decrease.unwrap_or(now);
        let since = resumed.map_or(since, |p| since.max(p));
        let learned = self.pace.learned.unwrap_or(self.pace.base);
        let grown = if now.saturating_duration_since(since) < HOLD {
            let hold = learned * HOLD_SHARE;
            if adaptive >= hold {
                return;
            }
            (adaptive + learned * APPROACH * dt).min(hold)
        } else {
            adaptive * (1.0 + PROBE_GROWTH).powf(dt).min(PROBE_MAX_STEP)
        };
        match others {
            Some(o) if grown >= o => {
                self.pace.adaptive = None;
                self.set_why("recovered: back to the limit".into());
            }
            _ => {
                self.pace.adaptive = Some(grown);
                if !self.display.note.why.starts_with("speeding up") {
                    self.set_why("speeding up: answers succeed".into());
                } else {
                    self.show_pace();
                }
            }
        }
    }

    /// The rate the server served over its window, when a 429 advising `advice` says the window
    /// is full: what it took over the part of the window that stays full past the advice — ok
    /// answers, and requests in flight except `pending` (sent after a burst began: those mostly
    /// meet the full window) — divided by the window's length (see [`window_for`]).
    ///
    /// A pool pause within the lookback is left out of the length: nothing was sent then, so
    /// the window was not filled over it (a probe's 429 soon after a pause would otherwise say
    /// the server took less than it did).
    pub(super) fn served_in_window(&self, now: Instant, advice: Duration, pending: u32) -> f64 {
        let (lookback, length) = window_for(advice);
        let from = now.checked_sub(lookback).unwrap_or(now);
        let length = length
            .saturating_sub(self.paused_since(from, now))
            .max(MIN_WINDOW);
        let in_flight = self
            .totals
            .sent_total
            .saturating_sub(self.totals.answered_total);
        let taken =
            self.answers.oks.count_since(from) + in_flight.saturating_sub(u64::from(pending));
        (taken as f64 / length.as_secs_f64()).max(MIN_PACE)
    }

    /// The span a served rate is measured over: from [`SAMPLE_SPAN`] back (not before the
    /// first send) to now, and its length without the last pool pause's time (the server's
    /// window did not run while it was paused, so a pause in the span would halve the rate
    /// measured after it; measuring only since it ended left a span too short to tell).
    pub(super) fn served_span(&self, now: Instant) -> (Instant, Duration) {
        let mut from = now.checked_sub(SAMPLE_SPAN).unwrap_or(now);
        if let Some(first) = self.sending.first_send {
            from = from.max(first);
        }
        let span = now
            .saturating_duration_since(from)
            .saturating_sub(self.paused_since(from, now));
        (from, span)
    }

    /// How much of `from..now` the last pool pause took.
    pub(super) fn paused_since(&self, from: Instant, now: Instant) -> Duration {
        match (self.pause.pause_start, self.pause.paused_until) {
            (Some(start), Some(end)) => end.min(now).saturating_duration_since(start.max(from)),
            _ => Duration::ZERO,
        }
    }
}

/// The server's window as a 429 advising `advice` implies it: `(lookback, length)` — how far back
/// the requests it still holds were taken, and its length. The window is taken to be the
/// advice or [`SAMPLE_SPAN`], the longer; what it holds past the advice is what was taken over
/// its length less the advice (a sliding window: the requests that have not left when the
/// advice ends), or over its whole length when the advice covers it (a fixed window whose
/// 429s advise all of it, as LiteLLM's minute does, or a sliding one filled in under
/// [`MIN_WINDOW`]). Capped at [`OK_HISTORY`] back.
///
/// - LiteLLM, 30 a minute paced over 30 s, then `retry-after: 60`: 30 over 60 s, 30/min (over
///   the last 10 s plus the pause it was 3 per 70 s, and a run stalled at a request a minute).
/// - A sliding 10-s window of 200 filled in 0.6 s, advice 9.4 s: 200 over 10 s, 20/s.
/// - The same window halved to 100 while it held 200, advice 5 s: the 100 taken in the last
///   5 s over 10 s, 10/s (the advice alone said 20/s, and the pace pulsed at twice the limit).
pub(super) fn window_for(advice: Duration) -> (Duration, Duration) {
    let length = advice.max(SAMPLE_SPAN);
    let held = length.saturating_sub(advice);
    let lookback = if held >= MIN_WINDOW { held } else { length };
    (lookback.min(OK_HISTORY), length)
}
