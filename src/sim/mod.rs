//! The built-in simulator: a small OpenAI-compatible `POST /v1/chat/completions` server (hyper,
//! HTTP/1.1 keep-alive) for `--dry-run`, `mock-server`, tests and benchmarks.
//!
//! Answers are deterministic functions of the request, so a test can tell which row got which
//! answer:
//! - content: `"echo: "` + the text of the last user message (cut at `max_tokens`×4 bytes, with
//!   `finish_reason: "length"`, when longer); for a structured-outputs request
//!   (`response_format.type: json_schema`) the text itself, minus its `#sim:` words, and for the
//!   first N requests with `#sim:prose=N`, prose instead of JSON;
//! - usage: prompt tokens = Σ over messages of (⌈bytes/4⌉ + 4); cached tokens by
//!   `--prefix-cache` (`prefix_cache.rs`): by default as OpenAI's cache serves them, the tokens
//!   before the last message, rounded down to a multiple of 128, when they are at least 1,024 and
//!   a request with the same prefix was answered in the last 5 minutes, else 0 (`system`: the
//!   leading system messages' share, always; `off`: 0);
//!   reasoning tokens = 16/32/64 for `reasoning_effort` low/medium/high (0 otherwise);
//!   completion tokens = ⌈content bytes/4⌉ + reasoning; total = prompt + completion.
//!
//! Faults are injected at the configured rates (429 with `Retry-After`, 500, 503, dropped
//! connections, truncated 200 bodies), and per request by directives in the last user message:
//! `#sim:status=NNN` answers that status (`#sim:type=T` sets its error type); `#sim:quota`
//! answers a gateway's out-of-quota 429; `#sim:fail=N` (or `N:STATUS`) makes the first N
//! requests with that exact body answer 503 (or STATUS; 429 comes with the retry advice);
//! `#sim:sleep=DURATION` adds latency; `#sim:no-usage` leaves `usage` out of the answer.
//! `--error-style` shapes error answers like OpenAI, EvoLink or the LiteLLM proxy. `GET /_sim/stats` returns counters and the
//! arrival time and status of the first 100,000 requests (and, apart, each one's advised wait
//! and prompt).
//!
//! A real server-side rate limit: `--limit-rpm` admits at most RPM × window / 60 requests in any
//! sliding `--limit-window` (a schedule such as `1200,600@30s,1200@60s` changes the limit over
//! time, counted from the first request); a request over it is answered 429 at once (no latency)
//! with the exact wait until it would pass. `--limit-style fixed` counts as the LiteLLM proxy
//! does instead: per wall-clock window, refused requests included, advising the whole window
//! (`limit.rs`). `--rate-headers` adds OpenAI's
//! `x-ratelimit-limit-requests` (per minute), `-remaining-requests` and `-reset-requests` (when
//! one more request would pass) to every answer.
//!
//! For benchmarks, `--answer seed` answers every completion with the gateway's documented
//! example response ([`SEED_ANSWER`], 683 bytes) instead of the echo, and `--chunked` sends every
//! answer with `Transfer-Encoding: chunked` instead of `Content-Length`, as nginx and many
//! gateways do.
//! The Batch API (files and batches, `batch.rs`) is served too unless `no_batch` is set: see
//! that module for its processing time, expiry and failure on request.

use crate::util::choice::Choice;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::messages::{last_user_text, message_text};
use crate::api::request::{cacheable_tokens, prefix_of, Prefix};
use crate::tokens;
use crate::util::fingerprint::fnv1a;

mod batch;
mod prefix_cache;
mod server_limit;

pub use prefix_cache::PrefixCacheModel;
pub use server_limit::{LimitSchedule, LimitStyle};

/// Most request arrivals kept for `/_sim/stats`.
const MAX_ARRIVALS: usize = 100_000;

/// The example response of the gateway's reference page (`POST /v1/chat/completions`, model
/// `gpt-5.2`), compact: what `--answer seed` sends for every completion.
pub const SEED_ANSWER: &str = concat!(
    r#"{"id":"chatcmpl-20251010015944503180122WJNB8Eid","model":"gpt-5.2","object":"chat.completion","#,
    r#""created":1760032810,"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! "#,
    r#"I'm happy to introduce GPT-5.2 to you.\n\nGPT-5.2 is the next-generation large language model "#,
    r#"with enhanced reasoning and understanding capabilities..."},"finish_reason":"stop"}],"#,
    r#""usage":{"prompt_tokens":13,"completion_tokens":1891,"total_tokens":1904,"#,
    r#""prompt_tokens_details":{"cached_tokens":0,"text_tokens":13,"audio_tokens":0,"image_tokens":0},"#,
    r#""completion_tokens_details":{"text_tokens":0,"audio_tokens":0,"reasoning_tokens":1480},"#,
    r#""input_tokens":0,"output_tokens":0,"input_tokens_details":null}}"#
);

