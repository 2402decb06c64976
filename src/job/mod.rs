//! [`Job`]: everything a run needs, as one plain value owned by the library. The command line
//! builds one from its flags (`cli.rs` in the binary); a Rust program builds one with
//! [`Job::new`] and the builder methods, each option's default being the flag's default.
//!
//! The options are grouped by the stage they configure, and each group's type lives with that
//! stage: [`InputOptions`] (`input`), [`RequestOptions`] and [`EndpointOptions`] (`api`),
//! [`LimitOptions`] (`limit`), [`RetryPolicy`] (`api::retry`), [`CostOptions`] (`cost`),
//! [`OutputOptions`] (`output`), [`Display`] (`progress`), [`SimOptions`] (`sim`), and how
//! requests travel: [`Via`] and [`BatchOptions`] (`batch`).
//! `Job::run` lives with the runner (`run.rs`): the configuration does not depend on the code
//! that carries it out.

pub(crate) mod answer;
pub(crate) mod pipeline;
pub(crate) mod prepare;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::api::request::RequestOptions;
use crate::api::retry::RetryPolicy;
use crate::api::EndpointOptions;
use crate::batch::options::{BatchOptions, Via};
use crate::input::InputOptions;
use crate::live::limit::LimitOptions;
use crate::money::cost::CostOptions;
use crate::monitor::options::MonitorOptions;
use crate::output::{OutputOptions, Record};
use crate::progress::Display;
use crate::reuse::options::ReuseOptions;
use crate::sim::SimOptions;

/// After a first interrupt, how long in-flight requests may still finish, unless set.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Called with every record once it is written to the output file (on the writer's thread, in
/// the order records are written).
pub type RecordCallback = Box<dyn FnMut(&Record) + Send>;

/// One run: rows in, one record per row out. See the crate documentation for an example.
#[derive(Clone)]
pub struct Job {
    /// Where the rows come from and how a row becomes a prompt.
    pub input: InputOptions,
    /// The output file and how it is resumed.
    pub output: OutputOptions,
    /// What every request carries besides its messages.
    pub request: RequestOptions,
    /// The API endpoint, its key and timeouts.
    pub endpoint: EndpointOptions,
    /// Requests in flight, RPM and TPM caps.
    pub limits: LimitOptions,
    /// Retries of transient failures.
    pub retry: RetryPolicy,
    /// Prices and the budget cap.
    pub cost: CostOptions,
    /// Live requests (default) or the provider's Batch API.
    pub via: Via,
    /// The Batch API's limits, polling and fallback (used with `Via::Batch`).
    pub batch: BatchOptions,
    /// Paying once for each distinct request: duplicates answered once, earlier outputs reused.
    pub reuse: ReuseOptions,
    /// How progress is shown on stderr (default: nothing until the end).
    pub display: Display,
    /// The event log, live metrics and the end-of-run notification.
    pub monitor: MonitorOptions,
    /// `Some`: no key, no network, no cost — the run goes to a fresh built-in simulator with
    /// these settings on a free loopback port, and its records are marked simulated.
    pub dry_run: Option<SimOptions>,
    /// After a first interrupt, how long in-flight requests may still finish.
    pub grace: Duration,
    /// Whether Ctrl-C, SIGTERM and SIGHUP stop the run (first: finish what is in flight for
    /// `grace`; second: abort). Off by default: a library leaves signals to its program.
    pub handle_signals: bool,
    /// Called with every record once it is in the output file.
    pub(crate) on_record: Option<Arc<Mutex<RecordCallback>>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("input", &self.input)
            .field("output", &self.output)
            .field("request", &self.request)
            .field("endpoint", &self.endpoint)
            .field("limits", &self.limits)
            .field("retry", &self.retry)
            .field("cost", &self.cost)
            .field("via", &self.via)
            .field("batch", &self.batch)
            .field("reuse", &self.reuse)
            .field("display", &self.display)
            .field("monitor", &self.monitor)
            .field("dry_run", &self.dry_run)
            .field("grace", &self.grace)
            .field("handle_signals", &self.handle_signals)
            .field("on_record", &self.on_record.is_some())
            .finish()
    }
}

impl Job {
    /// A run of the rows of `input` (CSV or JSONL by extension, `-` for standard input) into
    /// `output` (`.csv` writes CSV, anything else JSONL), every option at its default.
    pub fn new(input: impl Into<PathBuf>, output: impl Into<PathBuf>) -> Self {
        Job::with_input(InputOptions::new(input), output)
    }

