//! `report --html`: the page of a run with 429s, 5xx answers and error records shows exactly the
//! figures `report --json` prints, fetches nothing, stays small, and renders in headless Chromium
//! without console errors (Chromium: Debian's `chromium`, which `.ci/run` installs; without it
//! the browser part is skipped with a note unless `PROMPTBATCH_REQUIRE_CHROMIUM=1`).

mod common;

use std::path::Path;

use common::{command, run, Sim, Workdir};
use promptbatch::SimOptions;
use serde_json::Value;

/// A run with 429s and 5xx answers (retried), and rows that end as error records.
fn eventful_run(work: &Workdir) -> std::path::PathBuf {
    let sim = Sim::start(SimOptions {
        rate_429: 0.05,
        rate_500: 0.03,
        ..SimOptions::default()
    });
    let rows: String = (0..600)
        .map(|i| {
            let fault = match i % 50 {
                0 => " #sim:status=400",
                7 => " #sim:fail=2:503",
                _ => "",
            };
            format!(
                "{{\"id\": \"r{i}\", \"prompt\": \"<b>row</b> & {i}{fault} #sim:sleep={}ms\"}}\n",
                2 + i % 9
            )
        })
        .collect();
    let input = work.write("in.jsonl", &rows);
    let output = work.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "-c",
            "8",
            "--backoff-base",
            "10ms",
            "--event-interval",
            "1s",
        ],
    );
    assert_eq!(r.code, 3, "some rows are error records: {}", r.stderr);
    output
}

/// `report OUTPUT --json --html FILE`: the JSON and the page.
fn report(output: &Path, html: &Path) -> (Value, String) {
    let out = command()
        .args(["report", "--json", "--html"])
        .arg(html)
        .arg(output)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = serde_json::from_slice(&out.stdout).unwrap();
    (json, std::fs::read_to_string(html).unwrap())
}

/// Every `data-json="PATH">TEXT<` of the page: the JSON path and the text shown (a rounded
/// figure's exact value is its `<span data-value="…">`).
fn figures(page: &str) -> Vec<(String, String)> {
    page.split("data-json=\"")
        .skip(1)
        .map(|rest| {
            let (path, rest) = rest.split_once('"').unwrap();
            let content = rest.split_once('>').unwrap().1;
            let text = match content.strip_prefix("<span data-value=\"") {
                Some(exact) => exact.split('"').next().unwrap(),
                None => content.split('<').next().unwrap(),
            };
            (path.to_string(), text.to_string())
        })
        .collect()
}

/// The value at a dotted path (`cost.by_model.0.rows`).
fn at<'a>(json: &'a Value, path: &str) -> &'a Value {
    path.split('.')
        .fold(json, |value, key| match key.parse::<usize>() {
            Ok(i) => &value[i],
            Err(_) => &value[key],
        })
}

/// Whether the shown text is the JSON value (numbers: equal once thousands separators go).
fn same(shown: &str, value: &Value) -> bool {
    let unescaped = shown
        .replace("&amp;", "&")
        .replace("&lt;", "<")
        .replace("&gt;", ">");
    match value {
        Value::Number(n) => unescaped.replace(',', "").parse::<f64>().ok() == n.as_f64(),
        Value::String(s) => &unescaped == s,
        _ => false,
    }
}

#[test]
fn the_page_shows_the_json_figures_and_fetches_nothing() {
    let work = Workdir::new();
    let output = eventful_run(&work);
    let html = work.path("report.html");
    let (json, page) = report(&output, &html);

    let shown = figures(&page);
    assert!(shown.len() >= 15, "{} figures", shown.len());
    for (path, text) in &shown {
        assert!(
            same(text, at(&json, path)),
            "{path}: page {text:?}, json {}",
            at(&json, path)
        );
    }
    for path in [
        "rows",
        "ok",
        "error",
        "cost.total_usd",
        "latency_ms.p99",
        "top_errors.0.count",
    ] {
        assert!(
            shown.iter().any(|(p, _)| p == path),
            "{path} is not on the page"
        );
    }
    // The timeline covers every timed record and the event log's 429s and 5xx.
    let timeline = &json["timeline"];
    let buckets = timeline["buckets"].as_array().unwrap();
    let sum = |key: &str| {
        buckets
            .iter()
            .map(|b| b[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("ok") + sum("errors"), json["rows"].as_u64().unwrap());
    assert_eq!(sum("errors"), json["error"].as_u64().unwrap());
    assert!(
        sum("rate_limited") > 0 && sum("server_errors") > 0,
        "{timeline}"
    );
    assert_eq!(json["runs"][0]["reason"], "completed");
    // Text from the records is escaped: no markup from a prompt or an id reaches the page.
    assert!(!page.contains("<b>row</b>"));
    // Self-contained: no script, no external reference.
    for banned in [
        "<script", "src=", "href=", "url(", "@import", "http://", "https://",
    ] {
        assert!(!page.contains(banned), "the page contains {banned}");
    }
    assert!(page.len() < 200_000, "{} bytes", page.len());
}

#[test]
fn headless_chromium_renders_it_without_console_errors() {
    let Some(chromium) = ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| which(name))
    else {
        assert!(
            std::env::var("PROMPTBATCH_REQUIRE_CHROMIUM").is_err(),
            "PROMPTBATCH_REQUIRE_CHROMIUM is set but no chromium is installed"
        );
        eprintln!("note: no chromium on PATH: the browser check is skipped");
        return;
    };
    let work = Workdir::new();
    let output = eventful_run(&work);
    let html = work.path("report.html");
    let (json, _) = report(&output, &html);
    let out = std::process::Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("file://{}", html.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
    assert!(console.is_empty(), "console messages: {console:?}");
    // What the browser built from the page still shows the JSON's figures.
    let shown = figures(&dom);
    assert!(shown.len() >= 15, "{} figures in the DOM", shown.len());
    for (path, text) in &shown {
        assert!(
            same(text, at(&json, path)),
            "{path}: page {text:?}, json {}",
            at(&json, path)
        );
    }
    assert!(dom.matches("<svg").count() >= 8, "charts are in the DOM");
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}
