//! Command-line definitions (clap) and their mapping to the library's types: every flag is
//! documented where it is defined (`--help` is generated from these doc comments), and each
//! command's flags become the library value that command runs on ([`Job`], [`EstimateOptions`],
//! …) in one place, `into_*` below. The library never imports this module; the binary and the
//! Python module (`python/src/lib.rs`, which parses keyword arguments with these definitions)
//! both include it.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Args, Parser, Subcommand};

use promptbatch::AnswerBody;
use promptbatch::Choice;
use promptbatch::KeepColumns;
use promptbatch::OutputFormat;
use promptbatch::{
    BatchOptions, CostOptions, Display, EndpointOptions, ErrorStyle, EstimateOptions, Fallback,
    InputFormat, InputOptions, Job, JsonSchema, LatencySpec, LimitOptions, LimitSchedule,
    LimitStyle, MergeOptions, MonitorOptions, OutputOptions, PrefixCacheModel, RequestOptions,
    RetryPolicy, ReuseOptions, Shard, SimOptions, Via,
};

/// Exit codes, shown at the end of `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0    every row has an ok record
  1    configuration, input or fatal API error (bad key, unknown model, no quota, malformed
       input, untrusted certificate, endpoint unreachable before any answer)
  2    command-line usage error
  3    the run finished but some rows are error records
  4    stopped by the budget cap
  130  interrupted (Ctrl-C / SIGTERM / SIGHUP); re-run the same command to resume";

/// promptbatch: run a whole dataset of prompts through a chat-completions API, within rate limits,
/// one result record per row.
#[derive(Debug, Parser)]
#[command(name = "promptbatch", version, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// More log output on stderr (-v: info, -vv: debug). `RUST_LOG` overrides.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send every row of INPUT to the API and write one record per row to OUTPUT.
    #[command(after_help = EXIT_CODES_HELP)]
    Run(Box<RunArgs>),
    /// Count the prompt tokens of INPUT exactly (offline) and estimate the cost and time of a run.
    Estimate(Box<EstimateArgs>),
    /// Summarize an output file (finished or partial): rows, errors, tokens, cost, latency.
    Report(ReportArgs),
    /// Check INPUT in one pass without sending anything: lists every row that cannot be sent
    /// (`file:line: what`), counts rows, and shows the ids, columns and models found. Exit 0 when
    /// every row can be sent, 1 otherwise (also when there are no data rows).
    Validate(Box<ValidateArgs>),
    /// Join the outputs of a sharded run (`--shard K/N`) into one file, checking that no row is
    /// in two of them (and, with --expect-rows, that none is missing).
    Merge(MergeArgs),
    /// Convert an output (JSONL or CSV, finished or partial) to DEST: `.parquet` (typed
    /// columns), `.csv`, or anything else JSONL. Every field of the records becomes a column;
    /// DEST is replaced atomically.
    Export(ExportArgs),
    /// Serve the built-in OpenAI-compatible simulator (deterministic answers, latency and faults).
    /// Its answers say they are simulated: runs record them `simulated`, never as paid.
    MockServer(MockServerArgs),
    /// Cancel the batches a `run --via batch` into OUTPUT submitted that are still running (read
    /// from OUTPUT.batch.json). A later run on OUTPUT collects what they finished and submits
    /// their other rows again.
    Cancel(CancelArgs),
}

/// Where the rows come from and how a row becomes a prompt (shared by `run` and `estimate`).
#[derive(Debug, Clone, Args)]
pub struct InputArgs {
    /// Input file: CSV with a header row, JSONL (one object per line: `prompt`, `messages` or an
    /// OpenAI Batch API line), or Parquet (`.parquet`: columns as in CSV, and a `messages`
    /// list<struct<role, content>> column works too). `-` reads standard input (then give
    /// --input-format; not Parquet).
    #[arg(value_name = "INPUT")]
    pub path: PathBuf,

    /// Input format.
    #[arg(long, value_parser = choice::<InputFormat>(), default_value = "auto")]
    pub input_format: InputFormat,

    /// Column (CSV) or field (JSONL) holding the prompt, when no --template is given.
    #[arg(long, default_value = promptbatch::internals::DEFAULT_PROMPT_COLUMN)]
    pub prompt_column: String,

    /// Prompt template filled from the row's columns, e.g. "Summarize {title}: {text}".
    /// Write `{{` and `}}` for literal braces.
    #[arg(long)]
    pub template: Option<String>,

    /// Column or field holding the row id. Default: `id` if present, else `custom_id`, else the
    /// row number.
    #[arg(long)]
    pub id_column: Option<String>,

    /// CSV or Parquet column naming each row's model: a row with a value there is sent to that
    /// model alone (one record), whatever --model lists; an empty cell goes to --model's list.
    /// (JSONL rows name theirs with a `model` field, a Batch line with `body.model`.)
    #[arg(long, value_name = "COLUMN")]
    pub model_column: Option<String>,

    /// Turn malformed input records into error records instead of stopping the run.
    #[arg(long)]
    pub skip_invalid: bool,

