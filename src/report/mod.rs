//! `promptbatch report`: a summary of an output file (finished or partial): rows ok / error, the
//! most common error messages, tokens by kind, cost by model, latency percentiles, attempts and
//! per-row means. The file is streamed ([`crate::output::read::Records`]); memory holds only the statistics
//! (latency percentiles in a fixed-size `sketch::LatencySketch`, within 1 %, and at most [`MAX_ERROR_GROUPS`] distinct error messages).
//!
//! Cost: a record's own `cost_usd`; when it is null, the cost is computed from the price table
//! (embedded, `--prices FILE` overrides) when the record's model is priced, else the row is
//! counted as unpriced (never as $0).
//!
//! Error messages are grouped with runs of digits replaced by `N` (except an HTTP status code
//! right after `HTTP `), so `retry after 1200ms` and `retry after 800ms` count as one message.
//!
//! `--json` prints one object with these fields:
//! - `output` (path), `format` (`jsonl` | `csv`)
//! - `rows`, `ok`, `error`: record counts; `schema_failures`: error records whose answers never
//!   matched `--json-schema`
//! - `torn_last_line`: `null`, or `{ "line", "reason" }` for a skipped incomplete last record
//! - `top_errors`: up to 5 `{ "message", "count" }`, most frequent first
//! - `tokens`: `{ "prompt", "cached", "completion", "reasoning", "total" }` summed over all rows
//! - `cost`: `{ "total_usd", "from_records_rows", "computed_rows", "unpriced_rows",
//!   "unpriced_models", "by_model": [{ "model", "rows", "cost_usd", "unpriced_rows" }] }`;
//!   `total_usd` sums the priced rows only (check `unpriced_rows`)
//! - `latency_ms`: `null` without ok rows, else `{ "p50", "p90", "p99", "max" }` over ok rows
//!   (nearest-rank percentiles, exact below 1,024 ms, else within 1 %: `crate::report::latency_sketch`)
//! - `attempts`: `{ "1": rows, "2": rows, … }` over all rows
//! - `mean_per_ok_row`: `null` without ok rows, else `{ "prompt_tokens", "completion_tokens",
//!   "reasoning_tokens" }`

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::error::Error;
use crate::money::cost::PriceTable;
use crate::money::ledger::Ledger;
use crate::output::read::{Records, Torn};
use crate::output::record::{Record, Status};
use crate::util::error_kind::normalize_error;

pub(crate) mod latency_sketch;
#[cfg(feature = "cli")]
pub(crate) mod text;

/// Distinct (normalized) error messages kept; further new messages count as "other messages".
pub(crate) const MAX_ERROR_GROUPS: usize = 10_000;

/// Label of the group that collects messages beyond [`MAX_ERROR_GROUPS`].
const OTHER_ERRORS: &str = "(other messages)";

/// Reads an output (finished or partial) and sums it up; `prices` overrides the embedded price
/// table for records written without a cost.
pub fn report(output: &std::path::Path, prices: Option<&std::path::Path>) -> Result<Report, Error> {
    build(output, &PriceTable::load(prices)?)
}

/// The whole report, as printed by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub output: String,
    pub format: &'static str,
    pub rows: u64,
    pub ok: u64,
    pub error: u64,
    /// Error records of rows whose answers never matched `--json-schema`.
    pub schema_failures: u64,
    /// Records answered by the simulator (`--dry-run`): their cost was never spent.
    pub simulated: u64,
    pub torn_last_line: Option<TornLine>,
    pub top_errors: Vec<ErrorCount>,
    pub tokens: Tokens,
    pub cost: Cost,
    pub latency_ms: Option<Latency>,
    pub attempts: BTreeMap<u32, u64>,
    pub mean_per_ok_row: Option<Means>,
    /// Paid work of `--via batch` that no record holds (yet): batches not collected, and
    /// paid answers kept in `OUTPUT.unmatched.jsonl`.
    pub beside: crate::batch::Beside,
}

