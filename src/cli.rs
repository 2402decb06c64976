//! Command-line definitions (clap) and nothing else: every flag is documented where it is defined,
//! and `--help` is generated from these doc comments.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

use crate::sim::LatencySpec;

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
    Run(Box<RunOptions>),
    /// Count the prompt tokens of INPUT exactly (offline) and estimate the cost and time of a run.
    Estimate(Box<EstimateOptions>),
    /// Summarize an output file (finished or partial): rows, errors, tokens, cost, latency.
    Report(ReportOptions),
    /// Check INPUT in one pass without sending anything: lists every row that cannot be sent
    /// (`file:line: what`), counts rows, and shows the ids, columns and models found. Exit 0 when
    /// every row can be sent, 1 otherwise (also when there are no data rows).
    Validate(Box<ValidateOptions>),
    /// Join the outputs of a sharded run (`--shard K/N`) into one file, checking that no row is
    /// in two of them (and, with --expect-rows, that none is missing).
    Merge(MergeOptions),
    /// Serve the built-in OpenAI-compatible simulator (deterministic answers, latency and faults).
    MockServer(MockServerOptions),
}

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InputFormat {
    /// Chosen from the file extension (.csv → csv, anything else → jsonl).
    Auto,
    /// CSV with a header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
}

/// Where the rows come from and how a row becomes a prompt (shared by `run` and `estimate`).
#[derive(Debug, Clone, Args)]
pub struct InputOptions {
    /// Input file: CSV with a header row, or JSONL (one object per line: `prompt`, `messages`
    /// or an OpenAI Batch API line). `-` reads standard input (then give --input-format).
    #[arg(value_name = "INPUT")]
    pub path: PathBuf,

    /// Input format.
    #[arg(long, value_enum, default_value_t = InputFormat::Auto)]
    pub input_format: InputFormat,

    /// Column (CSV) or field (JSONL) holding the prompt, when no --template is given.
    #[arg(long, default_value = "prompt")]
    pub prompt_column: String,

    /// Prompt template filled from the row's columns, e.g. "Summarize {title}: {text}".
    /// Write `{{` and `}}` for literal braces.
    #[arg(long)]
    pub template: Option<String>,

    /// Column or field holding the row id. Default: `id` if present, else `custom_id`, else the
    /// row number.
    #[arg(long)]
    pub id_column: Option<String>,

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
    #[arg(long, value_name = "K/N", value_parser = crate::input::Shard::parse)]
    pub shard: Option<crate::input::Shard>,
}

/// What every request carries besides its messages (shared by `run` and `estimate`).
#[derive(Debug, Clone, Args)]
pub struct RequestOptions {
    /// System message prepended to every request whose messages do not already start with one.
    #[arg(long)]
    pub system: Option<String>,

    /// Model name sent with every request (a Batch API line's own `body.model` wins).
    #[arg(long, default_value = "gpt-5.2")]
    pub model: String,

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
}

/// Everything `promptbatch run` accepts.
#[derive(Debug, Clone, Args)]
pub struct RunOptions {
    #[command(flatten)]
    pub input: InputOptions,

    /// Output file. `.csv` writes CSV; anything else writes JSONL. When it exists, the run
    /// resumes: its ok records for unchanged rows are kept and only the other rows are sent.
    #[arg(short, long)]
    pub output: PathBuf,

    #[command(flatten)]
    pub request: RequestOptions,

    /// Price table overrides (TOML, same shape as the embedded prices.toml): USD per 1M tokens.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Budget cap in USD for the total cost recorded in OUTPUT (earlier runs included). The run
    /// stops dispatching before spend plus the worst case of the requests in flight would pass
    /// it, and exits with code 4; raise the cap and re-run to continue.
    #[arg(long, value_name = "USD", value_parser = parse_usd)]
    pub max_cost: Option<f64>,

    /// API base URL; requests go to {base-url}/chat/completions. A user name and password in it
    /// (`https://user:pass@host/v1`) are never shown: logs and messages print `[redacted]`.
    #[arg(
        long,
        env = "PROMPTBATCH_BASE_URL",
        default_value = "https://api.evolink.ai/v1"
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

    /// Requests in flight at once.
    #[arg(short = 'c', long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
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

    /// No key, no network, no cost: run the real pipeline against the built-in simulator on a
    /// free loopback port.
    #[arg(long)]
    pub dry_run: bool,

    /// Simulator latency for --dry-run, e.g. `0ms`, `50ms` or `20ms..200ms`.
    #[arg(long, default_value = "0ms", value_parser = LatencySpec::parse)]
    pub dry_run_latency: LatencySpec,

    /// Retries per row for transient failures (429, 5xx, timeouts, dropped connections).
    #[arg(long, default_value_t = 8)]
    pub max_retries: u32,

    /// Bound on one whole attempt, from connecting to the last byte of the answer.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Bound on establishing a connection.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// First retry backoff; doubles per attempt, with full jitter.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub backoff_base: Duration,

    /// Longest backoff between two attempts of a row.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub backoff_max: Duration,

    /// After the first Ctrl-C, how long in-flight requests may still finish.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,

    /// When stderr is not a terminal: one progress line every this often.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub log_every: Duration,

    /// No progress display (the end-of-run summary is still printed).
    #[arg(short, long)]
    pub quiet: bool,
}

/// Everything `promptbatch estimate` accepts.
#[derive(Debug, Clone, Args)]
pub struct EstimateOptions {
    #[command(flatten)]
    pub input: InputOptions,

    #[command(flatten)]
    pub request: RequestOptions,

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
    #[arg(short = 'c', long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=100_000))]
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

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Everything `promptbatch validate` accepts: the input flags of `run`.
#[derive(Debug, Clone, Args)]
pub struct ValidateOptions {
    #[command(flatten)]
    pub input: InputOptions,

    #[command(flatten)]
    pub request: RequestOptions,
}

/// Everything `promptbatch merge` accepts.
#[derive(Debug, Clone, Args)]
pub struct MergeOptions {
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

/// Everything `promptbatch report` accepts.
#[derive(Debug, Clone, Args)]
pub struct ReportOptions {
    /// A run's output file (.jsonl or .csv).
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,

    /// Price table overrides, for records written without a cost.
    #[arg(long, value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Everything `promptbatch mock-server` accepts.
#[derive(Debug, Clone, Args)]
pub struct MockServerOptions {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub listen: String,

    #[command(flatten)]
    pub sim: crate::sim::SimOptions,
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

/// Parses a human duration such as `90s`, `10m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}`: {e} (examples: 90s, 10m, 250ms)"))
}
