//! Prompt caches: the simulator's prefix cache (`--prefix-cache recent`, the default) against the
//! runner's warm-first order (`live/prefix_gate.rs`), and what `report` makes of it.

mod common;

use std::time::Duration;

use common::*;
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::Value;

/// A system prompt of about 2,000 estimated tokens (8,000 bytes).
fn long_system_prompt() -> String {
    "You label support tickets. ".repeat(300)
}

/// `rows` rows sharing `system`, each its own question.
fn input(rows: usize) -> String {
    (1..=rows)
        .map(|i| format!("{{\"id\": \"r{i}\", \"prompt\": \"ticket {i}: my order is late\"}}\n"))
        .collect()
}

/// Runs the rows through a simulator answering in 100 ms at `-c 64`, with the gate on or off;
/// returns `report --json`.
fn run_shared_prefix(gate: bool, extra: &[&str]) -> (Scenario, Value) {
    let latency = LatencySpec::parse("100ms").unwrap();
    let scenario = Scenario::with_sim(SimOptions {
        latency,
        ..SimOptions::default()
    })
    .input(&input(300));
    let system = long_system_prompt();
    let mut cmd = scenario.command(&scenario.sim().base_url);
    cmd.args(["-c", "64", "-q", "--system", &system])
        .args(extra);
    if !gate {
        cmd.env("PROMPTBATCH_PREFIX_GATE", "off");
    }
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = run_args(&["report", "--json", scenario.output.to_str().unwrap()]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    (scenario, serde_json::from_str(&report.stdout).unwrap())
}

/// With a shared 2,000-token system prompt at `-c 64`, the first request goes alone and the
/// others follow once it is answered: ≥ 90 % of prompt tokens are cached (without the gate,
/// the first 64 requests are all sent before any is answered and miss). `report` says what the
/// cache saved, at gpt-5.2's rates.
#[test]
fn a_shared_long_prefix_is_cached_for_nine_tenths_of_prompt_tokens() {
    let (scenario, report) = run_shared_prefix(true, &["--prompt-cache-key"]);
    let records = read_jsonl(&scenario.output);
    assert_eq!(records.len(), 300);
    let prompt: u64 = records
        .iter()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .sum();
    let cached: u64 = records
        .iter()
        .map(|r| r["cached_tokens"].as_u64().unwrap())
        .sum();
    let misses = records.iter().filter(|r| r["cached_tokens"] == 0).count();
    let share = report["prompt_cache"]["cached_share"].as_f64().unwrap();
    assert!((share - cached as f64 / prompt as f64).abs() < 1e-9);
    assert!(share >= 0.90, "cached share {share:.3}, {misses} misses");
    assert_eq!(misses, 1, "only the first request of the prefix misses");
    for r in &records {
        let c = r["cached_tokens"].as_u64().unwrap();
        assert_eq!(c % 128, 0, "cached in steps of 128: {r}");
    }
    // gpt-5.2: input $1.75, cached input $0.175 per 1M tokens.
    let saved = report["prompt_cache"]["saved_usd"].as_f64().unwrap();
    let expected = cached as f64 * (1.75 - 0.175) / 1e6;
    assert!((saved - expected).abs() < 1e-6, "{saved} vs {expected}");
    assert!(saved > 0.0);
    let text = run_args(&["report", scenario.output.to_str().unwrap()]);
    assert!(
        text.stdout.contains("of prompt tokens cached, saved $"),
        "{}",
        text.stdout
    );

    let (_, without) = run_shared_prefix(false, &["--prompt-cache-key"]);
    let off = without["prompt_cache"]["cached_share"].as_f64().unwrap();
    assert!(
        off < share,
        "without the gate {off:.3}, with it {share:.3}: the gate should cache more"
    );
}

/// A prefix under 1,024 tokens is never cached, and the gate never holds its rows: at `-c 64`
/// and 200-ms answers, 128 rows take two rounds, not one per row.
#[test]
fn short_prefixes_are_never_cached_nor_held() {
    let scenario = Scenario::with_sim(SimOptions {
        latency: LatencySpec::parse("200ms").unwrap(),
        ..SimOptions::default()
    })
    .input(&input(128));
    let r = run(
        scenario.sim(),
        &scenario.input,
        &scenario.output,
        &["-c", "64", "-q", "--system", "Be brief."],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    let records = read_jsonl(&scenario.output);
    assert!(records.iter().all(|r| r["cached_tokens"] == 0));
}

/// The first request of a prefix fails (a permanent 400): the rows waiting for it go at once,
/// cold, and the run ends with every other row answered — nothing waits on a failed leader.
#[test]
fn rows_waiting_for_a_failed_first_request_go() {
    let mut rows = String::from("{\"id\": \"r0\", \"prompt\": \"first #sim:status=400\"}\n");
    rows += &input(200);
    let scenario = Scenario::with_sim(SimOptions {
        latency: LatencySpec::parse("100ms").unwrap(),
        ..SimOptions::default()
    })
    .input(&rows);
    let system = long_system_prompt();
    let r = run(
        scenario.sim(),
        &scenario.input,
        &scenario.output,
        &["-c", "64", "-q", "--system", &system],
    );
    assert_eq!(r.code, 3, "one error record: {}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(30), "{:?}", r.elapsed);
    let records = read_jsonl(&scenario.output);
    assert_eq!(records.len(), 201);
    let ok = records.iter().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok, 200);
    let cached = records.iter().filter(|r| r["cached_tokens"] != 0).count();
    assert!(
        cached > 100,
        "later rows are served from the cache: {cached}"
    );
}
