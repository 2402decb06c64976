//! `promptbatch estimate`: exact prompt-token counts (o200k_base) and the expected and worst-case
//! cost and duration of a run, before anything is sent.
//!
//! # Prompt tokens
//! The input is streamed with [`input::open`] (same flags as `run`), so each row's request body is
//! exactly what `run` would send. Its `messages` are counted the way OpenAI counts chat input:
//!
//! ```text
//! prompt_tokens = 3                                   (priming of the reply)
//!               + Σ over messages ( 3                 (message framing)
//!                                 + tokens(role)
//!                                 + tokens(content)   (a string, or the sum over content parts
//!                                                      of tokens(part text); non-text parts
//!                                                      such as images are not counted)
//!                                 + tokens(name) + 1  (only when the message has a `name`) )
//! ```
//!
//! where `tokens(s)` is the length of `o200k_base` ordinary encoding of `s` (special-token text in
//! a prompt is counted as ordinary text, as the API does). This is exact for GPT-family models
//! (names starting with `gpt-`, `o1`, `o3`, `o4` or `chatgpt`). For every other model (Gemini,
//! …) the same o200k count is used as an **approximation**: it is marked approximate in the
//! output (per model and in `approximate_prompt_tokens`). Tool definitions and `tool_calls` are not
//! counted.
//!
//! # Output tokens, cost and time
//! - Worst case: each row's `max_tokens` / `max_completion_tokens` (from `--max-tokens`, or a
//!   Batch API line's own body). If any row has none, the worst case is unbounded and not shown.
//! - Expected case: `--expect-output N`, or with `--from-output SAMPLE` the mean
//!   `completion_tokens` of the ok records of a sample run (`run INPUT --limit 200 -o SAMPLE`;
//!   reasoning tokens are part of completion tokens; their mean is shown too), with a 95 % range
//!   (mean ± 1.96 standard errors), and the sample's cached share of prompt tokens billed at the
//!   cached rate. Without either, there is no expected case.
//! - Cost per row: the row's model's price tier for its prompt tokens
//!   ([`ModelPrice::rates_for`]), prompt tokens all uncached × input rate + output tokens × output
//!   rate. Rows of a model without a price are "unpriced": never counted as $0, listed instead.
//! - Time (with `--rpm` and/or `--tpm`): minutes = max(rows / rpm, tokens / tpm), tokens = prompt
//!   tokens + output tokens (worst case if bounded, else expected, else prompt tokens only);
//!   with `--from-output`, also at least rows × the sample's mean latency / `--concurrency`.
//!
//! # `--json` fields
//! - `input`: the input path; `tokenizer`: `"o200k_base"`
//! - `rows`: all data rows; `request_rows`: rows that would be sent; `invalid_rows`: rows that
//!   would become error records (empty prompt, or malformed under `--skip-invalid`), no tokens
//! - `prompt_tokens`, `prompt_tokens_mean` (per request row, `null` without rows),
//!   `prompt_tokens_exact` (false when some rows use the approximation),
//!   `approximate_prompt_tokens` (the part of `prompt_tokens` that is approximate),
//!   `schema_tokens_per_row` (`--json-schema`: the schema sent with every request, counted in
//!   `prompt_tokens`)
//! - `first_invalid`: `file:line: what` of the first invalid row, or `null`
//! - `expected_output`: `null`, or `{ "source": "expect-output" | "from-output",
//!   "tokens_per_row", "tokens_per_row_low", "tokens_per_row_high" (95 % range of the sample's
//!   mean: mean ± 1.96 standard errors), "reasoning_tokens_per_row", "cached_share",
//!   "latency_ms_mean", "from_output_ok_rows" (the last four from-output only, else null) }`
//! - `expected_output_tokens`: total expected output tokens, or `null`
//! - `worst_output_tokens`: total of the rows' max tokens, or `null` when unbounded;
//!   `rows_without_max_tokens`
//! - `expected_cost_usd`, `worst_cost_usd`: totals over priced rows, `null` when that case is
//!   unknown or no row is priced; `expected_cost_low_usd`, `expected_cost_high_usd`: the
//!   expected cost at the ends of the output's 95 % range; `unpriced_rows`, `unpriced_models`
//! - `batch_expected_cost_usd`, `batch_worst_cost_usd`: the same at the Batch API's rates
//!   (`run --via batch`; a model without batch rates counts at its live rates)
//! - `models`: `[{ "model", "rows", "prompt_tokens", "exact", "priced", "expected_cost_usd",
//!   "worst_cost_usd", "batch_expected_cost_usd", "batch_worst_cost_usd" }]`, by model name
//! - `time`: `null` when neither `--rpm`, `--tpm` nor `--from-output` is given, else `{ "rpm",
//!   "tpm", "minutes", "limited_by": "rpm" | "tpm" | "latency", "output_basis": "worst" |
//!   "expected" | "none" }`; `concurrency`: the `-c` the latency-bound time assumes

