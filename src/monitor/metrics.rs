//! `--metrics-listen ADDR`: the run's [`Counters`] on `GET /metrics` at ADDR while the run goes,
//! for Prometheus to scrape. Any other path is a 404; another method on `/metrics` a 405.
//!
//! Nothing is copied or kept between scrapes: a [`Collector`] reads the counters' atomics (and
//! the cost ledger, under its lock) at each scrape and `prometheus-client` encodes them in the
//! OpenMetrics text format (`# HELP`, `# TYPE`, `# UNIT` lines, counters' samples ending in
//! `_total`, `# EOF`), which Prometheus reads as it reads its own text format. The families:
//!
//! - `promptbatch_rows_total{status="ok"|"error"}`: records written
//! - `promptbatch_requests_total{status="429"|"5xx"}`: answers with those statuses (every
//!   attempt); `promptbatch_retries_total`: attempts after a row's first
//! - `promptbatch_tokens_total{kind="prompt"|"cached"|"completion"|"reasoning"}`: the records'
//! - `promptbatch_cost_usd_total{model, simulated="true"|"false"}`: the records' cost by model;
//!   a series only once the model has priced (or simulated) rows: unpriced is absent, never 0
//! - `promptbatch_in_flight`: requests in flight now
//! - `promptbatch_pace_requests_per_minute`: the adaptive pace; **absent** while not paced (an
//!   absent series, not NaN, so sums and alerts over it need no NaN filtering)
//! - `promptbatch_paused` (1 while the pool waits out a rate-limit pause, else 0) and
//!   `promptbatch_paused_seconds_total` (time paused so far, a pause in progress up to now)
//!
//! Tokens and cost are what the records written hold (a record's `cost_usd`), so they can be
//! checked against the output. The server is a plain hyper HTTP/1 listener on its own task;
//! [`Server::stop`] ends it and its connections. An address that cannot be bound is a notice,
//! and the run goes on without metrics.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::notice;
use crate::progress::{unix_ms, Counters};

/// What `GET /metrics` answers with: the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics server of one run.
pub(crate) struct Server {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `counters` on `addr`; `None` (after a notice) when it cannot listen there.
    pub(crate) async fn start(addr: SocketAddr, counters: Arc<Counters>) -> Option<Server> {
        let listener = match TcpListener::bind(addr).await {
            Ok(listener) => listener,
            Err(e) => {
                notice!(
                    "--metrics-listen {addr}: cannot listen there ({e}); the run goes on without metrics"
                );
                return None;
            }
        };
        if let Ok(bound) = listener.local_addr() {
            tracing::info!("metrics at http://{bound}/metrics");
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RunMetrics {
            counters,
            paused_ms: AtomicU64::new(0),
        }));
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::new(registry), stop.clone()));
        Some(Server { stop, task })
    }

    /// Stops serving: no new connection is accepted, open ones are closed.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Accepts connections until `stop`, each served on its own task until it closes or `stop`.