    /// A run of the rows `input` describes (e.g. [`InputOptions::from_reader`] for rows in
    /// memory) into `output`.
    pub fn with_input(input: InputOptions, output: impl Into<PathBuf>) -> Self {
        Job {
            input,
            output: OutputOptions::new(output),
            request: RequestOptions::default(),
            endpoint: EndpointOptions::default(),
            limits: LimitOptions::default(),
            retry: RetryPolicy::default(),
            cost: CostOptions::default(),
            via: Via::Live,
            batch: BatchOptions::default(),
            reuse: ReuseOptions::default(),
            display: Display::Quiet,
            monitor: MonitorOptions::default(),
            dry_run: None,
            grace: DEFAULT_GRACE,
            handle_signals: false,
            on_record: None,
        }
    }

    /// The model every request names (a Batch API line's own `body.model` wins).
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.request.models = vec![model.into()];
        self
    }

    /// Several models: each row is sent to each (one record per (row, model)), except a row
    /// that names its own model.
    pub fn models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.request.models = models.into_iter().map(Into::into).collect();
        self
    }

    /// A prompt template filled from each row's columns, e.g. `Summarize {title}: {text}`.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.input.template = Some(template.into());
        self
    }

    /// Copy these input columns (CSV) or fields (JSONL) into each record.
    pub fn keep_columns(mut self, keep: crate::input::KeepColumns) -> Self {
        self.input.keep_columns = Some(keep);
        self
    }

    /// A system message prepended to every request that does not start with one.
    pub fn system(mut self, system: impl Into<String>) -> Self {
        self.request.system = Some(system.into());
        self
    }

    /// `max_tokens` for every request.
    pub fn max_tokens(mut self, max_tokens: u32) -> Self {
        self.request.max_tokens = Some(max_tokens);
        self
    }

    /// Requests in flight at once (at least 1).
    pub fn concurrency(mut self, concurrency: u32) -> Self {
        self.limits.concurrency = concurrency.max(1);
        self
    }

    /// Requests per minute cap.
    pub fn rpm(mut self, rpm: u32) -> Self {
        self.limits.rpm = Some(rpm);
        self
    }

    /// Tokens per minute cap.
    pub fn tpm(mut self, tpm: u32) -> Self {
        self.limits.tpm = Some(tpm);
        self
    }

    /// Budget cap in USD for the total cost recorded in the output (earlier runs included).
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.cost.max_cost = Some(usd);
        self
    }

    /// The API base URL; requests go to `{base_url}/chat/completions`.
    pub fn base_url(mut self, base_url: impl Into<String>) -> Self {
        self.endpoint.base_url = base_url.into();
        self
    }

    /// The API key itself (instead of reading it from the environment).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.endpoint.api_key = Some(crate::api::ApiKey::new(key));
        self
    }

    /// Run against a fresh built-in simulator instead of the API (no key, no network, no cost).
    pub fn dry_run(mut self, simulator: SimOptions) -> Self {
        self.dry_run = Some(simulator);
        self
    }

    /// Send the rows through the provider's Batch API (`Via::Batch`) or live (the default).
    pub fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }

    /// The Batch API's options (file limits, polling, fallback, detach).
    pub fn batch_options(mut self, options: BatchOptions) -> Self {
        self.batch = options;
        self
    }

    /// Start over: move an existing output to a new backup first.
    pub fn fresh(mut self) -> Self {
        self.output.fresh = true;
        self
    }

    /// Store each answer's whole response body in its record (`response`).
    pub fn keep_response(mut self) -> Self {
        self.output.keep_response = true;
        self
    }

    /// Send every row, even one whose request repeats another row's (sampling on purpose).
    pub fn no_dedup(mut self) -> Self {
        self.reuse.dedup = false;
        self
    }

    /// Take the ok answers of identical requests from these earlier outputs instead of sending.
    pub fn reuse_from<P: Into<PathBuf>>(mut self, outputs: impl IntoIterator<Item = P>) -> Self {
        self.reuse.from = outputs.into_iter().map(Into::into).collect();
        self
    }

    /// Put the output in input order when the run ends.
    pub fn ordered(mut self) -> Self {
        self.output.ordered = true;
        self
    }

    /// Also hand every record to `callback` once it is written to the output file (on the
    /// writer's thread: keep it quick, or send the record on to a channel).
    pub fn on_record(mut self, callback: impl FnMut(&Record) + Send + 'static) -> Self {
        self.on_record = Some(Arc::new(Mutex::new(Box::new(callback))));
        self
    }
}
