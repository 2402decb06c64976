//! `promptbatch estimate`: exact prompt-token counts (o200k_base) and the expected and worst-case
//! cost and duration of a run, before anything is sent.

use crate::cli::EstimateOptions;
use crate::error::Error;

/// Runs the estimate and prints it; returns the process exit code.
pub fn run(_opts: &EstimateOptions) -> Result<i32, Error> {
    Err(Error::Config("estimate is not implemented yet".into()))
}
