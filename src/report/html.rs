//! `promptbatch report OUTPUT --html FILE`: the report as one self-contained HTML page — inline
//! CSS and hand-made SVG, no script, no font, nothing fetched — so it opens from a mail
//! attachment. It is drawn from the [`Report`] alone, so every figure on it is the one
//! `report --json` prints; the key figures carry `data-json="PATH"` (their place in the JSON) so
//! a test can compare the two. Its size is bounded by the report's (≤ 120 buckets, top lists),
//! not by the output's: a few tens of KB whatever the number of records.

use std::fmt::Write as _;

use super::timeline::{Bucket, Timeline};
use super::{Report, TokenHistogram};
use crate::util::human::group;

mod svg;

use svg::{Chart, Mark, Series};

/// Colours: ok, errors, rate, pace, and the cost chart's models in turn.
const OK: &str = "#2e7d32";
const ERROR: &str = "#c62828";
const RATE: &str = "#1565c0";
const PACE: &str = "#6a1b9a";
const WARN: &str = "#ef6c00";
const GREY: &str = "#757575";
const PAUSE: &str = "#f9a825";
const MODELS: [&str; 9] = [
    "#1565c0", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f", "#c62828", "#5d4037", "#ad1457",
    "#616161",
];

/// The whole page.
pub(crate) fn render(report: &Report) -> String {
    let mut page = String::with_capacity(64 * 1024);
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>promptbatch report: {output}</title><style>{STYLE}</style></head><body>\
         <h1>promptbatch report</h1><p class=\"sub\"><span data-json=\"output\">{output}</span> · \
         <span data-json=\"format\">{format}</span></p>",
        output = esc(&report.output),
        format = report.format,
    );
    page.push_str(&cards(report));
    match &report.timeline {
        Some(timeline) => page.push_str(&charts(timeline)),
        None => page.push_str(
            "<p class=\"note\">No record has a <code>finished_at</code> time: no charts over time.</p>",
        ),
    }
    page.push_str(&costs(report));
    page.push_str(&tokens(&report.token_histogram));
    page.push_str(&errors(report));
    page.push_str(&slowest(report));
    page.push_str(&runs(report));
    page.push_str(&batches(report));
    page.push_str("</body></html>\n");
    page
}

/// The headline figures.
fn cards(report: &Report) -> String {
    let mut cards = String::from("<section class=\"cards\">");
    let mut card = |label: &str, path: &str, value: String| {
        let _ = write!(
            cards,
            "<div class=\"card\"><div class=\"label\">{label}</div>\
             <div class=\"value\" data-json=\"{path}\">{value}</div></div>"
        );
    };
    // Money: rounded to the cent on the card (to 6 decimals below a dollar); the exact figure
    // is its `data-value` and its tooltip.
    let money = |value: f64| {
        let shown = if value >= 1.0 {
            format!("{:.2}", value)
        } else {
            usd((value * 1e6).round() / 1e6)
        };
        format!(
            "<span data-value=\"{}\" title=\"{}\">{shown}</span>",
            usd(value),
            usd(value)
        )
    };
    card("records", "rows", group(report.rows));
    card("ok", "ok", group(report.ok));
    card("errors", "error", group(report.error));
    card("cost (USD)", "cost.total_usd", money(report.cost.total_usd));
    if report.cost.simulated_usd > 0.0 {
        card(
            "simulated, not spent (USD)",
            "cost.simulated_usd",
            money(report.cost.simulated_usd),
        );
    }
    card("tokens", "tokens.total", group(report.tokens.total));
    let answered = &report.answered;
    if answered.deduplicated + answered.reused > 0 {
        card(
            "copied: repeated requests",
            "answered.deduplicated",
            group(answered.deduplicated),
        );
        card(
            "copied: earlier outputs",
            "answered.reused",
            group(answered.reused),
        );
        card(
            "the copies cost when bought (USD)",
            "answered.saved_usd",
            money(answered.saved_usd),
        );
    }
    if let Some(latency) = &report.latency_ms {
        card(
            "latency p50 (ms)",
            "latency_ms.p50",
            group(latency.p50.into()),
        );
        card(
            "latency p90 (ms)",
            "latency_ms.p90",
            group(latency.p90.into()),
        );
        card(
            "latency p99 (ms)",
            "latency_ms.p99",
            group(latency.p99.into()),
        );
    }
    cards.push_str("</section>");
    cards
}

