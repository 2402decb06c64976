//! Resume: the output file is the checkpoint. An existing output is scanned once into an index
//! of its records; each input row then *claims* the earlier record with its identity, and is
//! skipped when that record is ok (or an error, with --keep-errors) and its request fingerprint
//! matches what would be sent now.
//!
//! Row identity: the explicit id when the input has one; otherwise the request fingerprint plus
//! its occurrence number among identical requests (so inserting or deleting rows never shifts
//! another row's identity). Earlier records whose `id` equals their `row` may be of either kind,
//! so they are indexed both ways; their occurrence number is their rank by `row` among the
//! earlier records with the same fingerprint.
//!
//! A first pass over the input claims the done rows and yields their row numbers (one bit per
//! row); the index is then dropped, and the run skips those rows by number. Before the run
//! appends, the output is rewritten atomically (temporary file in the same folder, fsync, rename)
//! without the records that will be redone and without a torn last line, so the output never
//! holds two records for one row. Memory during the plan: about 50 bytes per earlier record.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::Error;
use crate::fingerprint::{self, fnv1a, PreHashed};
use crate::human::group;
use crate::input::{Row, RowSet};
use crate::output::format;
use crate::output::read::{file_ends_with_newline, Records, Torn};
use crate::output::record::{Record, Status};

/// The fields of an earlier record that resuming reads (the rest is skipped, not allocated).
#[derive(Debug, Deserialize)]
struct Earlier {
    id: String,
    row: u64,
    status: Status,
    #[serde(default)]
    cost_usd: Option<f64>,
    #[serde(default)]
    fingerprint: String,
}

/// One earlier record, as far as resuming needs it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    fingerprint: u64,
    ok: bool,
    claimed: bool,
    cost: f64,
}

/// What a row's claim decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// An earlier record covers it: do not send.
    Done,
    /// No earlier record.
    New,
    /// An earlier record exists but the request changed.
    Changed,
    /// An earlier error record: send again.
    RetryError,
}

/// Counts of a resume plan (from a first pass over the input).
#[derive(Debug, Default, Clone, Copy)]
pub struct Plan {
    pub rows: u64,
    pub done: u64,
    pub changed: u64,
    pub retried_errors: u64,
    /// Earlier error records kept by --keep-errors.
    pub kept_errors: u64,
    /// Cost of the records kept.
    pub spent: f64,
}

impl Plan {
    /// Rows that will be sent.
    pub fn to_send(&self) -> u64 {
        self.rows - self.done
    }

    /// The one line printed before a resumed run starts.
    pub fn describe(&self) -> String {
        let mut notes = Vec::new();
        if self.retried_errors > 0 {
            notes.push(format!(
                "{} earlier errors retried",
                group(self.retried_errors)
            ));
        }
        if self.changed > 0 {
            notes.push(format!("{} changed rows re-sent", group(self.changed)));
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        format!(
            "resuming: {} of {} rows done, {} to send{notes}",
            group(self.done),
            group(self.rows),
            group(self.to_send())
        )
    }
}

/// The index of an existing output.
#[derive(Debug)]
pub struct ResumeIndex {
    path: PathBuf,
    entries: Vec<Entry>,
    keys: HashMap<u64, u32, PreHashed>,
    /// Next occurrence number per fingerprint, for fingerprints of earlier anonymous records.
    occurrences: HashMap<u64, u32, PreHashed>,
    keep_errors: bool,
    /// A torn last record that the rewrite drops.
    torn: Option<Torn>,
    /// The last record lacks its line ending (the rewrite adds it).
    unterminated: bool,
}

fn explicit_key(id: &str) -> u64 {
    let mut bytes = Vec::with_capacity(id.len() + 3);
    bytes.extend_from_slice(b"id\0");
    bytes.extend_from_slice(id.as_bytes());
    fnv1a(&bytes)
}

fn anonymous_key(fingerprint: u64, occurrence: u32) -> u64 {
    let mut bytes = [0u8; 17];
    bytes[0] = b'a';
    bytes[1..9].copy_from_slice(&fingerprint.to_le_bytes());
    bytes[9..13].copy_from_slice(&occurrence.to_le_bytes());
    fnv1a(&bytes)
}

impl ResumeIndex {
    /// Scans an existing output. A torn last line is noted (and later dropped); any other
    /// unreadable record is an error naming `file:line`.
    pub fn scan(path: &Path, keep_errors: bool) -> Result<Self, Error> {
        let mut index = ResumeIndex {
            path: path.to_path_buf(),
            entries: Vec::new(),
            keys: HashMap::default(),
            occurrences: HashMap::default(),
            keep_errors,
            torn: None,
            unterminated: !file_ends_with_newline(path),
        };
        let mut anonymous: Vec<(u64, u64, u32)> = Vec::new();
        let mut records = Records::<Earlier>::open(path)?;
        for item in &mut records {
            let (_, record) = item.map_err(suggest_fresh)?;
            let i = index.entries.len() as u32;
            let fp = fingerprint::parse(&record.fingerprint).unwrap_or(0);
            index.entries.push(Entry {
                fingerprint: fp,
                ok: record.status == Status::Ok,
                claimed: false,
                cost: record.cost_usd.unwrap_or(0.0),
            });
            index.keys.insert(explicit_key(&record.id), i);
            if record.id == record.row.to_string() {
                anonymous.push((fp, record.row, i));
            }
        }
        index.torn = records.torn().cloned();
        anonymous.sort_unstable();
        let mut previous = None;
        let mut occurrence = 0u32;
        for (fp, _, i) in anonymous {
            occurrence = if previous == Some(fp) {
                occurrence + 1
            } else {
                0
            };
            previous = Some(fp);
            index.keys.insert(anonymous_key(fp, occurrence), i);
            index.occurrences.insert(fp, 0);
        }
        Ok(index)
    }