    /// Only the first N data rows (a smoke test before an overnight run). A later run without
    /// it, or with a larger N, keeps what this one finished and sends the rest.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Only the rows of shard K of N (0 <= K < N), chosen by a stable hash of the row id, so N
    /// copies of the run — each with its own OUTPUT, key and rate limit — split the input
    /// (`$JOB_COMPLETION_INDEX/N` in a Kubernetes Indexed Job, `$SLURM_ARRAY_TASK_ID/N` in a
    /// Slurm array); `promptbatch merge` joins their outputs.
    #[arg(long, value_name = "K/N", value_parser = Shard::parse)]
    pub shard: Option<Shard>,

    /// Copy these input columns (CSV) or fields (JSONL) into each record, values unchanged
    /// (JSON values stay JSON in a JSONL output): `ticket_id,label`, or `all`. A name that is
    /// also a record field (e.g. `id`, `prompt`) is written as `input_NAME`. A JSONL field a line
    /// lacks is null.
    #[arg(long, value_name = "COLUMNS|all", value_parser = KeepColumns::parse)]
    pub keep_columns: Option<KeepColumns>,
}

/// What every request carries besides its messages (shared by `run` and `estimate`).
#[derive(Debug, Clone, Args)]
pub struct RequestArgs {
    /// System message prepended to every request whose messages do not already start with one.
    #[arg(long)]
    pub system: Option<String>,

    /// Model sent with every request; several, comma-separated (`--model gpt-5.2,gemini-3.1-pro-preview`),
    /// send each row to each model, one record per (row, model). A row that names its own model
    /// (a Batch API line's `body.model`, a JSONL line's `model`) goes to that model alone.
    #[arg(long, value_delimiter = ',', default_value = promptbatch::internals::DEFAULT_MODEL)]
    pub model: Vec<String>,

    /// `max_tokens` for every request (also the output part of the --tpm estimate).
    #[arg(long)]
    pub max_tokens: Option<u32>,

    /// `temperature` for every request.
    #[arg(long)]
    pub temperature: Option<f64>,

    /// `reasoning_effort` for every request (e.g. none, low, medium, high).
    #[arg(long)]
    pub reasoning_effort: Option<String>,

    /// Any other request body field, as KEY=JSON (repeatable), e.g. --param 'seed=7'
    /// --param 'response_format={"type":"json_object"}'. A bare word that is not JSON is sent as a
    /// string.
    #[arg(long = "param", value_name = "KEY=JSON", value_parser = parse_param)]
    pub params: Vec<(String, serde_json::Value)>,

    /// Structured outputs: send this JSON Schema (a bare schema, or OpenAI's `{"name",
    /// "schema", "strict"}`) as every request's `response_format` and check every answer
    /// against it. A JSONL record gets the answer's value as `parsed`; a CSV output gets one
    /// column per top-level property. An answer that is not valid JSON or breaks the schema is
    /// retried (it counts as an attempt, its tokens and cost are added to the row), then
    /// becomes an error record naming the rule.
    #[arg(long, value_name = "FILE", value_parser = parse_schema)]
    pub json_schema: Option<JsonSchema>,

    /// Send OpenAI's `prompt_cache_key` with every request whose messages before the last come
    /// to at least 1,024 estimated tokens (a system prompt, a few-shot block): 16 hex digits of
    /// a hash of those messages and the model, so the provider routes the rows of one prefix to
    /// the same prompt cache. A `prompt_cache_key` the row or --param sets wins. The key is part
    /// of the request body, so of the fingerprint resume compares: turning the flag on or off
    /// between runs into one OUTPUT sends those rows again.
    #[arg(long)]
    pub prompt_cache_key: bool,
}

