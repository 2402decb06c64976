//! Adaptive pacing shared by all workers, as congestion control does it: the send rate reacts to
//! the *rate* of 429s, not to each one.
//!
//! - **Unpaced** until told otherwise: only `--concurrency` (and `--rpm`/`--tpm`, in `limit.rs`)
//!   bound the sends. A 429'd row waits its own advice (the worker does that); the others go on.
//! - **Multiplicative decrease**, at most once per window: when 429s make up ≥ 5 % of the
//!   answers (at least 3 of them, over at least 1 s) to requests sent since the last decrease,
//!   the pace drops to
//!   90 % of the lower of the current send rate and the goodput since the last decrease (pauses
//!   included), never below a quarter of the send rate. Answers to requests sent before a
//!   decrease never cause another one.
//! - **Increase** while answers succeed and the pace is what holds the sends back: 1 % of the
//!   pace set at the last decrease per second, the slope doubling every 5 s without a
//!   decrease (slow probing near a limit just found, faster when it went away). The pace
//!   never rises above `--rpm` or the server's announced limit; it is dropped once it reaches
//!   them.
//! - **Pool pause** only when the server says the window is exhausted: a burst (the requests
//!   sent after a 429 mostly get 429s too: 3 of them before 3 successes), or an answer with
//!   `x-ratelimit-remaining-requests: 0` / `-tokens: 0` and a reset time. The pool then waits
//!   until that advice, and restarts paced: at most what the server took over the last
//!   10 s (ok or still in flight), spread over that span or until the advised time when longer.
//! - **Proactive**: `x-ratelimit-limit-requests` / `-tokens` (per minute, as OpenAI sends them)
//!   pace requests at 97 % of the announced limit (tokens: by each request's estimate).
//!
//! Every attempt passes [`Pacer::acquire`] once (from `Limits::acquire`). Waiters queue on a
//! FIFO gate and re-read the pace at least every 50 ms, so a change applies at once.

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
/// New pace: this share of min(send rate, goodput) …
const DECREASE_FACTOR: f64 = 0.9;
/// … but never below this share of the send rate in one step.
const MAX_CUT: f64 = 0.25;
/// A burst (window exhausted): this many 429s for requests sent after a 429 arrived …
const BURST_429S: u32 = 3;
/// … before this many successes.
const BURST_CLEARED_BY: u32 = 3;
/// First increase after a decrease, per second, as a share of the pace it set …
const PROBE_START: f64 = 0.01;
/// … doubling every this long.
const PROBE_DOUBLING: f64 = 5.0;
/// Share of a server-announced limit the proactive pace uses.
const HEADER_MARGIN: f64 = 0.97;
/// The slowest pace: one request a minute.
const MIN_PACE: f64 = 1.0 / 60.0;
/// A burst without any advice pauses the pool this long.
const DEFAULT_PAUSE: Duration = Duration::from_secs(1);
/// A waiter re-reads the pace at least this often.
const POLL: Duration = Duration::from_millis(50);

/// What one answer said, for [`Pacer::on_answer`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Answer {
    /// A success.
    Ok,
    /// A 429 (rate limit), with the server's advised wait.
    RateLimited(Option<Duration>),
    /// Any other answer: only its headers count.
    Other,
}

pub use crate::progress::PaceNote;

/// The shared pacing state (see the module docs).
pub struct Pacer {
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
    /// 429s received.
    rate_limited: u64,
    /// Pool pauses, in total (overlaps counted once).
    paused: Duration,
    note: PaceNote,
}

#[derive(Debug, Clone, Copy)]
struct Burst {
    since: Instant,
    limited: u32,
    ok: u32,
}

