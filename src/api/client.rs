//! The HTTP client: one shared `reqwest::Client` (keep-alive pool of twice the concurrency) that
//! sends one attempt of a request and turns the outcome into a [`Completion`] or a [`Failure`].
//!
//! The API key lives only in [`ApiKey`] (whose `Debug` is redacted) and in a header marked
//! sensitive; every message that leaves this module has the key, and the base URL's user-info,
//! scrubbed out. Certificates trusted: see `trust.rs`; proxies: reqwest's own handling of
//! `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY`, left on.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::classify::{classify_status, Failure, FailureKind, RateLimitHeaders};
use super::response::{self, Completion};
use super::transport::{self, describe, Endpoint};
use super::trust;
use crate::error::Error;
use crate::util::redact;

/// An API key. Never printed: `Debug` and `Display` show `[redacted]`.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// Reads the key from `--api-key-env NAME`, else `EVOLINK_API_KEY`, else `OPENAI_API_KEY`.
    pub fn from_env(name: Option<&str>) -> Result<Self, Error> {
        let names: Vec<&str> = match name {
            Some(n) => vec![n],
            None => vec!["EVOLINK_API_KEY", "OPENAI_API_KEY"],
        };
        for n in &names {
            if let Ok(value) = std::env::var(n) {
                let value = value.trim().to_string();
                if !value.is_empty() {
                    return Ok(ApiKey(value));
                }
            }
        }
        if name.is_some_and(redact::looks_like_a_key) {
            return Err(Error::Config(
                "no API key: --api-key-env takes the NAME of the environment variable that holds \
                 the key (--api-key-env OPENAI_API_KEY), and the value given looks like a key \
                 itself (it is not shown): put the key in a variable and pass its name"
                    .into(),
            ));
        }
        Err(Error::Config(format!(
            "no API key: set {} (or pass --dry-run to try the pipeline against the built-in simulator)",
            names.join(" or ")
        )))
    }

    /// Replaces every occurrence of the key in `text` with `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        redact::secret(text, &self.0)
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The default API base URL: the EvoLink gateway.
pub const DEFAULT_BASE_URL: &str = "https://api.evolink.ai/v1";
/// Bound on one whole attempt unless set.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Bound on establishing a connection unless set.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Which endpoint a run talks to, with which key, trusting what, within which timeouts.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Requests go to `{base_url}/chat/completions`; a user name and password in it are never
    /// shown.
    pub base_url: String,
    /// The key itself. `None`: read from `api_key_env`, else `EVOLINK_API_KEY`, else
    /// `OPENAI_API_KEY`.
    pub api_key: Option<ApiKey>,
    /// Environment variable holding the key.
    pub api_key_env: Option<String>,
    /// PEM files of CA certificates trusted besides the bundled and the system's roots.
    pub ca_certs: Vec<PathBuf>,
    /// Bound on one whole attempt, from connecting to the last byte of the answer.
    pub timeout: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            base_url: DEFAULT_BASE_URL.to_string(),
            api_key: None,
            api_key_env: None,
            ca_certs: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl EndpointOptions {
    /// The key to send: the one given, else the one in the environment.
    pub fn key(&self) -> Result<ApiKey, Error> {
        match &self.api_key {
            Some(key) => Ok(key.clone()),
            None => ApiKey::from_env(self.api_key_env.as_deref()),
        }
    }
}

/// How the client connects (from `run`'s flags).
#[derive(Debug, Clone)]
pub(crate) struct ClientOptions {
    /// The run's concurrency (the pool keeps up to twice as many idle keep-alive connections).
    pub concurrency: u32,
    /// Bound on one whole attempt.
    pub timeout: Duration,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// `--ca-cert` files: certificates trusted besides the bundled and the system's roots.
    pub ca_certs: Vec<PathBuf>,
}

/// Sends chat-completions requests to one endpoint.
pub(crate) struct ApiClient {
    http: reqwest::Client,
    url: reqwest::Url,
    endpoint: Endpoint,
    auth: HeaderValue,
    key: ApiKey,
    /// The base URL's password, as written and decoded, scrubbed from messages wherever it
    /// shows up.
    passwords: Vec<String>,
    timeout: Duration,
    /// An HTTP answer (any status) has arrived: the endpoint is reachable, so later connection
    /// failures are an outage to retry rather than a wrong address.
    answered: AtomicBool,
    /// The first failure without an answer that stopped the run (unreachable, untrusted).
    network_fault: OnceLock<String>,
}