async fn serve(listener: TcpListener, registry: Arc<Registry>, stop: CancellationToken) {
    crate::util::serve::accept_until(listener, stop, |stream| {
        let registry = registry.clone();
        let service = service_fn(move |request| {
            let response = answer(&request, &registry);
            async move { Ok::<_, Infallible>(response) }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service);
        async move {
            let _ = connection.await;
        }
    })
    .await
}

/// The answer to one request: the metrics for `GET /metrics` (or `HEAD`), else 404 or 405.
fn answer(request: &Request<Incoming>, registry: &Registry) -> Response<Full<Bytes>> {
    if request.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "not found: the metrics are at /metrics\n",
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(StatusCode::METHOD_NOT_ALLOWED, "GET /metrics\n");
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, registry) {
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the metrics: {e}\n"),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// A `text/plain` answer with this status.
fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The run's counters as metric families, read at each scrape.
#[derive(Debug)]
struct RunMetrics {
    counters: Arc<Counters>,
    /// The largest `promptbatch_paused_seconds_total` served (in ms), so it never goes back
    /// when a scrape falls between the pacing's two stores of a pause.
    paused_ms: AtomicU64,
}

impl Collector for RunMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let c = &self.counters;
        let load = |n: &AtomicU64| n.load(Relaxed);
        counter(
            &mut encoder,
            "promptbatch_rows",
            "Records written, by status",
            None,
            &[
                (&[("status", "ok")], load(&c.ok)),
                (&[("status", "error")], load(&c.errors)),
            ],
        )?;
        counter(
            &mut encoder,
            "promptbatch_requests",
            "Answers received with HTTP 429 (rate limited) or a 5xx status, every attempt",
            None,
            &[
                (&[("status", "429")], load(&c.rate_limited)),
                (&[("status", "5xx")], load(&c.server_errors)),
            ],
        )?;
        counter(
            &mut encoder,
            "promptbatch_retries",
            "Attempts after a row's first",
            None,
            &[(&[], load(&c.retries))],
        )?;
        counter(
            &mut encoder,
            "promptbatch_tokens",
            "Tokens on the records written, by kind",
            None,
            &[
                (&[("kind", "prompt")], load(&c.prompt_tokens)),
                (&[("kind", "cached")], load(&c.cached_tokens)),
                (&[("kind", "completion")], load(&c.completion_tokens)),
                (&[("kind", "reasoning")], load(&c.reasoning_tokens)),
            ],
        )?;
        self.encode_cost(&mut encoder)?;
        gauge(
            &mut encoder,
            "promptbatch_in_flight",
            "Requests in flight",
            load(&c.in_flight),
        )?;
        self.encode_pace(&mut encoder)
    }
}

impl RunMetrics {
    /// `promptbatch_cost_usd_total{model, simulated}`: a series per model and kind of row
    /// that has a price (unpriced rows have no cost, not a cost of 0).
    fn encode_cost(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let ledger = self.counters.cost_totals();
        let mut samples = Vec::new();
        for (model, entry) in ledger.models() {
            let model = escape_label(model);
            if entry.priced_rows > 0 {
                samples.push((model.clone(), "false", entry.spent_usd()));
            }
            if entry.simulated_rows > 0 {
                samples.push((model, "true", entry.simulated_usd()));
            }
        }
        let labels: Vec<[(&str, &str); 2]> = samples
            .iter()
            .map(|(model, simulated, _)| [("model", model.as_ref()), ("simulated", *simulated)])
            .collect();
        let samples: Vec<(&[(&str, &str)], f64)> = labels
            .iter()
            .zip(&samples)
            .map(|(labels, (_, _, usd))| (&labels[..], *usd))
            .collect();
        let help = "Cost of the records written, by model; simulated=\"true\" for --dry-run rows (nothing spent)";
        let usd = Unit::Other("usd".to_string());
        counter(encoder, "promptbatch_cost", help, Some(&usd), &samples)
    }

    /// The pace (absent while not paced) and the pool's pauses.
    fn encode_pace(&self, encoder: &mut DescriptorEncoder<'_>) -> fmt::Result {
        let c = &self.counters;
        let per_minute = c.pace.lock().ok().and_then(|note| note.per_minute);
        if let Some(per_minute) = per_minute {
            gauge(
                encoder,
                "promptbatch_pace_requests_per_minute",
                "The adaptive pace; absent while not paced",
                per_minute,
            )?;
        }
        let now_ms = unix_ms(SystemTime::now());
        let until_ms = c.paused_until_ms.load(Relaxed);
        gauge(
            encoder,
            "promptbatch_paused",
            "1 while the pool waits out a rate-limit pause, else 0",
            u64::from(until_ms > now_ms),
        )?;
        // The pacing counts a pause in full when it begins: its part still ahead is not yet.
        let paused_ms = c
            .paused_ms
            .load(Relaxed)
            .saturating_sub(until_ms.saturating_sub(now_ms));
        let paused_ms = self.paused_ms.fetch_max(paused_ms, Relaxed).max(paused_ms);
        counter(
            encoder,
            "promptbatch_paused",
            "Time the pool spent paused on rate limits",
            Some(&Unit::Seconds),
            &[(&[], paused_ms as f64 / 1000.0)],
        )
    }
}

