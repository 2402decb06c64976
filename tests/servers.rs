//! Issue 10, "trust the servers": a systematic refusal stops early with no more error records than
//! the streak that showed it (the circuit breaker, per model; issue 21: a trip removes nothing), gateways' retry advice and reshaped quota errors, EvoLink's own
//! error shapes, and warnings that do not flood stderr. The real binary against the simulator
//! speaking each shape (`--error-style`).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use promptbatch::sim::{ErrorStyle, SimOptions};
use serde_json::Value;

fn prompts(n: usize, suffix: &str) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}{suffix}\"}}\n"))
        .collect()
}

fn records_or_none(path: &std::path::Path) -> Vec<Value> {
    if path.exists() {
        read_jsonl(path)
    } else {
        Vec::new()
    }
}

#[test]
fn a_systematic_400_stops_the_run_after_a_few_requests_with_only_their_records() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // What the LiteLLM proxy answers a wrong key with: the same 400 for every request.
    let input = dir.write("in.jsonl", &prompts(500, " #sim:status=400"));
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "8", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(sim.requests() <= 5 + 8, "requests: {}", sim.requests());
    let records = records_or_none(&output);
    assert_eq!(
        records.len() as u64,
        sim.requests(),
        "a record per row sent, no more"
    );
    assert!(records.len() >= 5, "the streak's records are written");
    assert!(records.iter().all(|r| r["status"] == "error"));
    assert!(r.stderr.contains("was refused: HTTP 400"), "{}", r.stderr);
    assert!(
        r.stderr.contains("(first at input line "),
        "names the line: {}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("simulated HTTP 400").count(),
        1,
        "{}",
        r.stderr
    );

    // Fixed (here: the same rows without the refusal), the same command sends every row.
    std::fs::write(&input, prompts(500, "")).unwrap();
    let r = run(&sim, &input, &output, &["-c", "8", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 500);
    assert!(
        records.iter().all(|r| r["status"] == "ok"),
        "the streak's rows sent again"
    );
}

#[test]
fn a_refused_model_in_a_batch_file_leaves_the_other_models_running() {
    let sim = Sim::start(SimOptions {
        models: vec!["gpt-5.2".into(), "gemini-3.1-pro-preview".into()],
        ..Default::default()
    });
    let dir = Workdir::new();
    let mut lines = String::new();
    for i in 0..60 {
        let model = match i % 3 {
            0 => "gpt-5.2",
            1 => "gemini-3.1-pro-preview",
            _ => "gpt-5.2-typo",
        };
        lines.push_str(&format!(
            "{{\"custom_id\":\"c{i}\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{{\"model\":\"{model}\",\"messages\":[{{\"role\":\"user\",\"content\":\"q{i}\"}}]}}}}\n"
        ));
    }
    let input = dir.write("batch.jsonl", &lines);
    let output = dir.path("out.jsonl");
    // One at a time, so the first refused row is known.
    let r = run(&sim, &input, &output, &["-c", "1", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("model `gpt-5.2-typo` was refused: HTTP 404"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("first at input line 3, row 3, id `c2`"),
        "{}",
        r.stderr
    );
    let records = read_jsonl(&output);
    assert_eq!(
        records.len(),
        45,
        "every row of the two good models, and the streak"
    );
    let typo: Vec<&Value> = records
        .iter()
        .filter(|r| r["model"] == "gpt-5.2-typo")
        .collect();
    assert_eq!(typo.len(), 5, "the 5 refused rows that tripped the model");
    assert!(typo.iter().all(|r| r["status"] == "error"));
    assert!(records
        .iter()
        .filter(|r| r["model"] != "gpt-5.2-typo")
        .all(|r| r["status"] == "ok"));
}

#[test]
fn a_gateway_reshaped_quota_error_stops_at_once() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(100, " #sim:quota"));
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "2", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("exceeded your current quota"),
        "{}",
        r.stderr
    );
    assert!(sim.requests() <= 3, "not retried: {}", sim.requests());
    assert!(records_or_none(&output).is_empty());
}

