//! The pacing state behind the lock, as its parts (the pace, the sends, the answers, the pool
//! pause, the burst watch, the trial, the display, the totals), and what every answer does to
//! it: counted, the server's headers read, the pool paused.

use std::time::Duration;

use tokio::time::Instant;

use crate::api::RateLimitHeaders;

#[cfg(doc)]
use super::aimd::SAMPLE_SPAN;
use super::aimd::{Pace, OK_HISTORY};
use super::burst::{Burst, LEND_CHANCE};
use super::display::Display;
use super::sending::Sending;
use super::trial::Trial;
use super::window::Recent;
use super::Answer;
#[cfg(doc)]
use super::Pacer;

/// Share of a server-announced limit the proactive pace uses.
pub(super) const HEADER_MARGIN: f64 = 0.97;
/// Weight of a new ok answer's latency in the running mean.
const LATENCY_WEIGHT: f64 = 0.1;

/// Behind [`Pacer`]'s lock, in parts: the pace, the sends, the answers, the pool pause, the
/// burst watch, the trial of a cut, the display and the totals.
#[derive(Debug)]
pub(super) struct State {
    /// The pace and the limits it stays under.
    pub(super) pace: Pace,
    /// The sends: the last one's slot, and the recent ones.
    pub(super) sending: Sending,
    /// What the answers said lately.
    pub(super) answers: Answers,
    /// The pool pause.
    pub(super) pause: Pause,
    /// Burst watch started by a 429: answers to requests sent after it.
    pub(super) burst: Option<Burst>,
    /// Tasks queued on the gate: the lock-free path is taken only when none waits.
    pub(super) waiting: u32,
    /// The background share of 429s and the trial of the last cut.
    pub(super) trial: Trial,
    /// The note the progress display shows, and what of it changed.
    pub(super) display: Display,
    /// Sends, answers, 429s and pauses so far.
    pub(super) totals: Totals,
}

/// What the answers said lately.
#[derive(Debug, Default)]
pub(super) struct Answers {
    /// Answers (arrival, was a 429) to requests sent since the last decrease, last
    /// [`SAMPLE_SPAN`].
    pub(super) sample: Recent,
    /// Successes since the last decrease (or the first send).
    pub(super) ok_since: u64,
    /// Successes of the last [`OK_HISTORY`](super::aimd::OK_HISTORY).
    pub(super) oks: Recent,
    /// 429s answered in a row (no success between them).
    pub(super) run_429: u32,
    /// Running mean of ok answers' latency, seconds.
    pub(super) latency: Option<f64>,
}

/// The pool pause.
#[derive(Debug, Default)]
pub(super) struct Pause {
    pub(super) paused_until: Option<Instant>,
    /// When the last pool pause began.
    pub(super) pause_start: Option<Instant>,
}

/// Counts of the whole run so far.
#[derive(Debug, Default)]
pub(super) struct Totals {
    /// Sends and answers (of any kind) so far: the difference is in flight.
    pub(super) sent_total: u64,
    pub(super) answered_total: u64,
    /// 429s received.
    pub(super) rate_limited: u64,
    /// Pool pauses, in total (overlaps counted once).
    pub(super) paused: Duration,
    /// Most requests in flight at once so far (≈ `--concurrency`).
    pub(super) peak_in_flight: u64,
}

impl State {
    /// Unpaced, never above `rpm` requests per minute when given.
    pub(super) fn new(rpm: Option<u32>) -> Self {
        let now = Instant::now();
        State {
            pace: Pace::new(rpm, now),
            sending: Sending::default(),
            answers: Answers::default(),
            pause: Pause::default(),
            burst: None,
            waiting: 0,
            trial: Trial::default(),
            display: Display::default(),
            totals: Totals::default(),
        }
    }

