//! When the next request may go: the pace, the spreading of unpaced sends over the answer
//! time, the slot grid, and the send rate measured.

use std::time::Duration;

use tokio::time::Instant;

use super::state::State;
use super::window::Recent;

/// The send rate is measured over this long (pauses excluded).
pub(super) const SEND_SPAN: Duration = Duration::from_secs(2);
/// Unpaced sends are spread over the answer time (at this multiple of in flight ÷ latency) …
const SMOOTH_MARGIN: f64 = 1.25;
/// … when that is below this many per second. Concurrency alone sends in waves: at `-c 64` and
/// 200-ms answers, 64 requests leave within a millisecond every 200 ms, and the wave that fills
/// a server's window is answered 429 almost whole (≈ 56 of 2,000 attempts, before any 429 could
/// come back). Spread, the requests sent after the first 429 are a handful. Above this rate
/// (answers in under ≈ 30 ms at `-c 64`) a wave is over before an answer comes back anyway,
/// and sends keep the lock-free fast path.
const SMOOTH_MAX: f64 = 2000.0;
/// A send may go this far behind the pace's grid and catch up (at least one step): a timer
/// wakes up a millisecond late, and at a pace of 16,000/s (a server announcing 1,000,000 a
/// minute) a grid reset on every late wake-up held the pool to one send per millisecond.
const CATCH_UP: Duration = Duration::from_millis(5);

/// The sends: the last one's slot, and the recent ones.
#[derive(Debug, Default)]
pub(super) struct Sending {
    /// The last send's slot and its tokens.
    pub(super) last_send: Option<Instant>,
    pub(super) last_tokens: u64,
    /// Sends of the last [`SEND_SPAN`].
    pub(super) sends: Recent,
    pub(super) first_send: Option<Instant>,
}

impl State {
    /// Requests per second now: the lower of the adaptive and the announced pace (`--rpm`
    /// itself is kept by `limit.rs`; here it only bounds growth).
    pub(super) fn pace(&self) -> Option<f64> {
        [self.pace.adaptive, self.pace.announced]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// Sends per second the concurrency's answers allow, spread evenly, when that is slow
    /// enough to matter ([`SMOOTH_MAX`]).
    pub(super) fn smooth(&self) -> Option<f64> {
        let latency = self.answers.latency.filter(|l| *l > 0.0)?;
        let rate = SMOOTH_MARGIN * self.totals.peak_in_flight.max(1) as f64 / latency;
        (rate < SMOOTH_MAX).then_some(rate)
    }

    /// The rate sends are spaced at: the pace, or the spreading when lower.
    pub(super) fn send_pace(&self) -> Option<f64> {
        [self.pace(), self.smooth()]
            .into_iter()
            .flatten()
            .reduce(f64::min)
    }

    /// When the next send may go: one request step and the previous send's token step after it
    /// (`now` before the first send).
    pub(super) fn next_slot(&self, now: Instant) -> Instant {
        let Some(last) = self.sending.last_send else {
            return now;
        };
        let step = |rate: Option<f64>, amount: f64| {
            rate.map_or(Duration::ZERO, |r| {
                Duration::from_secs_f64((amount / r).min(3600.0))
            })
        };
        let request = step(self.send_pace(), 1.0);
        let tokens = step(self.pace.token_rate, self.sending.last_tokens as f64);
        last + request.max(tokens)
    }

    /// Notes a send at `now` for the slot `slot` (≤ now): late wake-ups stay on the ideal grid
    /// (up to one step or [`CATCH_UP`]), so the pace is kept, not lost to timer lateness.
    pub(super) fn record_send(&mut self, now: Instant, slot: Instant, tokens: u64) {
        let step = self.send_pace().map_or(Duration::ZERO, |r| {
            Duration::from_secs_f64((1.0 / r).min(3600.0))
        });
        let grid = match self.sending.last_send {
            Some(_)
                if !step.is_zero() && now.saturating_duration_since(slot) < step.max(CATCH_UP) =>
            {
                slot
            }
            _ => now,
        };
        self.sending.last_send = Some(grid);
        self.sending.last_tokens = tokens;
        self.totals.sent_total += 1;
        if let Some(b) = self.burst.as_mut() {
            b.sent += 1;
        }
        self.totals.peak_in_flight = self.totals.peak_in_flight.max(
            self.totals
                .sent_total
                .saturating_sub(self.totals.answered_total),
        );
        self.sending.first_send.get_or_insert(now);
        self.sending.sends.push(now, false);
        self.sending.sends.prune(now, SEND_SPAN);
    }

    /// Sends per second recently (time paused excluded); `None` with too few sends to tell.
    pub(super) fn send_rate(&self, now: Instant) -> Option<f64> {
        let mut from = now.checked_sub(SEND_SPAN).unwrap_or(now);
        if let Some(first) = self.sending.first_send {
            from = from.max(first);
        }
        if let Some(p) = self.pause.paused_until.filter(|p| *p <= now) {
            from = from.max(p);
        }
        let n = self.sending.sends.count_since(from) as usize;
        let span = now.saturating_duration_since(from).as_secs_f64();
        (n >= 5 && span > 0.0).then(|| n as f64 / span.max(0.1))
    }
}
