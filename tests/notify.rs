//! `--notify-url`: the real binary posts one JSON summary to a tiny HTTP receiver on loopback
//! when a run ends (completed, interrupted), tries again after a 5xx, gives up within its bound
//! on a closed port without printing the URL's secrets, and refuses a URL that is not http(s)
//! before the run starts.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{command, interrupt, read_jsonl, run_args, wait_until, Scenario};
use serde_json::Value;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    target: String,
    /// Header lines, lower-cased.
    headers: Vec<String>,
    body: Value,
}

/// An HTTP receiver on 127.0.0.1: answers the n-th request with `statuses[n]` (the last one
/// for every later request) and records each request.
struct Receiver {
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start(statuses: &'static [u16]) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let record = received.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(request) = read_request(&stream) else {
                    continue;
                };
                let n = {
                    let mut all = record.lock().unwrap();
                    all.push(request);
                    all.len()
                };
                let status = statuses[(n - 1).min(statuses.len() - 1)];
                let _ = (&stream).write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                );
            }
        });
        Receiver { port, received }
    }

    /// `http://{userinfo}127.0.0.1:PORT{rest}`.
    fn url(&self, userinfo: &str, rest: &str) -> String {
        format!("http://{userinfo}127.0.0.1:{}{rest}", self.port)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request: request line, headers, a body of `content-length` bytes (JSON).
fn read_request(stream: &TcpStream) -> Option<Received> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    let mut length = 0;
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().ok()?;
        }
        headers.push(header);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Received {
        method,
        target,
        headers,
        body: serde_json::from_slice(&body).ok()?,
    })
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `promptbatch run IN -o OUT --dry-run -q --notify-url URL ARGS...`, waited for.
fn dry_run(scenario: &Scenario, url: &str, args: &[&str]) -> common::RunResult {
    let (input, output) = (
        scenario.input.to_str().unwrap(),
        scenario.output.to_str().unwrap(),
    );
    let mut all = vec![
        "run",
        input,
        "-o",
        output,
        "--dry-run",
        "-q",
        "--notify-url",
        url,
    ];
    all.extend_from_slice(args);
    run_args(&all)
}

