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
//! - `top_errors`: up to 5 `{ "message", "count", "examples" }` (the first 3 ids), most
//!   frequent first
//! - `tokens`: `{ "prompt", "cached", "completion", "reasoning", "total" }` summed over all rows
//! - `prompt_cache`: `{ "cached_share", "saved_usd", "simulated_saved_usd", "unpriced_rows" }`:
//!   cached ÷ prompt tokens (`null` without prompt tokens), and what the cached tokens saved,
//!   cached × (input − cached_input) at the model's live rates for the record's prompt tier —
//!   real rows in `saved_usd`, `--dry-run` rows apart; rows with cached tokens whose model has
//!   no price are counted in `unpriced_rows`, not priced
//! - `cost`: `{ "total_usd", "from_records_rows", "computed_rows", "unpriced_rows",
//!   "unpriced_models", "by_model": [{ "model", "rows", "cost_usd", "unpriced_rows" }] }`;
//!   `total_usd` sums the priced rows only (check `unpriced_rows`)
//! - `latency_ms`: `null` without ok rows, else `{ "p50", "p90", "p99", "max" }` over ok rows
//!   (nearest-rank percentiles, exact below 1,024 ms, else within 1 %: `crate::report::latency_sketch`)
//! - `attempts`: `{ "1": rows, "2": rows, … }` over all rows
//! - `mean_per_ok_row`: `null` without ok rows, else `{ "prompt_tokens", "completion_tokens",
//!   "reasoning_tokens" }`
//! - `timeline`: `null` when no record has a `finished_at`, else `{ "start", "bucket_s",
//!   "models", "buckets": [{ "t_s", "ok", "errors", "latency_ms", "cost_usd": [by model],
//!   "rate_limited", "server_errors", "retries", "paused_s", "pace_rpm", "limit_rpm" }],
//!   "untimed_rows" }`:
//!   at most 120 equal buckets by `finished_at` (`timeline.rs`); the last six fields come from
//!   the event log, `OUTPUT.events.jsonl`, when there is one
//! - `token_histogram`: `{ "bins", "prompt", "cached", "completion", "reasoning" }`, records by
//!   tokens in power-of-two bins
//! - `slowest`: up to 10 `{ "id", "model", "latency_ms", "status", "attempts" }`, slowest first
//! - `runs`: from the event log, the last 50 `{ "started_at", "stopped_at", "reason",
//!   "message" }` (`stopped_at` null: still running, or killed)
//! - `batches`: from the event log (`--via batch`), the last 500 `{ "batch", "rows",
//!   "submitted_at", "collected_at", "status" }`

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use serde::Serialize;

use crate::error::Error;
use crate::money::cost::PriceTable;
use crate::money::ledger::Ledger;
use crate::output::read::{Records, Torn};
use crate::output::record::{Record, Status};
use crate::util::error_kind::normalize_error;

pub(crate) mod html;
pub(crate) mod latency_sketch;
#[cfg(feature = "cli")]
pub(crate) mod text;
pub(crate) mod timeline;

/// Distinct (normalized) error messages kept; further new messages count as "other messages".
pub(crate) const MAX_ERROR_GROUPS: usize = 10_000;

/// Label of the group that collects messages beyond [`MAX_ERROR_GROUPS`].
const OTHER_ERRORS: &str = "(other messages)";

/// Reads an output (finished or partial) and sums it up; `prices` overrides the embedded price
/// table for records written without a cost.
pub fn report(output: &std::path::Path, prices: Option<&std::path::Path>) -> Result<Report, Error> {
    build(output, &PriceTable::load(prices)?)
}

