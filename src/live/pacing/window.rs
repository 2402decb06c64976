//! Events of a trailing time span, counted in buckets ([`Recent`]).

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Events of a trailing time span, counted in [`BUCKET`]-wide buckets (some of them marked,
/// e.g. 429s among answers), so memory is bounded by span / bucket whatever the rate (a log of
/// every event held 300,000 entries at 30,000 answers a second).
#[derive(Debug, Default)]
pub(super) struct Recent {
    /// (bucket start, events, marked events), oldest first.
    pub(super) buckets: VecDeque<(Instant, u32, u32)>,
    pub(super) total: u64,
    pub(super) marked: u64,
}

/// The width of a [`Recent`] bucket: the resolution of its spans.
const BUCKET: Duration = Duration::from_millis(10);

impl Recent {
    pub(super) fn push(&mut self, now: Instant, marked: bool) {
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
    pub(super) fn prune(&mut self, now: Instant, span: Duration) {
        while let Some(&(start, n, m)) = self.buckets.front() {
            if start + span >= now {
                break;
            }
            self.buckets.pop_front();
            self.total -= u64::from(n);
            self.marked -= u64::from(m);
        }
    }

    pub(super) fn total(&self) -> u64 {
        self.total
    }

    pub(super) fn marked(&self) -> u64 {
        self.marked
    }

    /// When the oldest event kept happened (to its bucket's resolution).
    pub(super) fn first(&self) -> Option<Instant> {
        self.buckets.front().map(|b| b.0)
    }

    /// Events in buckets that started at or after `from`.
    pub(super) fn count_since(&self, from: Instant) -> u64 {
        self.buckets
            .iter()
            .rev()
            .take_while(|b| b.0 >= from)
            .map(|b| u64::from(b.1))
            .sum()
    }

    pub(super) fn clear(&mut self) {
        *self = Recent::default();
    }
}
