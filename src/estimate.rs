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
//! - Expected case: `--expect-output N`, or with `--from-output OUTPUT` the mean
//!   `completion_tokens` of the ok records of an earlier output (reasoning tokens are part of
//!   completion tokens; their mean is shown too). Without either, there is no expected case.
//! - Cost per row: the row's model's price tier for its prompt tokens
//!   ([`ModelPrice::rates_for`]), prompt tokens all uncached × input rate + output tokens × output
//!   rate. Rows of a model without a price are "unpriced": never counted as $0, listed instead.
//! - Time (with `--rpm` and/or `--tpm`): minutes = max(rows / rpm, tokens / tpm), tokens = prompt
//!   tokens + output tokens (worst case if bounded, else expected, else prompt tokens only).
//!
//! # `--json` fields
//! - `input`: the input path; `tokenizer`: `"o200k_base"`
//! - `rows`: all data rows; `request_rows`: rows that would be sent; `invalid_rows`: rows that
//!   would become error records (empty prompt, or malformed under `--skip-invalid`), no tokens
//! - `prompt_tokens`, `prompt_tokens_mean` (per request row, `null` without rows),
//!   `prompt_tokens_exact` (false when some rows use the approximation),
//!   `approximate_prompt_tokens` (the part of `prompt_tokens` that is approximate)
//! - `expected_output`: `null`, or `{ "source": "expect-output" | "from-output",
//!   "tokens_per_row", "reasoning_tokens_per_row" (from-output only, else null),
//!   "from_output_ok_rows" (from-output only, else null) }`
//! - `expected_output_tokens`: total expected output tokens, or `null`
//! - `worst_output_tokens`: total of the rows' max tokens, or `null` when unbounded;
//!   `rows_without_max_tokens`
//! - `expected_cost_usd`, `worst_cost_usd`: totals over priced rows, `null` when that case is
//!   unknown or no row is priced; `unpriced_rows`, `unpriced_models`
//! - `models`: `[{ "model", "rows", "prompt_tokens", "exact", "priced", "expected_cost_usd",
//!   "worst_cost_usd" }]`, by model name
//! - `time`: `null` when neither `--rpm` nor `--tpm` is given, else `{ "rpm", "tpm", "minutes",
//!   "limited_by": "rpm" | "tpm", "output_basis": "worst" | "expected" | "none" }`

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::mpsc;

use bytes::Bytes;
use serde::Serialize;

use crate::cli::EstimateOptions;
use crate::cost::{ModelPrice, PriceTable};
use crate::error::{exit_code, Error};
use crate::human::{format_usd, group};
use crate::input::{self, RowContent};
use crate::output::read::Records;
use crate::output::record::{Record, Status};
use crate::report::print_out;
use crate::tokens::o200k::{is_exact_model, ChatTokenCounter};

/// Rows sent from the reader thread to the counter at a time.
const BATCH: usize = 512;

/// Runs the estimate and prints it; returns the process exit code.
pub fn run(opts: &EstimateOptions) -> Result<i32, Error> {
    if opts.expect_output.is_some() && opts.from_output.is_some() {
        return Err(Error::Config(
            "give either --expect-output N or --from-output OUTPUT, not both".into(),
        ));
    }
    let prices = PriceTable::load(opts.prices.as_deref())?;
    let expected = expected_output(opts)?;
    let rows = input::open(&opts.input, &opts.request, None)?;
    let counter = ChatTokenCounter::new()?;
    let totals = count_rows(rows, &counter, &prices, &opts.input.path)?;
    let estimate = Estimate::new(opts, totals, expected);
    if opts.json {
        let text = serde_json::to_string_pretty(&estimate)
            .map_err(|e| Error::Config(format!("cannot encode the estimate as JSON: {e}")))?;
        print_out(&(text + "\n"))?;
    } else {
        print_out(&estimate.to_table())?;
    }
    Ok(exit_code::OK)
}