/// Everything `promptbatch run` accepts.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub input: InputArgs,

    /// Output file. `.csv` writes CSV; `.parquet` writes the records to the JSONL checkpoint
    /// OUTPUT.jsonl (e.g. results.parquet.jsonl) and OUTPUT itself, typed columns, once every
    /// row has a record; anything else writes JSONL. When it (its checkpoint) exists, the run
    /// resumes: its ok records for unchanged rows are kept and only the other rows are sent.
    #[arg(short, long)]
    pub output: PathBuf,

    #[command(flatten)]
    pub request: RequestArgs,

    /// Price table overrides (TOML, same shape as the embedded prices.toml): USD per 1M tokens.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Budget cap in USD for the total cost recorded in OUTPUT (earlier runs included). The run
    /// stops dispatching before spend plus the worst case of the requests in flight would pass
    /// it, and exits with code 4; raise the cap and re-run to continue.
    #[arg(long, value_name = "USD", value_parser = parse_usd, allow_negative_numbers = true)]
    pub max_cost: Option<f64>,

    /// API base URL; requests go to {base-url}/chat/completions. A user name and password in it
    /// (`https://user:pass@host/v1`) are never shown: logs and messages print `[redacted]`.
    #[arg(
        long,
        env = "PROMPTBATCH_BASE_URL",
        default_value = promptbatch::internals::DEFAULT_BASE_URL
    )]
    pub base_url: String,

    /// Also trust the CA certificates in FILE (PEM, one or more), e.g. a company's
    /// TLS-inspecting proxy's CA (repeatable). The bundled web roots and the operating system's
    /// trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured) are always trusted. Proxies come
    /// from `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY`, minus `NO_PROXY`.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,

    /// Environment variable holding the API key. Default: EVOLINK_API_KEY, else OPENAI_API_KEY.
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,

    /// Requests in flight at once. Rows sharing a long prompt prefix (every message but the
    /// last, at least 1,024 estimated tokens: a system prompt, a few-shot block) go warm-first:
    /// the first alone, the others once it is answered, so the provider's prompt cache serves
    /// them (a waiting row lends its slot meanwhile; see --prompt-cache-key).
    #[arg(short = 'c', long, default_value_t = promptbatch::internals::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Requests per minute cap (spread evenly, no burst at start-up).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub rpm: Option<u32>,

    /// Tokens per minute cap, counted per request as estimated prompt tokens + --max-tokens.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub tpm: Option<u32>,

    /// Put the output in input order. Records are still appended as rows finish (so `kill -9`
    /// loses nothing); the file is sorted by row, in place, when the run ends.
    #[arg(long)]
    pub ordered: bool,

    /// Start over: move an existing OUTPUT to a new backup, OUTPUT.bak or the first free
    /// OUTPUT.bak.N (an existing backup is never replaced; an output without records is not
    /// backed up).
    #[arg(long)]
    pub fresh: bool,

    /// When resuming, keep earlier error records instead of sending those rows again.
    #[arg(long)]
    pub keep_errors: bool,

    /// The shape of OUTPUT's lines: `jsonl`, `csv` (a .csv OUTPUT) or `openai-batch` (the OpenAI
    /// Batch API's output lines — `id`, `custom_id`, `response: {status_code, request_id, body}`,
    /// `error` — with the whole record under `promptbatch`, so it resumes like any output).
    /// Default: by extension, or the shape an existing OUTPUT has.
    #[arg(long, value_parser = choice::<OutputFormat>(), value_name = "FORMAT")]
    pub output_format: Option<OutputFormat>,

    /// Store each answer's whole response body in its record, as `response` (JSON in a JSONL
    /// output, JSON text in a CSV column): tool calls, refusals, logprobs, system fingerprint.
    #[arg(long)]
    pub keep_response: bool,

    #[command(flatten)]
    pub reuse: ReuseArgs,

    /// No key, no network, no cost: run the real pipeline against the built-in simulator on a
    /// free loopback port.
    #[arg(long)]
    pub dry_run: bool,

    /// Simulator latency for --dry-run, e.g. `0ms`, `50ms` or `20ms..200ms`.
    #[arg(long, default_value = "0ms", value_parser = LatencySpec::parse)]
    pub dry_run_latency: LatencySpec,

    /// What the --dry-run simulator reports as cached prompt tokens (see mock-server's
    /// --prefix-cache): `recent` (a provider's prompt cache), `system` or `off`.
    #[arg(long, value_parser = choice::<PrefixCacheModel>(), default_value = "recent", value_name = "MODEL")]
    pub dry_run_prefix_cache: PrefixCacheModel,

    /// Retries per row for transient failures (429, 5xx, timeouts, dropped connections).
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,

    /// Bound on one whole attempt, from connecting to the last byte of the answer.
    #[arg(long, default_value = "10m", value_parser = promptbatch::internals::duration::parse)]
    pub timeout: Duration,

    /// Bound on establishing a connection.
    #[arg(long, default_value = "10s", value_parser = promptbatch::internals::duration::parse)]
    pub connect_timeout: Duration,

    /// First retry backoff; doubles per attempt, with full jitter. A 429 waits its advice, or
    /// about this long without one (never doubled).
    #[arg(long, default_value = "1s", value_parser = promptbatch::internals::duration::parse)]
    pub backoff_base: Duration,

    /// Longest backoff between two attempts of a row.
    #[arg(long, default_value = "60s", value_parser = promptbatch::internals::duration::parse)]
    pub backoff_max: Duration,

    /// After the first Ctrl-C, how long in-flight requests may still finish.
    #[arg(long, default_value = "30s", value_parser = promptbatch::internals::duration::parse)]
    pub grace: Duration,

    /// When stderr is not a terminal: one progress line every this often.
    #[arg(long, default_value = "30s", value_parser = promptbatch::internals::duration::parse)]
    pub log_every: Duration,

    /// No progress display (the end-of-run summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,

    /// Do not append the run's events to OUTPUT.events.jsonl (start and stop with the reason,
    /// pace changes, pauses, and every --event-interval the rows, 429s, 5xx and retries of the
    /// interval), which `report --html` draws.
    #[arg(long)]
    pub no_event_log: bool,

    /// How often the event log records an interval.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = promptbatch::internals::duration::parse)]
    pub event_interval: Duration,

    /// Serve Prometheus metrics at http://ADDR/metrics while the run goes (rows ok and error,
    /// requests by status, tokens by kind, cost by model, in flight, pace, paused), e.g.
    /// `127.0.0.1:9464`. Listen beyond loopback (`0.0.0.0:9464`) only on a trusted network:
    /// the metrics carry no key, but they show the run's models and spend.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// When the run ends, however it ends (done, budget, refused, interrupted, failed), POST its
    /// summary as JSON to URL (retried briefly, never holding the exit more than about 10 s). A
    /// user name, password or query in URL is never printed.
    #[arg(long, value_name = "URL")]
    pub notify_url: Option<String>,

    /// How requests travel: `live` (one HTTP request per row, answers in seconds, live price) or
    /// `batch` (the provider's Batch API: files of requests answered within 24 h, at the batch
    /// price — half the live price at OpenAI). A batch run keeps its batch ids in
    /// OUTPUT.batch.json: re-running the same command collects them, never submitting the same
    /// rows twice.
    #[arg(long, value_parser = choice::<Via>(), default_value = "live")]
    pub via: Via,

    /// --via batch: at most this many requests per Batch input file (one batch each).
    #[arg(long, value_name = "N", default_value_t = promptbatch::batch::DEFAULT_MAX_REQUESTS, value_parser = parse_positive_usize)]
    pub batch_max_requests: usize,

    /// --via batch: at most this many rows in batches at once. Past it the run submits no more
    /// until batches are collected (down to half of it), so memory and the state file stay
    /// bounded (≈ 260 bytes a row) however large the input, and a provider's limit on queued
    /// requests is not overrun.
    #[arg(long, value_name = "ROWS", default_value_t = promptbatch::batch::DEFAULT_MAX_PENDING, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_pending: u64,

    /// --via batch: the batches a row may go through (its first and the new ones after an
    /// expired or failed batch, a transient error in the error file, or an answer that fails
    /// --json-schema); then it gets an error record saying why.
    #[arg(long, value_name = "N", default_value_t = promptbatch::batch::DEFAULT_MAX_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_max_attempts: u32,

    /// --via batch: at most this many bytes per Batch input file.
    #[arg(long, value_name = "BYTES", default_value_t = promptbatch::batch::DEFAULT_MAX_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub batch_max_bytes: u64,

    /// --via batch: how often to read the batches' status.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = promptbatch::internals::duration::parse)]
    pub poll_every: Duration,

    /// --via batch: where rows go whose batch expired, failed or was cancelled, or that the
    /// error file reports with a transient error: `batch` (a new batch) or `live` (sent live,
    /// at the live price, once every batch is collected).
    #[arg(long, value_parser = choice::<Fallback>(), default_value = "batch")]
    pub fallback: Fallback,

    /// --via batch: submit the batches and exit at once, printing the command that collects
    /// the results later (the same command without --detach).
    #[arg(long)]
    pub detach: bool,

    /// --via batch: after a run was stopped while creating a batch, on a server that cannot
    /// list batches (so promptbatch cannot tell whether the batch exists): FILE_ID=BATCH_ID
    /// collects the batch you found for that uploaded file, FILE_ID=none creates it. The
    /// run that needs it names the file. Repeatable.
    #[arg(long, value_name = "FILE_ID=BATCH_ID|none", value_parser = promptbatch::batch::parse_batch_of_file)]
    pub batch_of_file: Vec<(String, Option<String>)>,

    /// --via batch: collect this finished batch although its files hold fewer lines than it
    /// reports done (after three downloads, the run stops and names it). Its rows without a
    /// line go into a new batch: if the provider did answer them, they are paid twice.
    /// Repeatable.
    #[arg(long, value_name = "BATCH_ID")]
    pub batch_accept_short: Vec<String>,
}

