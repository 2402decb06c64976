//! Watching a run from outside: `--metrics-listen` scraped over loopback while the real binary
//! runs a `--dry-run`, its values checked against the records the run wrote.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{command, read_jsonl, wait_until, Workdir, HANG};
use serde_json::Value;

/// A loopback address no one listens on (bound to port 0, then let go).
fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` over a plain TCP connection: the status and the body, or `None` when nothing
/// answers (the server is not up yet, or gone).
fn get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// One scrape: each sample (`name{labels}`) and its value.
type Scrape = HashMap<String, f64>;

/// Parses the text format, checking its shape: each sample belongs to the family of the last
/// `# HELP` and `# TYPE` lines (a counter's samples end in `_total`), and the text ends with
/// `# EOF`.
fn parse(text: &str) -> Scrape {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    let (mut family, mut kind) = (String::new(), String::new());
    let mut samples = Scrape::new();
    for line in &lines[..lines.len() - 1] {
        if let Some(help) = line.strip_prefix("# HELP ") {
            family = help.split(' ').next().unwrap().to_string();
        } else if let Some(declared) = line.strip_prefix("# TYPE ") {
            let (name, declared) = declared.split_once(' ').unwrap();
            assert_eq!(name, family, "TYPE after its HELP: {text}");
            kind = declared.to_string();
        } else if !line.starts_with("# UNIT ") {
            let (sample, value) = line.rsplit_once(' ').unwrap();
            let name = sample.split('{').next().unwrap();
            let expected = match kind.as_str() {
                "counter" => format!("{family}_total"),
                _ => family.clone(),
            };
            assert_eq!(name, expected, "a sample of its family: {line}");
            let value = value.parse().unwrap_or_else(|_| panic!("{line}"));
            assert!(
                samples.insert(sample.to_string(), value).is_none(),
                "{line}"
            );
        }
    }
    samples
}

/// Scrapes `/metrics`; `None` while the server does not answer.
fn scrape(addr: SocketAddr) -> Option<Scrape> {
    let (status, body) = get(addr, "/metrics")?;
    assert_eq!(status, 200, "{body}");
    Some(parse(&body))
}

fn value(scrape: &Scrape, sample: &str) -> f64 {
    *scrape
        .get(sample)
        .unwrap_or_else(|| panic!("no {sample} in {scrape:?}"))
}