/// What a successful completion answers (see `--answer`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AnswerBody {
    /// Derived from the request (see the module docs).
    #[default]
    Echo,
    /// [`SEED_ANSWER`], the same for every request.
    Seed,
}

impl Choice for AnswerBody {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            AnswerBody::Echo,
            "echo",
            "Derived from the request (see the module docs)",
        ),
        (
            AnswerBody::Seed,
            "seed",
            "[`SEED_ANSWER`], the same for every request",
        ),
    ];
}

/// A fixed latency or a uniform range, parsed from `50ms` or `20ms..200ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LatencySpec {
    pub min: Duration,
    pub max: Duration,
}

impl LatencySpec {
    /// Parses `50ms` or `20ms..200ms`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parse = |s: &str| crate::util::duration::parse(s);
        let (min, max) = match text.split_once("..") {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let d = parse(text)?;
                (d, d)
            }
        };
        if min > max {
            return Err(format!(
                "latency range `{text}` has its minimum above its maximum"
            ));
        }
        Ok(LatencySpec { min, max })
    }

    fn sample(&self) -> Duration {
        if self.max.is_zero() {
            return Duration::ZERO;
        }
        let span = (self.max - self.min).as_secs_f64();
        self.min + Duration::from_secs_f64(span * rand::random::<f64>())
    }
}

/// Simulator behaviour (the flags of `mock-server`; `cli.rs` documents each one).
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Latency of every answer.
    pub latency: LatencySpec,
    /// Fraction of requests answered 429 with Retry-After.
    pub rate_429: f64,
    /// Retry-After sent with injected 429s (whole seconds as `Retry-After`, the exact value as
    /// `retry-after-ms`).
    pub retry_after: Duration,
    /// Fraction of requests answered 500.
    pub rate_500: f64,
    /// Fraction of requests answered 503.
    pub rate_503: f64,
    /// Fraction of requests whose connection is dropped without an answer.
    pub rate_drop: f64,
    /// Fraction of requests answered 200 with a truncated (unparsable) body.
    pub rate_malformed: f64,
    /// Only this bearer key is accepted (others get 401). `None`: any key.
    pub require_key: Option<String>,
    /// Only these models exist (others get 404). Empty: any model.
    pub models: Vec<String>,
    /// The shape of error answers.
    pub error_style: ErrorStyle,
    /// A server-side requests-per-minute limit over a sliding `limit_window`.
    pub limit_rpm: Option<LimitSchedule>,
    /// The window `limit_rpm` is counted over (capacity: RPM × window / 60).
    pub limit_window: Duration,
    /// How `limit_rpm` counts: a sliding window (OpenAI-like) or LiteLLM's fixed wall-clock one.
    pub limit_style: LimitStyle,
    /// Send OpenAI's `x-ratelimit-*-requests` headers for the `limit_rpm` limit.
    pub rate_headers: bool,
    /// What a successful completion answers: derived from the request, or the seed example.
    pub answer: AnswerBody,
    /// Send every answer with `Transfer-Encoding: chunked` (no `Content-Length`).
    pub chunked: bool,
    /// Batch API: how long a batch takes from creation to its final status.
    pub batch_time: Duration,
    /// Batch API: the first N batches created expire (half their requests answered).
    pub batch_expire: u32,
    /// Batch API: the first N batches created fail validation (no request answered).
    pub batch_fail: u32,
    /// Batch API: the first N file downloads are cut short (half the announced bytes are sent,
    /// then the connection is closed).
    pub batch_cut_downloads: u32,
    /// Batch API: the first N file downloads answer 200 with an HTML page instead of the file.
    pub batch_bad_downloads: u32,
    /// Batch API: the first N batch creates make the batch, then drop the connection before
    /// answering (the client cannot know the batch exists).
    pub batch_drop_creates: u32,
    /// Batch API: `GET /v1/batches` (the list) answers 404, as some servers do.
    pub batch_no_list: bool,
    /// No Batch API: `/v1/files` and `/v1/batches` answer 404, as many gateways do.
    pub no_batch: bool,
    /// Answers carry no simulator mark (the `x-promptbatch-simulator` header, a completion's
    /// `system_fingerprint`), so runs take them for a real API's: for tests that stand the
    /// simulator in for one. Marked answers are recorded `simulated` (never taken as paid).
    pub unmarked: bool,
    /// What answers report as `cached_tokens` (`prefix_cache.rs`). `Recent` by default, for
    /// `--dry-run` too: a dry run rehearses the real run, and a provider caches no prefix under
    /// 1,024 tokens, nor one sent again before its first request was answered — always counting
    /// the system prompt as cached made a dry run's cost and cached share look better than the
    /// real run's would be, and could not show what the warm-first order is for.
    pub prefix_cache: PrefixCacheModel,
}