/// Everything `promptbatch cancel` accepts.
#[derive(Debug, Clone, Args)]
pub struct CancelArgs {
    /// The output file of the `run --via batch` whose batches to cancel.
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,

    /// API base URL the batches were submitted to (as for `run`).
    #[arg(
        long,
        env = "PROMPTBATCH_BASE_URL",
        default_value = promptbatch::internals::DEFAULT_BASE_URL
    )]
    pub base_url: String,

    /// Environment variable holding the API key. Default: EVOLINK_API_KEY, else OPENAI_API_KEY.
    #[arg(long, value_name = "NAME")]
    pub api_key_env: Option<String>,

    /// Also trust the CA certificates in FILE (PEM), as for `run`.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
}

/// Paying once for each distinct request (shared by `run` and `estimate`).
#[derive(Debug, Clone, Args)]
pub struct ReuseArgs {
    /// Send every row, even one whose request (model, messages, options) repeats another
    /// row's. By default such a row is not sent: it gets the first row's answer (or error), with
    /// `duplicate_of` that row's id and cost 0 — also at a temperature above 0 (pass this to
    /// sample each one).
    #[arg(long)]
    pub no_dedup: bool,

    /// An earlier output (JSONL, CSV, or Parquet with its checkpoint) whose ok answers of
    /// identical requests are taken instead of sending: their records say `reused_from`, cost
    /// 0. Error records, and simulated answers (unless --dry-run), are never taken. Repeat for
    /// several.
    #[arg(long, value_name = "OUTPUT")]
    pub reuse: Vec<PathBuf>,
}

impl ReuseArgs {
    pub fn into_options(self) -> ReuseOptions {
        ReuseOptions {
            dedup: !self.no_dedup,
            from: self.reuse,
        }
    }
}

