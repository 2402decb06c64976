//! `--notify-url URL`: one JSON POST with the summary when a run ends, however it ends (its
//! stop reason, or `failed` for a run that ended in an error after it started). The body holds
//! the counts, tokens, cost and time, and a one-line `text` that Slack-style webhooks show.
//!
//! The POST goes out on a client of its own that trusts what the run's client trusts (the
//! bundled and system roots and the `--ca-cert` files), is tried up to [`ATTEMPTS`] times on a
//! connection error, a 5xx or a 429, and never holds the exit more than [`WHOLE`]. A failure is a
//! notice, never an error; the notice shows the URL as `scheme://host/…` only, since webhooks
//! keep their token in the user-info, the path or the query.

use std::time::Duration;

use serde_json::{json, Value};

use crate::events::notice;
use crate::job::Job;
use crate::progress::{Counters, StopReason, Summary};
use crate::util::human::{count, format_usd, group};
use crate::util::redact;

/// Tries of one notification.
const ATTEMPTS: u32 = 3;
/// The wait before the second and the third try.
const BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];
/// Bound on one try, from connecting to the answer.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
/// Bound on the whole notification, every try and wait included.
const WHOLE: Duration = Duration::from_secs(10);
/// The longest stop message the one-line `text` quotes.
const TEXT_MESSAGE_CHARS: usize = 200;

/// Posts the summary of the run to `url`.
pub(crate) async fn send(url: &str, opts: &Job, summary: &Summary) {
    let (status, message) = (summary.stop.word(), summary.stop.message());
    post(url, opts, &body(opts, summary, status, &message)).await;
}

/// Posts that the run failed with `error` to `url`, with what `counters` counted in `elapsed`.
pub(crate) async fn send_failure(
    url: &str,
    opts: &Job,
    error: &crate::error::Error,
    counters: &Counters,
    elapsed: Duration,
) {
    // The stop reason is not read: the status is `failed`, the message the error's.
    let mut summary = Summary::new(counters, elapsed, StopReason::Completed);
    summary.simulated = opts.dry_run.is_some();
    let message = redact::url_userinfo(&error.to_string());
    post(url, opts, &body(opts, &summary, "failed", &message)).await;
}

/// The JSON body: the summary's numbers, `status` and `message`, and the one-line `text`.
fn body(opts: &Job, summary: &Summary, status: &str, message: &str) -> Value {
    let cost = summary.costs.spent_usd() + summary.costs.simulated_usd();
    let mut body = summary.to_json();
    body["output"] = json!(opts.output.path.display().to_string());
    body["status"] = json!(status);
    body["message"] = json!(message);
    body["text"] = json!(text(opts, summary, status, message, cost));
    if let Some(host) = hostname() {
        body["host"] = json!(host);
    }
    body
}

/// `promptbatch: out.jsonl completed — 1,000 ok, 3 errors, $1.23 in 2h 3m`, then the stop
/// message (one line, shortened) when there is one.
fn text(opts: &Job, summary: &Summary, status: &str, message: &str, cost: f64) -> String {
    let path = &opts.output.path;
    let name = path
        .file_name()
        .unwrap_or(path.as_os_str())
        .to_string_lossy();
    let simulated = if summary.simulated { " simulated" } else { "" };
    let mut text = format!(
        "promptbatch: {name} {status} — {} ok, {}, {}{simulated} in {}",
        group(summary.ok),
        count(summary.errors, "error"),
        format_usd(cost),
        elapsed_text(summary.elapsed)
    );
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    if !message.is_empty() {
        text.push_str(": ");
        text.extend(message.chars().take(TEXT_MESSAGE_CHARS));
        if message.chars().count() > TEXT_MESSAGE_CHARS {
            text.push('…');
        }
    }
    text
}

/// `0.4s`, `42s`, `3m 5s`, `2h 3m`.
fn elapsed_text(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    match secs {
        0..10 => format!("{:.1}s", elapsed.as_secs_f64()),
        10..60 => format!("{secs}s"),
        60..3600 => format!("{}m {}s", secs / 60, secs % 60),
        _ => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
    }
}

/// The machine's name, where it can be read without a system call of its own (Linux's
/// `/proc`, `/etc/hostname`, or the shell's `HOSTNAME`/Windows's `COMPUTERNAME`).
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|file| std::fs::read_to_string(file).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
}