/// `Retry-After` of injected 429s unless set.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);
/// The window of `--limit-rpm` unless set.
pub const DEFAULT_LIMIT_WINDOW: Duration = Duration::from_secs(60);

impl Default for SimOptions {
    /// An instant, faultless server without limits.
    fn default() -> Self {
        SimOptions {
            latency: LatencySpec::default(),
            rate_429: 0.0,
            retry_after: DEFAULT_RETRY_AFTER,
            rate_500: 0.0,
            rate_503: 0.0,
            rate_drop: 0.0,
            rate_malformed: 0.0,
            require_key: None,
            models: Vec::new(),
            error_style: ErrorStyle::Openai,
            limit_rpm: None,
            limit_window: DEFAULT_LIMIT_WINDOW,
            limit_style: LimitStyle::Sliding,
            rate_headers: false,
            answer: AnswerBody::Echo,
            chunked: false,
            batch_time: Duration::ZERO,
            batch_expire: 0,
            batch_fail: 0,
            batch_cut_downloads: 0,
            batch_bad_downloads: 0,
            batch_drop_creates: 0,
            batch_no_list: false,
            unmarked: false,
            no_batch: false,
            prefix_cache: PrefixCacheModel::Recent,
        }
    }
}

/// How the simulator shapes its error answers (see `--error-style`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorStyle {
    #[default]
    Openai,
    Evolink,
    Litellm,
}

impl Choice for ErrorStyle {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (ErrorStyle::Openai, "openai", ""),
        (ErrorStyle::Evolink, "evolink", ""),
        (ErrorStyle::Litellm, "litellm", ""),
    ];
}

/// EvoLink's documented error type and advice for a status.
fn evolink_type(status: u16) -> (&'static str, Option<&'static str>) {
    match status {
        400 => ("invalid_request_error", None),
        401 => ("authentication_error", None),
        402 => ("insufficient_quota_error", Some("top up your balance")),
        403 => ("permission_error", None),
        404 => ("not_found_error", None),
        413 => ("request_too_large_error", Some("shorten the input")),
        429 => ("rate_limit_error", None),
        500 => ("internal_server_error", Some("retry later")),
        502 => ("upstream_error", Some("try a different model")),
        503 => ("service_unavailable_error", Some("retry later")),
        _ => ("invalid_request_error", None),
    }
}

/// One request as `/_sim/stats` reports it: `arrivals` holds `[at_ms, status]`, `details` (same
/// order) `[advised_ms, prompt]` (the 429's `retry-after-ms`, else 0; the first 64 characters of
/// the last user message).
struct Arrival {
    at_ms: u64,
    status: u16,
    advised_ms: u64,
    prompt: String,
}

/// Shared simulator state.
struct Sim {
    options: SimOptions,
    started: Instant,
    requests: AtomicU64,
    completions: AtomicU64,
    arrivals: Mutex<Vec<Arrival>>,
    fail_counts: Mutex<HashMap<u64, u32>>,
    limit: Mutex<server_limit::ServerLimit>,
    /// Files and batches of the Batch API.
    batches: batch::Store,
    /// When each prompt prefix was last answered (`--prefix-cache recent`).
    prefix_cache: prefix_cache::PrefixCache,
}

/// A running in-process simulator.
pub struct SimHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl SimHandle {
    /// The base URL to give the client (`http://ADDR/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Listens on `addr` with a deep accept backlog (1024), so hundreds of connections opened at
/// once are all accepted in the first wave (tokio's default backlog of 128 drops some, and the
/// client only retries them ~200 ms later).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut last_error = None;
    for candidate in tokio::net::lookup_host(addr).await? {
        let socket = if candidate.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(candidate).and_then(|()| socket.listen(1024)) {
            Ok(listener) => return Ok(listener),
            Err(e) => last_error = Some(e),
        }
    }
    Err(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("`{addr}` names no address"),
        )
    }))
}

/// Starts a simulator on `addr` (port 0 picks a free one) in the background.
pub async fn start(addr: &str, options: SimOptions) -> std::io::Result<SimHandle> {
    let listener = bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    tokio::spawn(serve(listener, options, stop.clone()));
    Ok(SimHandle { addr, stop })
}