/// Writes `report` as one self-contained HTML page to `dest` (replaced atomically: a temporary
/// file beside it, then renamed).
pub fn write_html_report(report: &Report, dest: &std::path::Path) -> Result<(), Error> {
    let page = html::render(report);
    let staging = crate::paths::suffixed(dest, ".tmp");
    let io = |e| {
        Error::io(
            format!("cannot write the HTML report {}", dest.display()),
            e,
        )
    };
    std::fs::write(&staging, page).map_err(io)?;
    std::fs::rename(&staging, dest).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        io(e)
    })
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
    /// What providers' prompt caches did: the cached share of prompt tokens, the money saved.
    pub prompt_cache: PromptCache,
    pub cost: Cost,
    pub latency_ms: Option<Latency>,
    pub attempts: BTreeMap<u32, u64>,
    pub mean_per_ok_row: Option<Means>,
    /// Paid work of `--via batch` that no record holds (yet): batches not collected, and
    /// paid answers kept in `OUTPUT.unmatched.jsonl`.
    pub beside: crate::batch::Beside,
    /// The run over time (`null` when no record has a `finished_at`).
    pub timeline: Option<timeline::Timeline>,
    /// How many records have each number of tokens, by kind, in power-of-two bins.
    pub token_histogram: TokenHistogram,
    /// The slowest records (up to 10), slowest first.
    pub slowest: Vec<SlowRow>,
    /// The runs that wrote the output, from its event log (`OUTPUT.events.jsonl`), the last 50.
    pub runs: Vec<RunSpan>,
    /// `--via batch`: each batch's life, from the event log, the last 500 submitted.
    pub batches: Vec<BatchLife>,
    /// Records by how their answer was had: paid for, copied from a row with the same
    /// request (`duplicate_of`), or from an earlier output (`--reuse`).
    pub answered: Answered,
}

/// Records by how their answer was had, and what the copied answers cost when bought.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Answered {
    /// Records of a request sent (or of a row that could not be sent).
    pub sent: u64,
    pub deduplicated: u64,
    pub reused: u64,
    /// What the answers the deduplicated and reused records copy cost when they were bought:
    /// what sending those rows would have cost again.
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub saved_usd: f64,
}

/// One batch of a `--via batch` run, from the event log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchLife {
    pub batch: String,
    pub rows: u64,
    pub submitted_at: String,
    /// `null` while it runs (or when a run collected it without an event log).
    pub collected_at: Option<String>,
    /// Its final status (`completed`, `expired`, `failed`, `cancelled`), or `submitted`.
    pub status: String,
}

/// Counts of records by tokens, in bins `0`, `1`, `2–3`, `4–7`, … (`bins` names them).
#[derive(Debug, Clone, Serialize)]
pub struct TokenHistogram {
    pub bins: Vec<String>,
    pub prompt: Vec<u64>,
    pub cached: Vec<u64>,
    pub completion: Vec<u64>,
    pub reasoning: Vec<u64>,
}

/// One of the slowest records.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SlowRow {
    pub id: String,
    pub model: String,
    pub latency_ms: u64,
    pub status: Status,
    pub attempts: u32,
}

/// Slower first; ties by id, so the list does not depend on the file's order.
impl Ord for SlowRow {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.latency_ms
            .cmp(&other.latency_ms)
            .then_with(|| other.id.cmp(&self.id))
    }
}

impl PartialOrd for SlowRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// One run of the output, from its event log.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSpan {
    pub started_at: String,
    /// `null` while the run goes on, or when it was killed (`kill -9`, a reboot).
    pub stopped_at: Option<String>,
    /// Why it stopped (`completed`, `interrupted`, `budget`, …); `null` as `stopped_at`.
    pub reason: Option<String>,
    pub message: Option<String>,
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
    /// Ids of the first records with it (up to 3).
    pub examples: Vec<String>,
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