#[test]
fn a_completed_run_posts_its_summary_once() {
    let receiver = Receiver::start(&[200]);
    let scenario = Scenario::without_sim().rows(12);
    let url = receiver.url("alice:Pa55word@", "/hook?token=Q7token");
    let out = dry_run(&scenario, &url, &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let request = &received[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/hook?token=Q7token");
    assert!(request
        .headers
        .contains(&"content-type: application/json".to_string()));
    // The URL's user and password go as basic authentication ("alice:Pa55word").
    assert!(
        request
            .headers
            .contains(&"authorization: basic ywxpy2u6uge1nxdvcmq=".to_string()),
        "{:?}",
        request.headers
    );
    let records = read_jsonl(&scenario.output);
    let body = &request.body;
    assert_eq!(body["status"], "completed");
    assert_eq!(body["message"], "");
    assert_eq!(body["ok"], records.len() as u64);
    assert_eq!(body["ok"], 12);
    assert_eq!(body["errors"], 0);
    assert_eq!(body["done_before"], 0);
    assert_eq!(body["unrecorded"], 0);
    assert_eq!(body["simulated"], true);
    assert_eq!(body["spent_usd"].as_f64(), Some(0.0));
    let total: u64 = records
        .iter()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    let prompt: u64 = records
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(body["tokens"]["total"], total);
    assert_eq!(body["tokens"]["prompt"], prompt);
    let cost: f64 = records
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(
        (body["cost_usd"].as_f64().unwrap() - cost).abs() < 1e-9,
        "{body}"
    );
    assert_eq!(body["output"], scenario.output.to_str().unwrap());
    assert_eq!(body["rate_limited"], 0);
    assert!(body["elapsed_s"].as_f64().unwrap() > 0.0);
    let text = body["text"].as_str().unwrap();
    assert!(
        text.starts_with("promptbatch: out.jsonl completed — 12 ok, 0 errors, $"),
        "{text}"
    );
    assert!(text.contains(" simulated in "), "{text}");
}

#[test]
fn an_interrupted_run_posts_interrupted() {
    let receiver = Receiver::start(&[200]);
    let scenario = Scenario::without_sim().rows(400);
    let url = receiver.url("", "/hook");
    let child = command()
        .arg("run")
        .arg(&scenario.input)
        .arg("-o")
        .arg(&scenario.output)
        .args(["--dry-run", "--dry-run-latency", "100ms", "-c", "2", "-q"])
        .args(["--notify-url", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until("4 records", Duration::from_secs(30), || {
        std::fs::read_to_string(&scenario.output).is_ok_and(|t| t.lines().count() >= 4)
    });
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let body = &received[0].body;
    assert_eq!(body["status"], "interrupted");
    assert_eq!(body["message"], "Ctrl-C, SIGTERM or SIGHUP");
    let records = read_jsonl(&scenario.output);
    assert_eq!(body["ok"], records.len() as u64);
    assert!(records.len() < 400, "the run stopped early");
    let text = body["text"].as_str().unwrap();
    assert!(text.contains("out.jsonl interrupted — "), "{text}");
    // The resume command leaves the URL out, and says so.
    assert!(stderr.contains("to resume, run:"), "{stderr}");
    assert!(!stderr.contains(&url), "{stderr}");
    assert!(stderr.contains("--notify-url is left out"), "{stderr}");
}

#[test]
fn a_5xx_answer_is_tried_again() {
    let receiver = Receiver::start(&[500, 200]);
    let scenario = Scenario::without_sim().rows(3);
    let out = dry_run(&scenario, &receiver.url("", "/retry"), &[]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let received = receiver.received();
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!(received[0].body, received[1].body, "the same body twice");
    assert_eq!(received[1].body["ok"], 3);
    assert!(!out.stderr.contains("could not notify"), "{}", out.stderr);
}

#[test]
fn an_unreachable_receiver_is_a_notice_without_the_urls_secrets() {
    let port = closed_port();
    let url = format!(
        "http://bob:Pa55word@127.0.0.1:{port}/services/T000/B000/PathSecret9?token=QueryToken7"
    );
    let scenario = Scenario::without_sim().rows(3);
    let out = dry_run(&scenario, &url, &[]);
    assert_eq!(out.code, 0, "the run's own exit code: {}", out.stderr);
    // Three refused connections and two waits (0.5 s, 1 s): well within the 10 s bound.
    assert!(out.elapsed < Duration::from_secs(12), "{:?}", out.elapsed);
    assert!(
        out.stderr.contains(&format!(
            "could not notify http://127.0.0.1:{port}/… (3 attempts): cannot connect"
        )),
        "{}",
        out.stderr
    );
    for secret in ["Pa55word", "PathSecret9", "QueryToken7", "bob"] {
        assert!(!out.stderr.contains(secret), "{secret}: {}", out.stderr);
        assert!(!out.stdout.contains(secret), "{secret}: {}", out.stdout);
    }
    assert_eq!(read_jsonl(&scenario.output).len(), 3);
}

#[test]
fn a_url_that_is_not_http_is_refused_before_the_run() {
    let scenario = Scenario::new().rows(3);
    for (url, says) in [
        ("ftp://x", "the URL's scheme is `ftp`"),
        ("hooks.example.com/Secret42", "is not a valid URL"),
    ] {
        let out = scenario
            .command(&scenario.sim().base_url)
            .args(["-q", "--notify-url", url])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("--notify-url"), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert!(
            stderr.contains("expected an http:// or https:// URL"),
            "{stderr}"
        );
        assert!(!stderr.contains("Secret42"), "{stderr}");
    }
    assert_eq!(scenario.sim().requests(), 0, "no request was sent");
    assert!(!scenario.output.exists(), "no output was started");
}