/// Serves until `stop` is cancelled.
pub async fn serve(listener: TcpListener, options: SimOptions, stop: CancellationToken) {
    let sim = Arc::new(Sim {
        options,
        started: Instant::now(),
        requests: AtomicU64::new(0),
        completions: AtomicU64::new(0),
        arrivals: Mutex::new(Vec::new()),
        fail_counts: Mutex::new(HashMap::new()),
        limit: Mutex::new(server_limit::ServerLimit::default()),
        batches: batch::Store::default(),
        prefix_cache: prefix_cache::PrefixCache::default(),
    });
    crate::util::serve::accept_until(listener, stop, |stream| {
        let _ = stream.set_nodelay(true);
        let sim = sim.clone();
        let service = service_fn(move |req| {
            let sim = sim.clone();
            async move {
                let response = sim.handle(req).await?;
                // A handler that sets Content-Length itself (a download cut short) has it
                // sent as it is, whatever the body holds.
                let chunked = sim.options.chunked
                    || response
                        .headers()
                        .contains_key(hyper::header::CONTENT_LENGTH);
                Ok::<_, Dropped>(response.map(|inner| SimBody { inner, chunked }))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        async move {
            let _ = connection.await;
        }
    })
    .await
}

/// Why the service drops a connection instead of answering.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("simulated dropped connection")
    }
}

impl std::error::Error for Dropped {}

type SimResponse = Response<Full<Bytes>>;

/// An answer's body as sent: its bytes, with their length announced (`Content-Length`) or not
/// (`--chunked`: hyper then sends `Transfer-Encoding: chunked`).
struct SimBody {
    inner: Full<Bytes>,
    chunked: bool,
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

fn json_response(status: u16, body: &Value) -> SimResponse {
    json_bytes_response(status, Bytes::from(body.to_string()))
}

/// An answer with this JSON text as its body.
fn json_bytes_response(status: u16, body: Bytes) -> SimResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        "content-type",
        "application/json".parse().expect("static header"),
    );
    response
}

fn error_response(status: u16, message: &str, kind: &str, code: &str) -> SimResponse {
    json_response(
        status,
        &json!({"error": {"message": message, "type": kind, "code": code}}),
    )
}

impl Sim {
    /// An error answer in the configured style. `kind` and `code` are the OpenAI-style names;
    /// the EvoLink style derives its type from the status.
    fn error(&self, status: u16, message: &str, kind: &str, code: &str) -> SimResponse {
        match self.options.error_style {
            ErrorStyle::Openai => error_response(status, message, kind, code),
            ErrorStyle::Litellm => json_response(
                status,
                &json!({"error": {"message": message, "type": kind, "param": null, "code": status.to_string()}}),
            ),
            ErrorStyle::Evolink => {
                let (kind, advice) = evolink_type(status);
                let advice = if status == 429 {
                    Some(format!(
                        "retry after {} seconds",
                        self.options.retry_after.as_secs_f64().ceil()
                    ))
                } else {
                    advice.map(str::to_string)
                };
                json_response(
                    status,
                    &json!({"error": {"code": status, "message": message, "type": kind, "param": null, "fallback_suggestion": advice}}),
                )
            }
        }
    }

    /// Answers one request; every answer says it comes from the simulator (a header, and in a
    /// completion's body `system_fingerprint`), unless `unmarked`.
    async fn handle(&self, req: Request<Incoming>) -> Result<SimResponse, Dropped> {
        let mut response = self.answer_any(req).await?;
        if !self.options.unmarked {
            response.headers_mut().insert(
                crate::api::response::SIMULATOR_HEADER,
                "1".parse().expect("static header"),
            );
        }
        Ok(response)
    }

    /// The marker a completion's body carries (nothing when `unmarked`).
    fn mark(&self, completion: &mut Value) {
        if !self.options.unmarked {
            completion["system_fingerprint"] = json!(crate::api::response::SIMULATOR_FINGERPRINT);
        }
    }

    async fn answer_any(&self, req: Request<Incoming>) -> Result<SimResponse, Dropped> {
        if req.method() == Method::GET && req.uri().path() == "/_sim/stats" {
            return Ok(json_response(200, &self.stats()));
        }
        if !self.options.no_batch && batch::serves(req.uri().path()) {
            return self.batch(req).await;
        }
        if req.method() == Method::GET && req.uri().path().ends_with("/models") {
            // The model list (not counted: runs ask it to learn they talk to the simulator).
            let models: Vec<Value> = ["gpt-5.2", "gemini-3.1-pro-preview"]
                .iter()
                .map(|id| json!({"id": id, "object": "model", "owned_by": "promptbatch-simulator"}))
                .collect();
            return Ok(json_response(
                200,
                &json!({"object": "list", "data": models}),
            ));
        }
        let arrived = self.started.elapsed().as_millis() as u64;
        self.requests.fetch_add(1, Relaxed);
        let mut prompt = String::new();
        let response = self.answer(req, &mut prompt).await;
        let status = match &response {
            Ok(r) => r.status().as_u16(),
            Err(_) => 0,
        };
        let advised_ms = response
            .as_ref()
            .ok()
            .and_then(|r| r.headers().get("retry-after-ms"))
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if let Ok(mut arrivals) = self.arrivals.lock() {
            if arrivals.len() < MAX_ARRIVALS {
                arrivals.push(Arrival {
                    at_ms: arrived,
                    status,
                    advised_ms,
                    prompt: prompt.chars().take(64).collect(),
                });
            }
        }
        if status == 200 {
            self.completions.fetch_add(1, Relaxed);
        }
        response
    }

