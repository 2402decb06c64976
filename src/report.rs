//! `promptbatch report`: a summary of an output file (rows, errors, tokens, cost, latency).

use crate::cli::ReportOptions;
use crate::error::Error;

/// Reads the output and prints the report; returns the process exit code.
pub fn run(_opts: &ReportOptions) -> Result<i32, Error> {
    Err(Error::Config("report is not implemented yet".into()))
}