// ---------------------------------------------------------------------------------------------
// Streaming the input

/// What the reader thread passes on for one row.
enum Item {
    Request {
        model: String,
        body: Bytes,
        max_tokens: Option<u64>,
        line: u64,
    },
    Invalid,
}

/// Running sums of one model's rows.
#[derive(Debug, Clone)]
struct ModelTotals {
    rows: u64,
    prompt_tokens: u64,
    exact: bool,
    price: Option<ModelPrice>,
    /// Σ prompt tokens × input rate (USD per 1M tokens × tokens).
    input_cost: f64,
    /// Σ output rate over rows (× expected tokens per row gives the expected output cost).
    output_rate_sum: f64,
    /// Σ max tokens × output rate over rows with a max.
    worst_output_cost: f64,
    worst_output_tokens: u64,
    rows_without_max_tokens: u64,
}

/// Sums over the whole input.
#[derive(Debug, Default)]
struct Totals {
    invalid_rows: u64,
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
                    input_cost: 0.0,
                    output_rate_sum: 0.0,
                    worst_output_cost: 0.0,
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
            let rates = price.rates_for(prompt_tokens);
            entry.input_cost += prompt_tokens as f64 * rates.input;
            entry.output_rate_sum += rates.output;
            if let Some(n) = max_tokens {
                entry.worst_output_cost += n as f64 * rates.output;
            }
        }
    }
}

/// Reads the rows on a thread of its own (parsing and body building) while this thread counts
/// tokens; the rows are never all in memory (a few batches in flight).
fn count_rows(
    rows: input::RowStream,
    counter: &ChatTokenCounter,
    prices: &PriceTable,
    path: &std::path::Path,
) -> Result<Totals, Error> {
    let (tx, rx) = mpsc::sync_channel::<Result<Vec<Item>, Error>>(8);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut batch = Vec::with_capacity(BATCH);
            for row in rows {
                let item = match row {
                    Ok(row) => match row.content {
                        RowContent::Request(req) => Item::Request {
                            model: req.model,
                            body: req.body,
                            max_tokens: req.max_tokens,
                            line: row.line,
                        },
                        RowContent::Invalid { .. } => Item::Invalid,
                    },
                    Err(e) => {
                        let _ = tx.send(Ok(batch));
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                batch.push(item);
                if batch.len() == BATCH {
                    let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                    if tx.send(Ok(full)).is_err() {
                        return;
                    }
                }
            }
            let _ = tx.send(Ok(batch));
        });
        let mut totals = Totals::default();
        for batch in rx {
            for item in batch? {
                match item {
                    Item::Invalid => totals.invalid_rows += 1,
                    Item::Request {
                        model,
                        body,
                        max_tokens,
                        line,
                    } => {
                        let tokens = counter
                            .body(&body)
                            .map_err(|message| Error::input(path, line, message))?;
                        totals.add(model, tokens, max_tokens, prices);
                    }
                }
            }
        }
        Ok(totals)
    })
}

// ---------------------------------------------------------------------------------------------
// Expected output

/// Where the expected output per row comes from.
#[derive(Debug, Clone, Serialize)]
pub struct ExpectedOutput {
    /// `"expect-output"` or `"from-output"`.
    pub source: &'static str,
    pub tokens_per_row: f64,
    pub reasoning_tokens_per_row: Option<f64>,
    pub from_output_ok_rows: Option<u64>,
}

