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

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::RateLimitHeaders;
use crate::progress::Counters;

/// The send rate is measured over this long (pauses excluded).
const SEND_SPAN: Duration = Duration::from_secs(2);
/// The share of 429s is measured over the answers of this long (since the last decrease).
const SAMPLE_SPAN: Duration = Duration::from_secs(10);
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
const DECREASE_FACTOR: f64 = 0.97;
/// … but never below this share of the send rate in one step.
const MAX_CUT: f64 = 0.25;
/// A burst (window exhausted): this many 429s for requests sent after a 429 arrived …
const BURST_429S: u32 = 3;
/// … before this many successes.
const BURST_CLEARED_BY: u32 = 3;
/// After a cut or pause the pace rises towards the limit it learned (the rate the server
/// served) by this share of it per second …
const APPROACH: f64 = 0.01;
/// … up to this share of it, and holds there for [`HOLD`] from the cut: just below a
/// window-limited server's rate little is lost and the 2 % of slack absorbs the unevenness of
/// what leaves its window. Each probe above costs ≈ 1–2 429s; probing right after a cut
/// overran a sliding window every ≈ 10 s with 4–6 429s each time, holding 8 s (1,200 RPM over
/// 10 s, 2,000 rows) cost 19 429s in all against 43 with 5 s, while a limit that doubled was
/// still found within 7 s (10 s of hold: 10 s).
const HOLD_SHARE: f64 = 0.98;
const HOLD: Duration = Duration::from_secs(8);
/// Then it probes above: the pace grows by this share per second (multiplicative: a limit that
/// doubled is found again within ≈ 7 s of the hold, and a limit that did not move is met again
/// with ≈ 2 429s, which end the probe).
const PROBE_GROWTH: f64 = 0.10;
/// After a pool pause, the pace resumes at this share of the rate the server served over the
/// window its 429 implies (what the window still holds, divided by its length: `window_for`).
const RESUME_SHARE: f64 = 0.97;
/// Ok answers a served rate must rest on before a probe's 429 may cut the pace to it.
const RESUME_MIN_ANSWERS: u64 = 10;
/// Ok answers are remembered this long, for the rate a server served over a window that a
/// 429's advice says is full (LiteLLM's minute; longer windows are measured over this much).
const OK_HISTORY: Duration = Duration::from_secs(120);
/// Less of a window than this left past a 429's advice: the advice covers the whole window.
const MIN_WINDOW: Duration = Duration::from_secs(1);
/// A probe's growth per answer is at most this factor, however long since the last answer: at
/// a low pace the answers are far apart, and growth clocked per answer (at most 1 s of it each)
/// left a pace of 1 a minute growing 10 % a minute.
const PROBE_MAX_STEP: f64 = 2.0;
/// Share of a server-announced limit the proactive pace uses.
const HEADER_MARGIN: f64 = 0.97;
/// The slowest pace: one request a minute.
const MIN_PACE: f64 = 1.0 / 60.0;
/// A 429'd row lends its slot unless its 429 is part of a run of 429s in a row less likely
/// than this from the background share alone (3 in a row when none is known, 6 at 20 %) …
const LEND_CHANCE: f64 = 1e-4;
/// … or of the requests sent since a 429 arrived, less likely than this (2 of 3 when none is
/// known; 4 of 5 at 20 %).
const LEND_WATCH_CHANCE: f64 = 1e-2;
/// A burst without any advice pauses the pool this long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// Unpaced sends are spread over the answer time (at this multiple of in flight ÷ latency) …
const SMOOTH_MARGIN: f64 = 1.25;
/// … when that is below this many per second. Concurrency alone sends in waves: at `-c 64` and
/// 200-ms answers, 64 requests leave within a millisecond every 200 ms, and the wave that fills
/// a server's window is answered 429 almost whole (≈ 56 of 2,000 attempts, before any 429 could
/// come back). Spread, the requests sent after the first 429 are a handful. Above this rate
/// (answers in under ≈ 30 ms at `-c 64`) a wave is over before an answer comes back anyway,
/// and sends keep the lock-free fast path.
const SMOOTH_MAX: f64 = 2000.0;
/// Weight of an answer in the running share of 429s.
const LATELY_WEIGHT: f64 = 1.0 / 200.0;
/// Weight of a new ok answer's latency in the running mean.
const LATENCY_WEIGHT: f64 = 0.1;
/// A waiter re-reads the pace at least this often.
const POLL: Duration = Duration::from_millis(50);
/// A send may go this far behind the pace's grid and catch up (at least one step): a timer
/// wakes up a millisecond late, and at a pace of 16,000/s (a server announcing 1,000,000 a
/// minute) a grid reset on every late wake-up held the pool to one send per millisecond.
const CATCH_UP: Duration = Duration::from_millis(5);
/// A cut is checked once the answers to requests sent after it would hold this many 429s were
/// they as frequent as before it (the 429s above the background, see [`Verdict`]) …
const VERIFY_EXPECTED: f64 = 30.0;
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
/// A burst is a run of 429s less likely than this from the background share alone …
const BURST_CHANCE: f64 = 3e-5;
/// … taken to be at least this (before any is learned).
const MIN_BACKGROUND: f64 = 0.02;

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

#[derive(Debug)]
struct State {
    /// `--rpm`, per second.
    ceiling: Option<f64>,
    /// The adaptive (AIMD) pace, per second.
    adaptive: Option<f64>,
    /// The pace the last decrease set.
    base: f64,
    /// The server's announced request limit (× margin), per second.
    announced: Option<f64>,
    /// The server's announced token limit (× margin), per second.
    token_rate: Option<f64>,
    last_decrease: Option<Instant>,
    last_growth: Instant,
    /// A waiter had to wait for the pace since the last growth.
    binding: bool,
    paused_until: Option<Instant>,
    /// When the last pool pause began.
    pause_start: Option<Instant>,
    /// The last send's slot and its tokens.
    last_send: Option<Instant>,
    last_tokens: u64,
    /// Sends of the last [`SEND_SPAN`].
    sends: Recent,
    first_send: Option<Instant>,
    /// Answers (arrival, was a 429) to requests sent since the last decrease, last
    /// [`SAMPLE_SPAN`].
    sample: Recent,
    /// Successes since the last decrease (or the first send).
    ok_since: u64,
    /// Successes of the last [`SAMPLE_SPAN`].
    oks: Recent,
    /// Sends and answers (of any kind) so far: the difference is in flight.
    sent_total: u64,
    answered_total: u64,
    /// Burst watch started by a 429: answers to requests sent after it.
    burst: Option<Burst>,
    /// 429s answered in a row (no success between them).
    run_429: u32,
    /// Running mean of ok answers' latency, seconds.
    latency: Option<f64>,
    /// Most requests in flight at once so far (≈ `--concurrency`).
    peak_in_flight: u64,
    /// 429s received.
    rate_limited: u64,
    /// Pool pauses, in total (overlaps counted once).
    paused: Duration,
    /// The rate the server served over its last window, measured at the last cut or pool
    /// pause: the limit as far as we know it. A probe above it ends at its first 429s.
    learned: Option<f64>,
    note: PaceNote,
    /// What of `note` changed since it was last copied to the display: its reason (a clone,
    /// rare) or only its rate (a copy). Nothing is cloned for an answer that changes neither.
    why_changed: bool,
    rate_changed: bool,
    /// A pool pause began or was extended since the display last heard of it.
    pause_changed: bool,
    /// The share of answers that are 429s whatever our rate (0 until a cut showed it): a
    /// gateway that sheds a few percent of requests for its own reasons. Cuts and bursts are
    /// judged by the 429s above it.
    background: f64,
    /// The last cut, until the answers after it show whether it helped.
    verdict: Option<Verdict>,
    /// Tasks queued on the gate: the lock-free path is taken only when none waits.
    waiting: u32,
    /// The share of 429s over the last few hundred answers (a running mean).
    lately: f64,
    /// After a trial undid its cut: the share of 429s measured at the pace held, which becomes
    /// the background (the trial's own answers, a few hundred, told the verdict but not the
    /// share precisely). No cut but a probe's end meanwhile.
    calibration: Option<Calibration>,
    /// 429s not yet counted in the shares: (when its success would have come, sent, answer).
    unripe: VecDeque<(Instant, Instant, Answer)>,
}