/// The gap between each 429 and the next request of the same row (prompt) the simulator saw
/// (other rows may go on meanwhile: a 429 delays its own row).
fn gaps_after_429s(sim: &Sim) -> Vec<u64> {
    let stats = sim.stats();
    let mut seen: Vec<(u64, u64, String)> = stats["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .zip(stats["details"].as_array().unwrap())
        .map(|(a, d)| {
            (
                a[0].as_u64().unwrap(),
                a[1].as_u64().unwrap(),
                d[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    seen.iter()
        .enumerate()
        .filter(|(_, (_, status, _))| *status == 429)
        .filter_map(|(k, (at, _, prompt))| {
            seen[k + 1..]
                .iter()
                .find(|(_, _, p)| p == prompt)
                .map(|(next, _, _)| next - at)
        })
        .collect()
}

/// Runs `rows` rows that are each answered 429 once, by a simulator speaking `style` and
/// advising `advice`; returns the gaps between each 429 and the next request.
fn retry_gaps_after_one_429_each(style: ErrorStyle, advice: Duration, rows: usize) -> Vec<u64> {
    let sim = Sim::start(SimOptions {
        error_style: style,
        retry_after: advice,
        ..Default::default()
    });
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(rows, " #sim:fail=1:429"));
    let args = ["-c", "1", "-q", "--backoff-base", "1ms"];
    let r = run(&sim, &input, &dir.path("out.jsonl"), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let gaps = gaps_after_429s(&sim);
    assert_eq!(gaps.len(), rows);
    gaps
}

#[test]
fn gateway_prefixed_retry_advice_is_honoured() {
    // LiteLLM sends the wait only as `llm_provider-retry-after(-ms)`.
    let gaps = retry_gaps_after_one_429_each(ErrorStyle::Litellm, Duration::from_millis(700), 3);
    assert!(
        gaps.iter().all(|g| *g >= 690),
        "never before the advised 700 ms: {gaps:?}"
    );
}

#[test]
fn evolink_fallback_suggestion_is_honoured_like_retry_after() {
    // EvoLink says it only in words: "fallback_suggestion": "retry after 1 seconds".
    let gaps = retry_gaps_after_one_429_each(ErrorStyle::Evolink, Duration::from_secs(1), 2);
    assert!(
        gaps.iter().all(|g| *g >= 990),
        "retry after 1 seconds: {gaps:?}"
    );
}

#[test]
fn evolink_error_types_decide_what_happens() {
    let sim = Sim::start(SimOptions {
        error_style: ErrorStyle::Evolink,
        ..Default::default()
    });
    let dir = Workdir::new();
    // Transient types are retried until they pass; a 413 is the row's own error record.
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"a #sim:fail=1:502\"}\n{\"id\":\"b\",\"prompt\":\"b #sim:fail=2:503\"}\n{\"id\":\"c\",\"prompt\":\"c #sim:fail=1:500\"}\n{\"id\":\"d\",\"prompt\":\"d #sim:status=413\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q", "--backoff-base", "1ms"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let by_id: HashMap<String, Value> = read_jsonl(&output)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    for id in ["a", "b", "c"] {
        assert_eq!(by_id[id]["status"], "ok", "{id}");
    }
    assert_eq!(by_id["b"]["attempts"], 3);
    let error = by_id["d"]["error"].as_str().unwrap();
    assert!(
        error.contains("HTTP 413") && error.contains("shorten the input"),
        "{error}"
    );

    // An insufficient_quota_error is fatal whatever its status.
    let quota = dir.write(
        "quota.jsonl",
        &prompts(20, " #sim:status=429 #sim:type=insufficient_quota_error"),
    );
    let before = sim.requests();
    let r = run(&sim, &quota, &dir.path("q.jsonl"), &["-c", "1", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(sim.requests() - before, 1, "stopped at the first answer");
    // So is an authentication_error.
    let auth = dir.write("auth.jsonl", &prompts(20, " #sim:status=401"));
    let r = run(&sim, &auth, &dir.path("a.jsonl"), &["-c", "1", "-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
}

#[test]
fn repeated_row_failures_are_summarized_not_flooded() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // Every other row refused: the successes keep the breaker closed, so each gets a record.
    let lines: String = (0..80)
        .map(|i| {
            let refuse = if i % 2 == 0 { " #sim:status=422" } else { "" };
            format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}{refuse}\"}}\n")
        })
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "1"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(
        records.iter().filter(|r| r["status"] == "error").count(),
        40
    );
    let shown = r.stderr.matches("row failed").count();
    assert_eq!(shown, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("37 more row failures with the same messages were not shown"),
        "{}",
        r.stderr
    );
}