impl Pacer {
    /// Unpaced, never above `rpm` requests per minute when given.
    pub fn new(rpm: Option<u32>) -> Self {
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
                rate_limited: 0,
                paused: Duration::ZERO,
                note: PaceNote::default(),
            }),
            gate: tokio::sync::Mutex::new(()),
            progress: None,
        }
    }

    /// Also shows the pace, pauses and 429s in these counters.
    pub fn with_progress(mut self, counters: Arc<Counters>) -> Self {
        self.progress = Some(counters);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until one request of `tokens` estimated tokens may be sent: after any pool pause,
    /// and one pace step after the previous send.
    pub async fn acquire(&self, tokens: u64) {
        {
            let mut s = self.lock();
            let now = Instant::now();
            if s.paused_until.is_none_or(|p| p <= now)
                && s.pace().is_none()
                && s.token_rate.is_none()
            {
                s.record_send(now, now, tokens);
                return;
            }
        }
        let _gate = self.gate.lock().await;
        loop {
            let now = Instant::now();
            let wait = {
                let mut s = self.lock();
                match s.paused_until.filter(|p| *p > now) {
                    Some(until) => until,
                    None => {
                        let slot = s.next_slot();
                        if slot <= now {
                            s.record_send(now, slot, tokens);
                            return;
                        }
                        s.binding = true;
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
    pub fn on_answer(
        &self,
        sent_at: Instant,
        answer: Answer,
        headers: Option<&RateLimitHeaders>,
    ) -> bool {
        let now = Instant::now();
        let mut s = self.lock();
        s.answered_total += 1;
        if let Some(h) = headers {
            s.apply_headers(h, now);
        }
        let limited = match answer {
            Answer::Ok => false,
            Answer::RateLimited(_) => true,
            Answer::Other => {
                drop(s);
                self.publish();
                return false;
            }
        };
        if limited {
            s.rate_limited += 1;
        } else {
            s.ok_since += 1;
            s.oks.push(now, false);
            s.oks.prune(now, SAMPLE_SPAN);
        }
        let mut in_burst = false;

        // A burst: the requests sent after a 429 arrived are mostly answered 429 too.
        let mut exhausted = None;
        if let Some(b) = s.burst.as_mut() {
            if sent_at > b.since {
                if limited {
                    in_burst = true;
                    b.limited += 1;
                } else {
                    b.ok += 1;
                }
            }
            if b.limited >= BURST_429S && b.ok < b.limited {
                exhausted = Some(b.since);
                s.burst = None;
            } else if b.ok >= BURST_CLEARED_BY {
                s.burst = None;
            }
        }
        if limited && exhausted.is_none() && s.burst.is_none() {
            s.burst = Some(Burst {
                since: now,
                limited: 0,
                ok: 0,
            });
        }
        if let Some(anchor) = exhausted {
            let advice = match answer {
                Answer::RateLimited(advice) => advice,
                _ => None,
            };
            let pause = advice.unwrap_or(DEFAULT_PAUSE);
            s.pause_until(now, now + pause);
            // Once per window: not again when the 429s that started this burst already did …
            let why = "window exhausted: a burst of 429s";
            if s.last_decrease.is_none_or(|d| d <= anchor) {
                s.decrease(now, why);
            }
            s.note.why = format!("paused, slowed: {why}");
            // … but never above what the server let through: the requests it took over the
            // last seconds (answered ok or still in flight) spread over them, or up to the
            // window's reopening when later.
            let first = s.first_send.unwrap_or(now);
            let span = now
                .saturating_duration_since(first)
                .min(SAMPLE_SPAN)
                .max(pause);
            let taken = s.oks.total() as f64 + s.sent_total.saturating_sub(s.answered_total) as f64;
            let through = taken / span.as_secs_f64().max(0.1);
            if s.pace().is_none_or(|p| through < p) {
                s.adaptive = Some(through.max(MIN_PACE));
                s.base = through.max(MIN_PACE);
                s.note.per_minute = s.pace().map(|p| p * 60.0);
            }
        } else if s.last_decrease.is_none_or(|d| sent_at >= d) {
            s.sample.push(now, limited);
            s.sample.prune(now, SAMPLE_SPAN);
            if limited {
                let total = s.sample.total() as f64;
                let n429 = s.sample.marked() as u32;
                let long_enough = s
                    .sample
                    .first()
                    .is_some_and(|t| t + DECREASE_MIN_SPAN <= now);
                if long_enough
                    && n429 >= DECREASE_MIN_429S
                    && f64::from(n429) >= DECREASE_SHARE * total
                {
                    let why = format!("{n429} 429s in {} answers", s.sample.total());
                    s.decrease(now, &why);
                }
            } else if !limited {
                s.grow(now);
            }
        }
        let lend = limited && !in_burst && s.paused_until.is_none_or(|p| p <= now);
        drop(s);
        self.publish();
        lend
    }

    /// The current note, for tests and the display.
    pub fn note(&self) -> PaceNote {
        self.lock().note.clone()
    }

    /// 429s received and the time the pool spent paused (a pause still running counts up to
    /// now).
    pub fn totals(&self) -> (u64, Duration) {
        let s = self.lock();
        let ahead = s.paused_until.map_or(Duration::ZERO, |p| {
            p.saturating_duration_since(Instant::now())
        });
        (s.rate_limited, s.paused.saturating_sub(ahead))
    }

    /// The pool pause in force, if any.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|p| *p > Instant::now())
    }

    /// Copies the state the progress display shows into the counters.
    fn publish(&self) {
        let Some(counters) = &self.progress else {
            return;
        };
        let (note, rate_limited, paused, until) = {
            let s = self.lock();
            (s.note.clone(), s.rate_limited, s.paused, s.paused_until)
        };
        counters.rate_limited.store(rate_limited, Relaxed);
        counters.paused_ms.store(paused.as_millis() as u64, Relaxed);
        if let Some(until) = until {
            counters.paused_for(until.saturating_duration_since(Instant::now()));
        }
        if let Ok(mut shown) = counters.pace.lock() {
            *shown = note;
        }
    }
}

impl State {
    /// Requests per second now: the lower of the adaptive and the announced pace (`--rpm`
    /// itself is kept by `limit.rs`; here it only bounds growth).
    fn pace(&self) -> Option<f64> {
        [self.adaptive, self.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// When the next send may go: one request step and the previous send's token step after it.
    fn next_slot(&self) -> Instant {
        let Some(last) = self.last_send else {
            return Instant::now();
        };
        let step = |rate: Option<f64>, amount: f64| {
            rate.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64((amount / r).min(3600.0))
            })
        };
        let request = step(self.pace(), 1.0);
        let tokens = step(self.token_rate, self.last_tokens as f64);
        last + request.max(tokens)
    }

    /// Notes a send at `now` for the slot `slot` (≤ now): late wake-ups stay on the ideal grid
    /// (up to one step), so the pace is kept, not lost to timer lateness.
    fn record_send(&mut self, now: Instant, slot: Instant, tokens: u64) {
        let step = self.pace().map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64((1.0 / r).min(3600.0))
        });
        let grid = match self.last_send {
            Some(_) if now.saturating_duration_since(slot) < step => slot,
            _ => now,
        };
        self.last_send = Some(grid);
        self.last_tokens = tokens;
        self.sent_total += 1;
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

    fn decrease(&mut self, now: Instant, why: &str) {
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
        let since = self.last_decrease.or(self.first_send).unwrap_or(now);
        let elapsed = now.saturating_duration_since(since).as_secs_f64().max(0.5);
        let goodput = self.ok_since as f64 / elapsed;
        let new = (DECREASE_FACTOR * rate.min(goodput))
            .max(MAX_CUT * rate)
            .max(MIN_PACE);
        self.adaptive = Some(new);
        self.base = new;
        self.last_decrease = Some(now);
        self.last_growth = now;
        self.binding = false;
        self.sample.clear();
        self.ok_since = 0;
        self.note = PaceNote {
            per_minute: self.pace().map(|p| p * 60.0),
            why: format!("slowed: {why}"),
        };
    }

    fn grow(&mut self, now: Instant) {
        let Some(adaptive) = self.adaptive else {
            return;
        };
        let dt = now
            .saturating_duration_since(self.last_growth)
            .as_secs_f64();
        self.last_growth = now;
        let binding = std::mem::take(&mut self.binding);
        let others = [self.ceiling, self.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min);
        if !binding || others.is_some_and(|o| adaptive >= o) {
            return;
        }
        // The probe speeds up with the time spent sending since the last decrease or pause.
        let since = self.last_decrease.unwrap_or(now);
        let since = self
            .paused_until
            .filter(|p| *p <= now)
            .map_or(since, |p| since.max(p));
        let t = now.saturating_duration_since(since).as_secs_f64();
        let slope = self.base * PROBE_START * 2f64.powf(t / PROBE_DOUBLING);
        let grown = adaptive + slope * dt;
        match others {
            Some(o) if grown >= o => {
                self.adaptive = None;
                self.note = PaceNote {
                    per_minute: self.pace().map(|p| p * 60.0),
                    why: "recovered: back to the limit".into(),
                };
            }
            _ => {
                self.adaptive = Some(grown);
                self.note.per_minute = self.pace().map(|p| p * 60.0);
                if !self.note.why.starts_with("speeding up") {
                    self.note.why = "speeding up: answers succeed".into();
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
                self.note = PaceNote {
                    per_minute: self.pace().map(|p| p * 60.0),
                    why: format!("the server's limit: {limit} requests/min"),
                };
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
                self.note = PaceNote {
                    per_minute: self.pace().map(|p| p * 60.0),
                    why: format!("paused: the server has no {what} left until its reset"),
                };
            }
        }
    }

    /// Pauses the pool until `until` (extending a pause in force), counting the added time.
    fn pause_until(&mut self, now: Instant, until: Instant) {
        let from = self.paused_until.filter(|p| *p > now).unwrap_or(now);
        if until > from {
            self.paused += until - from;
            self.paused_until = Some(until);
        }
    }
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
        // Successes while the pace holds the sends back: it grows, faster and faster.
        let start = Instant::now();
        let mut paces = vec![pace];
        while start.elapsed() < Duration::from_secs(10) {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
            if paces.len() == 1 && s.duration_since(start) >= Duration::from_secs(5) {
                paces.push(p.lock().pace().unwrap());
            }
        }
        paces.push(p.lock().pace().unwrap());
        assert!(paces.windows(2).all(|w| w[1] > w[0]), "{paces:?}");
        assert!(paces[2] - paces[1] > paces[1] - paces[0], "{paces:?}");
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
        p.lock().decrease(Instant::now(), "test");
        let pace = p.lock().pace().unwrap();
        assert!((pace - 9.0).abs() < 0.5, "90 % of 10/s: {pace}");
        let start = Instant::now();
        for _ in 0..10 {
            let s = send(&p).await;
            p.on_answer(s, Answer::Ok, None);
        }
        let step = Duration::from_secs_f64(1.0 / pace);
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
        p.on_answer(Instant::now(), Answer::Other, Some(&slow));
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
        p.on_answer(Instant::now(), Answer::Other, Some(&fast));
        let waited = waiter.await.unwrap();
        assert!(waited >= Duration::from_millis(1030), "{waited:?}");
        assert!(waited <= Duration::from_millis(1090), "{waited:?}");
    }
}
