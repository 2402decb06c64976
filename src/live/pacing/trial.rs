//! The trial of a cut: whether slowing down lowered the share of 429s ([`Verdict`]), and the
//! background share measured when it did not ([`Calibration`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::state::State;
use super::Answer;

/// Weight of an answer in the running share of 429s.
const LATELY_WEIGHT: f64 = 1.0 / 200.0;
/// A cut is checked once the answers to requests sent after it would hold this many 429s were
/// they as frequent as before it (the 429s above the background, see [`Verdict`]) …
pub(super) const VERIFY_EXPECTED: f64 = 30.0;
/// … or, with at least [`VERIFY_MIN_EXPECTED`] of them, after this long.
const VERIFY_MAX: Duration = Duration::from_secs(15);
const VERIFY_MIN_EXPECTED: f64 = 5.0;
/// … and with at least this many × p(1-p)/excess² answers (p: the share before the cut): the
/// share's standard error is then ≤ 1/6 of the excess.
const VERIFY_NOISE: f64 = 39.0;
/// A calibration (see [`Calibration`]) takes this many answers: the background's standard
/// error at 20 % is then 0.9 points …
const CALIBRATION_ANSWERS: u64 = 2_000;
/// … or, with at least this many, this long.
const CALIBRATION_MIN_ANSWERS: u64 = 200;
const CALIBRATION_MAX: Duration = Duration::from_secs(30);
/// The cut did not help when the share of 429s above the background kept at least this part
/// of what it was: the 429s do not depend on our rate (a gateway shedding load, a shared key),
/// and the pace before the cut comes back.
const VERIFY_KEPT: f64 = 0.6;

/// What the trial of a cut owns: the background share of 429s, the cut on trial, the
/// calibration after one was undone, the recent share, and the 429s not yet counted.
#[derive(Debug, Default)]
pub(super) struct Trial {
    /// The share of answers that are 429s whatever our rate (0 until a cut showed it): a
    /// gateway that sheds a few percent of requests for its own reasons. Cuts and bursts are
    /// judged by the 429s above it.
    pub(super) background: f64,
    /// The last cut, until the answers after it show whether it helped.
    pub(super) verdict: Option<Verdict>,
    /// The share of 429s over the last few hundred answers (a running mean).
    pub(super) lately: f64,
    /// After a trial undid its cut: the share of 429s measured at the pace held, which becomes
    /// the background (the trial's own answers, a few hundred, told the verdict but not the
    /// share precisely). No cut but a probe's end meanwhile.
    pub(super) calibration: Option<Calibration>,
    /// 429s not yet counted in the shares: (when its success would have come, sent, answer).
    pub(super) unripe: VecDeque<(Instant, Instant, Answer)>,
}

/// Answers to requests sent since `since`, at a pace held: the background share of 429s.
#[derive(Debug, Clone, Copy)]
pub(super) struct Calibration {
    pub(super) since: Instant,
    pub(super) answers: u64,
    pub(super) limited: u64,
}

/// A cut on trial: did slowing down lower the share of 429s? A limit's 429s fall away below
/// it; random ones (a gateway's load shedding) stay as frequent at any rate, and then the
/// pace before the cut comes back and their share becomes the background. (Loss-based control
/// collapses under random loss; this is the test that keeps it from doing so.)
#[derive(Debug, Clone, Copy)]
pub(super) struct Verdict {
    /// Answers to requests sent from then on count (the cut, or the end of its pause).
    pub(super) since: Instant,
    /// The pace and learned limit before the cut.
    pub(super) pace_before: Option<f64>,
    pub(super) learned_before: Option<f64>,
    /// The share of 429s above the background that caused the cut.
    pub(super) excess: f64,
    pub(super) answers: u64,
    pub(super) limited: u64,
}

impl State {
    /// One answer (a 429 once it is due) for the trial of the last cut and the shares of
    /// 429s; answers to requests sent before the last cut count for neither.
    pub(super) fn tally(&mut self, now: Instant, sent_at: Instant, limited: bool, answer: Answer) {
        self.trial.lately += (f64::from(u8::from(limited)) - self.trial.lately) * LATELY_WEIGHT;
        self.calibrate(now, sent_at, limited);
        self.judge(now, sent_at, limited);
        if self.pace.last_decrease.is_none_or(|d| sent_at >= d) {
            self.react(now, limited, answer);
        }
    }

    /// Counts an answer for the [`Calibration`] under way; once there are enough, their share
    /// of 429s is the background.
    pub(super) fn calibrate(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        let Some(c) = self.trial.calibration.as_mut() else {
            return;
        };
        if sent_at < c.since {
            return;
        }
        c.answers += 1;
        c.limited += u64::from(limited);
        let c = *c;
        let elapsed = now.saturating_duration_since(c.since);
        if c.answers < CALIBRATION_ANSWERS
            && !(elapsed >= CALIBRATION_MAX && c.answers >= CALIBRATION_MIN_ANSWERS)
        {
            return;
        }
        self.trial.calibration = None;
        self.trial.background = c.limited as f64 / c.answers as f64;
        self.set_why(holding_the_pace(self.trial.background));
    }

    /// The trial of the last cut (see [`Verdict`]): once the answers to requests sent after it
    /// are enough to tell, the cut stands when the share of 429s above the background fell, and
    /// is undone when it did not (that share becomes the background).
    pub(super) fn judge(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        let Some(v) = self.trial.verdict.as_mut() else {
            return;
        };
        if sent_at < v.since {
            return;
        }
        v.answers += 1;
        v.limited += u64::from(limited);
        let v = *v;
        let expected = v.excess * v.answers as f64;
        // Enough answers that the share's own noise (binomial, at the share before the cut)
        // is a sixth of the excess: random 429s then keep 60 % of it but once in ≈ 150 trials.
        let before = (self.trial.background + v.excess).min(1.0);
        let needed = (VERIFY_EXPECTED / v.excess)
            .max(VERIFY_NOISE * before * (1.0 - before) / (v.excess * v.excess));
        let elapsed = now.saturating_duration_since(v.since);
        if (v.answers as f64) < needed
            && !(elapsed >= VERIFY_MAX && expected >= VERIFY_MIN_EXPECTED)
        {
            if elapsed >= 4 * VERIFY_MAX {
                self.trial.verdict = None; // too few answers to tell: the cut stands
            }
            return;
        }
        self.trial.verdict = None;
        let share = v.limited as f64 / v.answers as f64;
        if share - self.trial.background < VERIFY_KEPT * v.excess {
            return; // slowing down helped: a limit
        }
        self.trial.background = share;
        self.trial.calibration = Some(Calibration {
            since: now,
            answers: 0,
            limited: 0,
        });
        self.pace.adaptive = v.pace_before;
        self.pace.learned = v.learned_before;
        self.pace.last_decrease = Some(now);
        self.pace.last_growth = now;
        self.answers.sample.clear();
        self.burst = None;
        self.set_why(holding_the_pace(share));
    }
}

/// The pace note when 429s turned out not to depend on the rate, at `share` of the answers.
fn holding_the_pace(share: f64) -> String {
    format!(
        "holding the pace: {:.0} % of answers are 429s at any pace (not a limit)",
        share * 100.0
    )
}
