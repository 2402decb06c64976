//! The state file of a `--via batch` run, `OUTPUT.batch.json` next to the output: which batches
//! were submitted (input file id, batch id, last status), which rows each one holds (unit number —
//! the row number, or with several models `row × models + slot` —, `custom_id`, fingerprint,
//! how many batches the row has been through) and which rows wait to be sent again. It is what makes a batch run resumable without paying twice: a re-run reads it and
//! polls the batches it names instead of uploading their rows again.
//!
//! Written atomically: a temporary file in the same folder, fsynced, renamed over the state, and
//! the folder fsynced — on disk there is always the old state or the new one, never a mix. It
//! holds no key and no URL user-info. It is removed once every batch it names is collected.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::money::spent::{Carried, Spent};

/// The version written; an unknown version is refused rather than misread.
const VERSION: u32 = 1;

/// Everything a later run needs to collect what this one submitted.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(super) struct State {
    pub version: u32,
    /// The API base URL the batches live at, as it may be shown (user-info redacted).
    pub endpoint: String,
    /// The batches went to a `--dry-run` simulator (gone with its process).
    #[serde(default)]
    pub simulated: bool,
    /// Batches submitted (or being submitted) and not collected yet.
    pub batches: Vec<Entry>,
    /// Rows to send again (their batch expired, failed, was cancelled, or the error file
    /// reported a transient error), with the number of batches each has been through.
    #[serde(default)]
    pub retry: BTreeMap<u64, u32>,
    /// Tokens and cost of rows' answers that failed `--json-schema` (paid for, no record holds
    /// them yet), by unit: added to the row's record when it is written.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spent: BTreeMap<u64, Spent>,
    /// Models each row went to (`--model`'s list; 0 in states written before it was kept: one).
    /// The unit numbers above depend on it.
    #[serde(default)]
    pub models: u64,
    /// `--model`'s list the batches were submitted with (empty in states written before it
    /// was kept): a run with another list may not collect them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_list: Vec<String>,
    /// The entries' status is `creating` from before a batch create is sent until its answer
    /// is saved, so an entry still `uploaded` certainly has no batch. States written before
    /// that mark lack it: their `uploaded` entries may have one.
    #[serde(default)]
    pub marks_creating: bool,
}

/// One batch, from before its upload until it is collected.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct Entry {
    /// Set once the input file is uploaded.
    pub input_file_id: Option<String>,
    /// Set once the batch is created.
    pub batch_id: Option<String>,
    /// The last status seen (`uploading`, `uploaded`, `creating` — a create was sent, its
    /// answer not saved —, then the API's).
    pub status: String,
    /// Unix seconds when the batch was submitted (for the elapsed time shown).
    pub submitted_at: u64,
    /// Worst-case cost of its rows at batch prices (for `--max-cost`).
    #[serde(default)]
    pub worst_case_usd: f64,
    /// The rows it holds.
    pub rows: Vec<RowRef>,
}

/// A row in a batch: `[unit, custom_id, fingerprint, attempts]` (attempts: the batches it has
/// been through, this one included). The unit is the row number with one model (and the
/// `custom_id` the row id); with several, `row × models + slot` (and `ID#SLOT`: `split::custom_id`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct RowRef(pub u64, pub String, pub String, pub u32);

impl RowRef {
    pub(super) fn row(&self) -> u64 {
        self.0
    }
    pub(super) fn id(&self) -> &str {
        &self.1
    }
    pub(super) fn fingerprint(&self) -> &str {
        &self.2
    }
    pub(super) fn attempts(&self) -> u32 {
        self.3
    }
}

/// Where the state of the run writing `output` lives.
pub(super) fn path_for(output: &Path) -> PathBuf {
    crate::paths::suffixed(output, ".batch.json")
}

impl State {
    /// A new state for batches at `endpoint`, of rows sent to the models of `model_list`.
    pub(super) fn new(endpoint: String, simulated: bool, model_list: &[String]) -> Self {
        State {
            version: VERSION,
            endpoint,
            simulated,
            batches: Vec::new(),
            retry: BTreeMap::new(),
            spent: BTreeMap::new(),
            models: model_list.len().max(1) as u64,
            model_list: model_list.to_vec(),
            marks_creating: true,
        }
    }

    /// Whether the batches were submitted with `model_list` (`--model`'s list): the same
    /// names in the same order (only the number of models is known of older states).
    pub(super) fn same_models(&self, model_list: &[String]) -> bool {
        if self.model_list.is_empty() {
            return self.models_per_row() == model_list.len().max(1) as u64;
        }
        self.model_list == model_list
    }

    /// Whether an entry has a batch at the provider, or may have one (a create was sent).
    pub(super) fn may_have_batch(&self, entry: &Entry) -> bool {
        entry.batch_id.is_some() || self.maybe_created(entry)
    }

    /// Entries that may or may not have a batch at the provider: a create was sent and its
    /// answer not saved (in states from before `creating` was marked: every uploaded entry
    /// without a batch id).
    pub(super) fn maybe_created(&self, entry: &Entry) -> bool {
        entry.batch_id.is_none()
            && (entry.status == "creating" || !self.marks_creating && entry.status == "uploaded")
    }

    /// Models per row the unit numbers were made for.
    pub(super) fn models_per_row(&self) -> u64 {
        self.models.max(1)
    }

