//! The library's error type and the process exit codes it maps to.

use std::path::Path;

/// A failure that ends a command before or during a run. Every message says what happened, where,
/// and what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or environment problem found before anything is sent.
    #[error("{0}")]
    Config(String),
    /// A malformed input record, a missing column, a duplicate id: `file:line: what is wrong`.
    #[error("{location}: {message}")]
    Input { location: String, message: String },
    /// The API refused the whole run (bad key, unknown model, no quota).
    #[error("{0}")]
    FatalApi(String),
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An input error at `path:line`.
    pub fn input(path: &Path, line: u64, message: impl Into<String>) -> Self {
        Error::Input {
            location: format!("{}:{line}", path.display()),
            message: message.into(),
        }
    }

    /// An I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Process exit codes (documented in `--help` and the README).
pub mod exit_code {
    /// Every row has an ok record.
    pub const OK: i32 = 0;
    /// Configuration, input or fatal API error.
    pub const FAILURE: i32 = 1;
    /// The run finished but some rows are error records.
    pub const ROW_ERRORS: i32 = 3;
    /// Stopped by the budget cap.
    pub const BUDGET: i32 = 4;
    /// Interrupted by Ctrl-C, SIGTERM or SIGHUP.
    pub const INTERRUPTED: i32 = 130;
}
