//! promptbatch: run a whole dataset of prompts through an OpenAI-compatible chat-completions API,
//! concurrently and within rate limits, writing one result record per row.
//!
//! The `promptbatch` command is a thin layer over this library: it turns its flags into a
//! [`Job`] (or [`EstimateOptions`], …) and prints what the library returns. A Rust program does
//! the same without any command line:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use promptbatch::{InputFormat, InputOptions, Job, SimOptions, StopReason};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), promptbatch::Error> {
//! // Rows can come from a file (`Job::new("data.csv", "out.jsonl")`) or from memory.
//! let rows = "{\"id\": \"a\", \"prompt\": \"Say hi\"}\n\
//!             {\"id\": \"b\", \"prompt\": \"Say bye\"}\n";
//! let input = InputOptions::from_reader("greetings", InputFormat::Jsonl, rows.as_bytes());
//! let output = std::env::temp_dir().join(format!("promptbatch-doc-{}.jsonl", std::process::id()));
//! # let _ = std::fs::remove_file(&output);
//!
//! // Every record also reaches a callback once it is safely in the output file.
//! let answers = Arc::new(Mutex::new(Vec::new()));
//! let seen = answers.clone();
//! let summary = Job::with_input(input, &output)
//!     .model("gpt-5.2")
//!     .concurrency(8)
//!     .rpm(6_000)
//!     // No key, no network, no cost: the built-in simulator on a loopback port.
//!     .dry_run(SimOptions::default())
//!     .on_record(move |record| {
//!         let answer = (record.id.clone(), record.completion.clone().unwrap_or_default());
//!         seen.lock().unwrap().push(answer);
//!     })
//!     .run()
//!     .await?;
//!
//! assert!(matches!(summary.stop, StopReason::Completed));
//! assert_eq!((summary.ok, summary.errors), (2, 0));
//! let mut answers = answers.lock().unwrap().clone();
//! answers.sort();
//! assert_eq!(answers, [("a".to_string(), "echo: Say hi".to_string()),
//!                      ("b".to_string(), "echo: Say bye".to_string())]);
//!
//! // The same records are in the output file, which a later run would resume from.
//! let report = promptbatch::report(&output, None)?;
//! assert_eq!((report.rows, report.ok), (2, 2));
//! # std::fs::remove_file(&output).ok();
//! # Ok(())
//! # }
//! ```
//!
//! The facade: [`Job`] → [`Summary`]; [`estimate()`] → [`Estimate`]; [`report()`] →
//! [`Report`]; [`Record`] is one output line. `Job::via(Via::Batch)` sends a run through the
//! provider's Batch API instead (half price, answers within 24 h; see [`batch`]). The modules below are the pipeline (see
//! ARCHITECTURE.md): `input` streams rows, the runner dispatches them to workers paced by `limit`,
//! `api` talks HTTP, and the `output` writer owns the result file; `sim` is the built-in
//! OpenAI-compatible simulator used by `--dry-run` and the tests.

#![warn(unreachable_pub)]

mod api;
pub mod batch;
pub mod error;
mod estimate;
mod events;
mod input;
mod job;
mod live;
mod money;
mod monitor;
mod output;
mod paths;
mod progress;
mod report;
mod reuse;
mod run;
#[doc(hidden)]
pub mod sim;
mod tokens;
mod util;

// The facade: what a program using the library needs. Everything else is pub(crate), except
// `internals` below.
pub use api::client::EndpointOptions;
pub use api::request::RequestOptions;
pub use api::response::TokenUsage;
pub use api::retry::RetryPolicy;
pub use api::schema::JsonSchema;
pub use batch::{cancel, BatchOptions, Fallback, Via};
pub use error::Error;
pub use estimate::{estimate, Estimate, EstimateOptions, NotSent};
pub use events::{clear_observer, set_observer, Event};
pub use input::keep::KeepColumns;
pub use input::validate::{validate, Validation};
pub use input::{InputFormat, InputOptions, Shard};
pub use job::{Job, RecordCallback};
pub use live::breaker::{
    FIRST_STREAK as REFUSALS_BEFORE_STOP, LONG_STREAK as REFUSALS_AFTER_SUCCESS,
};
pub use live::limit::LimitOptions;
pub use money::cost::CostOptions;
pub use monitor::options::{MonitorOptions, DEFAULT_EVENT_INTERVAL};
pub use output::export::{run as export, ExportOptions, Exported};
pub use output::format::OutputFormat;
pub use output::merge::{run as merge, MergeOptions};
pub use output::{OutputOptions, Record, Status};
pub use progress::refusal::Refusal;
pub use progress::{Display, StopReason, Summary};
pub use report::{report, write_html_report, Report};
pub use reuse::ReuseOptions;
pub use run::StopHandle;
pub use sim::{
    AnswerBody, ErrorStyle, LatencySpec, LimitSchedule, LimitStyle, PrefixCacheModel, SimOptions,
};
pub use util::choice::Choice;

/// What the binary, the property tests and the benchmarks reach that is not the library's API:
/// the binary's printing helpers and defaults, and the pieces the property tests and benchmarks
/// exercise directly. Not covered by semver.
#[doc(hidden)]
pub mod internals {
    pub use crate::api::classify;
    pub use crate::api::client::DEFAULT_BASE_URL;
    pub use crate::api::openai_chat;
    pub use crate::api::request::{RequestDefaults, DEFAULT_MODEL};
    pub use crate::error::exit_code;
    pub use crate::input::validate::render as render_validation;
    pub use crate::input::{Template, DEFAULT_PROMPT_COLUMN};
    pub use crate::live::limit::DEFAULT_CONCURRENCY;
    pub use crate::money::cost::PriceTable;
    pub use crate::output::read::Records;
    pub use crate::output::{format, COLUMNS};
    pub use crate::tokens::estimate as estimate_tokens;
    pub use crate::util::error_kind::normalize_error;
    pub use crate::util::{duration, human, redact};
}