/// Answers to requests sent since `since`, at a pace held: the background share of 429s.
#[derive(Debug, Clone, Copy)]
struct Calibration {
    since: Instant,
    answers: u64,
    limited: u64,
}

/// A cut on trial: did slowing down lower the share of 429s? A limit's 429s fall away below
/// it; random ones (a gateway's load shedding) stay as frequent at any rate, and then the
/// pace before the cut comes back and their share becomes the background. (Loss-based control
/// collapses under random loss; this is the test that keeps it from doing so.)
#[derive(Debug, Clone, Copy)]
struct Verdict {
    /// Answers to requests sent from then on count (the cut, or the end of its pause).
    since: Instant,
    /// The pace and learned limit before the cut.
    pace_before: Option<f64>,
    learned_before: Option<f64>,
    /// The share of 429s above the background that caused the cut.
    excess: f64,
    answers: u64,
    limited: u64,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    since: Instant,
    limited: u32,
    ok: u32,
    /// Requests sent since.
    sent: u32,
}

impl Pacer {
    /// Unpaced, never above `rpm` requests per minute when given.
    pub(crate) fn new(rpm: Option<u32>) -> Self {
        let now = Instant::now();
        Pacer {
            state: Mutex::new(State {
                ceiling: rpm.map(|r| f64::from(r) / 60.0),
                adaptive: None,
                base: 0.0,
                announced: None,
                token_rate: None,
                last_decrease: None,
                last_growth: now,
                binding: false,
                paused_until: None,
                pause_start: None,
                last_send: None,
                last_tokens: 0,
                sends: Recent::default(),
                first_send: None,
                sample: Recent::default(),
                ok_since: 0,
                oks: Recent::default(),
                sent_total: 0,
                answered_total: 0,
                burst: None,
                run_429: 0,
                latency: None,
                peak_in_flight: 0,
                rate_limited: 0,
                paused: Duration::ZERO,
                learned: None,
                note: PaceNote::default(),
                why_changed: false,
                rate_changed: false,
                pause_changed: false,
                background: 0.0,
                verdict: None,
                waiting: 0,
                unripe: VecDeque::new(),
                lately: 0.0,
                calibration: None,
            }),
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
            if s.waiting == 0 && s.paused_until.is_none_or(|p| p <= now) {
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
                match s.paused_until.filter(|p| *p > now) {
                    Some(until) => until,
                    None => {
                        let slot = s.next_slot(now);
                        if slot <= now {
                            s.record_send(now, slot, tokens);
                            return;
                        }
                        // Growth needs the adaptive pace, not the spreading, to hold sends back.
                        s.binding = s.pace().is_some_and(|p| s.smooth().is_none_or(|m| p <= m));
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
        self.lock().note.clone()
    }

    /// 429s received and the time the pool spent paused (a pause still running counts up to
    /// now).
    pub(crate) fn totals(&self) -> (u64, Duration) {
        let s = self.lock();
        let ahead = s.paused_until.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        });
        (s.rate_limited, s.paused.saturating_sub(ahead))
    }

    /// The pool pause in force, if any.
    pub(crate) fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|p| *p > Instant::now())
    }
}