    /// The answer to one request; `seen` gets the text of its last user message.
    async fn answer(
        &self,
        req: Request<Incoming>,
        seen: &mut String,
    ) -> Result<SimResponse, Dropped> {
        if req.method() != Method::POST || !req.uri().path().ends_with("/chat/completions") {
            return Ok(self.error(
                404,
                "only POST /v1/chat/completions exists here",
                "invalid_request_error",
                "not_found",
            ));
        }
        if let Some(refused) = self.refuse_key(&req) {
            return Ok(refused);
        }
        let body = req
            .into_body()
            .collect()
            .await
            .map_err(|_| Dropped)?
            .to_bytes();
        let request = match self.parse_request(&body) {
            Ok(request) => request,
            Err(refused) => return Ok(refused),
        };
        let messages = request["messages"]
            .as_array()
            .map_or(&[][..], Vec::as_slice);
        let prompt = last_user_text(messages);
        seen.clone_from(&prompt);
        let directives = Directives::parse(&prompt);

        let verdict = self.options.limit_rpm.as_ref().map(|schedule| {
            let mut limit = self.limit.lock().expect("limit lock");
            let o = &self.options;
            limit.check(
                schedule,
                o.limit_window,
                o.limit_style,
                Instant::now(),
                SystemTime::now(),
            )
        });
        let mut response = self
            .answer_within_limit(
                &request,
                messages,
                &prompt,
                &body,
                &directives,
                verdict.as_ref(),
            )
            .await?;
        if let (Some(v), true) = (&verdict, self.options.rate_headers) {
            // LiteLLM (the fixed style) adds its limit and what is left of the minute to
            // successes only, without a reset time.
            let fixed = self.options.limit_style == LimitStyle::Fixed;
            if !fixed || response.status() == StatusCode::OK {
                let headers = response.headers_mut();
                headers.insert("x-ratelimit-limit-requests", v.rpm.into());
                headers.insert("x-ratelimit-remaining-requests", v.remaining.into());
                if !fixed {
                    let reset = format!("{:.3}s", v.reset.as_secs_f64());
                    headers.insert("x-ratelimit-reset-requests", reset.parse().expect("ascii"));
                }
            }
        }
        Ok(response)
    }

    /// A 401 when `--require-key` is set and the request's bearer key is another.
    fn refuse_key(&self, req: &Request<Incoming>) -> Option<SimResponse> {
        let required = self.options.require_key.as_ref()?;
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        (given != Some(required.as_str())).then(|| {
            self.error(
                401,
                "Incorrect API key provided.",
                "invalid_request_error",
                "invalid_api_key",
            )
        })
    }

    /// The request body as JSON with non-empty `messages` and a known `model`, or the 400/404
    /// an API gives otherwise. (Once per request: the size of the `Err` costs nothing.)
    #[allow(clippy::result_large_err)]
    fn parse_request(&self, body: &[u8]) -> Result<Value, SimResponse> {
        let request: Value = serde_json::from_slice(body).map_err(|e| {
            self.error(
                400,
                &format!("We could not parse the JSON body of your request: {e}"),
                "invalid_request_error",
                "invalid_json",
            )
        })?;
        if request
            .get("messages")
            .and_then(Value::as_array)
            .is_none_or(|m| m.is_empty())
        {
            return Err(self.error(
                400,
                "`messages` must be a non-empty array",
                "invalid_request_error",
                "invalid_messages",
            ));
        }
        let model = request.get("model").and_then(Value::as_str).unwrap_or("");
        if model.is_empty() {
            return Err(self.error(
                400,
                "`model` is required",
                "invalid_request_error",
                "missing_model",
            ));
        }
        if !self.options.models.is_empty() && !self.options.models.iter().any(|m| m == model) {
            return Err(self.error(
                404,
                &format!("The model `{model}` does not exist or you do not have access to it."),
                "invalid_request_error",
                "model_not_found",
            ));
        }
        Ok(request)
    }

