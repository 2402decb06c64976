//! End-to-end tests of `promptbatch estimate` and `promptbatch report`: the real binary on the
//! repo's samples and on outputs written by `run --dry-run` (the built-in simulator), with the
//! expected figures computed independently here (tiktoken directly, sums over the output file).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// gpt-5.2 list prices, USD per 1M tokens (prices.toml).
const GPT52_INPUT: f64 = 1.75;
const GPT52_OUTPUT: f64 = 14.0;

fn samples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("samples")
        .join(name)
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1e-6)
}

/// Runs the binary with these arguments, expects exit 0 and parses stdout as JSON.
fn json_of(args: &[&str]) -> Value {
    let r = run_args(args);
    assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// Prompt tokens of `samples/prompts.jsonl` in OpenAI's chat format, counted with tiktoken here:
/// per request 3 (reply priming) + one user message (3 + tokens("user") + tokens(prompt)).
fn sample_prompt_tokens() -> (u64, u64) {
    let bpe = tiktoken_rs::o200k_base().unwrap();
    let text = std::fs::read_to_string(samples("prompts.jsonl")).unwrap();
    let (mut total, mut rows) = (0u64, 0u64);
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).unwrap();
        let prompt = v["prompt"].as_str().unwrap();
        let tokens = bpe.encode_with_special_tokens(prompt).len() as u64;
        let role = bpe.encode_with_special_tokens("user").len() as u64;
        total += 3 + 3 + role + tokens;
        rows += 1;
    }
    (total, rows)
}

#[test]
fn estimate_counts_sample_prompt_tokens_exactly_and_prices_the_worst_case() {
    let (tokens, rows) = sample_prompt_tokens();
    assert_eq!(rows, 8);
    let input = samples("prompts.jsonl");
    let est = json_of(&[
        "estimate",
        input.to_str().unwrap(),
        "--max-tokens",
        "100",
        "--json",
    ]);
    assert_eq!(est["prompt_tokens"], tokens);
    assert_eq!(est["rows"], 8);
    assert_eq!(est["request_rows"], 8);
    assert_eq!(est["invalid_rows"], 0);
    assert_eq!(est["prompt_tokens_exact"], true);
    assert_eq!(est["approximate_prompt_tokens"], 0);
    assert_eq!(est["worst_output_tokens"], 800);
    // Worst case: every prompt token at $1.75/M plus 8 rows × 100 output tokens at $14/M.
    let worst = (tokens as f64 * GPT52_INPUT + 800.0 * GPT52_OUTPUT) / 1e6;
    let got = est["worst_cost_usd"].as_f64().unwrap();
    assert!(close(got, worst), "worst {got} != {worst}");
    // No expected case without --expect-output / --from-output.
    assert!(est["expected_cost_usd"].is_null());
    assert!(est["expected_output"].is_null());
    assert!(est["time"].is_null());
    assert_eq!(est["models"].as_array().unwrap().len(), 1);
    assert_eq!(est["models"][0]["model"], "gpt-5.2");
}

