//! Batch lines no record holds, kept beside the output in `OUTPUT.unmatched.jsonl` instead of
//! being dropped: paid answers — a second, different answer for a row in its batch's files, or
//! an answer whose row changed or left the input while its batch ran — and error lines for a
//! row beside its answer (nothing paid: kept so that every contradiction is on record by row).
//! Each line is `{"batch_id", "custom_id", "why", "paid", "cost_usd", "line"}` with the batch
//! file's line as it came; the run says how many there are, for which rows (the first ten),
//! and what they cost.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::events::notice;

/// Rows named in the run's message before "and N more".
const NAMED: usize = 10;

/// Why a batch line is on no record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    /// A second, different answer for a row in its batch's files.
    SecondAnswer,
    /// An error line for a row beside its answer (nothing paid: only said).
    ErrorBeside,
    /// An answer whose row changed or left the input since it was submitted.
    Unclaimed,
    /// A line whose `custom_id` names no row of its batch.
    Foreign,
}

impl Why {
    fn text(self) -> &'static str {
        match self {
            Why::SecondAnswer => "a second, different answer for this row in its batch's files (the first is its record)",
            Why::ErrorBeside => "an error line for this row beside its answer (the answer is its record)",
            Why::Unclaimed => "no row of the input has this id and request any more (changed or removed since it was submitted)",
            Why::Foreign => "its custom_id names no row of its batch",
        }
    }
}

/// Lines to keep, gathered over one collection and appended at its end.
pub(super) struct Kept {
    path: PathBuf,
    lines: Vec<u8>,
    /// (custom_id, why) of each line, to say.
    rows: Vec<(String, Why)>,
    cost: f64,
    unpriced: bool,
    /// Paid answers among the lines.
    paid: usize,
}

/// Where the paid answers no record holds are kept for `output`.
pub(super) fn path_for(output: &Path) -> PathBuf {
    crate::paths::suffixed(output, ".unmatched.jsonl")
}

impl Kept {
    pub(super) fn new(output: &Path) -> Self {
        Kept {
            path: path_for(output),
            lines: Vec::new(),
            rows: Vec::new(),
            cost: 0.0,
            unpriced: false,
            paid: 0,
        }
    }

    /// Notes a line: `answer` when it holds an answer (paid), `cost` when that is priced.
    pub(super) fn add(
        &mut self,
        batch_id: &str,
        (custom_id, why, answer): (&str, Why, bool),
        line: &[u8],
        cost: Option<f64>,
    ) {
        let paid = why != Why::ErrorBeside && (why != Why::Foreign || answer);
        match cost {
            Some(cost) => self.cost += cost,
            None if paid => self.unpriced = true,
            None => {}
        }
        self.paid += usize::from(paid);
        let head = serde_json::json!({
            "batch_id": batch_id,
            "custom_id": custom_id,
            "why": why.text(),
            "paid": paid,
            "cost_usd": cost,
        })
        .to_string();
        // The batch line goes in as it came (it is JSON: it was parsed to find its row).
        self.lines
            .extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        self.lines.extend_from_slice(b",\"line\":");
        self.lines.extend_from_slice(line);
        self.lines.extend_from_slice(b"}\n");
        self.rows.push((custom_id.to_string(), why));
    }

    /// Appends the kept lines to the file (synced) and says what they are.
    pub(super) fn finish(self) -> Result<(), Error> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let failed = |e| {
            Error::io(
                format!(
                    "cannot keep {} paid batch answers that no record holds in {} (check the folder's free space and permissions; the batch state is kept, the same command tries again)",
                    self.rows.len(),
                    self.path.display()
                ),
                e,
            )
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(failed)?;
        file.write_all(&self.lines).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        let cost = if self.unpriced {
            format!("at least {}", crate::util::human::format_usd(self.cost))
        } else {
            crate::util::human::format_usd(self.cost)
        };
        for why in [
            Why::SecondAnswer,
            Why::Unclaimed,
            Why::ErrorBeside,
            Why::Foreign,
        ] {
            let rows: Vec<&str> = self
                .rows
                .iter()
                .filter(|(_, w)| *w == why)
                .map(|(id, _)| id.as_str())
                .collect();
            if rows.is_empty() {
                continue;
            }
            let what = match why {
                Why::SecondAnswer => "rows have a second, different answer in their batch's files (the first is the record; check both)",
                Why::Unclaimed => "paid answers match no row of the input any more (their rows changed or were removed while their batch ran)",
                Why::ErrorBeside => "rows are in both the output and the error file of their batch (their answers are their records; the error lines were not paid for)",
                Why::Foreign => "lines of the batches' files name a custom_id their batch did not hold",
            };
            notice!("{} {what}: {}", rows.len(), named(rows.into_iter()));
        }
        let paid = self.paid;
        notice!(
            "every such line is kept in {} ({paid} paid answers no record holds: {cost} at batch prices)",
            self.path.display()
        );
        Ok(())
    }
}

/// The first [`NAMED`] ids, then how many more.
fn named<'a>(ids: impl Iterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.collect();
    let mut text = ids[..ids.len().min(NAMED)].join(", ");
    if ids.len() > NAMED {
        text.push_str(&format!(" and {} more", ids.len() - NAMED));
    }
    text
}

/// The paid answers kept in `path` and their priced cost (0 and 0 when there is no such file). A
/// line written twice (a run killed after keeping it, before its batch left the state,
/// collects it again) counts once; a torn line is passed over.
pub(super) fn totals(path: &Path) -> Result<(u64, f64), Error> {
    let unreadable = |e| Error::io(format!("cannot read {}", path.display()), e);
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0.0)),
        Err(e) => return Err(unreadable(e)),
    };
    let mut seen = std::collections::HashSet::new();
    let mut cost = 0.0;
    for line in std::io::BufRead::lines(std::io::BufReader::new(file)) {
        let line = line.map_err(unreadable)?;
        let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        let key = (
            value["batch_id"].to_string(),
            value["custom_id"].to_string(),
            value["line"]["id"].to_string(),
        );
        if value["paid"] == serde_json::Value::Bool(true) && seen.insert(key) {
            cost += value["cost_usd"].as_f64().unwrap_or(0.0);
        }
    }
    Ok((seen.len() as u64, cost))
}