    /// The answer once the request is parsed: a 429 when over `--limit-rpm`, else the faults and
    /// the completion.
    async fn answer_within_limit(
        &self,
        request: &Value,
        messages: &[Value],
        prompt: &str,
        body: &[u8],
        directives: &Directives,
        verdict: Option<&server_limit::Verdict>,
    ) -> Result<SimResponse, Dropped> {
        if let Some(v) = verdict.filter(|v| !v.admitted) {
            return Ok(self.rate_limited_for(v.advice.max(Duration::from_millis(1))));
        }
        // Looked up as the request arrives: requests of a prefix sent while its first one is
        // still being answered miss the cache, as on a provider's.
        let prefix = self.prefix_on_arrival(request, messages);
        let delay = self.options.latency.sample() + directives.sleep;
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if directives.quota {
            // What a gateway makes of an upstream `insufficient_quota` (LiteLLM: a 429
            // `throttling_error` whose message alone says what happened).
            return Ok(json_response(
                429,
                &json!({"error": {"message": "litellm.RateLimitError: RateLimitError: OpenAIException - You exceeded your current quota, please check your plan and billing details.\nFor more information on this error, read the docs.", "type": "throttling_error", "param": null, "code": "429"}}),
            ));
        }
        if let Some(status) = directives.status {
            let message = format!("simulated HTTP {status} (requested by #sim:status)");
            return Ok(match &directives.kind {
                Some(kind) => json_response(
                    status,
                    &json!({"error": {"code": status, "message": message, "type": kind}}),
                ),
                None => self.error(status, &message, "invalid_request_error", "simulated"),
            });
        }
        if directives.fail > 0 {
            let key = fnv1a(body);
            let mut counts = self.fail_counts.lock().map_err(|_| Dropped)?;
            let seen = counts.entry(key).or_insert(0);
            if *seen < directives.fail {
                *seen += 1;
                return Ok(match directives.fail_status {
                    429 => self.rate_limited(),
                    status => self.error(
                        status,
                        "simulated failure (#sim:fail)",
                        "server_error",
                        "overloaded",
                    ),
                });
            }
        }
        if let Some(fault) = self.injected_fault()? {
            return Ok(fault);
        }

        let answer = match self.options.answer {
            AnswerBody::Echo => {
                let mut completion = completion_body(request, messages, prompt, body);
                self.cache_usage(&mut completion, prefix);
                self.mark(&mut completion);
                self.prose_first(&mut completion, body, directives)?;
                if directives.no_usage {
                    if let Some(object) = completion.as_object_mut() {
                        object.remove("usage");
                    }
                }
                Bytes::from(completion.to_string())
            }
            AnswerBody::Seed => Bytes::from_static(SEED_ANSWER.as_bytes()),
        };
        if roll(self.options.rate_malformed) {
            let cut = answer.len() / 2;
            return Ok(json_bytes_response(200, answer.slice(..cut)));
        }
        Ok(json_bytes_response(200, answer))
    }

    /// Under `--prefix-cache recent`: the request's cacheable prefix, and whether the cache holds
    /// it as the request arrives.
    fn prefix_on_arrival(&self, request: &Value, messages: &[Value]) -> Option<(Prefix, bool)> {
        if self.options.prefix_cache != PrefixCacheModel::Recent {
            return None;
        }
        let model = request.get("model").and_then(Value::as_str).unwrap_or("");
        let prefix = prefix_of(model, messages)?;
        Some((prefix, self.prefix_cache.warm(prefix.hash, Instant::now())))
    }

    /// Sets an answer's `cached_tokens` by `--prefix-cache`; under `recent`, its prefix (from
    /// [`Self::prefix_on_arrival`]) is remembered as answered now.
    fn cache_usage(&self, completion: &mut Value, prefix: Option<(Prefix, bool)>) {
        let cached = match self.options.prefix_cache {
            PrefixCacheModel::System => return,
            PrefixCacheModel::Off => 0,
            PrefixCacheModel::Recent => match prefix {
                None => 0,
                Some((prefix, warm)) => {
                    self.prefix_cache.answered(prefix.hash, Instant::now());
                    if warm {
                        cacheable_tokens(prefix.tokens)
                    } else {
                        0
                    }
                }
            },
        };
        if let Some(details) = completion.pointer_mut("/usage/prompt_tokens_details") {
            details["cached_tokens"] = json!(cached);
        }
    }

    /// `#sim:prose=N`: the first N requests with this exact body are answered prose instead of
    /// the JSON a structured-outputs request asked for (live requests and batch lines alike).
    fn prose_first(
        &self,
        completion: &mut Value,
        body: &[u8],
        directives: &Directives,
    ) -> Result<(), Dropped> {
        if directives.prose > 0 && self.first_times(body, 1, directives.prose)? {
            completion["choices"][0]["message"]["content"] =
                json!("Sure! Here is the JSON you asked for: {label: positive}");
        }
        Ok(())
    }

    /// Whether this is one of the first `n` requests with this exact body (counted apart for
    /// each `kind` of directive).
    fn first_times(&self, body: &[u8], kind: u64, n: u32) -> Result<bool, Dropped> {
        let key = fnv1a(body) ^ kind.rotate_left(61);
        let mut counts = self.fail_counts.lock().map_err(|_| Dropped)?;
        let seen = counts.entry(key).or_insert(0);
        let first = *seen < n;
        if first {
            *seen += 1;
        }
        Ok(first)
    }

    /// A 429 advising `--retry-after` (as `retry-after-ms`, and rounded up as `Retry-After`).
    fn rate_limited(&self) -> SimResponse {
        self.rate_limited_for(self.options.retry_after)
    }