/// The charts over time.
fn charts(timeline: &Timeline) -> String {
    let b = &timeline.buckets;
    let minutes = timeline.bucket_s / 60.0;
    let values = |f: &dyn Fn(&Bucket) -> Option<f64>| b.iter().map(f).collect::<Vec<_>>();
    let mut html = format!(
        "<h2>Over time</h2><p class=\"sub\">from <span data-json=\"timeline.start\">{}</span>, \
         buckets of <span data-json=\"timeline.bucket_s\">{}</span> s</p>",
        esc(&timeline.start),
        timeline.bucket_s
    );
    let chart = |title: &str, unit: &str, series: Vec<Series>| {
        Chart {
            title,
            unit,
            bucket_s: timeline.bucket_s,
            series,
        }
        .render()
    };
    html.push_str(&chart(
        "Rows finished per minute (ok and error records), against the pace and the server's limit",
        "per minute",
        vec![
            Series::new(
                "ok rows/min",
                OK,
                Mark::Bars,
                values(&|x| Some(x.ok as f64 / minutes)),
            ),
            Series::new(
                "error rows/min",
                ERROR,
                Mark::Bars,
                values(&|x| Some(x.errors as f64 / minutes)),
            ),
            Series::new(
                "pace (requests/min)",
                PACE,
                Mark::Dashed,
                values(&|x| x.pace_rpm),
            ),
            Series::new(
                "server limit, as known (requests/min)",
                GREY,
                Mark::Dashed,
                values(&|x| x.limit_rpm),
            ),
        ],
    ));
    let latency =
        |p: fn(&super::Latency) -> u32| values(&|x| x.latency_ms.as_ref().map(|l| f64::from(p(l))));
    html.push_str(&chart(
        "Latency of ok rows",
        "ms",
        vec![
            Series::new("p50", RATE, Mark::Line, latency(|l| l.p50)),
            Series::new("p90", WARN, Mark::Line, latency(|l| l.p90)),
            Series::new("p99", ERROR, Mark::Line, latency(|l| l.p99)),
        ],
    ));
    html.push_str(&chart(
        "429s, 5xx answers, retries and pauses (from the event log)",
        "answers per bucket",
        vec![
            Series::new(
                "429",
                WARN,
                Mark::Bars,
                values(&|x| Some(x.rate_limited as f64)),
            ),
            Series::new(
                "5xx",
                ERROR,
                Mark::Bars,
                values(&|x| Some(x.server_errors as f64)),
            ),
            Series::new(
                "retries",
                GREY,
                Mark::Line,
                values(&|x| Some(x.retries as f64)),
            ),
            Series::new(
                "paused (s)",
                PAUSE,
                Mark::Shade,
                values(&|x| Some(x.paused_s)),
            ),
        ],
    ));
    html.push_str(&cumulative_cost(timeline, &chart));
    html
}

/// Cumulative cost by model over time.
fn cumulative_cost(
    timeline: &Timeline,
    chart: &dyn Fn(&str, &str, Vec<Series>) -> String,
) -> String {
    let series = timeline
        .models
        .iter()
        .enumerate()
        .map(|(m, model)| {
            let mut sum = 0.0;
            let values = timeline
                .buckets
                .iter()
                .map(|bucket| {
                    sum += bucket.cost_usd.get(m).copied().unwrap_or(0.0);
                    Some(sum)
                })
                .collect();
            Series::new(model, MODELS[m % MODELS.len()], Mark::Line, values)
        })
        .collect();
    chart(
        "Cumulative cost by model, simulated included",
        "USD",
        series,
    )
}

/// The cost table by model.
fn costs(report: &Report) -> String {
    let mut html = String::from(
        "<h2>Cost by model</h2><table><tr><th>model</th><th>records</th><th>cost (USD)</th>\
         <th>unpriced</th><th>simulated</th><th>simulated (USD)</th></tr>",
    );
    for (i, m) in report.cost.by_model.iter().enumerate() {
        let path = format!("cost.by_model.{i}");
        let _ = write!(
            html,
            "<tr><td data-json=\"{path}.model\">{}</td><td data-json=\"{path}.rows\">{}</td>\
             <td data-json=\"{path}.cost_usd\">{}</td><td>{}</td><td>{}</td>\
             <td data-json=\"{path}.simulated_usd\">{}</td></tr>",
            esc(&m.model),
            group(m.rows),
            m.cost_usd.map_or_else(|| "unpriced".to_string(), usd),
            group(m.unpriced_rows),
            group(m.simulated_rows),
            usd(m.simulated_usd),
        );
    }
    html.push_str("</table>");
    html
}