fn expected_output(opts: &EstimateOptions) -> Result<Option<ExpectedOutput>, Error> {
    if let Some(n) = opts.expect_output {
        return Ok(Some(ExpectedOutput {
            source: "expect-output",
            tokens_per_row: n as f64,
            reasoning_tokens_per_row: None,
            from_output_ok_rows: None,
        }));
    }
    let Some(path) = &opts.from_output else {
        return Ok(None);
    };
    let mut records = Records::<Record>::open(path)?;
    let (mut ok, mut completion, mut reasoning) = (0u64, 0u64, 0u64);
    for item in records.by_ref() {
        let (_, record) = item?;
        if record.status == Status::Ok {
            ok += 1;
            completion += record.completion_tokens;
            reasoning += record.reasoning_tokens;
        }
    }
    if let Some(torn) = records.torn() {
        say!(
            "note: the last record of {} (line {}) is incomplete and was skipped",
            path.display(),
            torn.line
        );
    }
    if ok == 0 {
        return Err(Error::Config(format!(
            "{} has no ok records to take the expected output from; pass --expect-output N instead",
            path.display()
        )));
    }
    Ok(Some(ExpectedOutput {
        source: "from-output",
        tokens_per_row: completion as f64 / ok as f64,
        reasoning_tokens_per_row: Some(reasoning as f64 / ok as f64),
        from_output_ok_rows: Some(ok),
    }))
}

// ---------------------------------------------------------------------------------------------
// The estimate

/// The whole estimate, as printed by `--json` (fields documented in the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    pub input: String,
    pub tokenizer: &'static str,
    pub rows: u64,
    pub request_rows: u64,
    pub invalid_rows: u64,
    pub prompt_tokens: u64,
    pub prompt_tokens_mean: Option<f64>,
    pub prompt_tokens_exact: bool,
    pub approximate_prompt_tokens: u64,
    pub expected_output: Option<ExpectedOutput>,
    pub expected_output_tokens: Option<f64>,
    pub worst_output_tokens: Option<u64>,
    pub rows_without_max_tokens: u64,
    pub expected_cost_usd: Option<f64>,
    pub worst_cost_usd: Option<f64>,
    pub unpriced_rows: u64,
    pub unpriced_models: Vec<String>,
    pub models: Vec<ModelEstimate>,
    pub time: Option<TimeEstimate>,
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
}

/// How long the run would take under the given limits.
#[derive(Debug, Clone, Serialize)]
pub struct TimeEstimate {
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    pub minutes: f64,
    /// `"rpm"` or `"tpm"`: the limit that sets the duration.
    pub limited_by: &'static str,
    /// Output tokens counted against `--tpm`: `"worst"`, `"expected"` or `"none"`.
    pub output_basis: &'static str,
}

