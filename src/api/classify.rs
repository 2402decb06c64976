//! The one place that decides what a failed attempt means: retry it (transient), record an error
//! for the row (permanent), or stop the whole run (fatal). Also reads the server's advice on when
//! to retry (`retry-after-ms`, `Retry-After`, `x-ratelimit-reset-*`).

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use serde_json::Value;

/// What a failure means for the row and the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Retry with backoff (429, 5xx, timeouts, dropped connections, unparsable 2xx bodies).
    Transient,
    /// An error record for this row, no retry (400, 413, 422, other 4xx).
    Permanent,
    /// Stop the run: bad key, no quota or billing problem.
    Fatal,
}

/// One failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    pub kind: FailureKind,
    /// What happened, with the HTTP status and the API's own message when there is one.
    pub message: String,
    /// HTTP status, when an answer arrived.
    pub status: Option<u16>,
    /// The server's advised wait before retrying, when it gave one.
    pub retry_after: Option<Duration>,
    /// The server's `x-ratelimit-*` state, when the answer carried it.
    pub rate_limit: Option<RateLimitHeaders>,
}

impl Failure {
    /// A transient failure without an HTTP answer (connect error, reset, timeout).
    pub fn transient(message: impl Into<String>) -> Self {
        Failure {
            kind: FailureKind::Transient,
            message: message.into(),
            status: None,
            retry_after: None,
            rate_limit: None,
        }
    }

    /// Whether this is a rate-limit answer (a 429 to retry), which the pacing counts.
    pub fn is_rate_limit(&self) -> bool {
        self.status == Some(429) && self.kind == FailureKind::Transient
    }
}

/// Classifies a non-2xx answer by its status and by the error's own `type`/`code`/message
/// (gateways reshape errors: LiteLLM turns an upstream `insufficient_quota` into a 429
/// `throttling_error` whose message alone still says "quota"; EvoLink names each class in
/// `type`).
pub fn classify_status(status: u16, headers: &HeaderMap, body: &[u8]) -> Failure {
    let api = ApiError::from_body(body);
    let kind = match (api.class(), status) {
        (Some(FailureKind::Fatal), _) | (_, 401 | 402) => FailureKind::Fatal,
        (Some(kind), _) => kind,
        (None, 408 | 409 | 425 | 429) => FailureKind::Transient,
        (None, 400..=499) => FailureKind::Permanent,
        (None, _) => FailureKind::Transient,
    };
    let mut message = format!("HTTP {status}");
    if !api.message.is_empty() {
        message.push_str(": ");
        message.push_str(&api.message);
    }
    if let Some(code) = api
        .code
        .as_ref()
        .filter(|c| !api.message.contains(c.as_str()))
    {
        message.push_str(&format!(" ({code})"));
    }
    Failure {
        kind,
        message: one_line(&message),
        status: Some(status),
        retry_after: retry_after(headers).or_else(|| api.suggested_wait()),
        rate_limit: RateLimitHeaders::read(headers),
    }
}

/// A server message on one line: runs of whitespace (newlines included) become one space.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error object of an API answer: `{"error": {"message", "type", "code", "param",
/// "fallback_suggestion"}}` or close to it (`code` may be a number or a string).
struct ApiError {
    message: String,
    code: Option<String>,
    kind: Option<String>,
    /// EvoLink's advice, e.g. "retry after 60 seconds" or "try a different model".
    suggestion: Option<String>,
}

impl ApiError {
    fn from_body(body: &[u8]) -> Self {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let error = parsed.as_ref().map(|v| v.get("error").unwrap_or(v));
        let text = |key: &str| {
            error.and_then(|e| e.get(key)).and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
        };
        let message = match error {
            Some(Value::String(s)) => s.clone(),
            Some(_) => text("message").unwrap_or_default(),
            None => {
                let raw = String::from_utf8_lossy(body);
                let raw = raw.trim();
                match raw.char_indices().nth(300) {
                    Some((cut, _)) => format!("{}…", &raw[..cut]),
                    None => raw.to_string(),
                }
            }
        };
        let suggestion = text("fallback_suggestion");
        let message = match &suggestion {
            Some(advice) if !message.contains(advice.as_str()) => format!("{message} ({advice})"),
            _ => message,
        };
        ApiError {
            message,
            code: text("code"),
            kind: text("type"),
            suggestion,
        }
    }