/// What providers' prompt caches did (see the module docs, `prompt_cache`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PromptCache {
    /// Cached ÷ prompt tokens over all records; `None` without prompt tokens.
    pub cached_share: Option<f64>,
    /// What the cached tokens of rows answered by a real API saved, against the same tokens
    /// uncached.
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub saved_usd: f64,
    /// The same for simulated (`--dry-run`) rows: not money anyone saved.
    #[serde(serialize_with = "crate::util::human::serialize_usd")]
    pub simulated_saved_usd: f64,
    /// Rows with cached tokens whose model has no price: not in the savings.
    pub unpriced_rows: u64,
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
    errors: HashMap<String, (u64, Vec<String>)>,
    ledger: Ledger,
    from_records: u64,
    computed: u64,
    latencies: crate::report::latency_sketch::LatencySketch,
    attempts: BTreeMap<u32, u64>,
    timeline: timeline::TimelineBuilder,
    histogram: [[u64; HISTOGRAM_BINS]; 4],
    /// The slowest records so far, the fastest of them on top.
    slowest: BinaryHeap<Reverse<SlowRow>>,
    answered: Answered,
    /// Σ saved_usd, in nano-dollars (exact whatever the order).
    saved_nanos: u64,
    /// What prompt caches saved: real rows, simulated rows (nano-dollars); unpriced rows.
    cache_saved: [crate::money::nanos::Nanos; 2],
    cache_unpriced: u64,
}

/// Bins of the token histogram: `0`, `1`, `2–3`, … up to `2^30` and more.
const HISTOGRAM_BINS: usize = 32;

/// Records listed as the slowest.
const SLOWEST: usize = 10;

/// Error examples kept per group.
const EXAMPLES: usize = 3;

/// Runs listed from the event log.
const RUNS: usize = 50;

/// Batches listed from the event log.
const BATCHES: usize = 500;

/// The histogram bin of `n` tokens.
fn bin(n: u64) -> usize {
    (if n == 0 {
        0
    } else {
        64 - n.leading_zeros() as usize
    })
    .min(HISTOGRAM_BINS - 1)
}

impl Stats {
    /// Counts a record that copies another's answer (`extras`: its fields beyond the schema,
    /// when it has any of the markers): counted as a row and by status, never in latency,
    /// tokens or attempts, which are of requests.
    fn add_copy(&mut self, record: &Record, extras: &crate::input::Kept) {
        use crate::output::record::{DUPLICATE_OF, SAVED_USD};
        if extras.contains_key(DUPLICATE_OF) {
            self.answered.deduplicated += 1;
        } else {
            self.answered.reused += 1;
        }
        let saved = extras.get(SAVED_USD).and_then(|v| {
            v.as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        });
        if let Some(saved) = saved {
            self.saved_nanos += crate::money::nanos::nearest(saved);
        }
        self.rows += 1;
        match record.status {
            Status::Ok => self.ok += 1,
            Status::Error => self.error += 1,
        }
        // Its tokens were used by the row it copies: counted there.
        let none = crate::api::TokenUsage::default();
        self.ledger
            .add(&record.model, &none, Some(0.0), record.simulated);
        self.timeline.add_record(
            record.finished_at.as_deref(),
            record.status == Status::Ok,
            record.latency_ms,
            &record.model,
            0.0,
        );
    }