use std::collections::BTreeMap;
use std::sync::mpsc;

use bytes::Bytes;
use serde::Serialize;

use crate::api::request::RequestOptions;
use crate::error::Error;
use crate::events::notice;
use crate::input::{self, InputOptions, RowContent};
use crate::money::cost::{Billing, ModelPrice, PriceTable};
use crate::output::read::Records;
use crate::output::record::{Record, Status};
use crate::tokens::o200k::{is_exact_model, ChatTokenCounter};
use crate::util::human::group;

#[cfg(feature = "cli")]
mod text;

/// Rows sent from the reader thread to the counter at a time.
const BATCH: usize = 512;

/// What `estimate` is asked (the flags of `promptbatch estimate`).
#[derive(Debug, Clone)]
pub struct EstimateOptions {
    /// The rows, as a run would read them.
    pub input: InputOptions,
    /// The request options a run would use.
    pub request: RequestOptions,
    /// Expected completion tokens per row (reasoning included), for the expected-case cost.
    pub expect_output: Option<u64>,
    /// A sample run's output: its ok rows' measured tokens and latency project the whole input.
    pub from_output: Option<std::path::PathBuf>,
    /// Requests in flight the run would use (with `from_output`: the time the latency implies).
    pub concurrency: u32,
    /// Requests per minute the run would be allowed.
    pub rpm: Option<u32>,
    /// Tokens per minute the run would be allowed.
    pub tpm: Option<u32>,
    /// Price table overrides.
    pub prices: Option<std::path::PathBuf>,
    /// Duplicates answered once, and `--reuse` outputs: the rows they answer are not sent,
    /// and are counted apart (`not_sent`).
    pub reuse: crate::reuse::ReuseOptions,
}

impl EstimateOptions {
    /// An estimate of a run over `input` with every other option at its default.
    pub fn new(input: InputOptions) -> Self {
        EstimateOptions {
            input,
            request: RequestOptions::default(),
            expect_output: None,
            from_output: None,
            concurrency: crate::live::limit::DEFAULT_CONCURRENCY,
            rpm: None,
            tpm: None,
            prices: None,
            reuse: crate::reuse::ReuseOptions::default(),
        }
    }
}

/// Counts every row's prompt tokens and projects the cost and time of a run.
pub fn estimate(opts: &EstimateOptions) -> Result<Estimate, Error> {
    if opts.expect_output.is_some() && opts.from_output.is_some() {
        return Err(Error::Config(
            "give either --expect-output N or --from-output OUTPUT, not both".into(),
        ));
    }
    let prices = PriceTable::load(opts.prices.as_deref())?;
    let expected = expected_output(opts)?;
    // Every problem is counted (and the first shown) instead of stopping at the first one.
    let rows = input::open_reporting_all(&opts.input, &opts.request)?;
    let counter = ChatTokenCounter::new()?;
    // The schema goes with every request (as `response_format`), and is billed as prompt tokens.
    let schema_tokens = opts.request.json_schema.as_ref().map_or(0, |schema| {
        counter.text(&schema.response_format()["json_schema"].to_string())
    });
    let not_sent = crate::reuse::units_not_sent(&opts.reuse, &opts.input, &opts.request)?;
    let models = opts.request.models_per_row();
    let (totals, saved) = count_rows(
        rows,
        &counter,
        &prices,
        (&opts.input.path, schema_tokens, models),
        &not_sent,
    )?;
    let mut estimate = Estimate::new(opts, totals, expected.clone());
    if let Some(not_sent) = not_sent {
        let saved = Estimate::new(opts, saved, expected);
        estimate.rows += saved.request_rows;
        estimate.not_sent = Some(NotSent {
            duplicate_rows: not_sent.duplicates,
            reused_rows: not_sent.reused,
            prompt_tokens: saved.prompt_tokens,
            expected_cost_usd: saved.expected_cost_usd,
            worst_cost_usd: saved.worst_cost_usd,
        });
    }
    Ok(estimate)
}

