//! The simulator's server-side request limit (`--limit-rpm`), in the two shapes real servers
//! use:
//! - `sliding` (OpenAI-like): at most RPM × window / 60 requests admitted in any sliding window;
//!   a refused request is not counted, and its 429 advises the exact wait until one more passes.
//! - `fixed` (the LiteLLM proxy's `enforce_model_rate_limits`): a counter per wall-clock window
//!   (the UTC minute for 60 s), incremented *before* the check, so refused requests count too;
//!   a 429 advises the whole window (LiteLLM: `retry-after: 60`) whatever is left of it.
//!
//! A schedule (`1200,600@30s,1200@60s`) changes the limit over time, counted from the first
//! request.

use crate::util::choice::Choice;
use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A requests-per-minute limit that may change over time: `(start after the first request, rpm)`,
/// sorted by start, the first starting at 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitSchedule(pub Vec<(Duration, u32)>);

impl LimitSchedule {
    /// Parses `1200` or `1200,600@30s,1200@60s`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut steps = Vec::new();
        for part in text.split(',') {
            let (rpm, start) = match part.split_once('@') {
                Some((rpm, at)) => (rpm, crate::util::duration::parse(at)?),
                None => (part, Duration::ZERO),
            };
            let rpm: u32 = rpm
                .trim()
                .parse()
                .ok()
                .filter(|r| *r > 0)
                .ok_or_else(|| format!("`{part}`: expected RPM[@START], e.g. 600@30s"))?;
            steps.push((start, rpm));
        }
        steps.sort_by_key(|(start, _)| *start);
        if steps.first().is_none_or(|(start, _)| !start.is_zero()) {
            return Err(format!("`{text}`: the first limit must start at 0"));
        }
        Ok(LimitSchedule(steps))
    }

    /// The limit in force `since` after the first request.
    pub fn at(&self, since: Duration) -> u32 {
        self.0
            .iter()
            .take_while(|(start, _)| *start <= since)
            .last()
            .map_or(self.0[0].1, |(_, rpm)| *rpm)
    }
}

/// How `--limit-rpm` counts (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitStyle {
    /// A sliding window of admitted requests; a 429 advises the exact wait (OpenAI-like).
    #[default]
    Sliding,
    /// A counter per wall-clock window that refused requests increment too; a 429 advises the
    /// whole window (the LiteLLM proxy's rpm limit).
    Fixed,
}

impl Choice for LimitStyle {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (LimitStyle::Sliding, "sliding", "A sliding window of admitted requests; a 429 advises the exact wait (OpenAI-like)"),
        (LimitStyle::Fixed, "fixed", "A counter per wall-clock window that refused requests increment too; a 429 advises the whole window (the LiteLLM proxy's rpm limit)"),
    ];
}

/// What the limit decided for one request.
#[derive(Debug)]
pub(super) struct Verdict {
    pub admitted: bool,
    pub rpm: u32,
    /// Requests that would still pass now (after this one, when admitted).
    pub remaining: u64,
    /// When one more request would pass (for `x-ratelimit-reset-requests`).
    pub reset: Duration,
    /// The wait a 429 advises.
    pub advice: Duration,
}

/// The limit's state; one per server.
#[derive(Debug, Default)]
pub(super) struct ServerLimit {
    /// When the first request arrived (the schedule's origin).
    first: Option<Instant>,
    /// Sliding: arrival times of the requests admitted in the current window, oldest first.
    admitted: VecDeque<Instant>,
    /// Fixed: the wall-clock window counted (its index since the epoch) and its count.
    fixed: (u64, u64),
}

impl ServerLimit {
    /// Counts one request arriving at `now` (`wall`: the same moment on the wall clock).
    pub(super) fn check(
        &mut self,
        schedule: &LimitSchedule,
        window: Duration,
        style: LimitStyle,
        now: Instant,
        wall: SystemTime,
    ) -> Verdict {
        let first = *self.first.get_or_insert(now);
        let rpm = schedule.at(now - first);
        let capacity = ((u64::from(rpm) * window.as_millis() as u64) / 60_000).max(1);
        match style {
            LimitStyle::Sliding => self.sliding(rpm, capacity, window, now),
            LimitStyle::Fixed => self.fixed(rpm, capacity, window, wall),
        }
    }