    fn add(&mut self, record: &Record, prices: &PriceTable) {
        self.answered.sent += 1;
        self.rows += 1;
        add_tokens(&mut self.tokens, record);
        for (kind, n) in [
            record.prompt_tokens,
            record.cached_tokens,
            record.completion_tokens,
            record.reasoning_tokens,
        ]
        .into_iter()
        .enumerate()
        {
            self.histogram[kind][bin(n)] += 1;
        }
        self.add_slow(record);
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
                self.add_error(
                    record.error.as_deref().unwrap_or("(no message)"),
                    &record.id,
                );
            }
        }
        let cost = self.add_cost(record, prices);
        self.add_cache_saving(record, prices);
        self.timeline.add_record(
            record.finished_at.as_deref(),
            record.status == Status::Ok,
            record.latency_ms,
            &record.model,
            cost.unwrap_or(0.0),
        );
    }

    /// Keeps the record if it is among the [`SLOWEST`].
    fn add_slow(&mut self, record: &Record) {
        let slower = self
            .slowest
            .peek()
            .is_none_or(|Reverse(fastest)| record.latency_ms > fastest.latency_ms);
        if self.slowest.len() < SLOWEST || slower {
            self.slowest.push(Reverse(SlowRow {
                id: record.id.clone(),
                model: record.model.clone(),
                latency_ms: record.latency_ms,
                status: record.status,
                attempts: record.attempts,
            }));
            if self.slowest.len() > SLOWEST {
                self.slowest.pop();
            }
        }
    }

    /// Counts an error message in its group (new groups past [`MAX_ERROR_GROUPS`] as other).
    fn add_error(&mut self, message: &str, id: &str) {
        let key = normalize_error(message);
        let group = if self.errors.contains_key(&key) || self.errors.len() < MAX_ERROR_GROUPS {
            self.errors.entry(key).or_default()
        } else {
            self.errors.entry(OTHER_ERRORS.to_string()).or_default()
        };
        group.0 += 1;
        if group.1.len() < EXAMPLES && !group.1.iter().any(|seen| seen == id) {
            group.1.push(id.to_string());
        }
    }

    /// What the record's cached tokens saved: cached × (input − cached_input), at its model's
    /// live rates for its prompt's tier.
    fn add_cache_saving(&mut self, record: &Record, prices: &PriceTable) {
        if record.cached_tokens == 0 {
            return;
        }
        let Some(price) = prices.get(&record.model) else {
            self.cache_unpriced += 1;
            return;
        };
        let rates = price.rates_for(record.prompt_tokens);
        let cached = record.cached_tokens.min(record.prompt_tokens) as f64;
        let saved = cached * (rates.input - rates.cached_input).max(0.0) / 1_000_000.0;
        self.cache_saved[usize::from(record.simulated)] += crate::money::nanos::nearest(saved);
    }

    /// Adds the record's cost (its own, else from the price table) to its model's.
    fn add_cost(&mut self, record: &Record, prices: &PriceTable) -> Option<f64> {
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
        cost
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
            prompt_cache: PromptCache {
                cached_share: (self.tokens.prompt > 0)
                    .then(|| self.tokens.cached as f64 / self.tokens.prompt as f64),
                saved_usd: crate::money::nanos::usd(self.cache_saved[0]),
                simulated_saved_usd: crate::money::nanos::usd(self.cache_saved[1]),
                unpriced_rows: self.cache_unpriced,
            },
            tokens: self.tokens,
            cost: Cost::of(&self.ledger, self.from_records, self.computed),
            latency_ms: latency(&self.latencies),
            beside: Default::default(),
            attempts: self.attempts,
            mean_per_ok_row,
            timeline: self.timeline.finish(),
            token_histogram: histogram(&self.histogram),
            slowest: self
                .slowest
                .into_sorted_vec()
                .into_iter()
                .map(|Reverse(row)| row)
                .collect(),
            runs: Vec::new(),
            batches: Vec::new(),
            answered: Answered {
                saved_usd: crate::money::nanos::usd(self.saved_nanos),
                ..self.answered
            },
        }
    }
}

/// The histogram with its bins named, cut after the last bin any kind uses.
fn histogram(counts: &[[u64; HISTOGRAM_BINS]; 4]) -> TokenHistogram {
    let used = (0..HISTOGRAM_BINS)
        .rev()
        .find(|&b| counts.iter().any(|kind| kind[b] > 0))
        .map_or(1, |b| b + 1);
    let bins = (0..used)
        .map(|b| match b {
            0 => "0".to_string(),
            1 => "1".to_string(),
            _ if b == HISTOGRAM_BINS - 1 => format!("{}+", 1u64 << (b - 1)),
            _ => format!("{}-{}", 1u64 << (b - 1), (1u64 << b) - 1),
        })
        .collect();
    let kind = |k: usize| counts[k][..used].to_vec();
    TokenHistogram {
        bins,
        prompt: kind(0),
        cached: kind(1),
        completion: kind(2),
        reasoning: kind(3),
    }
}