/// The rows a run would answer without a request, and what sending them would cost.
#[derive(Debug, Clone, Serialize)]
pub struct NotSent {
    /// Rows whose request repeats an earlier row's (sent once: dedup).
    pub duplicate_rows: u64,
    /// Rows answered by the `--reuse` outputs.
    pub reused_rows: u64,
    pub prompt_tokens: u64,
    /// Their expected and worst-case cost, were they sent: what dedup and reuse save.
    pub expected_cost_usd: Option<f64>,
    pub worst_cost_usd: Option<f64>,
}

// ---------------------------------------------------------------------------------------------
// Streaming the input

/// What the reader thread passes on for one row.
enum Item {
    Request {
        /// `row × models + slot`.
        unit: u64,
        model: String,
        body: Bytes,
        max_tokens: Option<u64>,
        line: u64,
    },
    Invalid {
        problem: String,
    },
}

/// Running sums of one model's rows.
#[derive(Debug, Clone)]
struct ModelTotals {
    rows: u64,
    prompt_tokens: u64,
    exact: bool,
    price: Option<ModelPrice>,
    /// Cost sums at the live rates.
    live: RateSums,
    /// Cost sums at the Batch API's rates.
    batch: RateSums,
    worst_output_tokens: u64,
    rows_without_max_tokens: u64,
}

/// Rate sums of one model's rows under one price list.
#[derive(Debug, Clone, Default)]
struct RateSums {
    /// Σ prompt tokens × input rate (USD per 1M tokens × tokens).
    input_cost: f64,
    /// Σ prompt tokens × cached-input rate (the same prompts, were they all cached).
    cached_input_cost: f64,
    /// Σ output rate over rows (× expected tokens per row gives the expected output cost).
    output_rate_sum: f64,
    /// Σ max tokens × output rate over rows with a max.
    worst_output_cost: f64,
}

impl RateSums {
    fn add(&mut self, price: &ModelPrice, billing: Billing, prompt_tokens: u64, max: Option<u64>) {
        let rates = price.rates_via(billing, prompt_tokens);
        self.input_cost += prompt_tokens as f64 * rates.input;
        self.cached_input_cost += prompt_tokens as f64 * rates.cached_input;
        self.output_rate_sum += rates.output;
        if let Some(n) = max {
            self.worst_output_cost += n as f64 * rates.output;
        }
    }
}

/// Sums over the whole input.
#[derive(Debug, Default)]
struct Totals {
    /// `--json-schema`: the schema's tokens, sent with every request.
    schema_tokens: u64,
    invalid_rows: u64,
    /// `file:line: what` of the first invalid row.
    first_invalid: Option<String>,
    models: BTreeMap<String, ModelTotals>,
}

impl Totals {
    fn add(
        &mut self,
        model: String,
        prompt_tokens: u64,
        max_tokens: Option<u64>,
        prices: &PriceTable,
    ) {
        let entry = match self.models.get_mut(model.as_str()) {
            Some(m) => m,
            None => {
                let totals = ModelTotals {
                    rows: 0,
                    prompt_tokens: 0,
                    exact: is_exact_model(&model),
                    price: prices.get(&model).cloned(),
                    live: RateSums::default(),
                    batch: RateSums::default(),
                    worst_output_tokens: 0,
                    rows_without_max_tokens: 0,
                };
                self.models.entry(model).or_insert(totals)
            }
        };
        entry.rows += 1;
        entry.prompt_tokens += prompt_tokens;
        match max_tokens {
            Some(n) => entry.worst_output_tokens += n,
            None => entry.rows_without_max_tokens += 1,
        }
        if let Some(price) = &entry.price {
            entry
                .live
                .add(price, Billing::Live, prompt_tokens, max_tokens);
            entry
                .batch
                .add(price, Billing::Batch, prompt_tokens, max_tokens);
        }
    }
}