    /// The class the error names itself, when it does: by a specific `type` or `code`, and by
    /// the message for quota and billing problems (which no retry can fix). A generic type
    /// (`invalid_request_error`) leaves the decision to the status.
    fn class(&self) -> Option<FailureKind> {
        if self.is_quota_or_billing() {
            return Some(FailureKind::Fatal);
        }
        let named = |wanted: &[&str]| {
            [&self.kind, &self.code]
                .into_iter()
                .flatten()
                .any(|n| wanted.contains(&n.to_ascii_lowercase().as_str()))
        };
        // LiteLLM without a database answers any key but its master key with `no_db_connection`
        // (HTTP 400); with one, `token_not_found_in_db` (401).
        if named(&[
            "authentication_error",
            "invalid_api_key",
            "no_db_connection",
            "token_not_found_in_db",
        ]) {
            Some(FailureKind::Fatal)
        } else if named(&[
            "rate_limit_error",
            "internal_server_error",
            "upstream_error",
            "service_unavailable_error",
            "overloaded_error",
        ]) {
            Some(FailureKind::Transient)
        } else if named(&[
            "permission_error",
            "not_found_error",
            "request_too_large_error",
            "model_not_found",
        ]) {
            Some(FailureKind::Permanent)
        } else {
            None
        }
    }

    fn is_quota_or_billing(&self) -> bool {
        let named = [&self.code, &self.kind].into_iter().flatten().any(|s| {
            let s = s.to_ascii_lowercase();
            s.contains("insufficient_quota") || s.contains("billing")
        });
        let message = self.message.to_ascii_lowercase();
        named
            || [
                "exceeded your current quota",
                "insufficient_quota",
                "insufficient balance",
                "insufficient credit",
                "plan and billing",
            ]
            .iter()
            .any(|m| message.contains(m))
    }

    /// A wait advised only in words: EvoLink's `fallback_suggestion` ("retry after 60
    /// seconds"), else OpenAI's message ("Please try again in 1.5s.").
    fn suggested_wait(&self) -> Option<Duration> {
        self.suggestion
            .as_deref()
            .and_then(wait_in_words)
            .or_else(|| try_again_in(&self.message))
    }
}

/// OpenAI's advice in a 429's message when no header says it: "… Please try again in 1.5s."
/// (also `20ms`, `6m0s`).
fn try_again_in(message: &str) -> Option<Duration> {
    const PHRASE: &str = "try again in ";
    let lower = message.to_ascii_lowercase();
    let at = lower.find(PHRASE)? + PHRASE.len();
    let word = lower[at..].split_whitespace().next()?;
    parse_go_duration(word.trim_end_matches(['.', ',', ';', ')']))
}

/// A wait advised in words: "retry after 60 seconds", "retry in 2 minutes".
fn wait_in_words(text: &str) -> Option<Duration> {
    let text = text.to_ascii_lowercase();
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .windows(2)
        .position(|w| w[0] == "retry" && (w[1] == "after" || w[1] == "in"))?;
    let amount: f64 = words.get(at + 2)?.parse().ok()?;
    let unit = words.get(at + 3).copied().unwrap_or("seconds");
    let scale = match unit.trim_end_matches(['.', ',', ';']) {
        "ms" | "millisecond" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        _ => 1.0,
    };
    Duration::try_from_secs_f64(amount * scale).ok()
}

/// The wait the server advised: `retry-after-ms`, else `Retry-After` (seconds or HTTP date),
/// or, when neither is present, `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens`.
/// Each is also read under a gateway's `llm_provider-` prefix (LiteLLM passes the upstream's
/// advice on that way); the plain name wins.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let header = |name: Name| header(headers, name);
    // `retry-after-ms` is the precise form of `Retry-After` (which rounds up to whole seconds).
    let direct = header(name!("retry-after-ms"))
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .or_else(|| header(name!("retry-after")).and_then(parse_retry_after));
    direct.or_else(|| {
        [
            header(name!("x-ratelimit-reset-requests")),
            header(name!("x-ratelimit-reset-tokens")),
        ]
        .into_iter()
        .flatten()
        .filter_map(parse_go_duration)
        .max()
    })
}

/// A header name and its spelling under a gateway's `llm_provider-` prefix (how LiteLLM passes
/// an upstream's headers on), both fixed at compile time: reading them allocates nothing, and
/// this runs on every answer.
#[derive(Clone, Copy)]
struct Name {
    plain: &'static str,
    prefixed: &'static str,
}

macro_rules! name {
    ($plain:literal) => {
        Name {
            plain: $plain,
            prefixed: concat!("llm_provider-", $plain),
        }
    };
}
use name;

/// A header's value, plain or prefixed (the plain name wins).
fn header(headers: &HeaderMap, name: Name) -> Option<&str> {
    headers
        .get(name.plain)
        .or_else(|| headers.get(name.prefixed))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The server's rate-limit state as OpenAI reports it on every answer: `x-ratelimit-limit-*`
/// (per minute), `-remaining-*` and `-reset-*` for requests and tokens (plain or
/// `llm_provider-` prefixed). Absent headers are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RateLimitHeaders {
    pub limit_requests: Option<u64>,
    pub remaining_requests: Option<u64>,
    pub reset_requests: Option<Duration>,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: Option<u64>,
    pub reset_tokens: Option<Duration>,
}