/// One counter family: a `_total` sample for each label set (none: one unlabeled sample).
fn counter<V: EncodeCounterValue + Copy>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    samples: &[(&[(&str, &str)], V)],
) -> fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, unit, MetricType::Counter)?;
    if let [(&[], value)] = samples {
        return ConstCounter::new(*value).encode(family);
    }
    for (labels, value) in samples {
        ConstCounter::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// One unlabeled gauge.
fn gauge<V: EncodeGaugeValue>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: V,
) -> fmt::Result {
    let metric = ConstGauge::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A label value as the text format needs it: `\`, `"` and line feeds escaped
/// (`prometheus-client` writes label values as they are; a row's own model is any text).
fn escape_label(value: &str) -> Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return Cow::Borrowed(value);
    }
    let mut escaped = String::with_capacity(value.len() + 2);
    for ch in value.chars() {
        let _ = match ch {
            '\\' => escaped.write_str("\\\\"),
            '"' => escaped.write_str("\\\""),
            '\n' => escaped.write_str("\\n"),
            other => escaped.write_char(other),
        };
    }
    Cow::Owned(escaped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TokenUsage;

    fn scrape(counters: Counters) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(RunMetrics {
            counters: Arc::new(counters),
            paused_ms: AtomicU64::new(0),
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn the_families_carry_the_counters() {
        let counters = Counters::default();
        counters.ok.store(7, Relaxed);
        counters.errors.store(2, Relaxed);
        counters.rate_limited.store(3, Relaxed);
        counters.cached_tokens.store(11, Relaxed);
        counters.in_flight.store(4, Relaxed);
        let usage = TokenUsage::default();
        if let Ok(mut costs) = counters.costs.lock() {
            costs.add("m\"1", &usage, Some(0.5), false);
            costs.add("m\"1", &usage, Some(0.25), false);
            costs.add("sim", &usage, Some(0.125), true);
            costs.add("unpriced", &usage, None, false);
        }
        let text = scrape(counters);
        for line in [
            "# TYPE promptbatch_rows counter",
            "promptbatch_rows_total{status=\"ok\"} 7",
            "promptbatch_rows_total{status=\"error\"} 2",
            "promptbatch_requests_total{status=\"429\"} 3",
            "promptbatch_tokens_total{kind=\"cached\"} 11",
            "promptbatch_retries_total 0",
            "# TYPE promptbatch_in_flight gauge",
            "promptbatch_in_flight 4",
            "promptbatch_cost_usd_total{model=\"m\\\"1\",simulated=\"false\"} 0.75",
            "promptbatch_cost_usd_total{model=\"sim\",simulated=\"true\"} 0.125",
            "promptbatch_paused 0",
            "promptbatch_paused_seconds_total 0.0",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("unpriced"), "{text}");
        assert!(
            !text.contains("promptbatch_pace"),
            "not paced: absent\n{text}"
        );
    }

    #[test]
    fn a_pause_counts_up_to_now_and_the_pace_shows_when_paced() {
        let counters = Counters::default();
        // A 60-s pause that began 10 s ago: the pacing counted all 60 s when it began.
        let now = unix_ms(SystemTime::now());
        counters.paused_ms.store(60_000, Relaxed);
        counters.paused_until_ms.store(now + 50_000, Relaxed);
        counters.pace.lock().unwrap().per_minute = Some(120.5);
        let text = scrape(counters);
        let paused: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("promptbatch_paused_seconds_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((9.9..=10.5).contains(&paused), "{paused}");
        assert!(text.lines().any(|l| l == "promptbatch_paused 1"), "{text}");
        assert!(
            text.lines()
                .any(|l| l == "promptbatch_pace_requests_per_minute 120.5"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("gpt-5"), "gpt-5");
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}