/// Everything `promptbatch estimate` accepts.
#[derive(Debug, Clone, Args)]
pub struct EstimateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub request: RequestArgs,

    /// Expected completion tokens per row (reasoning included), for the expected-case cost.
    #[arg(long, value_name = "N")]
    pub expect_output: Option<u64>,

    /// A sample run's output (e.g. `run INPUT --limit 200 -o sample.jsonl`): its ok rows'
    /// measured completion, reasoning and cached tokens and latency project the whole input's
    /// cost and time, with a 95 % range.
    #[arg(long, value_name = "OUTPUT")]
    pub from_output: Option<PathBuf>,

    /// Requests in flight the run would use (with --from-output: the time the sample's
    /// latency implies).
    #[arg(short = 'c', long, default_value_t = promptbatch::internals::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Requests per minute the run would be allowed (for the time estimate).
    #[arg(long)]
    pub rpm: Option<u32>,

    /// Tokens per minute the run would be allowed (for the time estimate).
    #[arg(long)]
    pub tpm: Option<u32>,

    /// Price table overrides (TOML, same shape as the embedded prices.toml).
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    #[command(flatten)]
    pub reuse: ReuseArgs,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Everything `promptbatch validate` accepts: the input flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub input: InputArgs,

    #[command(flatten)]
    pub request: RequestArgs,
}

/// Everything `promptbatch merge` accepts.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// The shards' output files (.jsonl or .csv).
    #[arg(value_name = "OUTPUT", required = true)]
    pub outputs: Vec<PathBuf>,

    /// The merged file; `.csv` writes CSV, anything else JSONL.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,

    /// The input's row count (as `promptbatch validate INPUT` prints it): exit 1 unless the
    /// merged file has exactly this many records.
    #[arg(long, value_name = "N")]
    pub expect_rows: Option<u64>,

    /// Replace FILE when it exists.
    #[arg(long)]
    pub force: bool,
}

/// Everything `promptbatch export` accepts.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    /// A run's output file (.jsonl or .csv; for `-o x.parquet`, its checkpoint x.parquet.jsonl).
    #[arg(value_name = "OUTPUT")]
    pub source: PathBuf,

    /// The file to write: `.parquet`, `.csv`, anything else JSONL.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,

    /// Replace DEST when it exists.
    #[arg(long)]
    pub force: bool,
}

/// Everything `promptbatch report` accepts.
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// A run's output file (.jsonl or .csv).
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,

    /// Price table overrides, for records written without a cost.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Also write the report as one self-contained HTML page to FILE (charts over time from the
    /// records and OUTPUT.events.jsonl, cost by model, tokens, errors, the slowest rows; no
    /// script and nothing fetched, so it opens from a mail attachment). FILE is replaced.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Everything `promptbatch mock-server` accepts.
#[derive(Debug, Clone, Args)]
pub struct MockServerArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: String,

    #[command(flatten)]
    pub sim: SimArgs,
}