/// A skipped torn last record.
#[derive(Debug, Clone, Serialize)]
pub struct TornLine {
    pub line: u64,
    pub reason: String,
}

/// One group of error records.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ErrorCount {
    pub message: String,
    pub count: u64,
}

/// Token sums by kind.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tokens {
    pub prompt: u64,
    pub cached: u64,
    pub completion: u64,
    pub reasoning: u64,
    pub total: u64,
}

/// Cost totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cost {
    /// Cost of the rows answered by a real API.
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub total_usd: f64,
    /// What the simulated (`--dry-run`) rows would have cost: not spent, not in `total_usd`.
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub simulated_usd: f64,
    /// Rows whose cost is the record's own `cost_usd`.
    pub from_records_rows: u64,
    /// Rows without `cost_usd` whose cost was computed from the price table.
    pub computed_rows: u64,
    /// Rows without `cost_usd` whose model has no price.
    pub unpriced_rows: u64,
    pub unpriced_models: Vec<String>,
    pub by_model: Vec<ModelCost>,
}

/// Cost of one model's rows.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelCost {
    pub model: String,
    pub rows: u64,
    /// Cost of the model's priced real rows; null when none of its rows has a price.
    #[serde(serialize_with = "crate::util::human::serialize_opt_usd")]
    pub cost_usd: Option<f64>,
    pub unpriced_rows: u64,
    /// Rows answered by the simulator (their cost is in `simulated_usd`, not `cost_usd`).
    pub simulated_rows: u64,
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub simulated_usd: f64,
}

/// Latency percentiles of ok rows, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub max: u32,
}

/// Mean tokens per ok row.
#[derive(Debug, Clone, Serialize)]
pub struct Means {
    pub prompt_tokens: f64,
    pub completion_tokens: f64,
    pub reasoning_tokens: f64,
}

/// Running statistics while the file is read.
#[derive(Default)]
struct Stats {
    rows: u64,
    ok: u64,
    error: u64,
    schema_failures: u64,
    simulated: u64,
    tokens: Tokens,
    ok_tokens: Tokens,
    errors: HashMap<String, u64>,
    ledger: Ledger,
    from_records: u64,
    computed: u64,
    latencies: crate::report::latency_sketch::LatencySketch,
    attempts: BTreeMap<u32, u64>,
}

impl Stats {
    fn add(&mut self, record: &Record, prices: &PriceTable) {
        self.rows += 1;
        add_tokens(&mut self.tokens, record);
        *self.attempts.entry(record.attempts).or_default() += 1;
        match record.status {
            Status::Ok => {
                self.ok += 1;
                add_tokens(&mut self.ok_tokens, record);
                self.latencies
                    .add(u32::try_from(record.latency_ms).unwrap_or(u32::MAX));
            }
            Status::Error => {
                self.error += 1;
                let message = record.error.as_deref().unwrap_or_default();
                if message.contains(crate::api::schema::SCHEMA_FAILURE) {
                    self.schema_failures += 1;
                }
                self.add_error(record.error.as_deref().unwrap_or("(no message)"));
            }
        }
        self.add_cost(record, prices);
    }

    /// Counts an error message in its group (new groups past [`MAX_ERROR_GROUPS`] as other).
    fn add_error(&mut self, message: &str) {
        let key = normalize_error(message);
        if let Some(n) = self.errors.get_mut(&key) {
            *n += 1;
        } else if self.errors.len() < MAX_ERROR_GROUPS {
            self.errors.insert(key, 1);
        } else {
            *self.errors.entry(OTHER_ERRORS.to_string()).or_default() += 1;
        }
    }

    /// Adds the record's cost (its own, else from the price table) to its model's.
    fn add_cost(&mut self, record: &Record, prices: &PriceTable) {
        let cost = match record.cost_usd {
            Some(cost) => {
                self.from_records += 1;
                Some(cost)
            }
            None => prices.get(&record.model).map(|price| {
                self.computed += 1;
                price.cost(&record.usage())
            }),
        };
        if cost.is_some() && record.simulated {
            self.simulated += 1;
        }
        self.ledger
            .add(&record.model, &record.usage(), cost, record.simulated);
    }

