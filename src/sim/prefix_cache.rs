//! The simulator's prompt cache (`--prefix-cache`), modelled on OpenAI's documented behaviour: a
//! request's prefix (every message but the last, with the model: `api::request::prefix_of`) of
//! at least 1,024 estimated tokens is served from the cache when a request with the same prefix
//! was *answered* within the last [`TTL`] (5 minutes); it then reports the prefix's tokens
//! rounded down to a multiple of 128 as `cached_tokens`. Otherwise it reports 0, and the prefix
//! is remembered once this answer is sent. A request looks the cache up when it arrives, so the
//! requests sent while the first of a prefix is still being answered all miss: what the runner's
//! warm-first order (`live/prefix_gate.rs`) avoids.
//!
//! Bounded memory: at most [`MAX_PREFIXES`] prefixes (≈ 40 bytes each), the oldest remembered
//! forgotten first.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::util::choice::Choice;
use crate::util::fingerprint::PreHashed;

/// How long a prefix stays cached after its last answer (OpenAI: 5 to 10 minutes of
/// inactivity).
pub(super) const TTL: Duration = Duration::from_secs(5 * 60);
/// Most prefixes remembered.
pub(super) const MAX_PREFIXES: usize = 100_000;

/// What the simulator reports as `cached_tokens` (see `--prefix-cache`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PrefixCacheModel {
    /// A provider's cache: a prefix of ≥ 1,024 tokens answered in the last 5 minutes, in steps
    /// of 128 tokens.
    #[default]
    Recent,
    /// Every leading system message, always (the simulator's model before `recent`).
    System,
    /// Nothing is ever cached.
    Off,
}

impl Choice for PrefixCacheModel {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            PrefixCacheModel::Recent,
            "recent",
            "a prefix of >= 1,024 tokens answered in the last 5 minutes (OpenAI's cache)",
        ),
        (
            PrefixCacheModel::System,
            "system",
            "every leading system message, always",
        ),
        (PrefixCacheModel::Off, "off", "nothing is cached"),
    ];
}

/// Prefix hashes and when each was last answered.
#[derive(Default)]
pub(super) struct PrefixCache {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    answered: HashMap<u64, Instant, PreHashed>,
    /// Each remembered prefix once, oldest first (the eviction order).
    order: VecDeque<u64>,
}

impl PrefixCache {
    /// Whether a request with this prefix arriving at `now` is served from the cache.
    pub(super) fn warm(&self, prefix: u64, now: Instant) -> bool {
        let Ok(inner) = self.inner.lock() else {
            return false;
        };
        inner
            .answered
            .get(&prefix)
            .is_some_and(|&at| now.saturating_duration_since(at) <= TTL)
    }

    /// A request with this prefix was answered at `now`.
    pub(super) fn answered(&self, prefix: u64, now: Instant) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(at) = inner.answered.get_mut(&prefix) {
            *at = (*at).max(now);
            return;
        }
        inner.answered.insert(prefix, now);
        inner.order.push_back(prefix);
        while inner.answered.len() > MAX_PREFIXES {
            match inner.order.pop_front() {
                Some(oldest) => inner.answered.remove(&oldest),
                None => break,
            };
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().answered.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_warm_once_answered_for_five_minutes() {
        let cache = PrefixCache::default();
        let t0 = Instant::now();
        assert!(!cache.warm(1, t0), "never answered");
        cache.answered(1, t0);
        assert!(cache.warm(1, t0 + Duration::from_secs(299)));
        assert!(!cache.warm(2, t0), "another prefix");
        assert!(!cache.warm(1, t0 + TTL + Duration::from_secs(1)), "expired");
        // Each answer keeps it warm for five more minutes.
        cache.answered(1, t0 + Duration::from_secs(200));
        assert!(cache.warm(1, t0 + Duration::from_secs(450)));
    }

    #[test]
    fn memory_is_bounded_oldest_forgotten_first() {
        let cache = PrefixCache::default();
        let t0 = Instant::now();
        for prefix in 0..(MAX_PREFIXES as u64 + 10) {
            cache.answered(prefix, t0);
        }
        assert_eq!(cache.len(), MAX_PREFIXES);
        assert!(!cache.warm(0, t0), "the oldest went first");
        assert!(cache.warm(MAX_PREFIXES as u64 + 9, t0));
    }
}