    fn sliding(&mut self, rpm: u32, capacity: u64, window: Duration, now: Instant) -> Verdict {
        while self.admitted.front().is_some_and(|t| *t + window <= now) {
            self.admitted.pop_front();
        }
        let admitted = (self.admitted.len() as u64) < capacity;
        if admitted {
            self.admitted.push_back(now);
        }
        let used = self.admitted.len() as u64;
        let remaining = capacity.saturating_sub(used);
        // One more passes once `used - capacity + 1` of the admitted have left the window.
        let reset = if remaining > 0 {
            Duration::ZERO
        } else {
            let leaving = (used + 1 - capacity) as usize;
            self.admitted.get(leaving - 1).map_or(Duration::ZERO, |t| {
                (*t + window).saturating_duration_since(now)
            })
        };
        Verdict {
            admitted,
            rpm,
            remaining,
            reset,
            advice: reset,
        }
    }

    fn fixed(&mut self, rpm: u32, capacity: u64, window: Duration, wall: SystemTime) -> Verdict {
        let window_ms = window.as_millis().max(1);
        let since_epoch = wall
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let index = (since_epoch / window_ms) as u64;
        if self.fixed.0 != index {
            self.fixed = (index, 0);
        }
        // Increment first, as LiteLLM does: a refused request uses up the window too.
        self.fixed.1 += 1;
        let count = self.fixed.1;
        let left_ms = window_ms - since_epoch % window_ms;
        Verdict {
            admitted: count <= capacity,
            rpm,
            remaining: capacity.saturating_sub(count),
            reset: if count < capacity {
                Duration::ZERO
            } else {
                Duration::from_millis(left_ms as u64)
            },
            advice: window,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_schedules_and_the_sliding_window() {
        let s = LimitSchedule::parse("1200,600@30s,1200@60s").unwrap();
        assert_eq!(s.at(Duration::ZERO), 1200);
        assert_eq!(s.at(Duration::from_secs(45)), 600);
        assert_eq!(s.at(Duration::from_secs(61)), 1200);
        assert!(LimitSchedule::parse("600@5s").is_err());
        assert!(LimitSchedule::parse("fast").is_err());

        // 60 RPM over 3 s: 3 per window.
        let s = LimitSchedule::parse("60").unwrap();
        let window = Duration::from_secs(3);
        let mut w = ServerLimit::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let wall = SystemTime::now();
        for (ms, remaining) in [(0, 2), (100, 1), (200, 0)] {
            let v = w.check(&s, window, LimitStyle::Sliding, at(ms), wall);
            assert!(v.admitted);
            assert_eq!(v.remaining, remaining);
        }
        let v = w.check(&s, window, LimitStyle::Sliding, at(1000), wall);
        assert!(!v.admitted);
        assert_eq!(
            v.reset,
            Duration::from_millis(2000),
            "when the first leaves"
        );
        assert_eq!(v.advice, v.reset);
        assert!(
            w.check(&s, window, LimitStyle::Sliding, at(3000), wall)
                .admitted
        );
    }

    #[test]
    fn the_fixed_window_counts_refused_requests_and_restarts_on_the_clock() {
        // 30 RPM over LiteLLM's 60-s window, starting 10 s into a wall-clock minute.
        let s = LimitSchedule::parse("30").unwrap();
        let window = Duration::from_secs(60);
        let minute = UNIX_EPOCH + Duration::from_secs(29_000_000 * 60);
        let wall = |s: u64| minute + Duration::from_secs(s);
        let mut w = ServerLimit::default();
        let now = Instant::now();
        for n in 1..=30 {
            let v = w.check(&s, window, LimitStyle::Fixed, now, wall(10));
            assert!(v.admitted, "request {n}");
            assert_eq!(v.remaining, 30 - n);
        }
        let refused = w.check(&s, window, LimitStyle::Fixed, now, wall(20));
        assert!(!refused.admitted);
        assert_eq!(
            refused.advice, window,
            "the whole window, as LiteLLM says 60"
        );
        assert_eq!(refused.reset, Duration::from_secs(40), "the minute's end");
        // The next wall-clock minute starts from zero, however close to the last request.
        let v = w.check(&s, window, LimitStyle::Fixed, now, wall(60));
        assert!(v.admitted);
        assert_eq!(v.remaining, 29);
        // Refused requests use the window up: 29 more pass, then none, and refusals go on
        // counting (never admitted again within the minute).
        for _ in 0..29 {
            assert!(
                w.check(&s, window, LimitStyle::Fixed, now, wall(61))
                    .admitted
            );
        }
        for _ in 0..5 {
            assert!(
                !w.check(&s, window, LimitStyle::Fixed, now, wall(62))
                    .admitted
            );
        }
        assert!(
            w.check(&s, window, LimitStyle::Fixed, now, wall(120))
                .admitted
        );
    }
}
