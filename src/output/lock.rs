//! One run per output at a time: an advisory lock on `OUTPUT.lock`, held for the whole run and
//! released by the OS when the process ends, however it ends (so `kill -9` never leaves a stale
//! lock). The lock file itself is left in place: deleting it could let two runs lock two
//! different files of the same name.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// A held lock; released on drop.
#[derive(Debug)]
pub struct OutputLock {
    _file: File,
}

/// `OUTPUT.lock`.
pub fn lock_path(output: &Path) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl OutputLock {
    /// Takes the lock, or explains that another run holds it.
    pub fn acquire(output: &Path) -> Result<Self, Error> {
        let path = lock_path(output);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("cannot create lock file {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(OutputLock { _file: file }),
            Err(TryLockError::WouldBlock) => Err(Error::Config(format!(
                "another promptbatch run is writing {} (it holds {}); wait for it to finish, stop it, or choose another --output",
                output.display(),
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(Error::io(
                format!("cannot lock {}", path.display()),
                e,
            )),
        }
    }
}