/// The token histograms, one small bar chart per kind.
fn tokens(histogram: &TokenHistogram) -> String {
    let mut html = String::from("<h2>Tokens per record</h2><div class=\"grid\">");
    for (kind, counts) in [
        ("prompt", &histogram.prompt),
        ("cached", &histogram.cached),
        ("completion", &histogram.completion),
        ("reasoning", &histogram.reasoning),
    ] {
        html.push_str(&svg::histogram(kind, &histogram.bins, counts, RATE));
    }
    html.push_str("</div>");
    html
}

/// The error groups with example ids.
fn errors(report: &Report) -> String {
    if report.top_errors.is_empty() {
        return "<h2>Errors</h2><p>No error records.</p>".to_string();
    }
    let mut html = String::from(
        "<h2>Errors</h2><table><tr><th>records</th><th>message (digits as N)</th><th>examples (ids)</th></tr>",
    );
    for (i, e) in report.top_errors.iter().enumerate() {
        let ids: Vec<String> = e.examples.iter().map(|id| esc(id)).collect();
        let _ = write!(
            html,
            "<tr><td data-json=\"top_errors.{i}.count\">{}</td><td>{}</td><td>{}</td></tr>",
            group(e.count),
            esc(&e.message),
            ids.join(", ")
        );
    }
    html.push_str("</table>");
    html
}

/// The slowest records.
fn slowest(report: &Report) -> String {
    let mut html = String::from(
        "<h2>Slowest records</h2><table><tr><th>id</th><th>model</th><th>latency (ms)</th><th>status</th><th>attempts</th></tr>",
    );
    for (i, row) in report.slowest.iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td data-json=\"slowest.{i}.latency_ms\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&row.id),
            esc(&row.model),
            group(row.latency_ms),
            if row.status == crate::output::Status::Ok { "ok" } else { "error" },
            row.attempts
        );
    }
    html.push_str("</table>");
    html
}

/// The runs of the output, from its event log.
fn runs(report: &Report) -> String {
    if report.runs.is_empty() {
        return "<h2>Runs</h2><p>No event log beside the output.</p>".to_string();
    }
    let mut html =
        String::from("<h2>Runs</h2><table><tr><th>started</th><th>stopped</th><th>why</th></tr>");
    for run in &report.runs {
        let why = match (&run.reason, &run.message) {
            (Some(reason), Some(message)) => format!("{}: {}", esc(reason), esc(message)),
            (Some(reason), None) => esc(reason),
            (None, _) => "still running, or killed".to_string(),
        };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{why}</td></tr>",
            esc(&run.started_at),
            esc(run.stopped_at.as_deref().unwrap_or("—")),
        );
    }
    html.push_str("</table>");
    html
}

/// Each batch's life (`--via batch`).
fn batches(report: &Report) -> String {
    if report.batches.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        "<h2>Batches</h2><table><tr><th>batch</th><th>rows</th><th>submitted</th><th>collected</th><th>status</th></tr>",
    );
    for (i, b) in report.batches.iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td>{}</td><td data-json=\"batches.{i}.rows\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&b.batch),
            group(b.rows),
            esc(&b.submitted_at),
            esc(b.collected_at.as_deref().unwrap_or("—")),
            esc(&b.status)
        );
    }
    html.push_str("</table>");
    html
}

/// A USD amount as the JSON has it (up to 9 decimals, no trailing zeros).
fn usd(value: f64) -> String {
    let text = format!("{:.9}", (value * 1e9).round() / 1e9);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

/// Text for HTML: `&`, `<`, `>` and quotes escaped.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
margin:24px auto;max-width:1000px;padding:0 16px;color:#212121}h1{margin:0}h2{margin-top:32px;\
border-bottom:1px solid #e0e0e0}.sub,.note{color:#616161}.cards{display:flex;flex-wrap:wrap;\
gap:12px;margin-top:16px}.card{border:1px solid #e0e0e0;border-radius:6px;padding:8px 12px;\
min-width:110px}.card .label{color:#616161;font-size:12px}.card .value{font-size:20px;\
font-weight:600}table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;\
border-bottom:1px solid #eeeeee;vertical-align:top}td{word-break:break-word}.grid{display:grid;\
grid-template-columns:repeat(auto-fit,minmax(220px,1fr));gap:12px}svg{width:100%;height:auto}\
svg text{font:11px system-ui,sans-serif;fill:#424242}.legend span{margin-right:14px}\
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_records_is_escaped() {
        assert_eq!(
            esc("<script>\"x\" & 'y'"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;"
        );
        assert_eq!(usd(0.5), "0.5");
        assert_eq!(usd(0.0185395), "0.0185395");
        assert_eq!(usd(0.0), "0");
    }
}