/// Posts `body` to `url` within [`WHOLE`]; a failure is a notice naming the URL's origin only.
async fn post(url: &str, opts: &Job, body: &Value) {
    let shown = redact::url_origin(url);
    let parsed = match super::options::notify_url(url) {
        Ok(parsed) => parsed,
        Err(e) => return notice!("could not notify {shown}: {e}"),
    };
    let client = match client(opts) {
        Ok(client) => client,
        Err(e) => return notice!("could not notify {shown}: {e}"),
    };
    let body = body.to_string();
    match tokio::time::timeout(WHOLE, attempts(&client, &parsed, body)).await {
        Ok(Ok(())) => tracing::debug!("notified {shown}"),
        Ok(Err((tries, why))) => {
            let why = scrub(&why, &parsed);
            notice!(
                "could not notify {shown} ({}): {why}",
                count(tries.into(), "attempt")
            );
        }
        Err(_) => notice!(
            "could not notify {shown}: no answer within {}s",
            WHOLE.as_secs()
        ),
    }
}

/// A client that trusts what the run's client trusts: the `--ca-cert` files besides the bundled
/// and the system's roots. The files were read and checked when the run started; should reading
/// them fail now, the other roots are trusted.
fn client(opts: &Job) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(ATTEMPT_TIMEOUT)
        .timeout(ATTEMPT_TIMEOUT)
        .user_agent(concat!("promptbatch/", env!("CARGO_PKG_VERSION")));
    for cert in crate::api::trust::load_ca_certs(&opts.endpoint.ca_certs).unwrap_or_default() {
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", reason(e)))
}

/// Up to [`ATTEMPTS`] POSTs of `body`, again after a connection error, a 5xx or a 429; the tries
/// made and why the last failed.
async fn attempts(
    client: &reqwest::Client,
    url: &reqwest::Url,
    body: String,
) -> Result<(), (u32, String)> {
    let mut tried = 0;
    loop {
        tried += 1;
        let sent = client
            .post(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        let (why, again) = match sent {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) => {
                let status = answer.status();
                let again = status.is_server_error() || status.as_u16() == 429;
                (format!("answered {status}"), again)
            }
            Err(e) => (reason(e), true),
        };
        match BACKOFF.get(tried as usize - 1) {
            Some(wait) if again && tried < ATTEMPTS => tokio::time::sleep(*wait).await,
            _ => return Err((tried, why)),
        }
    }
}

/// Why a request failed, without its URL: the innermost cause (`Connection refused (os error
/// 111)`, a certificate error), after what failed.
fn reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut root = None;
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        root = Some(cause.to_string());
        source = cause.source();
    }
    let root = root.unwrap_or_else(|| error.to_string());
    if error.is_timeout() {
        format!("no answer within {}s", ATTEMPT_TIMEOUT.as_secs())
    } else if error.is_connect() {
        format!("cannot connect: {root}")
    } else {
        root
    }
}

/// `text` without the URL's password or query, should a cause quote them.
fn scrub(text: &str, url: &reqwest::Url) -> String {
    let mut text = redact::url_userinfo(text);
    for secret in [url.password(), url.query()].into_iter().flatten() {
        text = redact::secret(&text, secret);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_reads_as_people_say_it() {
        let cases = [
            (0.4, "0.4s"),
            (42.0, "42s"),
            (185.0, "3m 5s"),
            (7380.0, "2h 3m"),
        ];
        for (secs, shown) in cases {
            assert_eq!(elapsed_text(Duration::from_secs_f64(secs)), shown);
        }
    }

    #[test]
    fn the_text_is_one_line_with_counts_cost_and_time() {
        let opts = Job::new("in.jsonl", "/data/out.jsonl");
        let mut summary = Summary::new(
            &Counters::default(),
            Duration::from_secs(7380),
            StopReason::Completed,
        );
        summary.ok = 1000;
        summary.errors = 3;
        assert_eq!(
            text(&opts, &summary, "completed", "", 1.234),
            "promptbatch: out.jsonl completed — 1,000 ok, 3 errors, $1.23 in 2h 3m"
        );
        summary.simulated = true;
        let long = format!("line one\nline two {}", "x".repeat(300));
        let shown = text(&opts, &summary, "fatal", &long, 0.5);
        assert!(shown.contains("$0.5000 simulated in 2h 3m: line one line two x"));
        assert!(!shown.contains('\n') && shown.ends_with('…'), "{shown}");
    }
}
