//! Rows held by batches, matched to the input's rows by identity — the row's `custom_id` and
//! its request fingerprint, as live resume matches records — never by row number: a row
//! inserted into or deleted from the input while batches run moves no answer to another row
//! and buys no row a second time.
//!
//! A row with an explicit id claims the batch row with its `custom_id` and fingerprint. An
//! anonymous row's id is its row number, which an edit shifts: it claims the batch row with
//! its `custom_id` and fingerprint if there is one, else the first unclaimed anonymous batch
//! row with its fingerprint (identical requests have interchangeable answers).

use std::collections::HashMap;

/// Batch rows to be claimed, each with a key of the caller's (`K`).
pub(super) struct Claims<K> {
    /// By fingerprint: (custom_id, key, claimed), in the order they were added.
    by_fingerprint: HashMap<String, Vec<(String, K, bool)>>,
    unclaimed: usize,
}

impl<K: Copy> Claims<K> {
    pub(super) fn new() -> Self {
        Claims {
            by_fingerprint: HashMap::new(),
            unclaimed: 0,
        }
    }

    /// Adds a batch row.
    pub(super) fn add(&mut self, custom_id: &str, fingerprint: &str, key: K) {
        self.by_fingerprint
            .entry(fingerprint.to_string())
            .or_default()
            .push((custom_id.to_string(), key, false));
        self.unclaimed += 1;
    }

    /// Batch rows no input row claimed yet.
    pub(super) fn unclaimed(&self) -> usize {
        self.unclaimed
    }

    /// Whether some batch row not claimed yet has this request fingerprint.
    pub(super) fn has_request(&self, fingerprint: &str) -> bool {
        self.by_fingerprint
            .get(fingerprint)
            .is_some_and(|rows| rows.iter().any(|(_, _, claimed)| !claimed))
    }

    /// The batch row the input row (`custom_id`, whether its id is explicit, its request's
    /// `fingerprint`) stands for, claimed now; `None` when it has none.
    pub(super) fn claim(
        &mut self,
        custom_id: &str,
        explicit: bool,
        fingerprint: &str,
    ) -> Option<K> {
        let candidates = self.by_fingerprint.get_mut(fingerprint)?;
        let exact = candidates
            .iter()
            .position(|(id, _, claimed)| !claimed && id == custom_id);
        let found = match exact {
            Some(i) => Some(i),
            None if !explicit => candidates
                .iter()
                .position(|(id, _, claimed)| !claimed && is_anonymous(id)),
            None => None,
        }?;
        let candidate = &mut candidates[found];
        candidate.2 = true;
        self.unclaimed -= 1;
        Some(candidate.1)
    }
}

/// Whether a `custom_id` is an anonymous row's (its row number, `N` or `N#SLOT`).
fn is_anonymous(custom_id: &str) -> bool {
    let number = custom_id.split_once('#').map_or(custom_id, |(row, _)| row);
    !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_ids_claim_their_own_row_and_anonymous_rows_claim_by_request() {
        let mut claims = Claims::new();
        claims.add("r1", "f1", 1);
        claims.add("r2", "f2", 2);
        claims.add("5", "same", 5);
        claims.add("9", "same", 9);
        // An explicit id claims only its own custom_id with its own request.
        assert_eq!(claims.claim("r2", true, "f1"), None);
        assert_eq!(claims.claim("r2", true, "f2"), Some(2));
        assert_eq!(claims.claim("r2", true, "f2"), None);
        // Anonymous rows shifted by an insert still find their batch rows, exact id first.
        assert_eq!(claims.claim("10", false, "same"), Some(5));
        assert_eq!(claims.claim("9", false, "same"), Some(9));
        assert_eq!(claims.claim("11", false, "same"), None);
        // An anonymous row never takes an explicit row's batch row.
        assert_eq!(claims.claim("3", false, "f1"), None);
        assert_eq!(claims.unclaimed(), 1);
        assert!(is_anonymous("12#1") && !is_anonymous("r1") && !is_anonymous("#1"));
    }
}
