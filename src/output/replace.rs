//! Crash-safe, in-place replacement of the output's contents (resume rewrites, `--ordered`
//! sorting). The file itself is kept — its inode, so its hardlinks, its mode, owner and group, and
//! the run's lock on it — and only its bytes change, through a redo journal:
//!
//! 1. the new contents are written to `OUTPUT.rewrite-tmp` (same mode as OUTPUT) and synced;
//! 2. that file is renamed to `OUTPUT.rewrite` and the folder synced: the commit point;
//! 3. OUTPUT is emptied, `OUTPUT.rewrite` is copied into it and it is synced;
//! 4. `OUTPUT.rewrite` is removed.
//!
//! A crash before 2 leaves OUTPUT untouched (the next run deletes the `-tmp` file). After a crash
//! past 2, OUTPUT holds either its old contents (the copy had not started) or a prefix of the new
//! ones (whole records and perhaps a torn last one), never a mix of both, so it never holds two
//! records for one row. The next run ([`finish_interrupted`], before it reads OUTPUT) finishes the
//! copy when OUTPUT is a prefix of the journal, and otherwise discards the journal: OUTPUT then
//! holds its complete old contents, or was written since, and is the truth either way.
//!
//! The journal is named after the output's real path (symlinks resolved), so a run through a
//! symlink finds it; a run through another *hardlink* name does not: after a crash in step 3 it
//! reads the prefix and sends the rows missing from it again (paid twice, nothing lost — and a
//! later run through the first name finds OUTPUT changed and discards the stale journal). Costs:
//! one extra copy of the output's size, in time and temporarily on disk.

use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::Path;

use crate::error::Error;

/// Replaces the contents of `path` by what `write` writes, crash-safely and in place.
pub(crate) fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<(), Error>,
) -> Result<(), Error> {
    let staging = suffixed(path, ".rewrite-tmp");
    let journal = suffixed(path, ".rewrite");
    let io = |what: &str, file: &Path, e| Error::io(format!("{what} {}", file.display()), e);
    let like = std::fs::metadata(path).map_err(|e| io("cannot read", path, e))?;
    let file = create_like(&staging, &like, false).map_err(|e| io("cannot create", &staging, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    write(&mut out)?;
    let file = out
        .into_inner()
        .map_err(|e| io("cannot write", &staging, e.into_error()))?;
    file.sync_all()
        .map_err(|e| io("cannot sync", &staging, e))?;
    drop(file);
    std::fs::rename(&staging, &journal).map_err(|e| io("cannot rename", &staging, e))?;
    sync_folder(path);
    apply(&journal, path)
}

/// Finishes a replacement that a crash interrupted in its copy step, or discards one that never
/// committed or never started copying. Returns whether one was finished. Call it, holding the
/// lock, before reading OUTPUT.
pub(crate) fn finish_interrupted(path: &Path) -> Result<bool, Error> {
    for leftover in [
        suffixed(path, ".rewrite-tmp"),
        suffixed(path, ".resume-tmp"),
    ] {
        if leftover.exists() {
            let _ = std::fs::remove_file(&leftover);
        }
    }
    let journal = suffixed(path, ".rewrite");
    if !journal.exists() {
        return Ok(false);
    }
    let copying = is_prefix_of(path, &journal)
        .map_err(|e| Error::io(format!("cannot read {}", journal.display()), e))?;
    if !copying {
        std::fs::remove_file(&journal)
            .map_err(|e| Error::io(format!("cannot remove {}", journal.display()), e))?;
        return Ok(false);
    }
    apply(&journal, path)?;
    Ok(true)
}

/// Whether the bytes of the file at `path` are a prefix of (or equal to) those of `of`.
fn is_prefix_of(path: &Path, of: &Path) -> std::io::Result<bool> {
    use std::io::Read;
    let (mut a, mut b) = (File::open(path)?, File::open(of)?);
    if a.metadata()?.len() > b.metadata()?.len() {
        return Ok(false);
    }
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n = a.read(&mut x)?;
        if n == 0 {
            return Ok(true);
        }
        b.read_exact(&mut y[..n])?;
        if x[..n] != y[..n] {
            return Ok(false);
        }
    }
}

/// Step 3 and 4: copies the committed contents over OUTPUT, then drops the journal.
fn apply(journal: &Path, path: &Path) -> Result<(), Error> {
    let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
    let mut from = File::open(journal)
        .map_err(|e| Error::io(format!("cannot open {}", journal.display()), e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io("cannot open", e))?;
    to.set_len(0).map_err(|e| io("cannot rewrite", e))?;
    std::io::copy(&mut from, &mut to).map_err(|e| io("cannot rewrite", e))?;
    to.sync_all().map_err(|e| io("cannot sync", e))?;
    std::fs::remove_file(journal)
        .map_err(|e| Error::io(format!("cannot remove {}", journal.display()), e))?;
    sync_folder(path);
    Ok(())
}

/// Creates a file (replacing an old one, or only a new one with `new`) that carries the mode,
/// owner and group of `like` from the start, so the records it receives are never more exposed
/// than they were (a different owner is best effort: only root may give files away).
pub(crate) fn create_like(
    path: &Path,
    like: &std::fs::Metadata,
    new: bool,
) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(new);
    if !new {
        options.create(true).truncate(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
        let mode = like.permissions().mode() & 0o7777;
        let file = options.mode(mode & 0o700).open(path)?;
        let _ = std::os::unix::fs::fchown(&file, Some(like.uid()), Some(like.gid()));
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let file = options.open(path)?;
        file.set_permissions(like.permissions())?;
        Ok(file)
    }
}

/// Makes a rename or removal in the output's folder durable (best effort).
fn sync_folder(path: &Path) {
    let dir = match path.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => dir,
        None => Path::new("."),
    };
    if let Ok(dir) = File::open(dir) {
        let _ = dir.sync_all();
    }
}

pub(crate) use crate::paths::suffixed;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn replaces_in_place_and_a_committed_journal_is_finished_later() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        std::fs::write(&path, "old 1\nold 2\nold 3\n").unwrap();
        let link = dir.path().join("hard.jsonl");
        std::fs::hard_link(&path, &link).unwrap();
        replace_with(&path, |out| {
            out.write_all(b"new\n").map_err(|e| Error::io("test", e))
        })
        .unwrap();
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "new\n");
        assert!(!suffixed(&path, ".rewrite").exists());

        // A crash in the copy step (OUTPUT holds a prefix): the next run finishes the copy.
        std::fs::write(&path, "ne").unwrap();
        std::fs::write(suffixed(&path, ".rewrite"), "newer\n").unwrap();
        std::fs::write(suffixed(&path, ".rewrite-tmp"), "uncommitted\n").unwrap();
        assert!(finish_interrupted(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "newer\n");
        assert!(!suffixed(&path, ".rewrite-tmp").exists());
        assert!(!finish_interrupted(&path).unwrap());

        // OUTPUT is not a prefix (the copy never started, or another run wrote it since): it is
        // kept as it is and the stale journal is dropped.
        std::fs::write(&path, "newer\nappended since\n").unwrap();
        std::fs::write(suffixed(&path, ".rewrite"), "newer\n").unwrap();
        assert!(!finish_interrupted(&path).unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "newer\nappended since\n"
        );
        assert!(!suffixed(&path, ".rewrite").exists());
    }
}
