//! [`MonitorOptions`]: what watches a run besides the progress display. Apart from the monitor
//! itself, so [`Job`](crate::Job) can hold it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::Error;

/// How often the event log records an interval (counts of the interval, pace, in flight).
pub const DEFAULT_EVENT_INTERVAL: Duration = Duration::from_secs(10);

/// What watches a run besides the progress display.
#[derive(Debug, Clone)]
pub struct MonitorOptions {
    /// Append the run's events to `OUTPUT.events.jsonl` (default on).
    pub events: bool,
    /// How often the event log records an interval.
    pub event_interval: Duration,
    /// Serve Prometheus metrics on this address while the run goes (`GET /metrics`).
    pub metrics_listen: Option<SocketAddr>,
    /// POST the summary as JSON here when the run ends, however it ends.
    pub notify_url: Option<String>,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        MonitorOptions {
            events: true,
            event_interval: DEFAULT_EVENT_INTERVAL,
            metrics_listen: None,
            notify_url: None,
        }
    }
}

impl MonitorOptions {
    /// Checks the options before a run starts: `notify_url` must be an http or https URL.
    pub(crate) fn check(&self) -> Result<(), Error> {
        if let Some(url) = &self.notify_url {
            notify_url(url)?;
        }
        Ok(())
    }
}

/// `--notify-url` parsed: an absolute `http://` or `https://` URL with a host. The message of a
/// refused URL never shows it (its user-info, path or query may hold a token), only its scheme.
pub(crate) fn notify_url(url: &str) -> Result<reqwest::Url, Error> {
    const EXPECTED: &str = "expected an http:// or https:// URL, e.g. https://hooks.example.com/…";
    let parsed = reqwest::Url::parse(url.trim())
        .map_err(|e| Error::Config(format!("--notify-url is not a valid URL ({e}); {EXPECTED}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Error::Config(format!(
            "--notify-url: the URL's scheme is `{}`; {EXPECTED}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(Error::Config(format!(
            "--notify-url has no host; {EXPECTED}"
        )));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_urls_are_accepted_and_never_shown() {
        for url in ["https://hooks.example.com/x?token=t", "http://127.0.0.1:9/"] {
            assert!(notify_url(url).is_ok(), "{url}");
        }
        for (url, says) in [
            ("ftp://user:Pa55word@x/secret-path", "scheme is `ftp`"),
            ("hooks.example.com/Pa55word", "is not a valid URL"),
            (
                "https://user:Pa55word@[bad/secret-path",
                "is not a valid URL",
            ),
            ("mailto:Pa55word@example.com", "scheme is `mailto`"),
        ] {
            let err = notify_url(url).unwrap_err().to_string();
            assert!(err.contains("--notify-url") && err.contains(says), "{err}");
            assert!(err.contains("expected an http:// or https:// URL"), "{err}");
            assert!(
                !err.contains("Pa55word") && !err.contains("secret-path"),
                "{err}"
            );
        }
    }
}