impl ApiClient {
    /// A client for `{base_url}/chat/completions`.
    pub(crate) fn new(base_url: &str, key: ApiKey, options: &ClientOptions) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let url = format!("{base}/{}", super::DEFAULT.path());
        let url = reqwest::Url::parse(&url).map_err(|e| {
            Error::Config(format!(
                "--base-url `{}` is not a valid URL ({e}); example: https://api.evolink.ai/v1",
                redact::url_userinfo(base_url)
            ))
        })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.0)).map_err(|_| {
            Error::Config("the API key contains characters not allowed in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        // Twice the concurrency: a request that starts before the connection its slot's last
        // request used is back in the pool opens a new one; with room for only `concurrency`
        // idle connections, one of them was then closed again (at 0 ms latency, one connect per
        // 12 to 60 requests). With the spare room the pool settles and stops connecting.
        let mut builder = reqwest::Client::builder()
            .pool_max_idle_per_host(2 * options.concurrency as usize)
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("promptbatch/", env!("CARGO_PKG_VERSION")));
        for cert in trust::load_ca_certs(&options.ca_certs)? {
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| {
            Error::Config(format!(
                "cannot build the HTTP client: {}",
                redact::url_userinfo(&describe(&e))
            ))
        })?;
        let passwords = url.password().map_or_else(Vec::new, |written| {
            let decoded = percent_encoding::percent_decode_str(written).decode_utf8_lossy();
            vec![written.to_string(), decoded.into_owned()]
        });
        Ok(ApiClient {
            http,
            endpoint: Endpoint::new(&url),
            url,
            auth,
            key,
            passwords,
            timeout: options.timeout,
            answered: AtomicBool::new(false),
            network_fault: OnceLock::new(),
        })
    }

    /// The endpoint requests go to, as it may be shown (user-info redacted).
    pub(crate) fn url(&self) -> &str {
        &self.endpoint.shown
    }

    /// The base URL (`…/v1/`, with a trailing slash) that other endpoints of the same API
    /// (the Batch API's `files` and `batches`) are joined to.
    pub(crate) fn api_base(&self) -> reqwest::Url {
        let mut base = self.url.clone();
        let path = base.path().trim_end_matches("chat/completions").to_string();
        base.set_path(&path);
        base
    }

    /// Whether the endpoint is promptbatch's simulator (`mock-server`, `--dry-run`): its
    /// answers carry [`response::SIMULATOR_HEADER`]. One `GET models`, asked only when an
    /// output holds simulated records (whether this run may take them as done); any failure
    /// means "not the simulator".
    pub(crate) async fn is_simulator(&self) -> bool {
        let Ok(url) = self.api_base().join("models") else {
            return false;
        };
        let request = self
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, self.auth.clone())
            .timeout(Duration::from_secs(10));
        request
            .send()
            .await
            .is_ok_and(|r| r.headers().contains_key(response::SIMULATOR_HEADER))
    }

    /// The shared HTTP client, the `Authorization` header and the whole-attempt timeout, for
    /// other endpoints of the same API (the Batch API): same trust, proxies and key.
    pub(crate) fn parts(&self) -> (&reqwest::Client, HeaderValue, Duration) {
        (&self.http, self.auth.clone(), self.timeout)
    }

    /// Notes that an HTTP answer arrived (the endpoint is reachable).
    pub(crate) fn mark_answered(&self) {
        self.answered.store(true, Ordering::Relaxed);
    }

    /// A failure without an answer, classified like the chat requests' (unreachable before any
    /// answer and untrusted certificates are fatal), its message scrubbed.
    pub(crate) fn classify_transport(&self, error: &reqwest::Error) -> Failure {
        let mut failure = self.transport_failure(error);
        failure.message = self.scrub(&failure.message);
        failure
    }

    /// The proxy requests go through (from the environment), as it may be shown.
    pub(crate) fn proxy(&self) -> Option<&str> {
        self.endpoint.proxy.as_deref()
    }

    /// Removes the key and the base URL's user-info from a text about to be shown or written.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut text = redact::url_userinfo(&self.key.scrub(text));
        for password in &self.passwords {
            text = redact::secret(&text, password);
        }
        text
    }

    /// Why the run stopped, when it was a failure without any answer (unreachable endpoint,
    /// untrusted certificate) rather than an API error.
    pub(crate) fn network_fault(&self) -> Option<&str> {
        self.network_fault.get().map(String::as_str)
    }

    /// Sends one attempt; the whole attempt, connect to last body byte, is bounded by the
    /// timeout. Also returns a successful answer's `x-ratelimit-*` headers (a failure carries
    /// its own in [`Failure::rate_limit`]), for the pacing.
    pub(crate) async fn send_reporting_limits(
        &self,
        body: Bytes,
    ) -> (Result<Completion, Failure>, Option<RateLimitHeaders>) {
        let mut limits = None;
        let outcome = self.attempt(body, &mut limits).await;
        (outcome, limits)
    }

    async fn attempt(
        &self,
        body: Bytes,
        limits: &mut Option<RateLimitHeaders>,
    ) -> Result<Completion, Failure> {
        let attempt = async {
            let response = self
                .http
                .post(self.url.clone())
                .header(AUTHORIZATION, self.auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| self.transport_failure(&e))?;
            self.answered.store(true, Ordering::Relaxed);
            let status = response.status();
            // Only a failure needs the headers after the body is read.
            let simulator = response.headers().contains_key(response::SIMULATOR_HEADER);
            let headers = if status.is_success() {
                *limits = RateLimitHeaders::read(response.headers());
                None
            } else {
                Some(response.headers().clone())
            };
            let bytes = response.bytes().await.map_err(|e| {
                Failure::transient(format!("HTTP {}: {}", status.as_u16(), describe(&e)))
            })?;
            if status.is_success() {
                let parsed = super::DEFAULT.decode(&bytes).map(|completion| Completion {
                    body: bytes.clone(),
                    simulated: completion.simulated || simulator,
                    ..completion
                });
                parsed.map_err(|e| {
                    let mut f = Failure::transient(format!("HTTP {}: {e}", status.as_u16()));
                    f.status = Some(status.as_u16());
                    f
                })
            } else {
                Err(classify_status(
                    status.as_u16(),
                    &headers.unwrap_or_default(),
                    &bytes,
                ))
            }
        };
        let outcome = match tokio::time::timeout(self.timeout, attempt).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::transient(format!(
                "timed out after {} (raise --timeout for slow models)",
                humantime::format_duration(self.timeout)
            ))),
        };
        outcome.map_err(|mut f| {
            f.message = self.scrub(&f.message);
            f
        })
    }

    /// A failure before any answer; a fatal one is kept as the run's network fault.
    fn transport_failure(&self, error: &reqwest::Error) -> Failure {
        let answered = self.answered.load(Ordering::Relaxed);
        let failure = transport::classify(error, &self.endpoint, answered);
        if failure.kind == FailureKind::Fatal {
            let _ = self.network_fault.set(self.scrub(&failure.message));
        }
        failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_never_shown() {
        let key = ApiKey::new("sk-secret-1234");
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(
            key.scrub("Incorrect API key provided: sk-secret-1234."),
            "Incorrect API key provided: [redacted]."
        );
    }

    #[test]
    fn bad_base_url_is_a_config_error() {
        let err = ApiClient::new("not a url", ApiKey::new("k"), &options())
            .err()
            .unwrap();
        assert!(err.to_string().contains("--base-url"));
    }

    fn options() -> ClientOptions {
        ClientOptions {
            concurrency: 1,
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            ca_certs: Vec::new(),
        }
    }

    #[test]
    fn base_url_user_info_is_never_shown() {
        let client = ApiClient::new(
            "http://alice:S3cret%2FPass@127.0.0.1:9/v1",
            ApiKey::new("sk-secret-1234"),
            &options(),
        )
        .unwrap();
        assert_eq!(
            client.url(),
            "http://[redacted]@127.0.0.1:9/v1/chat/completions"
        );
        assert_eq!(
            client.scrub("pw S3cret/Pass and S3cret%2FPass at http://alice:x@h/"),
            "pw [redacted] and [redacted] at http://[redacted]@h/"
        );
        let err = ApiClient::new("http://alice:pa/ss@[bad/v1", ApiKey::new("k"), &options())
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("pa/ss"), "{err}");
    }
}
