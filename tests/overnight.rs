//! Surviving the night: 429s and their retry advice and the classes of failure, over
//! real HTTP against the simulator's fault injection.

mod common;

use std::time::Duration;

use common::*;
use promptbatch::sim::SimOptions;

#[test]
fn a_429_delays_its_row_until_the_advised_time_and_the_others_go_on() {
    let sim = Sim::start(SimOptions {
        retry_after: Duration::from_millis(1500),
        ..Default::default()
    });
    let dir = Workdir::new();
    let mut lines = String::from("{\"id\":\"limited\",\"prompt\":\"first #sim:fail=1:429\"}\n");
    for i in 0..40 {
        lines.push_str(&format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n"));
    }
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-c", "4", "--backoff-base", "10ms", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 41);
    let limited = records.iter().find(|r| r["id"] == "limited").unwrap();
    assert_eq!(limited["attempts"], 2);
    assert_eq!(limited["status"], "ok");

    let stats = sim.stats();
    let arrivals: Vec<(u64, u64, &str)> = stats["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(stats["details"].as_array().unwrap())
        .map(|(a, d)| {
            (
                a[0].as_u64().unwrap(),
                a[1].as_u64().unwrap(),
                d[1].as_str().unwrap(),
            )
        })
        .collect();
    let (t429, _, prompt) = *arrivals.iter().find(|(_, s, _)| *s == 429).unwrap();
    // The 429'd row is sent again only after the advised 1.5 s …
    let retry = arrivals
        .iter()
        .find(|(t, s, p)| *p == prompt && *s == 200 && *t > t429)
        .unwrap()
        .0;
    assert!(
        retry >= t429 + 1500,
        "retried {} ms after its 429",
        retry - t429
    );
    // … while the other rows went on (one sporadic 429 freezes nobody else).
    let others = arrivals
        .iter()
        .filter(|(t, _, p)| *p != prompt && *t > t429 && *t < t429 + 1500)
        .count();
    assert!(others >= 30, "{others} other requests during the wait");
    assert!(r.elapsed >= Duration::from_millis(1500));
}

#[test]
fn rate_limit_storms_end_with_every_row_ok() {
    let sim = Sim::start(SimOptions {
        rate_429: 0.2,
        retry_after: Duration::from_millis(50),
        rate_503: 0.05,
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..150)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "-c",
            "16",
            "--max-retries",
            "40",
            "--backoff-base",
            "5ms",
            "--backoff-max",
            "100ms",
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 150);
    assert!(records.iter().all(|r| r["status"] == "ok"));
    let retried: u64 = records
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap() - 1)
        .sum();
    assert!(retried > 10, "429s were retried: {retried}");
}

#[test]
fn quota_exhaustion_is_fatal_and_writes_no_error_records() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // The simulator answers 402 for this row: a billing problem stops the run.
    let mut lines = String::new();
    for i in 0..50 {
        lines.push_str(&format!(
            "{{\"id\":\"r{i}\",\"prompt\":\"p{i} #sim:status=402\"}}\n"
        ));
    }
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "2", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 402"), "{}", r.stderr);
    assert!(
        sim.requests() <= 4,
        "stopped sending at once: {}",
        sim.requests()
    );
    assert!(!output.exists(), "no record, and no empty file left behind");
}

#[test]
fn mock_server_process_and_plain_progress_lines() {
    use std::io::{BufRead, BufReader};
    let mut server = command()
        .args([
            "mock-server",
            "--listen",
            "127.0.0.1:0",
            "--latency",
            "20ms",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first_line = String::new();
    BufReader::new(server.stderr.take().unwrap())
        .read_line(&mut first_line)
        .unwrap();
    let base_url = first_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    let dir = Workdir::new();
    let lines: String = (0..60)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--base-url", &base_url, "-c", "2", "--log-every", "200ms"])
        .output()
        .unwrap();
    server.kill().unwrap();
    server.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(read_jsonl(&output).len(), 60);
    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("progress: "))
        .collect();
    assert!(
        progress.len() >= 2,
        "one line per --log-every when stderr is not a terminal: {stderr}"
    );
    assert!(
        progress[0].contains("/60 (") && progress[0].contains("rows/s"),
        "{}",
        progress[0]
    );
    assert!(
        stderr.contains("rows: 60 ok, 0 error"),
        "the summary is always printed: {stderr}"
    );
}
