//! `--fresh`: the earlier output is moved aside to the first free name of `OUTPUT.bak`,
//! `OUTPUT.bak.1`, `OUTPUT.bak.2`, … — an existing backup is never replaced, so re-running a
//! failed `--fresh` run never overwrites paid records with fewer — and an output without records
//! (empty, or a CSV header alone) is not backed up at all. The new, empty output gets the old
//! one's mode, owner and group. The event log beside it moves with it.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};

use super::format;
use super::replace::{create_like, suffixed};
use crate::error::Error;

/// Moves the output at `path` (a real path: symlinks resolved) to a new backup and leaves a new,
/// empty output in its place. Returns the backup's path, or `None` when there was nothing to keep.
pub(crate) fn move_aside(path: &Path) -> Result<Option<PathBuf>, Error> {
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let meta = std::fs::metadata(path).map_err(|e| io("cannot read", path, e))?;
    if !holds_records(path, meta.len()).map_err(|e| io("cannot read", path, e))? {
        return Ok(None);
    }
    let backup = (0..)
        .map(|n| backup_name(path, n))
        .find_map(|candidate| match link_new(path, &candidate) {
            Ok(()) => Some(Ok(candidate)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => None,
            Err(e) => Some(Err(io("cannot back up the output to", &candidate, e))),
        })
        .expect("an endless sequence of names")?;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => return Err(io("cannot move aside", path, e)),
        _ => {}
    }
    create_like(path, &meta, true).map_err(|e| io("cannot create", path, e))?;
    move_event_logs(path, &backup);
    Ok(Some(backup))
}

/// The output's event log goes with it (`OUTPUT.bak.events.jsonl`): the new output's `report`
/// tells of its own runs only. A log that cannot be moved stays (it is no paid work).
fn move_event_logs(path: &Path, backup: &Path) {
    for (log, moved) in crate::paths::event_logs(path)
        .into_iter()
        .zip(crate::paths::event_logs(backup))
    {
        if log.exists() && link_new(&log, &moved).is_ok() {
            let _ = std::fs::remove_file(&log);
        }
    }
}

/// `OUTPUT.bak`, then `OUTPUT.bak.1`, …
fn backup_name(path: &Path, n: u32) -> PathBuf {
    match n {
        0 => suffixed(path, ".bak"),
        n => suffixed(path, &format!(".bak.{n}")),
    }
}

/// Gives `from` the new name `to` without ever replacing an existing `to`: a hardlink (atomic,
/// fails if `to` exists); where links are not supported, a rename after checking `to` is free.
fn link_new(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::hard_link(from, to) {
        Err(e) if e.kind() != ErrorKind::AlreadyExists => {
            if to.symlink_metadata().is_ok() {
                return Err(ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)
        }
        other => other,
    }
}

/// Whether an output of `len` bytes holds more than its format's header (and blank space).
fn holds_records(path: &Path, len: u64) -> std::io::Result<bool> {
    let header = format::for_path(path).header();
    if len > header.len() as u64 + 2 {
        return Ok(true);
    }
    let mut text = Vec::new();
    File::open(path)?.read_to_end(&mut text)?;
    let text = text.trim_ascii();
    Ok(!text.is_empty() && text != header.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::format::RecordFormat;

    #[test]
    fn backups_are_numbered_and_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.csv");
        std::fs::write(&path, "paid\n").unwrap();
        assert_eq!(move_aside(&path).unwrap(), Some(suffixed(&path, ".bak")));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        assert_eq!(move_aside(&path).unwrap(), None, "nothing to keep");
        std::fs::write(&path, format::Csv::default().header()).unwrap();
        assert_eq!(move_aside(&path).unwrap(), None, "a header alone");
        std::fs::write(&path, "partial\n").unwrap();
        assert_eq!(move_aside(&path).unwrap(), Some(suffixed(&path, ".bak.1")));
        assert_eq!(
            std::fs::read_to_string(suffixed(&path, ".bak")).unwrap(),
            "paid\n"
        );
    }
}