/// Parses a whole number of at least 1.
fn parse_positive_usize(s: &str) -> Result<usize, String> {
    match s.trim().replace('_', "").parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}`: expected a whole number of at least 1")),
    }
}

/// Parses a positive dollar amount.
fn parse_usd(s: &str) -> Result<f64, String> {
    let value: f64 = s
        .trim()
        .trim_start_matches('$')
        .parse()
        .map_err(|_| format!("`{s}` is not an amount in USD (example: 25 or 2.50)"))?;
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(format!("`{s}`: the budget must be a positive amount"))
    }
}

/// Reads a `--json-schema` file.
fn parse_schema(path: &str) -> Result<JsonSchema, String> {
    JsonSchema::from_file(std::path::Path::new(path)).map_err(|e| e.to_string())
}

/// Parses `KEY=JSON`; a value that is not valid JSON is taken as a string.
fn parse_param(s: &str) -> Result<(String, serde_json::Value), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=JSON, got `{s}`"))?;
    if key.is_empty() {
        return Err(format!("empty key in `{s}`"));
    }
    let value = serde_json::from_str(value)
        .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
    if key == "stream" && value == serde_json::Value::Bool(true) {
        return Err("streamed answers are not supported: promptbatch reads each whole answer (drop --param stream=true)".into());
    }
    Ok((key.to_string(), value))
}

/// Simulator behaviour (the flags of `mock-server`).
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Latency of every answer: `0ms`, `50ms` or a uniform range `20ms..200ms`.
    #[arg(long, default_value = "0ms", value_parser = LatencySpec::parse)]
    pub latency: LatencySpec,

    /// Fraction of requests answered 429 with Retry-After.
    #[arg(long, default_value_t = 0.0)]
    pub rate_429: f64,

    /// Retry-After sent with injected 429s (whole seconds are also sent as `Retry-After`,
    /// the exact value as `retry-after-ms`).
    #[arg(long, default_value = "1s", value_parser = promptbatch::internals::duration::parse)]
    pub retry_after: Duration,

    /// Fraction of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub rate_500: f64,

    /// Fraction of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub rate_503: f64,

    /// Fraction of requests whose connection is dropped without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub rate_drop: f64,

    /// Fraction of requests answered 200 with a truncated (unparsable) body.
    #[arg(long, default_value_t = 0.0)]
    pub rate_malformed: f64,

    /// Only this bearer key is accepted (others get 401). Default: any key.
    #[arg(long)]
    pub require_key: Option<String>,

    /// Only these models exist (others get 404), comma-separated. Default: any model.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,

    /// The shape of error answers: `openai` (`{"error": {"message", "type", "code"}}` with
    /// `Retry-After` headers), `evolink` (EvoLink's documented errors: integer `code`, a `type`
    /// per status, `param`, `fallback_suggestion`; a 429 advises its wait only in the
    /// suggestion) or `litellm` (the LiteLLM proxy's: string `code`, retry advice only in
    /// `llm_provider-` prefixed headers).
    #[arg(long, value_parser = choice::<ErrorStyle>(), default_value = "openai")]
    pub error_style: ErrorStyle,

    /// A server-side limit on requests per minute, enforced over a sliding `--limit-window`:
    /// `1200`, or a schedule `1200,600@30s,1200@60s` (each step from that time after the first
    /// request). Requests over it are answered 429 at once, advising the exact wait.
    #[arg(long, value_name = "RPM[@START],...", value_parser = LimitSchedule::parse)]
    pub limit_rpm: Option<LimitSchedule>,

    /// The window `--limit-rpm` is counted over (its capacity is RPM × window / 60).
    #[arg(long, default_value = "60s", value_parser = promptbatch::internals::duration::parse)]
    pub limit_window: Duration,

    /// How `--limit-rpm` counts: `sliding` (the requests admitted in any sliding window; a 429
    /// advises the exact wait) or `fixed` (as the LiteLLM proxy: one counter per wall-clock
    /// window, e.g. the UTC minute, that refused requests increment too; a 429 advises the
    /// whole window).
    #[arg(long, value_parser = choice::<LimitStyle>(), default_value = "sliding")]
    pub limit_style: LimitStyle,

    /// Send `x-ratelimit-limit-requests`, `-remaining-requests` and `-reset-requests` (as OpenAI
    /// does) with every answer, for the `--limit-rpm` limit. With `--limit-style fixed`, as the
    /// LiteLLM proxy: the limit and the remaining requests of the window, on successes only.
    #[arg(long)]
    pub rate_headers: bool,

    /// What a successful completion answers: `echo` (derived from the request: see the module
    /// docs) or `seed` (the gateway's documented example response, 683 bytes, the same for
    /// every request: a benchmark's stand-in for a real answer).
    #[arg(long, value_parser = choice::<AnswerBody>(), default_value = "echo")]
    pub answer: AnswerBody,

    /// Send every answer with `Transfer-Encoding: chunked` (no `Content-Length`), as nginx and
    /// many gateways do.
    #[arg(long)]
    pub chunked: bool,

    /// What answers report as `usage.prompt_tokens_details.cached_tokens`: `recent` (OpenAI's
    /// prompt cache: the messages before the last, when they come to at least 1,024 estimated
    /// tokens and a request with the same ones and model was answered in the last 5 minutes,
    /// rounded down to a multiple of 128; else 0), `system` (the leading system messages'
    /// tokens, always) or `off` (0).
    #[arg(long, value_parser = choice::<PrefixCacheModel>(), default_value = "recent", value_name = "MODEL")]
    pub prefix_cache: PrefixCacheModel,

    /// Batch API: how long a batch takes from creation to its final status.
    #[arg(long, default_value = "0s", value_parser = promptbatch::internals::duration::parse)]
    pub batch_time: Duration,

    /// Batch API: the first N batches created expire (half their requests answered, the rest
    /// reported `batch_expired` in the error file).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub batch_expire: u32,

    /// Batch API: the first N batches created fail (nothing answered).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub batch_fail: u32,

    /// Batch API: the first N file downloads are cut short (half the announced bytes sent, then
    /// the connection closed).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub batch_cut_downloads: u32,

    /// Batch API: the first N file downloads answer 200 with an HTML page instead of the file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub batch_bad_downloads: u32,

    /// Batch API: the first N batch creates make the batch, then drop the connection unanswered.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub batch_drop_creates: u32,

    /// Batch API: `GET /v1/batches` (the list of batches) answers 404, as some servers do.
    #[arg(long)]
    pub batch_no_list: bool,

    /// No Batch API: `/v1/files` and `/v1/batches` answer 404, as many gateways do.
    #[arg(long)]
    pub no_batch: bool,
}

// ---------------------------------------------------------------------------------------------
// Flags → library values

impl InputArgs {
    pub fn into_options(self) -> InputOptions {
        let mut input = InputOptions::new(self.path);
        input.input_format = self.input_format;
        input.prompt_column = self.prompt_column;
        input.template = self.template;
        input.id_column = self.id_column;
        input.model_column = self.model_column;
        input.skip_invalid = self.skip_invalid;
        input.limit = self.limit;
        input.shard = self.shard;
        input.keep_columns = self.keep_columns;
        input
    }
}

impl RequestArgs {
    pub fn into_options(self) -> RequestOptions {
        RequestOptions {
            system: self.system,
            models: self.model,
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            reasoning_effort: self.reasoning_effort,
            params: self.params,
            json_schema: self.json_schema,
            prompt_cache_key: self.prompt_cache_key,
        }
    }
}

impl RunArgs {
    /// The job these flags describe; progress goes to stderr and signals stop the run.
    pub fn into_job(self) -> Job {
        let display = Display::choose(self.quiet, self.log_every);
        let dry_run = self.dry_run.then(|| SimOptions {
            latency: self.dry_run_latency,
            prefix_cache: self.dry_run_prefix_cache,
            ..SimOptions::default()
        });
        let mut job = Job::with_input(self.input.into_options(), self.output);
        job.output = OutputOptions {
            ordered: self.ordered,
            fresh: self.fresh,
            keep_errors: self.keep_errors,
            keep_response: self.keep_response,
            format: self.output_format,
            ..job.output
        };
        job.request = self.request.into_options();
        job.endpoint = EndpointOptions {
            base_url: self.base_url,
            api_key: None,
            api_key_env: self.api_key_env,
            ca_certs: self.ca_cert,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
        };
        job.limits = LimitOptions {
            concurrency: self.concurrency,
            rpm: self.rpm,
            tpm: self.tpm,
        };
        job.retry = RetryPolicy {
            max_retries: self.max_retries,
            base: self.backoff_base,
            max: self.backoff_max,
        };
        job.cost = CostOptions {
            prices: self.prices,
            max_cost: self.max_cost,
        };
        job.display = display;
        job.monitor = MonitorOptions {
            events: !self.no_event_log,
            event_interval: self.event_interval,
            metrics_listen: self.metrics_listen,
            notify_url: self.notify_url,
        };
        job.reuse = self.reuse.into_options();
        job.dry_run = dry_run;
        job.grace = self.grace;
        job.handle_signals = true;
        job.via = self.via;
        job.batch = BatchOptions {
            max_requests: self.batch_max_requests,
            max_bytes: self.batch_max_bytes,
            max_pending: self.batch_max_pending,
            max_attempts: self.batch_max_attempts,
            poll_every: self.poll_every,
            fallback: self.fallback,
            detach: self.detach,
            batch_of_file: self.batch_of_file.iter().cloned().collect(),
            accept_short: self.batch_accept_short.iter().cloned().collect(),
            ..BatchOptions::default()
        };
        job
    }
}

impl CancelArgs {
    /// The endpoint to cancel at.
    pub fn endpoint(&self) -> EndpointOptions {
        EndpointOptions {
            base_url: self.base_url.clone(),
            api_key_env: self.api_key_env.clone(),
            ca_certs: self.ca_cert.clone(),
            ..EndpointOptions::default()
        }
    }
}

impl EstimateArgs {
    pub fn into_options(self) -> EstimateOptions {
        EstimateOptions {
            request: self.request.into_options(),
            expect_output: self.expect_output,
            from_output: self.from_output,
            concurrency: self.concurrency,
            rpm: self.rpm,
            tpm: self.tpm,
            prices: self.prices,
            reuse: self.reuse.into_options(),
            ..EstimateOptions::new(self.input.into_options())
        }
    }
}

impl MergeArgs {
    pub fn into_options(self) -> MergeOptions {
        MergeOptions {
            outputs: self.outputs,
            output: self.output,
            expect_rows: self.expect_rows,
            force: self.force,
        }
    }
}

impl ExportArgs {
    pub fn into_options(self) -> promptbatch::ExportOptions {
        promptbatch::ExportOptions {
            source: self.source,
            dest: self.dest,
            force: self.force,
        }
    }
}

impl SimArgs {
    pub fn into_options(self) -> SimOptions {
        SimOptions {
            latency: self.latency,
            rate_429: self.rate_429,
            retry_after: self.retry_after,
            rate_500: self.rate_500,
            rate_503: self.rate_503,
            rate_drop: self.rate_drop,
            rate_malformed: self.rate_malformed,
            require_key: self.require_key,
            models: self.models,
            error_style: self.error_style,
            limit_rpm: self.limit_rpm,
            limit_window: self.limit_window,
            limit_style: self.limit_style,
            rate_headers: self.rate_headers,
            answer: self.answer,
            chunked: self.chunked,
            batch_time: self.batch_time,
            batch_expire: self.batch_expire,
            batch_fail: self.batch_fail,
            batch_cut_downloads: self.batch_cut_downloads,
            batch_bad_downloads: self.batch_bad_downloads,
            batch_drop_creates: self.batch_drop_creates,
            batch_no_list: self.batch_no_list,
            no_batch: self.no_batch,
            // What mock-server answers is recorded as simulated, never as paid.
            unmarked: false,
            prefix_cache: self.prefix_cache,
        }
    }
}

/// The parser of an option whose values a library enum names ([`Choice`]): its names are the
/// possible values `--help` lists, each with its help line.
fn choice<T: Choice + Send + Sync + Clone>() -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(|(_, name, help)| {
        let value = PossibleValue::new(*name);
        if help.is_empty() {
            value
        } else {
            value.help(*help)
        }
    });
    PossibleValuesParser::new(values)
        .map(|name| T::from_name(&name).expect("clap accepts only the listed names"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// A flag left out means the library's default: the defaults are written once, in the
    /// library, or checked here where clap needs its own spelling (durations).
    #[test]
    fn flags_left_out_give_the_library_defaults() {
        let cli = Cli::parse_from(["promptbatch", "run", "in.csv", "-o", "out.jsonl"]);
        let Command::Run(args) = cli.command else {
            panic!("not a run")
        };
        let job = args.into_job();
        let library = Job::new("in.csv", "out.jsonl");
        assert_eq!(job.request, library.request);
        assert_eq!(job.limits, library.limits);
        assert_eq!(job.retry, library.retry);
        assert_eq!(job.cost, library.cost);
        assert_eq!(job.output, library.output);
        assert_eq!(job.grace, library.grace);
        assert_eq!(job.endpoint.base_url, library.endpoint.base_url);
        assert_eq!(job.endpoint.timeout, library.endpoint.timeout);
        assert_eq!(
            job.endpoint.connect_timeout,
            library.endpoint.connect_timeout
        );
        assert_eq!(job.input.prompt_column, library.input.prompt_column);
        assert_eq!(job.input.input_format, library.input.input_format);
        assert_eq!(job.via, library.via);
        assert_eq!(job.batch, library.batch);
        assert!(job.handle_signals && !library.handle_signals);

        let cli = Cli::parse_from(["promptbatch", "mock-server"]);
        let Command::MockServer(args) = cli.command else {
            panic!("not mock-server")
        };
        let sim = args.sim.into_options();
        let library = SimOptions::default();
        assert_eq!(sim.retry_after, library.retry_after);
        assert_eq!(sim.limit_window, library.limit_window);
        assert_eq!(sim.limit_style, library.limit_style);
        assert_eq!(sim.latency, library.latency);
        assert_eq!(sim.error_style, library.error_style);
        assert_eq!(sim.batch_time, library.batch_time);
        assert_eq!(sim.prefix_cache, library.prefix_cache);
        assert_eq!(
            (
                sim.batch_expire,
                sim.batch_fail,
                sim.batch_cut_downloads,
                sim.batch_bad_downloads,
                sim.batch_drop_creates,
                sim.batch_no_list,
                sim.no_batch
            ),
            (
                library.batch_expire,
                library.batch_fail,
                library.batch_cut_downloads,
                library.batch_bad_downloads,
                library.batch_drop_creates,
                library.batch_no_list,
                library.no_batch
            )
        );
    }

    #[test]
    fn batch_flags_reach_the_job() {
        let cli = Cli::parse_from([
            "promptbatch",
            "run",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "--via",
            "batch",
            "--batch-max-requests",
            "40000",
            "--batch-max-bytes",
            "1000",
            "--batch-max-pending",
            "70000",
            "--batch-max-attempts",
            "5",
            "--poll-every",
            "2s",
            "--fallback",
            "live",
            "--detach",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not a run")
        };
        let job = args.into_job();
        assert_eq!(job.via, Via::Batch);
        assert_eq!(
            job.batch,
            BatchOptions {
                max_requests: 40_000,
                max_bytes: 1000,
                max_pending: 70_000,
                max_attempts: 5,
                poll_every: Duration::from_secs(2),
                fallback: Fallback::Live,
                detach: true,
                ..BatchOptions::default()
            }
        );
        assert!(Cli::try_parse_from([
            "promptbatch",
            "run",
            "in.jsonl",
            "-o",
            "o",
            "--batch-max-requests",
            "0"
        ])
        .is_err());
    }

    #[test]
    fn every_flag_reaches_the_job() {
        let cli = Cli::parse_from([
            "promptbatch",
            "run",
            "in.jsonl",
            "-o",
            "out.csv",
            "--model",
            "m",
            "-c",
            "7",
            "--rpm",
            "60",
            "--tpm",
            "600",
            "--max-retries",
            "2",
            "--backoff-base",
            "2s",
            "--backoff-max",
            "9s",
            "--max-cost",
            "3",
            "--ordered",
            "--fresh",
            "--keep-errors",
            "--dry-run",
            "--dry-run-latency",
            "5ms",
            "--dry-run-prefix-cache",
            "system",
            "--prompt-cache-key",
            "--grace",
            "4s",
            "--timeout",
            "8s",
            "--template",
            "{a}",
            "--limit",
            "5",
            "--system",
            "S",
            "--max-tokens",
            "9",
            "--no-event-log",
            "--event-interval",
            "3s",
            "--metrics-listen",
            "127.0.0.1:9464",
            "--notify-url",
            "https://hooks.example/x",
        ]);
        let Command::Run(args) = cli.command else {
            panic!("not a run")
        };
        let job = args.into_job();
        assert!(!job.monitor.events);
        assert_eq!(job.monitor.event_interval, Duration::from_secs(3));
        assert_eq!(
            job.monitor.metrics_listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        assert_eq!(
            job.monitor.notify_url.as_deref(),
            Some("https://hooks.example/x")
        );
        assert_eq!(job.request.models, ["m"]);
        assert_eq!(job.request.system.as_deref(), Some("S"));
        assert_eq!(job.request.max_tokens, Some(9));
        assert_eq!(
            job.limits,
            LimitOptions {
                concurrency: 7,
                rpm: Some(60),
                tpm: Some(600)
            }
        );
        assert_eq!(job.retry.max_retries, 2);
        assert_eq!(job.retry.base, Duration::from_secs(2));
        assert_eq!(job.retry.max, Duration::from_secs(9));
        assert_eq!(job.cost.max_cost, Some(3.0));
        assert!(job.output.ordered && job.output.fresh && job.output.keep_errors);
        assert_eq!(job.output.path, PathBuf::from("out.csv"));
        let sim = job.dry_run.expect("dry run");
        assert_eq!(sim.latency.max, Duration::from_millis(5));
        assert_eq!(sim.prefix_cache, PrefixCacheModel::System);
        assert!(job.request.prompt_cache_key);
        assert_eq!(job.grace, Duration::from_secs(4));
        assert_eq!(job.endpoint.timeout, Duration::from_secs(8));
        assert_eq!(job.input.template.as_deref(), Some("{a}"));
        assert_eq!(job.input.limit, Some(5));
    }
}