/// Reads the rows on a thread of its own (parsing and body building) while this thread counts
/// tokens; the rows are never all in memory (a few batches in flight).
/// Returns the sums of the rows to send, and of the rows `not_sent` answers otherwise.
fn count_rows(
    rows: input::RowStream,
    counter: &ChatTokenCounter,
    prices: &PriceTable,
    (path, schema_tokens, models): (&std::path::Path, u64, u64),
    not_sent: &Option<crate::reuse::NotSent>,
) -> Result<(Totals, Totals), Error> {
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Item>, Error>>(8);
    std::thread::scope(|scope| {
        scope.spawn(move || send_rows(rows, &tx, path, models));
        let new = || Totals {
            schema_tokens,
            ..Totals::default()
        };
        let (mut totals, mut saved) = (new(), new());
        for batch in rx {
            for item in batch? {
                let skipped = match &item {
                    Item::Request { unit, .. } => {
                        not_sent.as_ref().is_some_and(|n| n.units.contains(*unit))
                    }
                    Item::Invalid { .. } => false,
                };
                match skipped {
                    true => saved.count(item, counter, prices, path)?,
                    false => totals.count(item, counter, prices, path)?,
                }
            }
        }
        Ok((totals, saved))
    })
}

/// The reader thread: rows in batches of [`BATCH`]; a read error ends the stream after the
/// rows before it.
fn send_rows(
    rows: input::RowStream,
    tx: &mpsc::SyncSender<Result<Vec<Item>, Error>>,
    path: &std::path::Path,
    models: u64,
) {
    let mut batch = Vec::with_capacity(BATCH);
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err(e) => {
                let _ = tx.send(Ok(batch));
                let _ = tx.send(Err(e));
                return;
            }
        };
        batch.push(Item::of(row, path, models));
        if batch.len() == BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if tx.send(Ok(full)).is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Ok(batch));
}

impl Item {
    fn of(row: input::Row, path: &std::path::Path, models: u64) -> Item {
        match row.content {
            RowContent::Request(req) => Item::Request {
                unit: crate::input::models::unit(row.row, u64::from(row.slot), models),
                model: req.model,
                body: req.body,
                max_tokens: req.max_tokens,
                line: row.line,
            },
            RowContent::Invalid { .. } => Item::Invalid {
                problem: row.problem(path).unwrap_or_default(),
            },
        }
    }
}