    /// Number of records in the earlier output.
    pub fn records(&self) -> usize {
        self.entries.len()
    }

    /// The torn last record that the rewrite drops, if there was one.
    pub fn torn(&self) -> Option<&Torn> {
        self.torn.as_ref()
    }

    /// Decides whether `row` is already done, claiming its earlier record if so.
    pub fn claim(&mut self, row: &Row) -> Claim {
        let fp = fingerprint::parse(row.fingerprint()).unwrap_or(0);
        let key = if row.explicit_id {
            explicit_key(&row.id)
        } else {
            match self.occurrences.get_mut(&fp) {
                Some(next) => {
                    *next += 1;
                    anonymous_key(fp, *next - 1)
                }
                None => return Claim::New,
            }
        };
        let Some(&i) = self.keys.get(&key) else {
            return Claim::New;
        };
        let entry = &mut self.entries[i as usize];
        if entry.claimed {
            return Claim::New;
        }
        if entry.fingerprint != fp {
            return Claim::Changed;
        }
        if !entry.ok && !self.keep_errors {
            return Claim::RetryError;
        }
        entry.claimed = true;
        Claim::Done
    }

    /// Claims every row of a pass over the input; returns the plan and the rows that are done.
    pub fn plan<I>(&mut self, rows: I) -> Result<(Plan, RowSet), Error>
    where
        I: Iterator<Item = Result<Row, Error>>,
    {
        let mut plan = Plan::default();
        let mut done = RowSet::default();
        for row in rows {
            let row = row?;
            plan.rows += 1;
            match self.claim(&row) {
                Claim::Done => {
                    plan.done += 1;
                    done.insert(row.row);
                }
                Claim::Changed => plan.changed += 1,
                Claim::RetryError => plan.retried_errors += 1,
                Claim::New => {}
            }
        }
        for entry in self.entries.iter().filter(|e| e.claimed) {
            plan.spent += entry.cost;
            if !entry.ok {
                plan.kept_errors += 1;
            }
        }
        Ok((plan, done))
    }

    /// Whether the output must be rewritten before appending (records to drop, a torn line).
    pub fn needs_rewrite(&self) -> bool {
        self.torn.is_some() || self.unterminated || self.entries.iter().any(|e| !e.claimed)
    }

    /// Rewrites the output atomically with only the claimed records, when anything must go.
    pub fn rewrite_if_needed(&self) -> Result<(), Error> {
        if self.needs_rewrite() {
            self.rewrite()?;
        }
        Ok(())
    }

    fn rewrite(&self) -> Result<(), Error> {
        let path = &self.path;
        let tmp = temporary_path(path);
        let io = |what: &str, e| Error::io(format!("{what} {} while resuming", tmp.display()), e);
        let mut out =
            std::io::BufWriter::new(File::create(&tmp).map_err(|e| io("cannot create", e))?);
        let mut encoder = format::for_path(path);
        let mut buf = encoder.header();
        for (item, entry) in Records::<Record>::open(path)?.zip(&self.entries) {
            let (_, record) = item?;
            if entry.claimed {
                encoder.encode(&record, &mut buf);
            }
            if buf.len() >= 1 << 20 {
                out.write_all(&buf).map_err(|e| io("cannot write", e))?;
                buf.clear();
            }
        }
        out.write_all(&buf).map_err(|e| io("cannot write", e))?;
        let file = out
            .into_inner()
            .map_err(|e| io("cannot write", e.into_error()))?;
        file.sync_all().map_err(|e| io("cannot sync", e))?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(|e| io("cannot rename", e))?;
        if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(dir) = File::open(dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

/// Adds the way out to an unreadable-output error: start over, keeping the file as a backup.
fn suggest_fresh(error: Error) -> Error {
    match error {
        Error::Input { location, message } => Error::Input {
            location,
            message: format!(
                "{message}; or pass --fresh to start over (the file is kept as OUTPUT.bak)"
            ),
        },
        other => other,
    }
}

/// The temporary file a rewrite goes through (same folder, so the rename is atomic).
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".resume-tmp");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_line() {
        let plan = Plan {
            rows: 10_000,
            done: 8_231,
            retried_errors: 12,
            ..Plan::default()
        };
        assert_eq!(
            plan.describe(),
            "resuming: 8,231 of 10,000 rows done, 1,769 to send (12 earlier errors retried)"
        );
    }
}