    /// A 429 advising `wait`.
    fn rate_limited_for(&self, wait: Duration) -> SimResponse {
        let mut response = self.error(
            429,
            "Rate limit reached for requests (simulated)",
            "requests",
            "rate_limit_exceeded",
        );
        let headers = response.headers_mut();
        let ms = wait.as_millis().to_string();
        let secs = wait.as_secs_f64().ceil().to_string();
        match self.options.error_style {
            ErrorStyle::Openai => {
                headers.insert("retry-after-ms", ms.parse().expect("digits"));
                headers.insert("retry-after", secs.parse().expect("digits"));
            }
            ErrorStyle::Litellm => {
                headers.insert("llm_provider-retry-after-ms", ms.parse().expect("digits"));
                headers.insert("llm_provider-retry-after", secs.parse().expect("digits"));
            }
            // EvoLink advises the wait only in `fallback_suggestion`.
            ErrorStyle::Evolink => {}
        }
        response
    }

    /// A randomly injected fault, by the configured rates.
    fn injected_fault(&self) -> Result<Option<SimResponse>, Dropped> {
        let o = &self.options;
        if roll(o.rate_drop) {
            return Err(Dropped);
        }
        if roll(o.rate_429) {
            return Ok(Some(self.rate_limited()));
        }
        if roll(o.rate_500) {
            return Ok(Some(self.error(
                500,
                "simulated internal error",
                "server_error",
                "internal",
            )));
        }
        if roll(o.rate_503) {
            return Ok(Some(self.error(
                503,
                "simulated overload",
                "server_error",
                "overloaded",
            )));
        }
        Ok(None)
    }

    fn stats(&self) -> Value {
        let (arrivals, details): (Vec<Value>, Vec<Value>) = self
            .arrivals
            .lock()
            .map(|a| {
                a.iter()
                    .map(|a| (json!([a.at_ms, a.status]), json!([a.advised_ms, a.prompt])))
                    .unzip()
            })
            .unwrap_or_default();
        json!({
            "requests": self.requests.load(Relaxed),
            "completions": self.completions.load(Relaxed),
            "batch": self.batches.stats(),
            "arrivals": arrivals,
            "details": details,
        })
    }
}

fn roll(rate: f64) -> bool {
    rate > 0.0 && rand::random::<f64>() < rate
}

/// The deterministic answer to a request (see the module docs).
/// Whether the request asks for structured outputs (`response_format.type: json_schema`).
fn structured(request: &Value) -> bool {
    request
        .pointer("/response_format/type")
        .and_then(Value::as_str)
        == Some("json_schema")
}

/// A prompt without its `#sim:` directive words.
fn without_directives(prompt: &str) -> String {
    if !prompt.contains("#sim:") {
        return prompt.to_string();
    }
    let words: Vec<&str> = prompt
        .split(' ')
        .filter(|w| !w.starts_with("#sim:"))
        .collect();
    words.join(" ").trim().to_string()
}

fn completion_body(request: &Value, messages: &[Value], prompt: &str, raw: &[u8]) -> Value {
    let model = request.get("model").and_then(Value::as_str).unwrap_or("");
    let message_tokens =
        |m: &Value| tokens::estimate(&message_text(m)) + tokens::PER_MESSAGE_OVERHEAD;
    let prompt_tokens: u64 = messages.iter().map(message_tokens).sum();
    let cached_tokens: u64 = messages
        .iter()
        .take_while(|m| m.get("role").and_then(Value::as_str) == Some("system"))
        .map(message_tokens)
        .sum();
    let reasoning_tokens = match request.get("reasoning_effort").and_then(Value::as_str) {
        Some("low") | Some("minimal") => 16,
        Some("medium") => 32,
        Some("high") | Some("xhigh") => 64,
        _ => 0,
    };
    let mut content = match structured(request) {
        // Structured outputs: the answer is the prompt itself, without its `#sim:` words (so a
        // test writes the JSON it wants back).
        true => without_directives(prompt),
        false => format!("echo: {prompt}"),
    };
    let mut finish_reason = "stop";
    let limit = request
        .get("max_tokens")
        .or_else(|| request.get("max_completion_tokens"))
        .and_then(Value::as_u64);
    if let Some(limit) = limit {
        let max_bytes = (limit * 4) as usize;
        if content.len() > max_bytes {
            let mut cut = max_bytes;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
            finish_reason = "length";
        }
    }
    let completion_tokens = tokens::estimate(&content) + reasoning_tokens;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({
        "id": format!("chatcmpl-sim-{:016x}", fnv1a(raw)),
        "model": model,
        "object": "chat.completion",
        "created": created,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {
                "cached_tokens": cached_tokens,
                "text_tokens": prompt_tokens,
                "audio_tokens": 0,
                "image_tokens": 0
            },
            "completion_tokens_details": {
                "text_tokens": completion_tokens - reasoning_tokens,
                "audio_tokens": 0,
                "reasoning_tokens": reasoning_tokens
            },
            "input_tokens": 0,
            "output_tokens": 0,
            "input_tokens_details": null
        }
    })
}