/// The 5 most frequent error groups, most frequent first (ties by message).
fn top_errors(errors: HashMap<String, (u64, Vec<String>)>) -> Vec<ErrorCount> {
    let mut top: Vec<ErrorCount> = errors
        .into_iter()
        .map(|(message, (count, examples))| ErrorCount {
            message,
            count,
            examples,
        })
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
    use crate::output::record::{DUPLICATE_OF, REUSED_FROM};
    while let Some(item) = records.next() {
        let (_line, record) = item?;
        match records.last_extras_naming(&[DUPLICATE_OF, REUSED_FROM]) {
            Some(extras) => stats.add_copy(&record, &extras),
            None => stats.add(&record, prices),
        }
    }
    let format = records.format().name();
    let mut lives = Lives::default();
    read_event_log(path, &mut stats.timeline, &mut lives);
    let mut report = stats.finish(path.display().to_string(), format, records.torn());
    report.runs = lives.runs;
    report.batches = lives.batches.into();
    report.beside = crate::batch::beside(path)?;
    Ok(report)
}

/// The runs and batches the event log tells of.
#[derive(Default)]
struct Lives {
    runs: Vec<RunSpan>,
    batches: std::collections::VecDeque<BatchLife>,
}

/// Adds the event log's intervals and pauses to `timeline`, its runs (the last [`RUNS`]) and
/// batches (the last [`BATCHES`]) to `lives`.
fn read_event_log(
    output: &std::path::Path,
    timeline: &mut timeline::TimelineBuilder,
    lives: &mut Lives,
) {
    let runs = &mut lives.runs;
    let batches = &mut lives.batches;
    crate::monitor::event_log::read(output, |line| {
        let text = |key: &str| line.get(key).and_then(|v| v.as_str()).map(str::to_string);
        let count = |key: &str| line.get(key).and_then(|v| v.as_u64()).unwrap_or(0);
        let at = text("at").unwrap_or_default();
        match line.get("event").and_then(|v| v.as_str()) {
            Some("interval") => timeline.add_interval(
                &at,
                timeline::Interval {
                    rate_limited: count("rate_limited"),
                    server_errors: count("server_errors"),
                    retries: count("retries"),
                    pace_rpm: line.get("pace_rpm").and_then(|v| v.as_f64()),
                    limit_rpm: line.get("limit_rpm").and_then(|v| v.as_f64()),
                },
            ),
            Some("pause") => timeline.add_pause(&at, &text("until").unwrap_or_default()),
            Some("start") => {
                if runs.len() == RUNS {
                    runs.remove(0);
                }
                runs.push(RunSpan {
                    started_at: at,
                    ..RunSpan::default()
                });
            }
            Some("batch_submitted") => {
                if batches.len() == BATCHES {
                    batches.pop_front();
                }
                batches.push_back(BatchLife {
                    batch: text("batch").unwrap_or_default(),
                    rows: count("rows"),
                    submitted_at: at,
                    collected_at: None,
                    status: "submitted".into(),
                });
            }
            Some("batch_collected") => {
                let id = text("batch").unwrap_or_default();
                if let Some(life) = batches.iter_mut().rev().find(|b| b.batch == id) {
                    life.collected_at = Some(at);
                    life.status = text("status").unwrap_or_default();
                }
            }
            Some("stop") => {
                timeline.add_stop(&at);
                if let Some(run) = runs.last_mut().filter(|r| r.stopped_at.is_none()) {
                    run.stopped_at = Some(at);
                    run.reason = text("reason");
                    run.message = text("message").filter(|m| !m.is_empty());
                }
            }
            _ => {}
        }
    });
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