impl Totals {
    /// Counts one row's prompt tokens into its model's sums (or the row as invalid).
    fn count(
        &mut self,
        item: Item,
        counter: &ChatTokenCounter,
        prices: &PriceTable,
        path: &std::path::Path,
    ) -> Result<(), Error> {
        match item {
            Item::Invalid { problem } => {
                self.invalid_rows += 1;
                self.first_invalid.get_or_insert(problem);
            }
            Item::Request {
                unit: _,
                model,
                body,
                max_tokens,
                line,
            } => {
                let tokens = counter
                    .body(&body)
                    .map_err(|message| Error::input(path, line, message))?;
                self.add(model, tokens + self.schema_tokens, max_tokens, prices);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Expected output

/// Where the expected output per row comes from.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectedOutput {
    /// `"expect-output"` or `"from-output"`.
    pub source: &'static str,
    pub tokens_per_row: f64,
    /// The 95 % range of the mean per row (from a sample: mean ± 1.96 standard errors;
    /// with --expect-output both equal `tokens_per_row`).
    pub tokens_per_row_low: f64,
    pub tokens_per_row_high: f64,
    pub reasoning_tokens_per_row: Option<f64>,
    /// Share of the sample's prompt tokens that were cached (from-output only).
    pub cached_share: Option<f64>,
    /// Mean latency of the sample's ok rows, ms (from-output only).
    pub latency_ms_mean: Option<f64>,
    pub from_output_ok_rows: Option<u64>,
}

/// Running sums over a sample's ok records.
#[derive(Default)]
struct Sample {
    ok: u64,
    completion: f64,
    completion_squares: f64,
    reasoning: u64,
    prompt: u64,
    cached: u64,
    latency_ms: u64,
}

impl Sample {
    fn add(&mut self, record: &Record) {
        let completion = record.completion_tokens as f64;
        self.ok += 1;
        self.completion += completion;
        self.completion_squares += completion * completion;
        self.reasoning += record.reasoning_tokens;
        self.prompt += record.prompt_tokens;
        self.cached += record.cached_tokens.min(record.prompt_tokens);
        self.latency_ms += record.latency_ms;
    }

    fn expected(&self) -> ExpectedOutput {
        let n = self.ok as f64;
        let mean = self.completion / n;
        let variance = if self.ok > 1 {
            ((self.completion_squares - n * mean * mean) / (n - 1.0)).max(0.0)
        } else {
            0.0
        };
        let half_range = 1.96 * (variance / n).sqrt();
        ExpectedOutput {
            source: "from-output",
            tokens_per_row: mean,
            tokens_per_row_low: (mean - half_range).max(0.0),
            tokens_per_row_high: mean + half_range,
            reasoning_tokens_per_row: Some(self.reasoning as f64 / n),
            cached_share: Some(if self.prompt == 0 {
                0.0
            } else {
                self.cached as f64 / self.prompt as f64
            }),
            latency_ms_mean: Some(self.latency_ms as f64 / n),
            from_output_ok_rows: Some(self.ok),
        }
    }
}

fn expected_output(opts: &EstimateOptions) -> Result<Option<ExpectedOutput>, Error> {
    if let Some(n) = opts.expect_output {
        return Ok(Some(ExpectedOutput {
            source: "expect-output",
            tokens_per_row: n as f64,
            tokens_per_row_low: n as f64,
            tokens_per_row_high: n as f64,
            reasoning_tokens_per_row: None,
            cached_share: None,
            latency_ms_mean: None,
            from_output_ok_rows: None,
        }));
    }
    match &opts.from_output {
        Some(path) => read_sample(path).map(Some),
        None => Ok(None),
    }
}

/// The expected output measured on the ok records of a sample run's output.
fn read_sample(path: &std::path::Path) -> Result<ExpectedOutput, Error> {
    let mut records = Records::<Record>::open(path)?;
    let mut sample = Sample::default();
    let mut simulated = 0u64;
    for item in records.by_ref() {
        let (_, record) = item?;
        if record.status == Status::Ok {
            simulated += u64::from(record.simulated);
            sample.add(&record);
        }
    }
    if let Some(torn) = records.torn() {
        notice!(
            "note: the last record of {} (line {}) is incomplete and was skipped",
            path.display(),
            torn.line
        );
    }
    if simulated > 0 {
        notice!(
            "warning: {} of the sample's ok rows in {} were answered by the --dry-run simulator: \
             their token counts say nothing about a real model; sample with a real run",
            group(simulated),
            path.display()
        );
    }
    if sample.ok == 0 {
        return Err(Error::Config(format!(
            "{} has no ok records to take the expected output from; pass --expect-output N instead",
            path.display()
        )));
    }
    Ok(sample.expected())
}

// ---------------------------------------------------------------------------------------------
// The estimate

/// The whole estimate, as printed by `--json` (fields documented in the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub input: String,
    pub tokenizer: &'static str,
    /// Requests to make: one per (row, model) (`--model a,b` sends each row to each model),
    /// invalid ones included.
    pub rows: u64,
    /// Models in `--model`'s list (a row naming its own model goes to that one alone).
    pub models_per_row: u64,
    pub request_rows: u64,
    pub invalid_rows: u64,
    /// `file:line: what` of the first invalid row (`promptbatch validate` lists them all).
    pub first_invalid: Option<String>,
    pub prompt_tokens: u64,
    pub prompt_tokens_mean: Option<f64>,
    pub prompt_tokens_exact: bool,
    pub approximate_prompt_tokens: u64,
    /// `--json-schema`: the schema's tokens per request (included in `prompt_tokens`).
    pub schema_tokens_per_row: u64,
    pub expected_output: Option<ExpectedOutput>,
    pub expected_output_tokens: Option<f64>,
    pub worst_output_tokens: Option<u64>,
    pub rows_without_max_tokens: u64,
    pub expected_cost_usd: Option<f64>,
    /// The expected cost at the low and high ends of the expected output's 95 % range.
    pub expected_cost_low_usd: Option<f64>,
    pub expected_cost_high_usd: Option<f64>,
    pub worst_cost_usd: Option<f64>,
    /// The expected and worst-case costs at the Batch API's rates (`run --via batch`).
    pub batch_expected_cost_usd: Option<f64>,
    pub batch_worst_cost_usd: Option<f64>,
    pub unpriced_rows: u64,
    pub unpriced_models: Vec<String>,
    pub models: Vec<ModelEstimate>,
    pub time: Option<TimeEstimate>,
    /// Requests in flight assumed for the latency-bound time.
    pub concurrency: u32,
    /// Rows answered without a request (duplicates, `--reuse`): left out of every figure
    /// above but `rows`; what sending them would cost. `None` with `--no-dedup` and no
    /// `--reuse`.
    pub not_sent: Option<NotSent>,
}

/// One model's part of the estimate.
#[derive(Debug, Clone, Serialize)]
pub struct ModelEstimate {
    pub model: String,
    pub rows: u64,
    pub prompt_tokens: u64,
    pub exact: bool,
    pub priced: bool,
    pub expected_cost_usd: Option<f64>,
    pub worst_cost_usd: Option<f64>,
    pub batch_expected_cost_usd: Option<f64>,
    pub batch_worst_cost_usd: Option<f64>,
}

/// How long the run would take under the given limits.
#[derive(Debug, Clone, Serialize)]
pub struct TimeEstimate {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub minutes: f64,
    /// `"rpm"`, `"tpm"` or `"latency"` (the sample's mean latency at --concurrency): what
    /// sets the duration.
    pub limited_by: &'static str,
    /// Output tokens counted against `--tpm`: `"worst"`, `"expected"` or `"none"`.
    pub output_basis: &'static str,
}

/// What the expected output makes of costs: tokens per row, the cached share of prompt tokens,
/// the 95 % range of tokens per row.
struct Expectation {
    per_row: Option<f64>,
    cached_share: f64,
    range: Option<(f64, f64)>,
}

impl Expectation {
    fn of(expected: Option<&ExpectedOutput>) -> Self {
        Expectation {
            per_row: expected.map(|e| e.tokens_per_row),
            cached_share: expected.and_then(|e| e.cached_share).unwrap_or(0.0),
            range: expected.map(|e| (e.tokens_per_row_low, e.tokens_per_row_high)),
        }
    }
}

/// One model's costs in USD: expected, at the ends of the expected range, worst case; all
/// `None` when the model has no price.
#[derive(Default)]
struct ModelCosts {
    expected: Option<f64>,
    low: Option<f64>,
    high: Option<f64>,
    worst: Option<f64>,
}

impl ModelTotals {
    fn costs(&self, x: &Expectation, billing: Billing) -> ModelCosts {
        if self.price.is_none() {
            return ModelCosts::default();
        }
        let sums = match billing {
            Billing::Live => &self.live,
            Billing::Batch => &self.batch,
        };
        let input =
            sums.input_cost * (1.0 - x.cached_share) + sums.cached_input_cost * x.cached_share;
        let cost_at = |n: f64| (input + n * sums.output_rate_sum) / 1e6;
        ModelCosts {
            expected: x.per_row.map(cost_at),
            low: x.range.map(|r| cost_at(r.0)),
            high: x.range.map(|r| cost_at(r.1)),
            worst: (self.rows_without_max_tokens == 0)
                .then(|| (sums.input_cost + sums.worst_output_cost) / 1e6),
        }
    }
}

/// Sums over the models.
#[derive(Default)]
struct Sums {
    request_rows: u64,
    prompt_tokens: u64,
    approximate: u64,
    rows_without_max: u64,
    worst_tokens: u64,
    any_priced: bool,
    expected_cost: f64,
    expected_low: f64,
    expected_high: f64,
    worst_cost: f64,
    batch_expected_cost: f64,
    batch_worst_cost: f64,
    unpriced_rows: u64,
    unpriced_models: Vec<String>,
    models: Vec<ModelEstimate>,
}

impl Sums {
    fn add(&mut self, name: String, m: &ModelTotals, x: &Expectation) {
        self.request_rows += m.rows;
        self.prompt_tokens += m.prompt_tokens;
        if !m.exact {
            self.approximate += m.prompt_tokens;
        }
        self.rows_without_max += m.rows_without_max_tokens;
        self.worst_tokens += m.worst_output_tokens;
        let c = m.costs(x, Billing::Live);
        let b = m.costs(x, Billing::Batch);
        let priced = m.price.is_some();
        if priced {
            self.any_priced = true;
            self.expected_cost += c.expected.unwrap_or(0.0);
            self.expected_low += c.low.unwrap_or(0.0);
            self.expected_high += c.high.unwrap_or(0.0);
            self.worst_cost += c.worst.unwrap_or(0.0);
            self.batch_expected_cost += b.expected.unwrap_or(0.0);
            self.batch_worst_cost += b.worst.unwrap_or(0.0);
        } else {
            self.unpriced_rows += m.rows;
            self.unpriced_models.push(name.clone());
        }
        self.models.push(ModelEstimate {
            model: name,
            rows: m.rows,
            prompt_tokens: m.prompt_tokens,
            exact: m.exact,
            priced,
            expected_cost_usd: c.expected,
            worst_cost_usd: c.worst,
            batch_expected_cost_usd: b.expected,
            batch_worst_cost_usd: b.worst,
        });
    }
}

/// The run's duration at `--rpm` / `--tpm`, and at the sample's mean latency at `-c`; `None`
/// without any of them.
fn time_estimate(
    opts: &EstimateOptions,
    sums: &Sums,
    worst_output_tokens: Option<u64>,
    expected_output_tokens: Option<f64>,
    latency_ms_mean: Option<f64>,
) -> Option<TimeEstimate> {
    let rows = sums.request_rows as f64;
    let latency_minutes = latency_ms_mean.map(|ms| rows * ms / 60_000.0 / opts.concurrency as f64);
    if opts.rpm.is_none() && opts.tpm.is_none() && latency_minutes.is_none() {
        return None;
    }
    let by_requests = opts.rpm.map_or(0.0, |rpm| rows / rpm as f64);
    let (output, output_basis) = match (worst_output_tokens, expected_output_tokens) {
        (Some(w), _) => (w as f64, "worst"),
        (None, Some(e)) => (e, "expected"),
        (None, None) => (0.0, "none"),
    };
    let tokens = sums.prompt_tokens as f64 + output;
    let by_tokens = opts.tpm.map_or(0.0, |tpm| tokens / tpm as f64);
    let by_latency = latency_minutes.unwrap_or(0.0);
    let limited_by = if by_latency > by_requests.max(by_tokens) {
        "latency"
    } else if opts.tpm.is_some() && (by_tokens > by_requests || opts.rpm.is_none()) {
        "tpm"
    } else {
        "rpm"
    };
    Some(TimeEstimate {
        rpm: opts.rpm,
        tpm: opts.tpm,
        minutes: by_requests.max(by_tokens).max(by_latency),
        limited_by,
        output_basis,
    })
}

impl Estimate {
    fn new(opts: &EstimateOptions, totals: Totals, expected: Option<ExpectedOutput>) -> Self {
        let x = Expectation::of(expected.as_ref());
        let mut sums = Sums::default();
        for (name, m) in totals.models {
            sums.add(name, &m, &x);
        }
        let bounded = sums.rows_without_max == 0;
        let worst_output_tokens = bounded.then_some(sums.worst_tokens);
        let expected_output_tokens = x.per_row.map(|n| n * sums.request_rows as f64);
        let latency = expected.as_ref().and_then(|e| e.latency_ms_mean);
        let time = time_estimate(
            opts,
            &sums,
            worst_output_tokens,
            expected_output_tokens,
            latency,
        );
        let priced = sums.any_priced;
        let request_rows = sums.request_rows;
        Estimate {
            input: opts.input.path.display().to_string(),
            tokenizer: "o200k_base",
            rows: request_rows + totals.invalid_rows,
            models_per_row: opts.request.models_per_row(),
            request_rows,
            invalid_rows: totals.invalid_rows,
            schema_tokens_per_row: totals.schema_tokens,
            first_invalid: totals.first_invalid,
            prompt_tokens: sums.prompt_tokens,
            prompt_tokens_mean: (request_rows > 0)
                .then(|| sums.prompt_tokens as f64 / request_rows as f64),
            prompt_tokens_exact: sums.approximate == 0,
            approximate_prompt_tokens: sums.approximate,
            expected_output: expected,
            expected_output_tokens,
            worst_output_tokens,
            rows_without_max_tokens: sums.rows_without_max,
            expected_cost_usd: (priced && x.per_row.is_some()).then_some(sums.expected_cost),
            expected_cost_low_usd: (priced && x.range.is_some()).then_some(sums.expected_low),
            expected_cost_high_usd: (priced && x.range.is_some()).then_some(sums.expected_high),
            worst_cost_usd: (priced && bounded).then_some(sums.worst_cost),
            batch_expected_cost_usd: (priced && x.per_row.is_some())
                .then_some(sums.batch_expected_cost),
            batch_worst_cost_usd: (priced && bounded).then_some(sums.batch_worst_cost),
            unpriced_rows: sums.unpriced_rows,
            unpriced_models: sums.unpriced_models,
            models: sums.models,
            time,
            concurrency: opts.concurrency,
            not_sent: None,
        }
    }
}