/// Per-request fault directives found in the prompt.
#[derive(Debug, Default, PartialEq)]
struct Directives {
    status: Option<u16>,
    /// `#sim:type=T`: the error `type` of a `#sim:status` answer.
    kind: Option<String>,
    /// `#sim:quota`: the LiteLLM-shaped out-of-quota 429.
    quota: bool,
    fail: u32,
    fail_status: u16,
    sleep: Duration,
    /// `#sim:prose=N`: the first N requests with this exact body answer prose, not the JSON a
    /// structured-outputs request asked for.
    prose: u32,
    /// `#sim:no-usage`: the answer has no `usage` object (some gateways omit it).
    no_usage: bool,
}

impl Directives {
    fn parse(prompt: &str) -> Self {
        let mut d = Directives::default();
        if !prompt.contains("#sim:") {
            return d;
        }
        for word in prompt.split_whitespace() {
            let Some(rest) = word.strip_prefix("#sim:") else {
                continue;
            };
            if rest == "quota" {
                d.quota = true;
            }
            if rest == "no-usage" {
                d.no_usage = true;
            }
            match rest.split_once('=') {
                Some(("status", v)) => d.status = v.parse().ok(),
                Some(("type", v)) => d.kind = Some(v.to_string()),
                Some(("fail", v)) => {
                    let (count, status) = v.split_once(':').unwrap_or((v, "503"));
                    d.fail = count.parse().unwrap_or(0);
                    d.fail_status = status.parse().unwrap_or(503);
                }
                Some(("prose", v)) => d.prose = v.parse().unwrap_or(0),
                Some(("sleep", v)) => d.sleep = crate::util::duration::parse(v).unwrap_or_default(),
                _ => {}
            }
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_spec_forms() {
        assert_eq!(
            LatencySpec::parse("50ms").unwrap(),
            LatencySpec {
                min: Duration::from_millis(50),
                max: Duration::from_millis(50)
            }
        );
        let r = LatencySpec::parse("20ms..200ms").unwrap();
        assert_eq!(
            (r.min, r.max),
            (Duration::from_millis(20), Duration::from_millis(200))
        );
        assert!(LatencySpec::parse("2s..1s").is_err());
        for _ in 0..100 {
            let d = r.sample();
            assert!(d >= r.min && d <= r.max);
        }
    }

    #[test]
    fn directives_are_read_from_the_prompt() {
        let d = Directives::parse("hello #sim:status=400 #sim:fail=2:429 #sim:sleep=1s");
        assert_eq!(
            d,
            Directives {
                status: Some(400),
                fail: 2,
                fail_status: 429,
                sleep: Duration::from_secs(1),
                ..Directives::default()
            }
        );
        let d =
            Directives::parse("x #sim:status=429 #sim:type=insufficient_quota_error #sim:quota");
        assert_eq!(d.kind.as_deref(), Some("insufficient_quota_error"));
        assert!(d.quota);
        assert_eq!(Directives::parse("plain"), Directives::default());
    }

    #[test]
    fn the_seed_answer_is_the_reference_example() {
        let seed: Value = serde_json::from_str(SEED_ANSWER).unwrap();
        assert_eq!(SEED_ANSWER.len(), 683);
        assert_eq!(seed["object"], "chat.completion");
        assert_eq!(seed["usage"]["completion_tokens"], 1891);
        assert_eq!(
            seed["usage"]["completion_tokens_details"]["reasoning_tokens"],
            1480
        );
        assert!(seed["usage"]["input_tokens_details"].is_null());
    }

    #[test]
    fn answer_is_derived_from_the_request() {
        let request = json!({"model": "m", "max_tokens": 2, "reasoning_effort": "high", "messages": [
            {"role": "system", "content": "sys!"},
            {"role": "user", "content": "hello world"}
        ]});
        let messages = request["messages"].as_array().unwrap();
        let a = completion_body(&request, messages, "hello world", b"raw");
        assert_eq!(a["choices"][0]["message"]["content"], "echo: he");
        assert_eq!(a["choices"][0]["finish_reason"], "length");
        assert_eq!(a["usage"]["prompt_tokens"], (1 + 4) + (3 + 4));
        assert_eq!(a["usage"]["prompt_tokens_details"]["cached_tokens"], 5);
        assert_eq!(a["usage"]["completion_tokens"], 2 + 64);
        assert_eq!(
            a["usage"]["completion_tokens_details"]["reasoning_tokens"],
            64
        );
    }
}