impl State {
    /// [`Pacer::on_answer`] under its lock.
    fn answer(
        &mut self,
        now: Instant,
        sent_at: Instant,
        answer: Answer,
        headers: Option<&RateLimitHeaders>,
    ) -> bool {
        self.answered_total += 1;
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
                    self.latency.unwrap_or(0.0)
                };
                let due = sent_at + Duration::from_secs_f64(latency);
                if due <= now {
                    self.tally(now, sent_at, true, answer);
                } else {
                    self.unripe.push_back((due, sent_at, answer));
                }
            }
            while let Some(&(due, sent, refused)) = self.unripe.front() {
                if due > now {
                    break;
                }
                self.unripe.pop_front();
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
        let run = self.background_for_runs().powi(self.run_429.min(64) as i32);
        limited && !in_burst && run >= LEND_CHANCE && self.paused_until.is_none_or(|p| p <= now)
    }

    /// One answer (a 429 once it is due) for the trial of the last cut and the shares of
    /// 429s; answers to requests sent before the last cut count for neither.
    fn tally(&mut self, now: Instant, sent_at: Instant, limited: bool, answer: Answer) {
        self.lately += (f64::from(u8::from(limited)) - self.lately) * LATELY_WEIGHT;
        self.calibrate(now, sent_at, limited);
        self.judge(now, sent_at, limited);
        if self.last_decrease.is_none_or(|d| sent_at >= d) {
            self.react(now, limited, answer);
        }
    }

    /// Counts an answer for the [`Calibration`] under way; once there are enough, their share
    /// of 429s is the background.
    fn calibrate(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        let Some(c) = self.calibration.as_mut() else {
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
        self.calibration = None;
        self.background = c.limited as f64 / c.answers as f64;
        self.set_why(holding_the_pace(self.background));
    }

    /// The trial of the last cut (see [`Verdict`]): once the answers to requests sent after it
    /// are enough to tell, the cut stands when the share of 429s above the background fell, and
    /// is undone when it did not (that share becomes the background).
    fn judge(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        let Some(v) = self.verdict.as_mut() else {
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
        let before = (self.background + v.excess).min(1.0);
        let needed = (VERIFY_EXPECTED / v.excess)
            .max(VERIFY_NOISE * before * (1.0 - before) / (v.excess * v.excess));
        let elapsed = now.saturating_duration_since(v.since);
        if (v.answers as f64) < needed
            && !(elapsed >= VERIFY_MAX && expected >= VERIFY_MIN_EXPECTED)
        {
            if elapsed >= 4 * VERIFY_MAX {
                self.verdict = None; // too few answers to tell: the cut stands
            }
            return;
        }
        self.verdict = None;
        let share = v.limited as f64 / v.answers as f64;
        if share - self.background < VERIFY_KEPT * v.excess {
            return; // slowing down helped: a limit
        }
        self.background = share;
        self.calibration = Some(Calibration {
            since: now,
            answers: 0,
            limited: 0,
        });
        self.adaptive = v.pace_before;
        self.learned = v.learned_before;
        self.last_decrease = Some(now);
        self.last_growth = now;
        self.sample.clear();
        self.burst = None;
        self.set_why(holding_the_pace(share));
    }

    /// Counts an answer: 429s (and how many in a row), or an ok answer's latency and time.
    fn count(&mut self, now: Instant, sent_at: Instant, limited: bool) {
        if limited {
            self.rate_limited += 1;
            self.run_429 += 1;
            return;
        }
        self.run_429 = 0;
        let latency = now.saturating_duration_since(sent_at).as_secs_f64();
        self.latency = Some(
            self.latency
                .map_or(latency, |l| l + LATENCY_WEIGHT * (latency - l)),
        );
        self.ok_since += 1;
        self.oks.push(now, false);
        self.oks.prune(now, OK_HISTORY);
    }

    /// A burst: the requests sent after a 429 arrived are answered 429 too, more of them than
    /// the background share of 429s would ever give (3 of 3 when none is known, 7 of 7 at
    /// 20 %).
    /// Returns whether this answer belongs to one, and the burst when it shows the window
    /// exhausted.
    fn track_burst(
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
    fn pause_for_burst(&mut self, now: Instant, burst: &Burst, answer: Answer) {
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
        let excess = match self.sample.total() {
            0 => 0.0,
            n => self.sample.marked() as f64 / n as f64 - self.background,
        };
        self.cut_to(
            now,
            served * RESUME_SHARE,
            served,
            excess,
            "paused: window exhausted (a burst of 429s); resuming at the rate served".into(),
        );
    }

    /// AIMD on the recent answers: a cut when 429s pass their share of them above the
    /// background (or end a probe), growth while answers succeed. No cut but a probe's end
    /// while the last one is on trial.
    fn react(&mut self, now: Instant, limited: bool, answer: Answer) {
        self.sample.push(now, limited);
        self.sample.prune(now, SAMPLE_SPAN);
        if !limited {
            self.grow(now);
            return;
        }
        let total = self.sample.total() as f64;
        let n429 = self.sample.marked() as u32;
        let share = f64::from(n429) / total;
        let background = self.background;
        // Three standard errors of the background's share over this many answers.
        let noise = 3.0 * (background * (1.0 - background) / total).sqrt();
        let long_enough = self
            .sample
            .first()
            .is_some_and(|t| t + DECREASE_MIN_SPAN <= now);
        if long_enough && share + noise < background && total * background >= VERIFY_EXPECTED {
            self.background = share; // fewer random 429s than before
        }
        // Above the limit learned at the last cut, 429s beyond the background's mean the probe
        // found it again (also while that cut is on trial: the probe is above it).
        let probing = self.probing();
        if (self.verdict.is_some() || self.calibration.is_some()) && !probing {
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
        let why = format!("{n429} 429s in {} answers", self.sample.total());
        self.decrease(now, &why, share - background);
        if probing {
            self.end_probe(now, answer);
        }
    }

    /// The share of 429s a run of them is judged against: the background, or the share lately
    /// when higher (before a trial has learned it, 10 % of random 429s give 3 of 3 once in a
    /// thousand watches; a cut clears the sample, not this), at least [`MIN_BACKGROUND`].
    fn background_for_runs(&self) -> f64 {
        self.background.max(self.lately).max(MIN_BACKGROUND)
    }

    /// Whether the pace probes above the limit learned at the last cut.
    fn probing(&self) -> bool {
        self.learned
            .is_some_and(|l| self.pace().is_some_and(|p| p > l))
    }

    /// The probe met the limit where it was: the window is full until the 429's advice, so the
    /// pool waits for it rather than send more into it (each costing a 429, and a burst's pause
    /// only after 3 of them).
    fn end_probe(&mut self, now: Instant, answer: Answer) {
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
            let measured = self.oks.count_since(from) >= RESUME_MIN_ANSWERS;
            let served = self.served_in_window(now, advice, 0);
            self.pause_until(now, now + advice);
            if measured && self.adaptive.is_some_and(|a| a > served * RESUME_SHARE) {
                self.adaptive = Some(served * RESUME_SHARE);
                self.base = served * RESUME_SHARE;
                self.learned = Some(served);
                self.show_pace();
            }
        }
    }

    /// Copies what the progress display shows into the counters: two stores, and the note only
    /// when it changed (its reason cloned only when that changed).
    fn publish(&mut self, counters: &Counters) {
        counters.rate_limited.store(self.rate_limited, Relaxed);
        counters
            .paused_ms
            .store(self.paused.as_millis() as u64, Relaxed);
        if std::mem::take(&mut self.pause_changed) {
            if let Some(until) = self.paused_until {
                counters.paused_for(until.saturating_duration_since(Instant::now()));
            }
        }
        if !(self.why_changed || self.rate_changed) {
            return;
        }
        if let Ok(mut shown) = counters.pace.lock() {
            if self.why_changed {
                shown.clone_from(&self.note);
            } else {
                shown.per_minute = self.note.per_minute;
            }
        }
        self.why_changed = false;
        self.rate_changed = false;
    }

    /// Sets the note's reason (and rate).
    fn set_why(&mut self, why: String) {
        self.note.why = why;
        self.why_changed = true;
        self.show_pace();
    }

    /// Updates the note's rate to the pace now.
    fn show_pace(&mut self) {
        let per_minute = self.pace().map(|p| p * 60.0);
        if self.note.per_minute != per_minute {
            self.note.per_minute = per_minute;
            self.rate_changed = true;
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
    fn served_in_window(&self, now: Instant, advice: Duration, pending: u32) -> f64 {
        let (lookback, length) = window_for(advice);
        let from = now.checked_sub(lookback).unwrap_or(now);
        let length = length
            .saturating_sub(self.paused_since(from, now))
            .max(MIN_WINDOW);
        let in_flight = self.sent_total.saturating_sub(self.answered_total);
        let taken = self.oks.count_since(from) + in_flight.saturating_sub(u64::from(pending));
        (taken as f64 / length.as_secs_f64()).max(MIN_PACE)
    }

    /// The span a served rate is measured over: from [`SAMPLE_SPAN`] back (not before the
    /// first send) to now, and its length without the last pool pause's time (the server's
    /// window did not run while it was paused, so a pause in the span would halve the rate
    /// measured after it; measuring only since it ended left a span too short to tell).
    fn served_span(&self, now: Instant) -> (Instant, Duration) {
        let mut from = now.checked_sub(SAMPLE_SPAN).unwrap_or(now);
        if let Some(first) = self.first_send {
            from = from.max(first);
        }
        let span = now
            .saturating_duration_since(from)
            .saturating_sub(self.paused_since(from, now));
        (from, span)
    }

    /// How much of `from..now` the last pool pause took.
    fn paused_since(&self, from: Instant, now: Instant) -> Duration {
        match (self.pause_start, self.paused_until) {
            (Some(start), Some(end)) => end.min(now).saturating_duration_since(start.max(from)),
            _ => Duration::ZERO,
        }
    }

    /// Requests per second now: the lower of the adaptive and the announced pace (`--rpm`
    /// itself is kept by `limit.rs`; here it only bounds growth).
    fn pace(&self) -> Option<f64> {
        [self.adaptive, self.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// Sends per second the concurrency's answers allow, spread evenly, when that is slow
    /// enough to matter ([`SMOOTH_MAX`]).
    fn smooth(&self) -> Option<f64> {
        let latency = self.latency.filter(|l| *l > 0.0)?;
        let rate = SMOOTH_MARGIN * self.peak_in_flight.max(1) as f64 / latency;
        (rate < SMOOTH_MAX).then_some(rate)
    }

    /// The rate sends are spaced at: the pace, or the spreading when lower.
    fn send_pace(&self) -> Option<f64> {
        [self.pace(), self.smooth()]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// When the next send may go: one request step and the previous send's token step after it
    /// (`now` before the first send).
    fn next_slot(&self, now: Instant) -> Instant {
        let Some(last) = self.last_send else {
            return now;
        };
        let step = |rate: Option<f64>, amount: f64| {
            rate.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64((amount / r).min(3600.0))
            })
        };
        let request = step(self.send_pace(), 1.0);
        let tokens = step(self.token_rate, self.last_tokens as f64);
        last + request.max(tokens)
    }

    /// Notes a send at `now` for the slot `slot` (≤ now): late wake-ups stay on the ideal grid
    /// (up to one step or [`CATCH_UP`]), so the pace is kept, not lost to timer lateness.
    fn record_send(&mut self, now: Instant, slot: Instant, tokens: u64) {
        let step = self.send_pace().map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64((1.0 / r).min(3600.0))
        });
        let grid = match self.last_send {
            Some(_)
                if !step.is_zero() && now.saturating_duration_since(slot) < step.max(CATCH_UP) =>
            {
                slot
            }
            _ => now,
        };
        self.last_send = Some(grid);
        self.last_tokens = tokens;
        self.sent_total += 1;
        if let Some(b) = self.burst.as_mut() {
            b.sent += 1;
        }
        self.peak_in_flight = self
            .peak_in_flight
            .max(self.sent_total.saturating_sub(self.answered_total));
        self.first_send.get_or_insert(now);
        self.sends.push(now, false);
        self.sends.prune(now, SEND_SPAN);
    }

    /// Sends per second recently (time paused excluded); `None` with too few sends to tell.
    fn send_rate(&self, now: Instant) -> Option<f64> {
        let mut from = now.checked_sub(SEND_SPAN).unwrap_or(now);
        if let Some(first) = self.first_send {
            from = from.max(first);
        }
        if let Some(p) = self.paused_until.filter(|p| *p <= now) {
            from = from.max(p);
        }
        let n = self.sends.count_since(from) as usize;
        let span = now.saturating_duration_since(from).as_secs_f64();
        (n >= 5 && span > 0.0).then(|| n as f64 / span.max(0.1))
    }

    /// Multiplicative decrease (none when nothing succeeded over the span: there is no rate to
    /// cut to): to [`DECREASE_FACTOR`] of the lower of the send rate and the
    /// rate the server served over its last window ([`SAMPLE_SPAN`] back, not before the last
    /// pool pause ended), never below [`MAX_CUT`] of the send rate in one step.
    fn decrease(&mut self, now: Instant, why: &str, excess: f64) {
        let measured = self.send_rate(now);
        let rate = match (self.pace(), measured) {
            (Some(p), Some(m)) => p.min(m),
            (Some(p), None) => p,
            (None, Some(m)) => m,
            (None, None) => {
                // Nothing to measure from yet: the first sends of the run.
                let n = self.sends.total().max(1) as f64;
                n / SEND_SPAN.as_secs_f64()
            }
        };
        let (from, span) = self.served_span(now);
        if self.oks.count_since(from) == 0 {
            // Nothing succeeded over the span: no rate to cut to (see `pause_for_burst`).
            return;
        }
        let served = (span >= DECREASE_MIN_SPAN)
            .then(|| self.oks.count_since(from) as f64 / span.as_secs_f64());
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
    fn cut_to(&mut self, now: Instant, new: f64, learned: f64, excess: f64, why: String) {
        let new = new.max(MIN_PACE);
        self.calibration = None;
        if excess > 0.0 && self.verdict.is_none() {
            self.verdict = Some(Verdict {
                since: now,
                pace_before: self.adaptive,
                learned_before: self.learned,
                excess,
                answers: 0,
                limited: 0,
            });
        }
        self.adaptive = Some(new);
        self.base = new;
        self.learned = Some(learned);
        self.last_decrease = Some(now);
        self.last_growth = now;
        self.binding = false;
        self.sample.clear();
        self.unripe.clear();
        self.ok_since = 0;
        self.set_why(why);
    }

    /// Increase while answers succeed and the pace holds sends back: towards the limit learned
    /// at the last cut or pause ([`APPROACH`], up to [`HOLD_SHARE`] of it, for [`HOLD`]), then
    /// a probe above it ([`PROBE_GROWTH`] per second). A pause's time is neither growth nor
    /// hold.
    fn grow(&mut self, now: Instant) {
        let Some(adaptive) = self.adaptive else {
            return;
        };
        let resumed = self.paused_until.filter(|p| *p <= now);
        let from = resumed.map_or(self.last_growth, |p| p.max(self.last_growth));
        let dt = now.saturating_duration_since(from).as_secs_f64();
        self.last_growth = now;
        let binding = std::mem::take(&mut self.binding);
        let others = [self.ceiling, self.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        if !binding || others.is_some_and(|o| adaptive >= o) {
            return;
        }
        let since = self.last_decrease.unwrap_or(now);
        let since = resumed.map_or(since, |p| since.max(p));
        let learned = self.learned.unwrap_or(self.base);
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
                self.adaptive = None;
                self.set_why("recovered: back to the limit".into());
            }
            _ => {
                self.adaptive = Some(grown);
                if !self.note.why.starts_with("speeding up") {
                    self.set_why("speeding up: answers succeed".into());
                } else {
                    self.show_pace();
                }
            }
        }
    }

    fn apply_headers(&mut self, h: &RateLimitHeaders, now: Instant) {
        if let Some(limit) = h.limit_requests.filter(|l| *l > 0) {
            let rate = limit as f64 / 60.0 * HEADER_MARGIN;
            if self.announced != Some(rate) {
                self.announced = Some(rate);
                if self.adaptive.is_some_and(|a| a >= rate) {
                    self.adaptive = None;
                }
                self.set_why(format!("the server's limit: {limit} requests/min"));
            }
        }
        if let Some(limit) = h.limit_tokens.filter(|l| *l > 0) {
            self.token_rate = Some(limit as f64 / 60.0 * HEADER_MARGIN);
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
    fn pause_until(&mut self, now: Instant, until: Instant) {
        let from = self.paused_until.filter(|p| *p > now).unwrap_or(now);
        if until > from {
            self.paused += until - from;
            if self.paused_until.is_none_or(|p| p <= now) {
                self.pause_start = Some(now);
            }
            self.paused_until = Some(until);
            self.pause_changed = true;
        }
    }
}

/// The pace note when 429s turned out not to depend on the rate, at `share` of the answers.
fn holding_the_pace(share: f64) -> String {
    format!(
        "holding the pace: {:.0} % of answers are 429s at any pace (not a limit)",
        share * 100.0
    )
}

/// The chance of at least `k` 429s among `n` answers when each is a 429 with chance `p` alone.
fn at_least(k: u32, n: u32, p: f64) -> f64 {
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
fn window_for(advice: Duration) -> (Duration, Duration) {
    let length = advice.max(SAMPLE_SPAN);
    let held = length.saturating_sub(advice);
    let lookback = if held >= MIN_WINDOW { held } else { length };
    (lookback.min(OK_HISTORY), length)
}

/// Events of a trailing time span, counted in [`BUCKET`]-wide buckets (some of them marked,
/// e.g. 429s among answers), so memory is bounded by span / bucket whatever the rate (a log of
/// every event held 300,000 entries at 30,000 answers a second).
#[derive(Debug, Default)]
struct Recent {
    /// (bucket start, events, marked events), oldest first.
    buckets: VecDeque<(Instant, u32, u32)>,
    total: u64,
    marked: u64,
}

/// The width of a [`Recent`] bucket: the resolution of its spans.
const BUCKET: Duration = Duration::from_millis(10);

impl Recent {
    fn push(&mut self, now: Instant, marked: bool) {
        let marked = u32::from(marked);
        match self.buckets.back_mut() {
            Some((start, n, m)) if now < *start + BUCKET => {
                *n += 1;
                *m += marked;
            }
            _ => self.buckets.push_back((now, 1, marked)),
        }
        self.total += 1;
        self.marked += u64::from(marked);
    }

    /// Drops the buckets that started more than `span` before `now`.
    fn prune(&mut self, now: Instant, span: Duration) {
        while let Some(&(start, n, m)) = self.buckets.front() {
            if start + span >= now {
                break;
            }
            self.buckets.pop_front();
            self.total -= u64::from(n);
            self.marked -= u64::from(m);
        }
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn marked(&self) -> u64 {
        self.marked
    }

    /// When the oldest event kept happened (to its bucket's resolution).
    fn first(&self) -> Option<Instant> {
        self.buckets.front().map(|b| b.0)
    }

    /// Events in buckets that started at or after `from`.
    fn count_since(&self, from: Instant) -> u64 {
        self.buckets
            .iter()
            .rev()
            .take_while(|b| b.0 >= from)
            .map(|b| u64::from(b.1))
            .sum()
    }

    fn clear(&mut self) {
        *self = Recent::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limited(secs: f64) -> Answer {
        Answer::RateLimited(Some(Duration::from_secs_f64(secs)))
    }

    /// Passes the pacer, returning when.
    async fn send(p: &Pacer) -> Instant {
        p.acquire(1).await;
        Instant::now()
    }

    #[tokio::test(start_paused = true)]
    async fn unpaced_until_told_otherwise() {
        let p = Pacer::new(None);
        let start = Instant::now();
        for _ in 0..1000 {
            let sent = send(&p).await;
            p.on_answer(sent, Answer::Ok, None);
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(p.note(), PaceNote::default());
    }

    #[tokio::test(start_paused = true)]
    async fn sporadic_429s_neither_pause_nor_slow_the_pool() {
        let p = Pacer::new(None);
        // 64 in flight, 100 ms answers, every 50th attempt a 429 (2 %), for 20 s.
        let mut in_flight: VecDeque<Instant> = VecDeque::new();
        for i in 0..12_800u32 {
            if in_flight.len() == 64 {
                let sent = in_flight.pop_front().unwrap();
                tokio::time::sleep_until(sent + Duration::from_millis(100)).await;
                let answer = if i % 50 == 0 {
                    limited(1.0)
                } else {
                    Answer::Ok
                };
                p.on_answer(sent, answer, None);
            }
            in_flight.push_back(send(&p).await);
        }
        assert_eq!(p.paused_until(), None);
        let pace = p.lock().pace();
        assert_eq!(pace, None, "{:?}", p.note());
        let answered_429s = (64..12_800).filter(|i| i % 50 == 0).count() as u64;
        assert_eq!(p.totals(), (answered_429s, Duration::ZERO));
    }

    /// Issue 21: a gateway that refuses a share of requests whatever the rate (load shedding,
    /// a shared key). Simulated: 64 in flight, 100-ms answers, a 429 for each attempt with
    /// chance `share` (a fixed-seed generator), advising 1 s and answered at once, as gateways
    /// do. Returns the requests sent in the last 10 s of 60 (sends per second) and the pool's
    /// pause time.
    async fn random_429s(share: f64, headers: Option<RateLimitHeaders>) -> (f64, Duration) {
        let p = Arc::new(Pacer::new(None));
        let slots = Arc::new(tokio::sync::Semaphore::new(64));
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut chance = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let start = Instant::now();
        let mut late_sends = 0u32;
        while Instant::now() < start + Duration::from_secs(60) {
            let slot = slots.clone().acquire_owned().await.unwrap();
            let sent = send(&p).await;
            if sent >= start + Duration::from_secs(50) {
                late_sends += 1;
            }
            let p = p.clone();
            if chance() < share {
                // A 429 comes back at once (a success after the answer time), and its row
                // lends its slot while it waits.
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_micros(500)).await;
                    p.on_answer(sent, limited(1.0), headers.as_ref());
                    drop(slot);
                });
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep_until(sent + Duration::from_millis(100)).await;
                    p.on_answer(sent, Answer::Ok, None);
                    drop(slot);
                });
            }
        }
        (f64::from(late_sends) / 10.0, p.totals().1)
    }

    /// Random 429s at 2 % to 20 % of answers, in OpenAI's shape too (`remaining: 0` on the
    /// 429 itself): the pace ends where it started (640/s: 64 in flight over 100 ms), and the
    /// pool is paused for at most the one burst the first seconds may show before the share
    /// of random 429s is known.
    #[tokio::test(start_paused = true)]
    async fn random_429s_at_any_share_do_not_slow_the_pool() {
        let openai = RateLimitHeaders {
            limit_requests: Some(500),
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        for share in [0.02, 0.05, 0.10, 0.20] {
            for headers in [None, Some(openai)] {
                let (rate, paused) = random_429s(share, headers).await;
                assert!(
                    rate >= 640.0 * 0.9,
                    "{share}: {rate}/s in the last 10 s (headers: {})",
                    headers.is_some()
                );
                assert!(
                    paused <= Duration::from_secs(2),
                    "{share}: paused {paused:?}"
                );
            }
        }
    }

    /// Issue 21: a model a proxy refuses every request of (nothing ever succeeds). A burst
    /// pauses the pool for its advice, but there is no served rate to resume at: the pace is
    /// not cut (a pace of one a minute kept 20 rows busy for hours); the rows end on their
    /// retries.
    #[tokio::test(start_paused = true)]
    async fn a_server_that_refuses_everything_pauses_the_pool_but_does_not_pace_it() {
        let p = Pacer::new(None);
        for _ in 0..20 {
            let s = send(&p).await;
            tokio::time::advance(Duration::from_millis(1)).await;
            p.on_answer(s, limited(1.0), None);
        }
        assert!(
            p.note().why.contains("every request refused"),
            "{:?}",
            p.note()
        );
        assert_eq!(p.lock().pace(), None);
        tokio::time::advance(Duration::from_secs(2)).await;
        let start = Instant::now();
        for _ in 0..100 {
            send(&p).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "unpaced after the pause");
    }

    /// A 429's own `remaining: 0` pauses nobody; a success's does (the window is spent).
    #[tokio::test(start_paused = true)]
    async fn only_a_successs_headers_say_the_window_is_spent() {
        let p = Pacer::new(None);
        let spent = RateLimitHeaders {
            limit_requests: Some(500),
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_secs(1)),
            ..Default::default()
        };
        let s = send(&p).await;
        p.on_answer(s, limited(1.0), Some(&spent));
        assert_eq!(p.paused_until(), None);
        assert_eq!(
            p.lock().pace(),
            None,
            "a 429's limit header is not announced"
        );
        p.on_answer(s, Answer::Ok, Some(&spent));
        assert_eq!(
            p.paused_until(),
            Some(Instant::now() + Duration::from_secs(1))
        );
    }

    /// A pace far above what the pool sends costs no timer per send: 10,000 sends at a pace of
    /// 16,000/s (a server announcing 1,000,000 a minute) take 10,000 / 16,000 s, not 10 s.
    #[tokio::test(start_paused = true)]
    async fn a_fast_pace_keeps_up_with_a_late_timer() {
        let p = Pacer::new(None);
        let announced = RateLimitHeaders {
            limit_requests: Some(1_000_000),
            ..Default::default()
        };
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, Some(&announced));
        let start = Instant::now();
        for _ in 0..10_000 {
            send(&p).await;
        }
        let ideal = 10_000.0 / (1_000_000.0 / 60.0 * HEADER_MARGIN);
        let took = start.elapsed().as_secs_f64();
        assert!(took <= ideal * 1.1 + 0.01, "{took} s for {ideal} s of pace");
    }

    #[test]
    fn the_chance_of_a_run_of_429s() {
        assert!((at_least(3, 3, 0.02) - 8e-6).abs() < 1e-12);
        assert!((at_least(0, 5, 0.3) - 1.0).abs() < 1e-12);
        let two_of_four =
            6.0 * 0.25 * 0.25 * 0.75 * 0.75 + 4.0 * 0.25f64.powi(3) * 0.75 + 0.25f64.powi(4);
        assert!((at_least(2, 4, 0.25) - two_of_four).abs() < 1e-12);
        assert!(at_least(5, 5, 1.0) > 0.9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_429s_pauses_the_pool_until_the_advice_then_paces() {
        let p = Pacer::new(None);
        let mut sent = Vec::new();
        for _ in 0..20 {
            sent.push(send(&p).await);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        for s in &sent[..10] {
            p.on_answer(*s, Answer::Ok, None);
        }
        // The first 429 starts the watch; requests sent after it get 429s too.
        assert!(
            p.on_answer(sent[10], limited(5.0), None),
            "a lone 429's row lends its slot"
        );
        assert_eq!(p.paused_until(), None, "one 429 pauses nobody");
        let after: Vec<Instant> = {
            tokio::time::advance(Duration::from_millis(1)).await;
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(send(&p).await);
            }
            v
        };
        p.on_answer(after[0], limited(5.0), None);
        p.on_answer(sent[11], Answer::Ok, None); // sent before the first 429: not counted
        assert!(
            !p.on_answer(after[1], limited(5.0), None),
            "a 429 in a burst keeps its slot"
        );
        assert_eq!(p.paused_until(), None);
        p.on_answer(after[2], limited(5.0), None);
        let until = p.paused_until().expect("window exhausted");
        assert_eq!(until, Instant::now() + Duration::from_secs(5));
        assert!(p.note().why.contains("burst"), "{:?}", p.note());
        assert!(
            p.note().why.starts_with("paused"),
            "slowed first: {:?}",
            p.note()
        );
        let pace = p.lock().pace().expect("paced after the burst");
        let start = Instant::now();
        p.acquire(1).await;
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(5),
            "not before the advice"
        );
        p.acquire(1).await;
        let step = Duration::from_secs_f64(1.0 / pace);
        assert!(start.elapsed() >= Duration::from_secs(5) + step.mul_f64(0.99));
        assert_eq!(p.totals(), (4, Duration::from_secs(5)));
    }

    #[tokio::test(start_paused = true)]
    async fn over_a_limit_the_pace_drops_once_per_window_then_grows_back() {
        let p = Pacer::new(None);
        // 100 requests/s for 1 s, answered at once.
        let mut early = Vec::new();
        for _ in 0..100 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            early.push(s);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        // 10 % of answers are 429s (requests sent back then, one each: no burst).
        for s in early.iter().take(40) {
            p.on_answer(*s, Answer::Ok, None);
            p.on_answer(*s, limited(0.05), None);
            p.on_answer(*s, Answer::Ok, None);
        }
        let pace = p.lock().pace().expect("slowed");
        assert!(pace < 100.0 * DECREASE_FACTOR + 1.0, "{pace}");
        assert!(pace >= 100.0 * MAX_CUT, "{pace}");
        assert!(p.note().why.starts_with("slowed"), "{:?}", p.note());
        assert_eq!(p.paused_until(), None);
        // More 429s for requests sent before the decrease: no second decrease.
        for s in &early {
            p.on_answer(*s, limited(0.05), None);
        }
        assert_eq!(p.lock().pace(), Some(pace));
        // Successes while the pace holds the sends back: it holds below the limit learned
        // for [`HOLD`], then grows, faster and faster.
        let learned = p.lock().learned.unwrap();
        let start = Instant::now();
        let mut paces = Vec::new();
        let mut at = HOLD - Duration::from_millis(500);
        while paces.len() < 4 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            if s.duration_since(start) >= at {
                paces.push(p.lock().pace().unwrap());
                at += Duration::from_secs(1);
            }
        }
        assert!(
            paces[0] >= pace && paces[0] <= learned * HOLD_SHARE + 1e-9,
            "{paces:?}"
        );
        assert!(paces.windows(2).all(|w| w[1] > w[0]), "{paces:?}");
        assert!(paces[3] - paces[2] > paces[2] - paces[1], "{paces:?}");
        assert!(p.note().why.starts_with("speeding up"), "{:?}", p.note());
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_spaces_requests_evenly_and_grows_no_further_than_the_rpm() {
        let p = Pacer::new(Some(600));
        for _ in 0..20 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        p.lock().decrease(Instant::now(), "test", 0.0);
        let pace = p.lock().pace().unwrap();
        assert!((pace - 9.7).abs() < 0.1, "97 % of the 10/s served: {pace}");
        let start = Instant::now();
        for _ in 0..10 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
        }
        // Nine steps at most at the hold's pace (98 % of the 10/s learned).
        let step = Duration::from_secs_f64(1.0 / (10.0 * HOLD_SHARE));
        assert!(start.elapsed() >= step * 9, "{:?}", start.elapsed());
        let mut highest = pace;
        loop {
            let Some(pace) = p.lock().pace() else {
                break;
            };
            highest = highest.max(pace);
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
        }
        assert!(highest <= 10.0, "{highest}");
        assert_eq!(p.note().why, "recovered: back to the limit");
    }

    #[tokio::test(start_paused = true)]
    async fn announced_limits_pace_proactively_and_remaining_zero_pauses() {
        let p = Pacer::new(None);
        let headers = RateLimitHeaders {
            limit_requests: Some(1200),
            remaining_requests: Some(150),
            reset_requests: Some(Duration::from_secs(3)),
            ..Default::default()
        };
        let s = send(&p).await;
        p.on_answer(s, Answer::Ok, Some(&headers));
        let pace = p.lock().pace().unwrap();
        assert!((pace - 20.0 * HEADER_MARGIN).abs() < 1e-9, "{pace}");
        assert!(p.note().why.contains("1200 requests/min"));
        // Tokens: 60,000 per minute at 97 %: a 970-token request holds the next for 1 s.
        let tokens = RateLimitHeaders {
            limit_tokens: Some(60_000),
            ..Default::default()
        };
        p.on_answer(s, Answer::Ok, Some(&tokens));
        p.acquire(970).await;
        let start = Instant::now();
        p.acquire(1).await;
        assert_eq!(start.elapsed().as_millis(), 1000);
        // Nothing left until the reset: the pool waits for it.
        let exhausted = RateLimitHeaders {
            remaining_requests: Some(0),
            reset_requests: Some(Duration::from_millis(2500)),
            ..headers
        };
        p.on_answer(s, Answer::Ok, Some(&exhausted));
        let start = Instant::now();
        p.acquire(1).await;
        assert_eq!(start.elapsed().as_millis(), 2500);
        assert!(p.note().why.contains("no requests left"), "{:?}", p.note());
        assert_eq!(p.totals(), (0, Duration::from_millis(2500)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pace_change_applies_to_waiters_at_once() {
        let p = Arc::new(Pacer::new(None));
        let slow = RateLimitHeaders {
            limit_requests: Some(6),
            ..Default::default()
        };
        p.on_answer(Instant::now(), Answer::Ok, Some(&slow));
        p.acquire(1).await;
        let waiter = {
            let p = p.clone();
            tokio::spawn(async move {
                let start = Instant::now();
                p.acquire(1).await;
                start.elapsed()
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        // 6/min: the waiter would wait 10 s; the server now announces 60/min (one per ~1.03 s).
        let fast = RateLimitHeaders {
            limit_requests: Some(60),
            ..Default::default()
        };
        p.on_answer(Instant::now(), Answer::Ok, Some(&fast));
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(1030), "{waited:?}");
        assert!(waited <= Duration::from_millis(1090), "{waited:?}");
    }

    /// A server window of `capacity` requests filled by a wave sent over `over`, answered ok
    /// after `latency`; then 429s advising `advice` for the requests sent after the first 429
    /// came back: the burst that pauses the pool. Returns when the pause began.
    async fn exhaust_window(
        p: &Pacer,
        capacity: u32,
        over: Duration,
        latency: Duration,
        advice: Duration,
    ) -> Instant {
        let step = over / capacity;
        let mut sent = VecDeque::new();
        for _ in 0..capacity {
            sent.push_back(send(p).await);
            tokio::time::advance(step).await;
            while sent.front().is_some_and(|s| *s + latency <= Instant::now()) {
                p.on_answer(sent.pop_front().unwrap(), Answer::Ok, None);
            }
        }
        // The window is full: the next request is answered 429 at once, and so are the three
        // sent after that 429 came back.
        let first = send(p).await;
        p.on_answer(first, Answer::RateLimited(Some(advice)), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..3 {
            let s = send(p).await;
            p.on_answer(s, Answer::RateLimited(Some(advice)), None);
        }
        let paused = Instant::now();
        assert_eq!(p.paused_until(), Some(paused + advice), "{:?}", p.note());
        // Those still in flight were let in: answered ok during the pause.
        for s in sent {
            p.on_answer(s, Answer::Ok, None);
        }
        paused
    }

    /// Issue 11: after a pool pause the pace is the rate the server served before it — what its
    /// window still holds, divided by its length ([`window_for`]) — within [`RESUME_SHARE`]
    /// (3 %), not a cut of the pace that overran it (which left the tail of a run at half the
    /// server's rate after a 60-s pause).
    #[tokio::test(start_paused = true)]
    async fn after_a_pause_the_pace_is_the_rate_the_server_served() {
        // A sliding window of 200 per 10 s, filled in 0.6 s (200-ms answers): 20/s.
        let served = 20.0;
        let p = Pacer::new(None);
        let paused = exhaust_window(
            &p,
            200,
            Duration::from_millis(600),
            Duration::from_millis(200),
            Duration::from_millis(9400),
        )
        .await;
        let pace = p.lock().pace().expect("paced after the pause");
        assert!(
            (pace - served * RESUME_SHARE).abs() < 0.2,
            "{pace}/s, not {served}/s"
        );
        // The sends after the pause go at that pace from its first second: not before the
        // pause ends, then one step apart.
        let first = send(&p).await;
        assert_eq!(first, paused + Duration::from_millis(9400));
        let mut last = first;
        for _ in 0..20 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            last = s;
        }
        let rate = 20.0 / last.duration_since(first).as_secs_f64();
        assert!(
            (served * 0.95..=served).contains(&rate),
            "{rate}/s right after the pause"
        );

        // LiteLLM's own limit: 30 requests a minute, taken in the first second, then
        // `retry-after: 60`. The pace resumes at 30 a minute (not 15 and creeping up).
        let p = Pacer::new(None);
        exhaust_window(
            &p,
            30,
            Duration::from_millis(900),
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
        .await;
        let per_minute = p.lock().pace().unwrap() * 60.0;
        let served = 30.0;
        assert!(
            (per_minute - served * RESUME_SHARE).abs() < 0.5,
            "{per_minute}/min, served {served}/min"
        );

        // A sliding 10-s window taken at 20/s whose limit halves: it holds 200, 100 must leave
        // before one more passes (advice 5 s). 10/s, not the 20/s the advice alone measured.
        let p = Pacer::new(None);
        exhaust_window(
            &p,
            200,
            Duration::from_secs(10),
            Duration::from_millis(200),
            Duration::from_secs(5),
        )
        .await;
        let pace = p.lock().pace().unwrap();
        assert!(
            (pace - 10.0 * RESUME_SHARE).abs() < 0.3,
            "{pace}/s, not 10/s"
        );
    }

    /// After a cut the pace holds just below the limit it learned for [`HOLD`], then probes
    /// above it; the probe's first 429 ends it: back below the limit, and the pool waits for
    /// that 429's advice.
    #[tokio::test(start_paused = true)]
    async fn the_pace_holds_below_the_learned_limit_then_probes_and_a_429_ends_the_probe() {
        let p = Pacer::new(None);
        exhaust_window(
            &p,
            200,
            Duration::from_millis(600),
            Duration::from_millis(200),
            Duration::from_millis(9400),
        )
        .await;
        let learned = p.lock().learned.expect("learned at the pause");
        assert!((learned - 20.0).abs() < 0.2, "{learned}");
        let resumed = p.paused_until().unwrap();
        // Answers all succeed (latency 0): the pace is what holds the sends back.
        let mut held = Vec::new();
        loop {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            if s >= resumed + HOLD {
                break;
            }
            held.push(p.lock().pace().unwrap());
        }
        let top = held.iter().copied().fold(0.0, f64::max);
        assert!(held[0] >= learned * 0.96, "{held:?}");
        assert!(top <= learned * HOLD_SHARE + 1e-9, "{top} during the hold");
        assert!(
            top >= learned * HOLD_SHARE - 0.05,
            "reached the hold: {top}"
        );
        // Then the probe: above the learned limit within 1 s, 10 % a second.
        let probe_start = Instant::now();
        while Instant::now() < probe_start + Duration::from_secs(1) {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
        }
        let probing = p.lock().pace().unwrap();
        assert!(probing > learned, "{probing} after 1 s of probing");
        assert!(probing < learned * 1.15, "{probing}");
        assert!(p.note().why.starts_with("speeding up"), "{:?}", p.note());
        // One 429: the probe found the limit where it was.
        let s = send(&p).await;
        p.on_answer(s, limited(0.3), None);
        let cut = p.lock().pace().unwrap();
        assert!(cut <= learned * DECREASE_FACTOR + 0.1, "{cut}");
        assert!(
            cut >= learned * 0.9,
            "{cut}: a cut to the rate served, no deeper"
        );
        assert_eq!(
            p.paused_until(),
            Some(Instant::now() + Duration::from_millis(300))
        );
        assert!(p.note().why.starts_with("slowed"), "{:?}", p.note());
    }

    /// LiteLLM's proxy at 30 requests a minute announces `x-ratelimit-limit-requests: 30`, so the
    /// 30 of its minute are paced over half a minute and the 429s after them come 2 s apart.
    /// The pool pauses for the advised 60 s and resumes at 30 a minute, the rate the server
    /// served over the minute its 429 named. Measured over the last 10 s plus the pause, it
    /// was 3 per 70 s: a request a minute, and a 40-row run stalled (33 rows by 260 s).
    #[tokio::test(start_paused = true)]
    async fn a_paced_per_minute_window_resumes_at_its_rate_after_the_pause() {
        let p = Pacer::new(None);
        let headers = RateLimitHeaders {
            limit_requests: Some(30),
            ..RateLimitHeaders::default()
        };
        let latency = Duration::from_millis(200);
        // `--concurrency 16`: the first 16 leave at once, before any answer tells the limit.
        let mut first_wave = Vec::new();
        for _ in 0..16 {
            first_wave.push(send(&p).await);
        }
        tokio::time::advance(latency).await;
        for s in first_wave {
            p.on_answer(s, Answer::Ok, Some(&headers));
        }
        // Then one at a time at the announced pace: 14 more fill the minute, then 429s.
        let mut ok = 16;
        let mut limited_answers = 0;
        while p.paused_until().is_none() {
            let s = send(&p).await;
            tokio::time::advance(latency).await;
            if ok < 30 {
                ok += 1;
                p.on_answer(s, Answer::Ok, Some(&headers));
            } else {
                limited_answers += 1;
                p.on_answer(s, limited(60.0), None);
            }
            assert!(
                limited_answers < 10,
                "no pause after {limited_answers} 429s"
            );
        }
        let per_minute = p.lock().pace().expect("paced") * 60.0;
        assert!(
            (28.0..=30.0).contains(&per_minute),
            "{per_minute}/min after the pause, the server serves 30/min"
        );
        // The next request goes when the advice ends, the one after it 2 s later.
        let until = p.paused_until().unwrap();
        assert_eq!(send(&p).await, until);
        let step = send(&p).await.duration_since(until);
        assert!(step <= Duration::from_millis(2150), "{step:?}");
    }

    /// A probe grows by the time it has run, not by the answers it got: at a pace of one
    /// request a minute each answer may double it (answers clocked at most 1 s of growth each,
    /// 10 % a minute).
    #[tokio::test(start_paused = true)]
    async fn a_slow_pace_probes_up_by_the_time_passed_not_by_the_answers() {
        let p = Pacer::new(None);
        {
            let mut s = p.lock();
            let now = Instant::now();
            s.cut_to(now, MIN_PACE, MIN_PACE, 0.0, "slowed: test".into());
            s.last_decrease = now.checked_sub(HOLD * 2);
        }
        for _ in 0..4 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
        }
        let per_minute = p.lock().pace().unwrap() * 60.0;
        assert!(
            per_minute >= 8.0,
            "{per_minute}/min after 4 answers at 1/min"
        );
    }

    /// A per-minute limit (LiteLLM: 30 a minute, `retry-after: 60`): when the probe after the
    /// pause meets a 429 with the same long advice, the pool waits that advice but keeps the
    /// pace it had. A handful of answers over a 60-s advice is no measure of the server's rate
    /// (it once cut the pace to a request every half minute and left rows unsent for minutes).
    #[tokio::test(start_paused = true)]
    async fn a_probe_429_after_a_long_pause_waits_its_advice_without_collapsing_the_pace() {
        let p = Pacer::new(None);
        exhaust_window(
            &p,
            30,
            Duration::from_millis(900),
            Duration::from_millis(100),
            Duration::from_secs(60),
        )
        .await;
        let learned = p.lock().learned.expect("learned at the pause");
        let resumed = p.paused_until().unwrap();
        // The hold, then the start of the probe: every answer ok.
        loop {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            if s >= resumed + HOLD + Duration::from_secs(1) {
                break;
            }
        }
        assert!(p.lock().pace().unwrap() > learned, "probing");
        let s = send(&p).await;
        p.on_answer(s, limited(60.0), None);
        let pace = p.lock().pace().unwrap();
        assert_eq!(
            p.paused_until(),
            Some(Instant::now() + Duration::from_secs(60)),
            "the pool waits the advice"
        );
        assert!(
            pace >= learned * 0.8,
            "{:.1}/min after the probe's 429, learned {:.1}/min",
            pace * 60.0,
            learned * 60.0
        );
    }

    /// Unpaced sends whose answers take long enough are spread over the answer time, so the
    /// requests of a `--concurrency` wave do not all meet a window that just filled.
    #[tokio::test(start_paused = true)]
    async fn unpaced_sends_are_spread_over_the_answer_time() {
        let p = Pacer::new(None);
        let mut sent = Vec::new();
        for _ in 0..64 {
            sent.push(send(&p).await);
        }
        assert_eq!(sent[63], sent[0], "nothing known yet: one wave");
        tokio::time::advance(Duration::from_millis(200)).await;
        for s in sent {
            p.on_answer(s, Answer::Ok, None);
        }
        let start = Instant::now();
        for _ in 0..64 {
            send(&p).await;
        }
        // 64 in flight over 200 ms, × 1.25: one send every 2.5 ms.
        let spread = start.elapsed();
        assert!(spread >= Duration::from_millis(155), "{spread:?}");
        assert!(spread <= Duration::from_millis(160), "{spread:?}");
        assert_eq!(p.lock().pace(), None, "spreading is no pace");
        assert_eq!(p.note(), PaceNote::default());
    }

    /// The display is updated under the answer's one lock: the note copied when its reason
    /// changes, only its rate when that alone changes.
    #[tokio::test(start_paused = true)]
    async fn the_display_gets_the_note_when_it_changes() {
        let counters = Arc::new(Counters::default());
        let p = Pacer::new(None).with_progress(counters.clone());
        let headers = RateLimitHeaders {
            limit_requests: Some(600),
            ..Default::default()
        };
        p.on_answer(Instant::now(), Answer::Ok, Some(&headers));
        assert_eq!(*counters.pace.lock().unwrap(), p.note());
        assert!(p.note().why.contains("600 requests/min"));
        assert!(!p.lock().why_changed && !p.lock().rate_changed);
        p.on_answer(Instant::now(), limited(1.0), None);
        assert_eq!(counters.rate_limited.load(Relaxed), 1);
        assert_eq!(*counters.pace.lock().unwrap(), p.note());
    }
}
