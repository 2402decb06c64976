//! Duplicate ids in bounded memory.
//!
//! Each explicit id becomes a 128-bit key (two independently keyed SipHash values: two different
//! ids share a key with probability 2⁻¹²⁸ per pair, about 10⁻²³ for 10⁸ ids — exact in practice).
//! The first [`MEMORY_IDS`] keys of a reading go into an in-memory set (at most 2 MB). When a
//! file input has more ids than that, the set is dropped and one *pre-pass* over the whole file
//! (ids only: no request is built) sorts every `(key, row)` externally (`crate::util::spill`) and
//! yields the rows whose id an earlier row has, as a bitset (1 bit per row up to the last
//! duplicate). The reading then goes on from where it was and asks the bitset, so a duplicate
//! is still found before its row is sent, at its own line. The bitset is cached per input file
//! (path, size, mtime, id column, format); the resume plan's pass reads every row without this
//! check, sorts the same keys itself (`output::resume_sorted`) and leaves its bitset here
//! ([`remember`]), so a resumed run reads its input twice, not three times. Standard input
//! cannot be read twice: there the set keeps growing (16–32 bytes per id).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use crate::api::request::RequestOptions;
use crate::error::Error;
use crate::input::InputOptions;
use crate::input::RowSet;
use crate::util::fingerprint::PreHashed;
use crate::util::spill::{self, Sorter};

/// Ids kept in memory before a file input switches to the pre-pass (7/8 of 2¹⁷: the set's
/// table then never exceeds 2¹⁷ buckets of 17 bytes).
pub(crate) const MEMORY_IDS: usize = 114_688;
/// Keys the pre-pass sorts in memory before spilling a run (32 B each in memory: 2 MB).
const SORT_ITEMS: usize = 1 << 16;

/// The 128-bit key of an id (per process).
pub(crate) fn key(id: &str) -> u128 {
    static KEYS: OnceLock<(RandomState, RandomState)> = OnceLock::new();
    let (a, b) = KEYS.get_or_init(|| (RandomState::new(), RandomState::new()));
    (u128::from(a.hash_one(id)) << 64) | u128::from(b.hash_one(id))
}

/// How a reading finds duplicate ids.
pub(crate) enum IdCheck {
    /// Keys seen so far (the low 64 bits pick the bucket).
    Memory(HashSet<u128, PreHashed>),
    /// The rows of the file whose id an earlier row has (from the pre-pass).
    Known(Arc<RowSet>),
    /// No check (the pre-pass's own reading).
    Off,
}

impl IdCheck {
    /// Whether the id of `row` was seen on an earlier row. `prepass` computes the duplicate rows
    /// of the whole input when the in-memory set is full (`None`: it cannot, e.g. stdin).
    pub(crate) fn is_duplicate(
        &mut self,
        row: u64,
        id: &str,
        prepass: impl FnOnce() -> Option<Result<Arc<RowSet>, Error>>,
    ) -> Result<bool, Error> {
        match self {
            IdCheck::Off => Ok(false),
            IdCheck::Known(rows) => Ok(rows.contains(row)),
            IdCheck::Memory(seen) => {
                if seen.len() >= spill::memory_items(MEMORY_IDS) {
                    // The set is freed before the pre-pass, which needs memory of its own.
                    let full = std::mem::take(seen);
                    if let Some(known) = prepass() {
                        let known = known?;
                        let duplicate = known.contains(row);
                        *self = IdCheck::Known(known);
                        return Ok(duplicate);
                    }
                    *seen = full; // standard input: the set keeps growing
                }
                Ok(!seen.insert(key(id)))
            }
        }
    }
}

type CacheKey = (PathBuf, u64, Option<SystemTime>, Option<String>, String);

static CACHE: Mutex<Option<(CacheKey, Arc<RowSet>)>> = Mutex::new(None);

fn cache_key(opts: &InputOptions) -> CacheKey {
    let meta = std::fs::metadata(&opts.path).ok();
    (
        opts.path.clone(),
        meta.as_ref().map_or(0, |m| m.len()),
        meta.and_then(|m| m.modified().ok()),
        opts.id_column.clone(),
        format!("{:?}", super::resolve_format(opts)),
    )
}

/// Records the duplicate rows of the whole file input, found by a pass that read every row
/// without checking ids (the resume plan's, `open_unchecked`): later readings ask them.
pub(crate) fn remember(opts: &InputOptions, duplicates: RowSet) {
    *CACHE.lock().unwrap_or_else(|e| e.into_inner()) =
        Some((cache_key(opts), Arc::new(duplicates)));
}

/// The duplicate rows of a file input (cached: see the module doc).
pub(crate) fn duplicate_rows(
    opts: &InputOptions,
    request: &RequestOptions,
) -> Result<Arc<RowSet>, Error> {
    let cache_key = cache_key(opts);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((k, rows)) = cache.as_ref() {
        if *k == cache_key {
            return Ok(rows.clone());
        }
    }
    let rows = Arc::new(scan(opts, request)?);
    *cache = Some((cache_key, rows.clone()));
    Ok(rows)
}

/// The pre-pass: every `(key, row)` of the whole input, sorted externally; a row is a duplicate
/// when an earlier row has its key.
fn scan(opts: &InputOptions, request: &RequestOptions) -> Result<RowSet, Error> {
    let whole = InputOptions {
        limit: None,
        shard: None,
        ..opts.clone()
    };
    let dir = spill::dir();
    let io = |e| {
        Error::io(
            format!(
                "cannot sort the ids of {} in a temporary file in {} (it needs about 24 bytes per row)",
                opts.path.display(),
                dir.display()
            ),
            e,
        )
    };
    let mut sorter = Sorter::<(u128, u64)>::new(dir.clone(), spill::memory_items(SORT_ITEMS));
    for row in super::open_ids_only(&whole, request)? {
        // A row the reading stops at stops the run there too: later duplicates do not matter.
        let Ok(row) = row else { break };
        if row.explicit_id {
            sorter.push((key(&row.id), row.row)).map_err(io)?;
        }
    }
    let mut duplicates = RowSet::default();
    let mut last = None;
    for item in sorter.finish().map_err(io)? {
        let (key, row) = item.map_err(io)?;
        if last == Some(key) {
            duplicates.insert(row);
        }
        last = Some(key);
    }
    Ok(duplicates)
}