impl RateLimitHeaders {
    /// Reads the headers; `None` when the answer carries none of them.
    pub fn read(headers: &HeaderMap) -> Option<Self> {
        // Most answers carry none: one look at the few names there are, not twelve lookups.
        let any = headers.keys().any(|name| {
            let name = name.as_str();
            name.starts_with("x-ratelimit-") || name.starts_with("llm_provider-x-ratelimit-")
        });
        if !any {
            return None;
        }
        let number = |name: Name| {
            header(headers, name)
                .and_then(|v| v.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| n as u64)
        };
        let duration = |name: Name| header(headers, name).and_then(parse_go_duration);
        let read = RateLimitHeaders {
            limit_requests: number(name!("x-ratelimit-limit-requests")),
            remaining_requests: number(name!("x-ratelimit-remaining-requests")),
            reset_requests: duration(name!("x-ratelimit-reset-requests")),
            limit_tokens: number(name!("x-ratelimit-limit-tokens")),
            remaining_tokens: number(name!("x-ratelimit-remaining-tokens")),
            reset_tokens: duration(name!("x-ratelimit-reset-tokens")),
        };
        (read != RateLimitHeaders::default()).then_some(read)
    }
}

/// `Retry-After`: delay in seconds (possibly fractional) or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Durations such as `1s`, `6m0s`, `20ms`, `1m30.5s` (the `x-ratelimit-reset-*` format).
pub fn parse_go_duration(value: &str) -> Option<Duration> {
    let mut total = 0.0f64;
    let mut rest = value.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_end].parse().ok()?;
        rest = &rest[number_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" | "" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += number * scale;
        rest = &rest[unit_end..];
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_advice_in_the_message_is_read_when_no_header_says_it() {
        let body = br#"{"error":{"message":"Rate limit reached for gpt-5.2 on requests per min (RPM): Limit 500, Used 500, Requested 1. Please try again in 1.5s.","type":"requests","code":"rate_limit_exceeded"}}"#;
        let api = ApiError::from_body(body);
        assert_eq!(api.suggested_wait(), Some(Duration::from_millis(1500)));
        for (text, wait) in [
            ("Please try again in 20ms.", Duration::from_millis(20)),
            ("please try again in 6m0s", Duration::from_secs(360)),
        ] {
            assert_eq!(try_again_in(text), Some(wait), "{text}");
        }
        assert_eq!(try_again_in("Please try again later."), None);
    }
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn transient_statuses_are_retried() {
        for status in [408, 409, 425, 429, 500, 502, 503, 504, 529] {
            let f = classify_status(status, &HeaderMap::new(), b"");
            assert_eq!(f.kind, FailureKind::Transient, "{status}");
        }
    }

    #[test]
    fn permanent_statuses_carry_the_api_message() {
        for status in [400, 413, 422, 418] {
            let f = classify_status(
                status,
                &HeaderMap::new(),
                br#"{"error":{"message":"bad things","type":"invalid_request_error"}}"#,
            );
            assert_eq!(f.kind, FailureKind::Permanent, "{status}");
            assert_eq!(f.message, format!("HTTP {status}: bad things"));
        }
    }

    #[test]
    fn fatal_statuses_and_quota_errors_stop_the_run() {
        for status in [401, 402] {
            assert_eq!(
                classify_status(status, &HeaderMap::new(), b"{}").kind,
                FailureKind::Fatal
            );
        }
        // 403 and 404 may concern one model only: permanent, left to the circuit breaker.
        for status in [403, 404] {
            assert_eq!(
                classify_status(status, &HeaderMap::new(), b"{}").kind,
                FailureKind::Permanent
            );
        }
        let quota = br#"{"error":{"message":"You exceeded your current quota","code":"insufficient_quota"}}"#;
        let f = classify_status(429, &HeaderMap::new(), quota);
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(!f.is_rate_limit());
    }

    #[test]
    fn a_gateway_reshaped_quota_error_is_known_by_its_message() {
        let body = br#"{"error":{"message":"litellm.RateLimitError: You exceeded your current quota, please check your plan and billing details.
For more information","type":"throttling_error","param":null,"code":"429"}}"#;
        let f = classify_status(429, &HeaderMap::new(), body);
        assert_eq!(f.kind, FailureKind::Fatal);
        assert!(!f.message.contains('\n'), "one line: {}", f.message);
    }

    #[test]
    fn evolink_error_types_decide_whatever_the_status() {
        let body = |kind: &str, code: &str| {
            format!(
                r#"{{"error":{{"code":{code},"message":"m","type":"{kind}","param":null,"fallback_suggestion":"retry after 60 seconds"}}}}"#
            )
        };
        for (kind, status, expected) in [
            ("insufficient_quota_error", 429, FailureKind::Fatal),
            ("insufficient_quota_error", 402, FailureKind::Fatal),
            ("authentication_error", 400, FailureKind::Fatal),
            ("rate_limit_error", 429, FailureKind::Transient),
            ("upstream_error", 502, FailureKind::Transient),
            ("service_unavailable_error", 503, FailureKind::Transient),
            ("not_found_error", 404, FailureKind::Permanent),
            ("request_too_large_error", 413, FailureKind::Permanent),
            ("permission_error", 403, FailureKind::Permanent),
        ] {
            for code in [status.to_string(), format!("\"{status}\"")] {
                let f = classify_status(status, &HeaderMap::new(), body(kind, &code).as_bytes());
                assert_eq!(f.kind, expected, "{kind} {code}");
                assert_eq!(f.retry_after, Some(Duration::from_secs(60)), "{kind}");
            }
        }
    }

    #[test]
    fn a_litellm_wrong_key_is_fatal_its_unknown_model_permanent() {
        let wrong_key = br#"{"error":{"message":"No connected db.","type":"no_db_connection","param":null,"code":"400"}}"#;
        assert_eq!(
            classify_status(400, &HeaderMap::new(), wrong_key).kind,
            FailureKind::Fatal
        );
        let unknown = br#"{"error":{"message":"/chat/completions: Invalid model name passed in model=no-such-model. Call `/v1/models` to view available models for your key.","type":"invalid_request_error","param":null,"code":"400"}}"#;
        assert_eq!(
            classify_status(400, &HeaderMap::new(), unknown).kind,
            FailureKind::Permanent,
            "left to the per-model circuit breaker"
        );
        let own_limit = br#"{"error":{"message":"litellm.RateLimitError: Model rate limit exceeded. RPM limit=3, current usage=4","type":"throttling_error","param":null,"code":"429"}}"#;
        let f = classify_status(
            429,
            &headers(&[("llm_provider-retry-after", "60")]),
            own_limit,
        );
        assert_eq!(f.kind, FailureKind::Transient);
        assert_eq!(f.retry_after, Some(Duration::from_secs(60)));
    }

    #[test]
    fn gateway_prefixed_retry_headers_are_read() {
        assert_eq!(
            retry_after(&headers(&[("llm_provider-retry-after", "60")])),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after(&headers(&[("llm_provider-retry-after-ms", "700")])),
            Some(Duration::from_millis(700))
        );
        assert_eq!(
            retry_after(&headers(&[(
                "llm_provider-x-ratelimit-reset-requests",
                "2s"
            )])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after", "1"),
                ("llm_provider-retry-after", "60")
            ])),
            Some(Duration::from_secs(1)),
            "the plain name wins"
        );
    }

    #[test]
    fn non_json_error_bodies_are_quoted() {
        let f = classify_status(502, &HeaderMap::new(), b"<html>Bad Gateway</html>");
        assert_eq!(f.message, "HTTP 502: <html>Bad Gateway</html>");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")])),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(&headers(&[
                ("retry-after-ms", "1500"),
                ("retry-after", "1")
            ])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset-requests", "1m30.5s")])),
            Some(Duration::from_secs_f64(90.5))
        );
        let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let got = retry_after(&headers(&[("retry-after", &date)])).unwrap();
        assert!(got > Duration::from_secs(27) && got <= Duration::from_secs(30));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn rate_limit_headers_are_read_plain_or_prefixed() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "1200"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1.5s"),
            ("llm_provider-x-ratelimit-limit-tokens", "600000"),
            ("x-ratelimit-remaining-tokens", "599000"),
            ("x-ratelimit-reset-tokens", "6ms"),
        ]);
        assert_eq!(
            RateLimitHeaders::read(&h),
            Some(RateLimitHeaders {
                limit_requests: Some(1200),
                remaining_requests: Some(0),
                reset_requests: Some(Duration::from_millis(1500)),
                limit_tokens: Some(600_000),
                remaining_tokens: Some(599_000),
                reset_tokens: Some(Duration::from_millis(6)),
            })
        );
        assert_eq!(RateLimitHeaders::read(&HeaderMap::new()), None);
        let f = classify_status(429, &h, b"{}");
        assert_eq!(f.rate_limit.unwrap().remaining_requests, Some(0));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("abc"), None);
    }
}