    /// [`Pacer::on_answer`] under its lock.
    pub(super) fn answer(
        &mut self,
        now: Instant,
        sent_at: Instant,
        answer: Answer,
        headers: Option<&RateLimitHeaders>,
    ) -> bool {
        self.totals.answered_total += 1;
        let limited = match answer {
            Answer::Ok => {
                // Only a success's headers tell the account's state: a 429's own `remaining:
                // 0` (and its limit, often another one than the successes announce) says that
                // one request was refused, which its row's advice covers.
                if let Some(h) = headers {
                    self.apply_headers(h, now);
                }
                false
            }
            Answer::RateLimited(_) => true,
            Answer::Other => return false,
        };
        self.count(now, sent_at, limited);
        let (in_burst, exhausted) = self.track_burst(now, sent_at, limited);
        if let Some(burst) = exhausted {
            self.pause_for_burst(now, &burst, answer);
        } else {
            if limited {
                // A 429 comes back at once, a success only after the answer time: counted
                // when the request's success would have come, the shares are not inflated by
                // 429s whose siblings are still on their way (right after a cut, the first
                // answers were all 429s whenever a few percent were). A probe above the
                // learned limit ends at its first 429s, not a share: those count at once.
                let latency = if self.probing() {
                    0.0
                } else {
                    self.answers.latency.unwrap_or(0.0)
                };
                let due = sent_at + Duration::from_secs_f64(latency);
                if due <= now {
                    self.tally(now, sent_at, true, answer);
                } else {
                    self.trial.unripe.push_back((due, sent_at, answer));
                }
            }
            while let Some(&(due, sent, refused)) = self.trial.unripe.front() {
                if due > now {
                    break;
                }
                self.trial.unripe.pop_front();
                self.tally(now, sent, true, refused);
            }
            if !limited {
                self.tally(now, sent_at, false, answer);
            }
        }
        // Nor when 429s come in a row: a wave of requests sent before the first 429 came back
        // meets a full window (lending their slots sent as many more into it); sporadic 429s
        // (2 % of answers) come three in a row once in ≈ 100,000 429s. Random ones at 20 %
        // come in runs of 3 often: judged against that share, they lend.
        let run = self
            .background_for_runs()
            .powi(self.answers.run_429.min(64) as i32);
        limited
            && !in_burst
            && run >= LEND_CHANCE
            && self.pause.paused_until.is_none_or(|p| p <= now)
    }

    /// Counts an answer: 429s (and how many in a row), or an ok answer's latency and time.
    pub(super) fn count(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        if limited {
            self.totals.rate_limited += 1;
            self.answers.run_429 += 1;
            return;
        }
        self.answers.run_429 = 0;
        let latency = now.saturating_duration_since(sent_at).as_secs_f64();
        self.answers.latency = Some(
            self.answers
                .latency
                .map_or(latency, |l| l + LATENCY_WEIGHT * (latency - l)),
        );
        self.answers.ok_since += 1;
        self.answers.oks.push(now, false);
        self.answers.oks.prune(now, OK_HISTORY);
    }

    pub(super) fn apply_headers(&mut self, h: &RateLimitHeaders, now: Instant) {
        if let Some(limit) = h.limit_requests.filter(|l| *l > 0) {
            let rate = limit as f64 / 60.0 * HEADER_MARGIN;
            if self.pace.announced != Some(rate) {
                self.pace.announced = Some(rate);
                if self.pace.adaptive.is_some_and(|a| a >= rate) {
                    self.pace.adaptive = None;
                }
                self.set_why(format!("the server's limit: {limit} requests/min"));
            }
        }
        if let Some(limit) = h.limit_tokens.filter(|l| *l > 0) {
            self.pace.token_rate = Some(limit as f64 / 60.0 * HEADER_MARGIN);
        }
        for (remaining, reset, what) in [
            (h.remaining_requests, h.reset_requests, "requests"),
            (h.remaining_tokens, h.reset_tokens, "tokens"),
        ] {
            if let (Some(0), Some(reset)) = (remaining, reset.filter(|r| !r.is_zero())) {
                self.pause_until(now, now + reset);
                self.set_why(format!(
                    "paused: the server has no {what} left until its reset"
                ));
            }
        }
    }

    /// Pauses the pool until `until` (extending a pause in force), counting the added time.
    pub(super) fn pause_until(&mut self, now: Instant, until: Instant) {
        let from = self.pause.paused_until.filter(|p| *p > now).unwrap_or(now);
        if until > from {
            self.totals.paused += until - from;
            if self.pause.paused_until.is_none_or(|p| p <= now) {
                self.pause.pause_start = Some(now);
            }
            self.pause.paused_until = Some(until);
            self.display.pause_changed = true;
        }
    }
}
