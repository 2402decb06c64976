//! Warnings that repeat: the first few of each kind are printed, the rest counted, so a night of
//! identical row failures does not flood stderr. Kinds are messages with their numbers removed
//! (`util::error_kind`); the summary tells how many were not shown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::util::error_kind::normalize_error;

/// Printed per kind before the rest are only counted.
pub(crate) const SHOWN_PER_KIND: u32 = 3;
/// Kinds remembered; beyond this, every new kind is only counted.
const MAX_KINDS: usize = 1_000;

/// Decides which warnings are printed.
#[derive(Debug, Default)]
pub(crate) struct Repeats {
    seen: Mutex<HashMap<String, u32>>,
    suppressed: AtomicU64,
}

impl Repeats {
    /// Whether a warning with this message should be printed now.
    pub(crate) fn show(&self, message: &str) -> bool {
        let kind = normalize_error(message);
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let known = seen.len();
        let count = match seen.get_mut(&kind) {
            Some(n) => n,
            None if known < MAX_KINDS => seen.entry(kind).or_insert(0),
            None => {
                self.suppressed.fetch_add(1, Relaxed);
                return false;
            }
        };
        *count += 1;
        if *count > SHOWN_PER_KIND {
            self.suppressed.fetch_add(1, Relaxed);
            return false;
        }
        true
    }

    /// Warnings not printed.
    pub(crate) fn suppressed(&self) -> u64 {
        self.suppressed.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_of_each_kind_are_shown() {
        let r = Repeats::default();
        let shown = (0..10)
            .filter(|n| r.show(&format!("HTTP 400: row {n} is bad")))
            .count();
        assert_eq!(shown, SHOWN_PER_KIND as usize);
        assert!(r.show("HTTP 500: another kind"));
        assert_eq!(r.suppressed(), 10 - SHOWN_PER_KIND as u64);
    }
}
