//! One run per output file at a time, whatever path names it: an advisory lock (`flock`) on the
//! output file itself, held for the whole run and released by the OS when the process ends,
//! however it ends (so `kill -9` never leaves a stale lock). A lock on the file rather than on a
//! name covers every path to it: `-o real.jsonl`, a symlink and a hardlink all lock the same
//! inode. It stays valid for the whole run because nothing replaces the file: resume rewrites and
//! `--ordered` sorting change its contents in place (see `replace.rs`); only `--fresh` moves it
//! away, and then the new file is locked before the old one is released.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A held lock on the output file; released on drop.
#[derive(Debug)]
pub(crate) struct OutputLock {
    _file: File,
    real: PathBuf,
}

impl OutputLock {
    /// Opens the output (creating it, through a symlink if it is one) and locks it, or explains
    /// that another run holds it.
    pub(crate) fn acquire(output: &Path) -> Result<Self, Error> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(output)
            .map_err(|e| Error::io(format!("cannot create output {}", output.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(OutputLock {
                _file: file,
                real: std::fs::canonicalize(output).unwrap_or_else(|_| output.to_path_buf()),
            }),
            Err(TryLockError::WouldBlock) => Err(Error::Config(format!(
                "another promptbatch run is writing {} (perhaps under another name: a link to \
                 the same file); wait for it to finish, stop it, or choose another --output",
                output.display()
            ))),
            Err(TryLockError::Error(e)) => {
                Err(Error::io(format!("cannot lock {}", output.display()), e))
            }
        }
    }

    /// The locked file's real path (symlinks resolved): every later step reads and writes the
    /// output through it, so a symlinked output stays a symlink to the file that holds the run.
    pub(crate) fn path(&self) -> &Path {
        &self.real
    }
}
