//! What the progress display shows of the pacing: the note, and copying it to the counters
//! only when it changed.

use std::sync::atomic::Ordering::Relaxed;

use tokio::time::Instant;

use crate::progress::Counters;

use super::state::State;
use super::PaceNote;

/// The pace note and what of it the progress display has not yet heard of.
#[derive(Debug, Default)]
pub(super) struct Display {
    pub(super) note: PaceNote,
    /// What of `note` changed since it was last copied to the display: its reason (a clone,
    /// rare) or only its rate (a copy). Nothing is cloned for an answer that changes neither.
    pub(super) why_changed: bool,
    pub(super) rate_changed: bool,
    /// A pool pause began or was extended since the display last heard of it.
    pub(super) pause_changed: bool,
}

impl State {
    /// Copies what the progress display shows into the counters: two stores, and the note only
    /// when it changed (its reason cloned only when that changed).
    pub(super) fn publish(&mut self, counters: &Counters) {
        counters
            .rate_limited
            .store(self.totals.rate_limited, Relaxed);
        counters
            .paused_ms
            .store(self.totals.paused.as_millis() as u64, Relaxed);
        let limit = self.pace.announced.or(self.pace.learned).unwrap_or(0.0) * 60.0;
        counters.server_limit_rpm.store(limit.to_bits(), Relaxed);
        if std::mem::take(&mut self.display.pause_changed) {
            if let Some(until) = self.pause.paused_until {
                counters.paused_for(until.saturating_duration_since(Instant::now()));
            }
        }
        if !(self.display.why_changed || self.display.rate_changed) {
            return;
        }
        if let Ok(mut shown) = counters.pace.lock() {
            if self.display.why_changed {
                shown.clone_from(&self.display.note);
            } else {
                shown.per_minute = self.display.note.per_minute;
            }
        }
        self.display.why_changed = false;
        self.display.rate_changed = false;
    }

    /// Sets the note's reason (and rate).
    pub(super) fn set_why(&mut self, why: String) {
        self.display.note.why = why;
        self.display.why_changed = true;
        self.show_pace();
    }

    /// Updates the note's rate to the pace now.
    pub(super) fn show_pace(&mut self) {
        let per_minute = self.pace().map(|p| p * 60.0);
        if self.display.note.per_minute != per_minute {
            self.display.note.per_minute = per_minute;
            self.display.rate_changed = true;
        }
    }
}