    fn finish(self, output: String, format: &'static str, torn: Option<&Torn>) -> Report {
        let mean_per_ok_row = (self.ok > 0).then(|| {
            let n = self.ok as f64;
            Means {
                prompt_tokens: self.ok_tokens.prompt as f64 / n,
                completion_tokens: self.ok_tokens.completion as f64 / n,
                reasoning_tokens: self.ok_tokens.reasoning as f64 / n,
            }
        });
        Report {
            output,
            format,
            rows: self.rows,
            ok: self.ok,
            error: self.error,
            schema_failures: self.schema_failures,
            simulated: self.simulated,
            torn_last_line: torn.map(|t| TornLine {
                line: t.line,
                reason: t.reason.clone(),
            }),
            top_errors: top_errors(self.errors),
            tokens: self.tokens,
            cost: Cost::of(&self.ledger, self.from_records, self.computed),
            latency_ms: latency(&self.latencies),
            beside: Default::default(),
            attempts: self.attempts,
            mean_per_ok_row,
        }
    }
}

/// The 5 most frequent error groups, most frequent first (ties by message).
fn top_errors(errors: HashMap<String, u64>) -> Vec<ErrorCount> {
    let mut top: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(message, count)| ErrorCount { message, count })
        .collect();
    top.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.message.cmp(&b.message))
    });
    top.truncate(5);
    top
}

/// Latency percentiles from the sketch; `None` without any ok row.
fn latency(sketch: &crate::report::latency_sketch::LatencySketch) -> Option<Latency> {
    (!sketch.is_empty()).then(|| Latency {
        p50: sketch.percentile(50.0),
        p90: sketch.percentile(90.0),
        p99: sketch.percentile(99.0),
        max: sketch.max(),
    })
}

impl Cost {
    fn of(ledger: &Ledger, from_records: u64, computed: u64) -> Cost {
        let by_model: Vec<ModelCost> = ledger
            .models()
            .map(|(model, entry)| ModelCost {
                model: model.to_string(),
                rows: entry.rows,
                cost_usd: entry.priced().then(|| entry.spent_usd()),
                unpriced_rows: entry.unpriced_rows,
                simulated_rows: entry.simulated_rows,
                simulated_usd: entry.simulated_usd(),
            })
            .collect();
        Cost {
            total_usd: ledger.spent_usd(),
            simulated_usd: ledger.simulated_usd(),
            from_records_rows: from_records,
            computed_rows: computed,
            unpriced_rows: ledger.unpriced_rows(),
            unpriced_models: by_model
                .iter()
                .filter(|m| m.unpriced_rows > 0)
                .map(|m| m.model.clone())
                .collect(),
            by_model,
        }
    }
}

fn add_tokens(tokens: &mut Tokens, record: &Record) {
    tokens.prompt += record.prompt_tokens;
    tokens.cached += record.cached_tokens;
    tokens.completion += record.completion_tokens;
    tokens.reasoning += record.reasoning_tokens;
    tokens.total += record.total_tokens;
}

/// Reads the whole output file and computes the report.
pub(crate) fn build(path: &std::path::Path, prices: &PriceTable) -> Result<Report, Error> {
    let mut records = Records::<Record>::open(path)?;
    let mut stats = Stats::default();
    for item in records.by_ref() {
        let (_line, record) = item?;
        stats.add(&record, prices);
    }
    let format = records.format().name();
    let mut report = stats.finish(path.display().to_string(), format, records.torn());
    report.beside = crate::batch::beside(path)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::human::group;

    #[test]
    fn errors_are_grouped_with_digits_normalized_but_status_kept() {
        assert_eq!(
            normalize_error("HTTP 429: retry after 1200ms (row 17)"),
            "HTTP 429: retry after Nms (row N)"
        );
        assert_eq!(normalize_error("no digits"), "no digits");
        assert_eq!(normalize_error("7é8"), "NéN");
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