impl Estimate {
    fn new(opts: &EstimateOptions, totals: Totals, expected: Option<ExpectedOutput>) -> Self {
        let per_row = expected.as_ref().map(|e| e.tokens_per_row);
        let mut models = Vec::new();
        let (mut request_rows, mut prompt_tokens, mut approximate) = (0, 0, 0);
        let (mut rows_without_max, mut worst_tokens) = (0, 0);
        let (mut expected_cost, mut worst_cost, mut any_priced) = (0.0, 0.0, false);
        let mut unpriced_rows = 0;
        let mut unpriced_models = Vec::new();
        for (name, m) in totals.models {
            request_rows += m.rows;
            prompt_tokens += m.prompt_tokens;
            if !m.exact {
                approximate += m.prompt_tokens;
            }
            rows_without_max += m.rows_without_max_tokens;
            worst_tokens += m.worst_output_tokens;
            let priced = m.price.is_some();
            let (exp, worst) = if priced {
                any_priced = true;
                let exp = per_row.map(|n| (m.input_cost + n * m.output_rate_sum) / 1e6);
                let worst = (m.rows_without_max_tokens == 0)
                    .then(|| (m.input_cost + m.worst_output_cost) / 1e6);
                expected_cost += exp.unwrap_or(0.0);
                worst_cost += worst.unwrap_or(0.0);
                (exp, worst)
            } else {
                unpriced_rows += m.rows;
                unpriced_models.push(name.clone());
                (None, None)
            };
            models.push(ModelEstimate {
                model: name,
                rows: m.rows,
                prompt_tokens: m.prompt_tokens,
                exact: m.exact,
                priced,
                expected_cost_usd: exp,
                worst_cost_usd: worst,
            });
        }
        let bounded = rows_without_max == 0;
        let worst_output_tokens = bounded.then_some(worst_tokens);
        let expected_output_tokens = per_row.map(|n| n * request_rows as f64);
        let time = (opts.rpm.is_some() || opts.tpm.is_some()).then(|| {
            let by_requests = opts.rpm.map_or(0.0, |rpm| request_rows as f64 / rpm as f64);
            let (output, output_basis) = match (worst_output_tokens, expected_output_tokens) {
                (Some(w), _) => (w as f64, "worst"),
                (None, Some(e)) => (e, "expected"),
                (None, None) => (0.0, "none"),
            };
            let by_tokens = opts
                .tpm
                .map_or(0.0, |tpm| (prompt_tokens as f64 + output) / tpm as f64);
            let limited_by =
                if opts.tpm.is_some() && (by_tokens > by_requests || opts.rpm.is_none()) {
                    "tpm"
                } else {
                    "rpm"
                };
            TimeEstimate {
                rpm: opts.rpm,
                tpm: opts.tpm,
                minutes: by_requests.max(by_tokens),
                limited_by,
                output_basis,
            }
        });
        Estimate {
            input: opts.input.path.display().to_string(),
            tokenizer: "o200k_base",
            rows: request_rows + totals.invalid_rows,
            request_rows,
            invalid_rows: totals.invalid_rows,
            prompt_tokens,
            prompt_tokens_mean: (request_rows > 0)
                .then(|| prompt_tokens as f64 / request_rows as f64),
            prompt_tokens_exact: approximate == 0,
            approximate_prompt_tokens: approximate,
            expected_output: expected,
            expected_output_tokens,
            worst_output_tokens,
            rows_without_max_tokens: rows_without_max,
            expected_cost_usd: (any_priced && per_row.is_some()).then_some(expected_cost),
            worst_cost_usd: (any_priced && bounded).then_some(worst_cost),
            unpriced_rows,
            unpriced_models,
            models,
            time,
        }
    }