/// What the whole records of an output hold, as the metrics name it (a line being written is
/// left out).
fn totals(output: &Path) -> Scrape {
    let text = std::fs::read_to_string(output).unwrap_or_default();
    let whole = &text[..text.rfind('\n').map_or(0, |end| end + 1)];
    let records: Vec<Value> = whole
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let sum = |f: &dyn Fn(&Value) -> f64| records.iter().map(f).sum::<f64>();
    let status = |s: &'static str| move |r: &Value| f64::from(u8::from(r["status"] == s));
    let tokens = |kind: &str| {
        let field = format!("{kind}_tokens");
        sum(&|r: &Value| r[&field].as_f64().unwrap())
    };
    let mut totals = Scrape::new();
    totals.insert(
        r#"promptbatch_rows_total{status="ok"}"#.into(),
        sum(&status("ok")),
    );
    totals.insert(
        r#"promptbatch_rows_total{status="error"}"#.into(),
        sum(&status("error")),
    );
    for kind in ["prompt", "cached", "completion", "reasoning"] {
        totals.insert(
            format!(r#"promptbatch_tokens_total{{kind="{kind}"}}"#),
            tokens(kind),
        );
    }
    let cost = r#"promptbatch_cost_usd_total{model="gpt-5.2",simulated="true"}"#;
    totals.insert(cost.into(), sum(&|r| r["cost_usd"].as_f64().unwrap_or(0.0)));
    totals
}

/// Asserts that no sample of `scrape` named in `records` is above it (`what` says which).
fn at_most(scrape: &Scrape, records: &Scrape, what: &str) {
    for (sample, bound) in records {
        let seen = scrape.get(sample).copied().unwrap_or(0.0);
        assert!(seen <= bound + 1e-9, "{sample} = {seen} > {bound} ({what})");
    }
}

#[test]
fn metrics_follow_the_run_and_never_pass_its_records() {
    let work = Workdir::new();
    let input = work.write(
        "in.jsonl",
        &common::batch::rows(400, |_| " #sim:sleep=20ms"),
    );
    let output = work.path("out.jsonl");
    let addr = free_addr();
    let mut child = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--dry-run", "-c", "4", "-q", "--metrics-listen"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ok = r#"promptbatch_rows_total{status="ok"}"#;
    let mut scrapes: Vec<Scrape> = Vec::new();
    // Each scrape is checked against the records on disk just after it: a record is counted
    // only once written, so the metrics never show more than the file holds.
    let take = |scrapes: &mut Vec<Scrape>| -> Option<f64> {
        let scrape = scrape(addr)?;
        at_most(
            &scrape,
            &totals(&output),
            "the records on disk after the scrape",
        );
        let rows = value(&scrape, ok);
        scrapes.push(scrape);
        Some(rows)
    };
    wait_until("a scrape with ok rows", HANG, || {
        take(&mut scrapes).is_some_and(|rows| rows > 0.0)
    });
    assert_eq!(get(addr, "/").map(|(status, _)| status), Some(404));
    assert_eq!(get(addr, "/metrics/x").map(|(status, _)| status), Some(404));
    wait_until("a scrape with 100 ok rows", HANG, || {
        take(&mut scrapes).is_some_and(|rows| rows >= 100.0)
    });
    let at_100 = scrapes.last().unwrap().clone();
    wait_until("the run's end", HANG, || {
        take(&mut scrapes);
        child.try_wait().unwrap().is_some()
    });
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("metrics"), "no notice: {stderr}");
    assert!(get(addr, "/metrics").is_none(), "stopped with the run");

    let records = read_jsonl(&output);
    assert_eq!(records.len(), 400);
    let last = totals(&output);
    assert_eq!(last[ok], 400.0);
    assert!(last[r#"promptbatch_tokens_total{kind="prompt"}"#] > 0.0);
    // The scrape taken at 100 ok rows: some of everything, none above the final records.
    at_most(&at_100, &last, "the final records");
    for (sample, total) in &last {
        let seen = value(&at_100, sample);
        assert!(*total == 0.0 || seen > 0.0, "{sample} still 0 at 100 rows");
    }
    assert!(value(&at_100, ok) < 400.0, "scraped while the run went");
    assert_every_scrape(&scrapes, &last);
}

/// What holds of each scrape of the dry run: none above the final records, in flight within
/// `-c 4`, no 429, 5xx, retry or pause, no pace (absent, not NaN); counters never go back.
fn assert_every_scrape(scrapes: &[Scrape], last: &Scrape) {
    for scrape in scrapes {
        at_most(scrape, last, "the final records");
        assert!(value(scrape, "promptbatch_in_flight") <= 4.0, "-c 4");
        assert_eq!(
            value(scrape, r#"promptbatch_requests_total{status="429"}"#),
            0.0
        );
        assert_eq!(
            value(scrape, r#"promptbatch_requests_total{status="5xx"}"#),
            0.0
        );
        assert_eq!(value(scrape, "promptbatch_retries_total"), 0.0);
        assert_eq!(value(scrape, "promptbatch_paused"), 0.0);
        assert_eq!(value(scrape, "promptbatch_paused_seconds_total"), 0.0);
        assert!(!scrape.contains_key("promptbatch_pace_requests_per_minute"));
    }
    // Counters only grow from one scrape to the next.
    for pair in scrapes.windows(2) {
        for (sample, before) in &pair[0] {
            if sample.split('{').next().unwrap().ends_with("_total") {
                let after = value(&pair[1], sample);
                assert!(after >= *before, "{sample}: {before} then {after}");
            }
        }
    }
}

#[test]
fn an_address_in_use_is_a_notice_and_the_run_completes() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &common::batch::rows(30, |_| ""));
    let output = work.path("out.jsonl");
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--dry-run", "-q", "--metrics-listen"])
        .arg(addr.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("--metrics-listen {addr}: cannot listen there"))
            && stderr.contains("the run goes on without metrics"),
        "{stderr}"
    );
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 30);
    assert!(records.iter().all(|r| r["status"] == "ok"));
    drop(taken);
}
