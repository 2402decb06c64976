//! promptbatch: run a whole dataset of prompts through an OpenAI-compatible chat-completions API,
//! concurrently and within rate limits, writing one result record per row.
//!
//! The pipeline (see ARCHITECTURE.md): [`input`] streams rows, [`run`] dispatches them to
//! [`worker`]s paced by [`limit`], [`api`] talks HTTP, and the [`output`] writer owns the result
//! file. [`sim`] is the built-in OpenAI-compatible simulator used by `--dry-run` and the tests.

/// `eprintln!` that never panics: a message to stderr, dropped if stderr is closed (e.g. the
/// run's stderr piped into `head`), so a closed terminal never fails a run.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod api;
pub mod breaker;
pub mod budget;
pub mod cli;
pub mod cost;
pub mod error;
pub mod estimate;
pub mod fingerprint;
pub mod human;
pub mod input;
pub mod limit;
pub mod merge;
pub mod output;
pub mod pacing;
pub mod progress;
pub mod redact;
pub mod repeats;
pub mod report;
pub mod run;
pub mod shutdown;
pub mod sim;
pub mod sketch;
pub mod spill;
pub mod tokens;
pub mod validate;
pub mod worker;

pub use error::Error;
pub use progress::{StopReason, Summary};
pub use run::run;