    /// The human-readable table.
    pub fn to_table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "Estimate for {}", self.input);
        let _ = writeln!(
            s,
            "  rows              {:>14}  ({} invalid: not sent, no tokens)",
            group(self.rows),
            group(self.invalid_rows)
        );
        let exactness = if self.prompt_tokens_exact {
            "exact, o200k_base".to_string()
        } else if self.approximate_prompt_tokens == self.prompt_tokens {
            "APPROXIMATE: o200k_base count for non-GPT models".to_string()
        } else {
            format!(
                "{} of them APPROXIMATE: o200k_base count for non-GPT models",
                group(self.approximate_prompt_tokens)
            )
        };
        let mean = self
            .prompt_tokens_mean
            .map_or("-".to_string(), |m| format!("{m:.1}"));
        let _ = writeln!(
            s,
            "  prompt tokens     {:>14}  (mean {mean} per row; {exactness})",
            group(self.prompt_tokens)
        );
        match &self.expected_output {
            Some(e) => {
                let source = match e.source {
                    "from-output" => format!(
                        "mean of {} ok rows of --from-output, reasoning {:.1}",
                        group(e.from_output_ok_rows.unwrap_or(0)),
                        e.reasoning_tokens_per_row.unwrap_or(0.0)
                    ),
                    _ => "--expect-output".to_string(),
                };
                let _ = writeln!(
                    s,
                    "  expected output   {:>14}  ({:.1} per row: {source})",
                    group(self.expected_output_tokens.unwrap_or(0.0).round() as u64),
                    e.tokens_per_row
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  expected output   {:>14}  (no expected case: pass --expect-output N or --from-output OUTPUT)",
                    "-"
                );
            }
        }
        match self.worst_output_tokens {
            Some(w) => {
                let _ = writeln!(
                    s,
                    "  worst-case output {:>14}  (every row uses its max_tokens)",
                    group(w)
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "  worst-case output {:>14}  (unbounded: {} rows have no max_tokens; pass --max-tokens N)",
                    "-",
                    group(self.rows_without_max_tokens)
                );
            }
        }
        if self.models.len() > 1 || !self.unpriced_models.is_empty() {
            let width = self
                .models
                .iter()
                .map(|m| m.model.len())
                .max()
                .unwrap_or(5)
                .max(5);
            let _ = writeln!(
                s,
                "\n  {:<width$}  {:>10}  {:>14}  {:<11}  {:>14}  {:>14}",
                "model", "rows", "prompt tokens", "tokens", "expected cost", "worst cost"
            );
            for m in &self.models {
                let (exp, worst) = if m.priced {
                    (
                        usd_or_dash(m.expected_cost_usd),
                        usd_or_dash(m.worst_cost_usd),
                    )
                } else {
                    ("unpriced".to_string(), "unpriced".to_string())
                };
                let _ = writeln!(
                    s,
                    "  {:<width$}  {:>10}  {:>14}  {:<11}  {:>14}  {:>14}",
                    m.model,
                    group(m.rows),
                    group(m.prompt_tokens),
                    if m.exact { "exact" } else { "approximate" },
                    exp,
                    worst
                );
            }
            let _ = writeln!(s);
        }
        let unpriced = if self.unpriced_rows > 0 {
            format!(
                "  + {} unpriced rows ({}: add prices with --prices FILE)",
                group(self.unpriced_rows),
                self.unpriced_models.join(", ")
            )
        } else {
            String::new()
        };
        let cost_line = |cost: Option<f64>, why_none: &str| match cost {
            Some(c) => format!("{:>14}{unpriced}", format_usd(c)),
            None => format!("{:>14}  ({why_none})", "-"),
        };
        let no_price = self.models.iter().all(|m| !m.priced) && !self.models.is_empty();
        let why_expected = if no_price {
            "no row's model has a price"
        } else {
            "no expected output given"
        };
        let why_worst = if no_price {
            "no row's model has a price"
        } else {
            "worst case unbounded without max_tokens"
        };
        let _ = writeln!(
            s,
            "  expected cost     {}",
            cost_line(self.expected_cost_usd, why_expected)
        );
        let _ = writeln!(
            s,
            "  worst-case cost   {}",
            cost_line(self.worst_cost_usd, why_worst)
        );
        match &self.time {
            None => {
                let _ = writeln!(
                    s,
                    "  time              {:>14}  (not limited: pass --rpm and/or --tpm for an estimate)",
                    "-"
                );
            }
            Some(t) => {
                let mut limits = Vec::new();
                if let Some(rpm) = t.rpm {
                    limits.push(format!("--rpm {rpm}"));
                }
                if let Some(tpm) = t.tpm {
                    limits.push(format!("--tpm {tpm}"));
                }
                let basis = match t.output_basis {
                    "worst" => "worst-case output",
                    "expected" => "expected output",
                    _ => "prompt tokens only",
                };
                let detail = if t.limited_by == "tpm" {
                    format!("tokens are the limit, counting {basis}")
                } else {
                    "requests are the limit".to_string()
                };
                let _ = writeln!(
                    s,
                    "  time              {:>14}  (at {}; {detail})",
                    format_minutes(t.minutes),
                    limits.join(" ")
                );
            }
        }
        s
    }
}

fn usd_or_dash(cost: Option<f64>) -> String {
    cost.map_or("-".to_string(), format_usd)
}

/// `12.5` minutes → `12.5 min`; long ones as hours.
fn format_minutes(minutes: f64) -> String {
    if minutes < 120.0 {
        format!("{minutes:.1} min")
    } else {
        format!("{:.1} h", minutes / 60.0)
    }
}
