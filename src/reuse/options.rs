//! [`ReuseOptions`]: paying once for each distinct request — duplicates inside a run answered
//! once (`--no-dedup` turns it off), and answers taken from earlier outputs (`--reuse`).

use std::path::PathBuf;

/// How a run avoids paying twice for the same request. The default answers each distinct
/// request of a run once and reuses no other output.
#[derive(Debug, Clone)]
pub struct ReuseOptions {
    /// Rows whose requests are identical (same model, messages and options: the request
    /// fingerprint) are sent once; each other one gets a record with the same answer,
    /// `duplicate_of` the row that paid, and cost 0. On by default, whatever the temperature
    /// (see the README); off to sample several answers to one request on purpose.
    pub dedup: bool,
    /// Earlier outputs (JSONL, CSV, Parquet) whose ok answers of identical requests are taken
    /// instead of sending (`reused_from`, cost 0). Error records and, for a run against a real
    /// API, simulated answers are never taken.
    pub from: Vec<PathBuf>,
}

impl Default for ReuseOptions {
    fn default() -> Self {
        ReuseOptions {
            dedup: true,
            from: Vec::new(),
        }
    }
}

impl ReuseOptions {
    /// Whether any answer may come from a record instead of a request.
    pub fn any(&self) -> bool {
        self.dedup || !self.from.is_empty()
    }
}