#[test]
fn estimate_expected_case_from_expect_output_and_human_table() {
    let (tokens, _) = sample_prompt_tokens();
    let input = samples("prompts.jsonl");
    let input = input.to_str().unwrap();
    let est = json_of(&["estimate", input, "--expect-output", "50", "--json"]);
    assert_eq!(est["expected_output"]["source"], "expect-output");
    assert_eq!(est["expected_output_tokens"].as_f64(), Some(400.0));
    let expected = (tokens as f64 * GPT52_INPUT + 400.0 * GPT52_OUTPUT) / 1e6;
    assert!(close(est["expected_cost_usd"].as_f64().unwrap(), expected));
    // No --max-tokens: the worst case is unbounded, not $0.
    assert!(est["worst_cost_usd"].is_null());
    assert!(est["worst_output_tokens"].is_null());
    assert_eq!(est["rows_without_max_tokens"], 8);

    let r = run_args(&["estimate", input, "--expect-output", "50"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(&tokens.to_string()), "{}", r.stdout);
    assert!(r.stdout.contains("exact"), "{}", r.stdout);
    assert!(r.stdout.contains("unbounded"), "{}", r.stdout);
    assert!(r.stdout.contains("not limited"), "{}", r.stdout);
    // Piped: plain text, no colour codes, no trailing blanks.
    assert!(!r.stdout.contains('\x1b'), "{}", r.stdout);
    assert!(r.stdout.lines().all(|l| l == l.trim_end()), "{}", r.stdout);
}

#[test]
fn estimate_unpriced_model_is_never_zero_dollars() {
    let input = samples("prompts.jsonl");
    let input = input.to_str().unwrap();
    let args = [
        "estimate",
        input,
        "--model",
        "acme-llm-9",
        "--max-tokens",
        "10",
        "--expect-output",
        "5",
    ];
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let est = json_of(&json_args);
    assert_eq!(est["unpriced_rows"], 8);
    assert_eq!(est["unpriced_models"], serde_json::json!(["acme-llm-9"]));
    assert!(est["expected_cost_usd"].is_null());
    assert!(est["worst_cost_usd"].is_null());
    assert_eq!(est["models"][0]["priced"], false);
    // Not a GPT model: the o200k count is only an approximation, and says so.
    assert_eq!(est["prompt_tokens_exact"], false);

    let r = run_args(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("unpriced"), "{}", r.stdout);
    assert!(r.stdout.contains("acme-llm-9"), "{}", r.stdout);
    assert!(r.stdout.contains("APPROXIMATE"), "{}", r.stdout);
    assert!(!r.stdout.contains("$0.00"), "{}", r.stdout);
}

#[test]
fn estimate_time_under_rpm_and_tpm() {
    let (tokens, _) = sample_prompt_tokens();
    let input = samples("prompts.jsonl");
    let input = input.to_str().unwrap();
    // 8 requests at 4 per minute: 2 minutes.
    let est = json_of(&["estimate", input, "--rpm", "4", "--json"]);
    assert_eq!(est["time"]["minutes"].as_f64(), Some(2.0));
    assert_eq!(est["time"]["limited_by"], "rpm");
    // Tokens: (prompt + 8 × 100) / 50 per minute, longer than 8 / 4.
    let est = json_of(&[
        "estimate",
        input,
        "--rpm",
        "4",
        "--tpm",
        "50",
        "--max-tokens",
        "100",
        "--json",
    ]);
    let minutes = (tokens as f64 + 800.0) / 50.0;
    assert!(close(est["time"]["minutes"].as_f64().unwrap(), minutes));
    assert_eq!(est["time"]["limited_by"], "tpm");
    assert_eq!(est["time"]["output_basis"], "worst");
}

#[test]
fn estimate_counts_invalid_rows_and_names_the_first() {
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"prompt\":\"hello\"}\n{\"prompt\":\"   \"}\n{\"prompt\":\"bye\"}\n",
    );
    let est = json_of(&["estimate", input.to_str().unwrap(), "--json"]);
    assert_eq!(est["rows"], 3);
    assert_eq!(est["request_rows"], 2);
    assert_eq!(est["invalid_rows"], 1);

    let bad = dir.write("bad.jsonl", "{\"prompt\":\"hello\"}\n{not json\n");
    let r = run_args(&["estimate", bad.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("first invalid row: "), "{}", r.stdout);
    assert!(r.stdout.contains("bad.jsonl:2: "), "{}", r.stdout);

    let r = run_args(&["estimate", dir.path("missing.jsonl").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("missing.jsonl"), "{}", r.stderr);
}

/// Runs `run --dry-run` on a small input with one HTTP 400 row and one row retried once;
/// returns the output path (JSONL or CSV by `name`).
fn dry_run_output(dir: &Workdir, name: &str) -> PathBuf {
    let input = dir.write(
        "in.jsonl",
        concat!(
            "{\"id\":\"a\",\"prompt\":\"What is the capital of France?\"}\n",
            "{\"id\":\"b\",\"prompt\":\"this one fails #sim:status=400\"}\n",
            "{\"id\":\"c\",\"prompt\":\"Write one sentence about the sea.\"}\n",
            "{\"id\":\"d\",\"prompt\":\"retried once #sim:fail=1\"}\n",
            "{\"id\":\"e\",\"prompt\":\"Name a prime number larger than one hundred, please.\"}\n",
        ),
    );
    let output = dir.path(name);
    let r = run_args(&[
        "run",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--dry-run",
        "--backoff-base",
        "1ms",
        "--backoff-max",
        "5ms",
        "-q",
    ]);
    assert_eq!(r.code, 3, "one row is an error record: {}", r.stderr);
    output
}

/// Sums of a JSONL output computed here: (ok, error, [prompt, cached, completion, reasoning,
/// total], cost).
fn sums(records: &[Value]) -> (u64, u64, [u64; 5], f64) {
    let mut tokens = [0u64; 5];
    let (mut ok, mut error, mut cost) = (0, 0, 0.0);
    for r in records {
        match r["status"].as_str().unwrap() {
            "ok" => ok += 1,
            _ => error += 1,
        }
        for (i, k) in [
            "prompt_tokens",
            "cached_tokens",
            "completion_tokens",
            "reasoning_tokens",
            "total_tokens",
        ]
        .iter()
        .enumerate()
        {
            tokens[i] += r[*k].as_u64().unwrap();
        }
        cost += r["cost_usd"].as_f64().unwrap();
    }
    (ok, error, tokens, cost)
}

fn assert_report_matches(report: &Value, records: &[Value]) {
    let (ok, error, tokens, cost) = sums(records);
    assert_eq!(report["rows"], records.len() as u64);
    assert_eq!(report["ok"], ok);
    assert_eq!(report["error"], error);
    let t = &report["tokens"];
    assert_eq!(
        [
            &t["prompt"],
            &t["cached"],
            &t["completion"],
            &t["reasoning"],
            &t["total"]
        ]
        .map(|v| v.as_u64().unwrap()),
        tokens
    );
    // Dry-run answers cost nothing: their would-be cost is reported apart.
    assert_eq!(report["simulated"], records.len() as u64);
    assert_eq!(report["cost"]["total_usd"].as_f64().unwrap(), 0.0);
    assert!(close(
        report["cost"]["simulated_usd"].as_f64().unwrap(),
        cost
    ));
    assert!(cost > 0.0);
}

#[test]
fn report_jsonl_output_of_a_dry_run() {
    let dir = Workdir::new();
    let output = dry_run_output(&dir, "out.jsonl");
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 5);
    let report = json_of(&["report", output.to_str().unwrap(), "--json"]);
    assert_report_matches(&report, &records);
    assert_eq!(report["ok"], 4);
    assert_eq!(report["error"], 1);
    assert_eq!(report["format"], "jsonl");
    assert!(report["torn_last_line"].is_null());
    assert_eq!(report["attempts"], serde_json::json!({"1": 4, "2": 1}));
    let top = report["top_errors"].as_array().unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0]["count"], 1);
    assert!(top[0]["message"].as_str().unwrap().contains("HTTP 400"));
    // Means per ok row, from the file.
    let ok: Vec<&Value> = records.iter().filter(|r| r["status"] == "ok").collect();
    let mean_completion = ok
        .iter()
        .map(|r| r["completion_tokens"].as_u64().unwrap())
        .sum::<u64>() as f64
        / ok.len() as f64;
    assert!(close(
        report["mean_per_ok_row"]["completion_tokens"]
            .as_f64()
            .unwrap(),
        mean_completion
    ));
    let max_latency = ok
        .iter()
        .map(|r| r["latency_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    assert_eq!(report["latency_ms"]["max"], max_latency);
    assert!(report["latency_ms"]["p50"].as_u64().unwrap() <= max_latency);

    // The human table has the same figures.
    let r = run_args(&["report", output.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("HTTP 400"), "{}", r.stdout);
    assert!(r.stdout.contains("p99"), "{}", r.stdout);

    // The same output gives the expected case of an estimate.
    let est = json_of(&[
        "estimate",
        samples("prompts.jsonl").to_str().unwrap(),
        "--from-output",
        output.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(est["expected_output"]["source"], "from-output");
    assert_eq!(est["expected_output"]["from_output_ok_rows"], 4);
    assert!(close(
        est["expected_output"]["tokens_per_row"].as_f64().unwrap(),
        mean_completion
    ));
}

#[test]
fn report_csv_output_and_torn_last_lines() {
    let dir = Workdir::new();
    let csv_out = dry_run_output(&dir, "out.csv");
    // The CSV holds the same records as a JSONL run of the same input would.
    let json_dir = Workdir::new();
    let jsonl_out = dry_run_output(&json_dir, "out.jsonl");
    let records = read_jsonl(&jsonl_out);
    let report = json_of(&["report", csv_out.to_str().unwrap(), "--json"]);
    assert_eq!(report["format"], "csv");
    assert_report_matches(&report, &records);
    assert_eq!(report["attempts"], serde_json::json!({"1": 4, "2": 1}));

    // A torn last record (the run killed mid-write) is skipped and reported, in both formats.
    for (path, name) in [(&csv_out, "torn.csv"), (&jsonl_out, "torn.jsonl")] {
        let bytes = std::fs::read(path).unwrap();
        let torn = dir.path(name);
        std::fs::write(&torn, &bytes[..bytes.len() - 30]).unwrap();
        let r = run_args(&["report", torn.to_str().unwrap(), "--json"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let report: Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(report["rows"], 4, "{name}");
        let line = report["torn_last_line"]["line"].as_u64().unwrap();
        assert_eq!(line, if name.ends_with("csv") { 6 } else { 5 }, "{name}");
        assert!(r.stderr.contains("incomplete"), "{}", r.stderr);
    }
}

#[test]
fn report_rejects_a_broken_middle_line_and_a_missing_file() {
    let dir = Workdir::new();
    let output = dry_run_output(&dir, "out.jsonl");
    let text = std::fs::read_to_string(&output).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "{\"id\": broken";
    let broken = dir.write("broken.jsonl", &(lines.join("\n") + "\n"));
    let r = run_args(&["report", broken.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("broken.jsonl:2"), "{}", r.stderr);

    let r = run_args(&["report", dir.path("nope.jsonl").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nope.jsonl"), "{}", r.stderr);
}

#[test]
fn report_computes_missing_costs_and_counts_unpriced_rows() {
    let dir = Workdir::new();
    let output = dry_run_output(&dir, "out.jsonl");
    let records = read_jsonl(&output);
    // Drop the cost of the ok records; make one of them an unpriced model.
    let mut expected = 0.0;
    let mut lines = Vec::new();
    let mut unpriced_done = false;
    for mut r in records {
        if r["status"] == "ok" {
            r["cost_usd"] = Value::Null;
            if !unpriced_done {
                r["model"] = "acme-llm-9".into();
                unpriced_done = true;
            } else {
                let p = r["prompt_tokens"].as_f64().unwrap();
                let c = r["completion_tokens"].as_f64().unwrap();
                expected += (p * GPT52_INPUT + c * GPT52_OUTPUT) / 1e6;
            }
        }
        lines.push(serde_json::to_string(&r).unwrap());
    }
    let edited = dir.write("edited.jsonl", &(lines.join("\n") + "\n"));
    let report = json_of(&["report", edited.to_str().unwrap(), "--json"]);
    let cost = &report["cost"];
    assert!(close(cost["simulated_usd"].as_f64().unwrap(), expected));
    assert_eq!(cost["computed_rows"], 3);
    assert_eq!(cost["unpriced_rows"], 1);
    assert_eq!(cost["unpriced_models"], serde_json::json!(["acme-llm-9"]));
}
