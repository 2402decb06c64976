//! The HTTP client: one shared `reqwest::Client` (keep-alive pool sized for the concurrency) that
//! sends one attempt of a request and turns the outcome into a [`Completion`] or a [`Failure`].
//!
//! The API key lives only in [`ApiKey`] (whose `Debug` is redacted) and in a header marked
//! sensitive; every message that leaves this module has the key scrubbed out.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};

use super::classify::{classify_status, Failure};
use super::response::{self, Completion};
use crate::error::Error;

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
        Err(Error::Config(format!(
            "no API key: set {} (or pass --dry-run to try the pipeline against the built-in simulator)",
            names.join(" or ")
        )))
    }

    /// Replaces every occurrence of the key in `text` with `[redacted]`.
    pub fn scrub(&self, text: &str) -> String {
        if self.0.len() < 4 || !text.contains(&self.0) {
            return text.to_string();
        }
        text.replace(&self.0, "[redacted]")
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Sends chat-completions requests to one endpoint.
pub struct ApiClient {
    http: reqwest::Client,
    url: reqwest::Url,
    auth: HeaderValue,
    key: ApiKey,
    timeout: Duration,
}

impl ApiClient {
    /// A client for `{base_url}/chat/completions`; `timeout` bounds each whole attempt.
    pub fn new(
        base_url: &str,
        key: ApiKey,
        concurrency: u32,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Self, Error> {
        let base = base_url.trim_end_matches('/');
        let url = format!("{base}/chat/completions");
        let url = reqwest::Url::parse(&url).map_err(|e| {
            Error::Config(format!(
                "--base-url `{base_url}` is not a valid URL ({e}); example: https://api.evolink.ai/v1"
            ))
        })?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", key.0)).map_err(|_| {
            Error::Config("the API key contains characters not allowed in an HTTP header".into())
        })?;
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency as usize)
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("promptbatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(ApiClient {
            http,
            url,
            auth,
            key,
            timeout,
        })
    }

    /// The endpoint requests go to.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// Removes the key from a text that is about to be shown or written.
    pub fn scrub(&self, text: &str) -> String {
        self.key.scrub(text)
    }

    /// Sends one attempt. The whole attempt, connect to last body byte, is bounded by the timeout.
    pub async fn send(&self, body: Bytes) -> Result<Completion, Failure> {
        let attempt = async {
            let response = self
                .http
                .post(self.url.clone())
                .header(AUTHORIZATION, self.auth.clone())
                .header(CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .map_err(|e| Failure::transient(describe(&e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.bytes().await.map_err(|e| {
                Failure::transient(format!("HTTP {}: {}", status.as_u16(), describe(&e)))
            })?;
            if status.is_success() {
                response::parse(&bytes).map_err(|e| {
                    let mut f = Failure::transient(format!("HTTP {}: {e}", status.as_u16()));
                    f.status = Some(status.as_u16());
                    f
                })
            } else {
                Err(classify_status(status.as_u16(), &headers, &bytes))
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
}

/// A reqwest error with its causes ("error sending request: connection reset by peer").
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
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
        let err = ApiClient::new(
            "not a url",
            ApiKey::new("k"),
            1,
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("--base-url"));
    }
}