    /// The state at `path`, `None` when there is none.
    pub(super) fn load(path: &Path) -> Result<Option<Self>, Error> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(Error::io(
                    format!("cannot read the batch state {}", path.display()),
                    e,
                ))
            }
        };
        let mut state: State = serde_json::from_slice(&text).map_err(|e| {
            Error::Config(format!(
                "the batch state {} is not readable ({e}); it names batches that may still be running at the provider: fix it, or move it away to submit every unfinished row again (batches it names would be paid twice)",
                path.display()
            ))
        })?;
        if !state.marks_creating {
            // From here on `uploaded` means "no create sent": older entries may have one.
            for entry in &mut state.batches {
                if entry.batch_id.is_none() && entry.status == "uploaded" {
                    entry.status = "creating".into();
                }
            }
            state.marks_creating = true;
        }
        if state.version != VERSION {
            return Err(Error::Config(format!(
                "the batch state {} has version {} (this promptbatch writes {VERSION}); use the promptbatch that wrote it to collect its batches",
                path.display(),
                state.version
            )));
        }
        Ok(Some(state))
    }

    /// Writes the state atomically (temporary file, fsync, rename, fsync of the folder); with no
    /// batches and no rows to retry left, removes it instead.
    pub(super) fn save(&self, path: &Path) -> Result<(), Error> {
        if self.batches.is_empty() && self.retry.is_empty() && self.spent.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
                    format!("cannot remove the batch state {}", path.display()),
                    e,
                )),
                _ => sync_folder(path),
            };
        }
        let tmp = crate::paths::suffixed(path, ".tmp");
        let failed = |e| {
            Error::io(
                format!(
                    "cannot write the batch state {} (check the folder's free space and permissions)",
                    path.display()
                ),
                e,
            )
        };
        let text = serde_json::to_vec(self).map_err(|e| failed(std::io::Error::other(e)))?;
        let mut file = std::fs::File::create(&tmp).map_err(failed)?;
        file.write_all(&text).map_err(failed)?;
        file.write_all(b"\n").map_err(failed)?;
        file.sync_all().map_err(failed)?;
        drop(file);
        std::fs::rename(&tmp, path).map_err(failed)?;
        sync_folder(path)
    }

    /// What answers no record holds yet cost (`spent`; an unpriced one counts 0).
    pub(super) fn unrecorded_spend_usd(&self) -> f64 {
        self.spent.values().filter_map(|s| s.cost).sum()
    }

    /// Drops the spend of rows that are neither in a batch nor waiting to be sent again (they
    /// left the input, or their unit numbers changed with `--model`'s list): no record will
    /// hold it, so the run says how much that is.
    pub(super) fn drop_spent_not_in_flight(&mut self) {
        let in_flight = self.rows_in_flight();
        let retry = &self.retry;
        let mut dropped = Spent::default();
        let mut rows = 0u64;
        self.spent.retain(|unit, spent| {
            let keep = in_flight.contains(*unit) || retry.contains_key(unit);
            if !keep {
                rows += 1;
                dropped.merge(spent);
            }
            keep
        });
        Carried::say_unrecorded(rows, &dropped);
    }

    /// Row numbers held by batches not collected yet.
    pub(super) fn rows_in_flight(&self) -> crate::input::RowSet {
        let mut rows = crate::input::RowSet::default();
        for entry in &self.batches {
            for r in &entry.rows {
                rows.insert(r.row());
            }
        }
        rows
    }
}

/// Makes a rename or removal in `path`'s folder durable.
fn sync_folder(path: &Path) -> Result<(), Error> {
    let folder = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    if let Ok(dir) = std::fs::File::open(folder) {
        // Not every platform can fsync a folder; the rename itself is atomic either way.
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_and_disappears_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("out.jsonl"));
        assert!(path.ends_with("out.jsonl.batch.json"));
        assert_eq!(State::load(&path).unwrap(), None);
        let mut state = State::new("http://127.0.0.1:1/v1/".into(), false, &["m".into()]);
        state.batches.push(Entry {
            input_file_id: Some("file-1".into()),
            batch_id: None,
            status: "uploaded".into(),
            submitted_at: 1,
            worst_case_usd: 0.5,
            rows: vec![RowRef(3, "a".into(), "f".into(), 1)],
        });
        state.retry.insert(9, 2);
        state.save(&path).unwrap();
        let loaded = State::load(&path).unwrap().unwrap();
        assert_eq!(loaded, state);
        assert!(loaded.rows_in_flight().contains(3));
        assert!(!loaded.rows_in_flight().contains(9));
        assert!(!crate::paths::suffixed(&path, ".tmp").exists());
        state.batches.clear();
        state.retry.clear();
        state.save(&path).unwrap();
        assert!(!path.exists());
        // Spend waiting for a record keeps the state; it stays only for rows still to be sent.
        let usage = crate::api::TokenUsage {
            total: 7,
            ..Default::default()
        };
        for unit in [4, 5, 6] {
            state.spent.entry(unit).or_default().add(&usage, Some(0.5));
        }
        state.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap().unwrap().spent.len(), 3);
        state.retry.insert(5, 1);
        state.batches.push(Entry {
            input_file_id: Some("file-2".into()),
            batch_id: Some("batch-2".into()),
            status: "in_progress".into(),
            submitted_at: 1,
            worst_case_usd: 0.0,
            rows: vec![RowRef(6, "f".into(), "f".into(), 2)],
        });
        state.drop_spent_not_in_flight();
        assert_eq!(state.spent.keys().copied().collect::<Vec<_>>(), [5, 6]);
        assert_eq!(state.unrecorded_spend_usd(), 1.0);
        state.batches.clear();
        state.retry.clear();
        state.spent.clear();
        state.save(&path).unwrap();
        assert!(!path.exists());
        std::fs::write(&path, "{not json").unwrap();
        let err = State::load(&path).unwrap_err().to_string();
        assert!(err.contains("not readable"), "{err}");
    }
}
