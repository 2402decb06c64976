//! The options of `--via batch`: which transport a run uses and how batches are cut, polled and
//! retried. Apart from the batch runner so that `Job` can hold them without depending on it.

use crate::util::choice::Choice;
use std::time::Duration;

/// How a run sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Via {
    /// One HTTP request per row, answers in seconds, at the live price.
    #[default]
    Live,
    /// The provider's Batch API: files of requests, answers within the completion window, at
    /// the batch price.
    Batch,
}

impl Choice for Via {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Via::Live, "live", "One HTTP request per row, answers in seconds, at the live price"),
        (Via::Batch, "batch", "The provider's Batch API: files of requests, answers within the completion window, at the batch price"),
    ];
}

/// Where rows go whose batch expired, failed or was cancelled, or that the error file reports
/// with a transient error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fallback {
    /// Into a new batch.
    #[default]
    Batch,
    /// Sent live, at the live price, once every batch is collected.
    Live,
}

impl Choice for Fallback {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Fallback::Batch, "batch", "Into a new batch"),
        (
            Fallback::Live,
            "live",
            "Sent live, at the live price, once every batch is collected",
        ),
    ];
}

/// Requests per Batch input file unless set (OpenAI's limit).
pub const DEFAULT_MAX_REQUESTS: usize = 50_000;
/// Bytes per Batch input file unless set (OpenAI's limit is 200 MB).
pub const DEFAULT_MAX_BYTES: u64 = 200 * 1_000_000;
/// How often batches are polled unless set.
pub const DEFAULT_POLL_EVERY: Duration = Duration::from_secs(30);
/// The completion window asked for (the only one OpenAI offers).
pub const DEFAULT_COMPLETION_WINDOW: &str = "24h";
/// Batches a row may go through before it gets an error record.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Rows in batches at once unless set: the run's memory and state file grow with them (≈ 260
/// bytes a row), not with the input; 20 batches of OpenAI's 50,000.
pub const DEFAULT_MAX_PENDING: u64 = 1_000_000;

/// The options of `--via batch`.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOptions {
    /// Requests per input file (a new batch past it).
    pub max_requests: usize,
    /// Bytes per input file (a new batch past it).
    pub max_bytes: u64,
    /// How often the batches' status is read.
    pub poll_every: Duration,
    /// The completion window asked for.
    pub completion_window: String,
    /// Where rows to send again go.
    pub fallback: Fallback,
    /// Submit, save the state and return without waiting (a later run collects).
    pub detach: bool,
    /// Batches a row may go through before it gets an error record.
    pub max_attempts: u32,
    /// Rows in batches at once: past it, submitting waits until batches are collected (half
    /// of it pending again), so memory and the state file stay bounded whatever the input.
    pub max_pending: u64,
    /// What the user found out about uploaded files whose batch create got no answer, on a
    /// server that cannot list batches: input file id → its batch id, or `None` for "no batch
    /// was made" (`--batch-of-file FILE=BATCH|none`).
    pub batch_of_file: std::collections::BTreeMap<String, Option<String>>,
    /// Finished batches whose files hold fewer lines than their `request_counts` say, to be
    /// collected as they are (their rows without a line go into a new batch, and may be paid
    /// twice): `--batch-accept-short BATCH_ID`.
    pub accept_short: std::collections::BTreeSet<String>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            max_requests: DEFAULT_MAX_REQUESTS,
            max_bytes: DEFAULT_MAX_BYTES,
            poll_every: DEFAULT_POLL_EVERY,
            completion_window: DEFAULT_COMPLETION_WINDOW.to_string(),
            fallback: Fallback::Batch,
            detach: false,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_pending: DEFAULT_MAX_PENDING,
            batch_of_file: Default::default(),
            accept_short: Default::default(),
        }
    }
}

/// Parses `--batch-of-file`'s `FILE_ID=BATCH_ID` or `FILE_ID=none`.
pub fn parse_batch_of_file(text: &str) -> Result<(String, Option<String>), String> {
    let (file, batch) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not FILE_ID=BATCH_ID or FILE_ID=none"))?;
    let (file, batch) = (file.trim(), batch.trim());
    if file.is_empty() || batch.is_empty() {
        return Err(format!("`{text}` is not FILE_ID=BATCH_ID or FILE_ID=none"));
    }
    let batch = (!batch.eq_ignore_ascii_case("none")).then(|| batch.to_string());
    Ok((file.to_string(), batch))
}
