//! [`ReuseOptions`]: paying once for each distinct request — duplicates inside a run answered
//! once (`--no-dedup` turns it off), and answers taken from earlier outputs (`--reuse`).

use std::path::PathBuf;

use crate::error::Error;
use crate::input::InputOptions;
use crate::output::read::Records;

/// How a run avoids paying twice for the same request. The default answers each distinct
/// request of a run once and reuses no other output.
#[derive(Debug, Clone)]
pub struct ReuseOptions {
    /// Rows whose requests are identical (same model, messages and options: the request
    /// fingerprint) are sent once; each other one gets a record with the same answer,
    /// `duplicate_of` the row that paid, and cost 0. On by default, whatever the temperature
    /// (see the README); off to sample several answers to one request on purpose.
    pub dedup: bool,
    /// Earlier outputs (JSONL, CSV, Parquet) whose ok answers of identical requests are taken
    /// instead of sending (`reused_from`, cost 0). Error records and, for a run against a real
    /// API, simulated answers are never taken.
    pub from: Vec<PathBuf>,
}

impl Default for ReuseOptions {
    fn default() -> Self {
        ReuseOptions {
            dedup: true,
            from: Vec::new(),
        }
    }
}

impl ReuseOptions {
    /// Whether any answer may come from a record instead of a request.
    pub fn any(&self) -> bool {
        self.dedup || !self.from.is_empty()
    }

    /// Checks the options before anything is read: each `--reuse` output can be read, and the
    /// input can be read twice.
    pub(crate) fn check(&self, input: &InputOptions) -> Result<(), Error> {
        if self.from.is_empty() {
            return Ok(());
        }
        if input.reads_once() {
            return Err(Error::Config(
                "--reuse reads the input twice (to find the rows it answers, then to write their \
                 records), and standard input (or rows in memory) can be read only once: save the \
                 input to a file and pass that file"
                    .into(),
            ));
        }
        for path in &self.from {
            if crate::paths::is_parquet(path) && !crate::paths::checkpoint(path).exists() {
                check_parquet_output(path)?;
                continue;
            }
            Records::<serde::de::IgnoredAny>::open(path)
                .map_err(|e| Error::Config(format!("--reuse {}: {e}", path.display())))?;
        }
        Ok(())
    }
}

/// A Parquet file given to `--reuse` without its checkpoint must have the columns of a run's
/// records that a reused answer is found by.
fn check_parquet_output(path: &std::path::Path) -> Result<(), Error> {
    const NEEDED: [&str; 5] = ["fingerprint", "model", "prompt", "status", "completion"];
    let Some(columns) = crate::input::parquet::column_names(path) else {
        return Err(Error::Config(format!(
            "--reuse {}: not a readable Parquet file (check the path, and that the file is complete)",
            path.display()
        )));
    };
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|name| !columns.iter().any(|c| c == name))
        .collect();
    if !missing.is_empty() {
        return Err(Error::Config(format!(
            "--reuse {}: not a promptbatch output (no column {}); pass the output of a `promptbatch run` (JSONL, CSV, or Parquet as `run -o x.parquet` or `export` writes it)",
            path.display(),
            missing.join(", ")
        )));
    }
    Ok(())
}
