//! Issue 9, "trust the data": the budget cap ends every run, a failed worker is never reported
//! as success, simulated answers are never resumed as real ones, `validate`, `--limit`, the
//! sample-then-estimate path, and messages a user can act on. The real binary against the
//! simulator over loopback.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// `n` CSV rows with ids `t0…` and a text column of varied length.
fn tickets(dir: &Workdir, n: usize) -> std::path::PathBuf {
    let mut csv = String::from("id,text\n");
    for i in 0..n {
        csv.push_str(&format!(
            "t{i},\"Ticket {i}: my order {} arrived damaged, the box was crushed {}\"\n",
            i * 7,
            "and more ".repeat(i % 9)
        ));
    }
    dir.write("tickets.csv", &csv)
}

/// Runs the binary and kills it if it has not ended after `limit`: a hang is a failure with a
/// message, not a stuck test. (Not a timing claim: the limit is far above any normal run.)
fn run_bounded(sim: &Sim, args: &[&str], limit: Duration) -> RunResult {
    let mut child = command()
        .args(args)
        .args(["--base-url", &sim.base_url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return RunResult {
                code: status.code().unwrap_or(-1),
                stdout: String::new(),
                stderr,
                elapsed: start.elapsed(),
            };
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let mut stderr = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            panic!(
                "hung: `{}` still running after {limit:?}\n{stderr}",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn total_cost(records: &[Value]) -> f64 {
    records
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum()
}

#[test]
fn budget_cap_ends_every_run_and_a_higher_cap_continues_without_duplicates() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = tickets(&dir, 600);
    let input = input.to_str().unwrap();
    for concurrency in ["1", "4", "16"] {
        for cap in [0.05, 0.2] {
            for max_tokens in [Some("300"), None] {
                let output = dir.path(&format!("out-{concurrency}-{cap}-{max_tokens:?}.jsonl"));
                let output = output.to_str().unwrap();
                let mut args = vec![
                    "run",
                    input,
                    "-o",
                    output,
                    "--template",
                    "{text}",
                    "-q",
                    "-c",
                    concurrency,
                ];
                if let Some(n) = max_tokens {
                    args.extend(["--max-tokens", n]);
                }
                let case = format!("-c {concurrency} cap {cap} max-tokens {max_tokens:?}");
                let first_cap = cap.to_string();
                let mut first = args.clone();
                first.extend(["--max-cost", &first_cap]);
                let r = run_bounded(&sim, &first, Duration::from_secs(60));
                assert_eq!(r.code, 4, "{case}: {}", r.stderr);
                assert!(r.stderr.contains("budget cap"), "{case}: {}", r.stderr);
                let records = if std::path::Path::new(output).exists() {
                    read_jsonl(std::path::Path::new(output))
                } else {
                    Vec::new()
                };
                let spent = total_cost(&records);
                assert!(spent <= cap + 1e-9, "{case}: recorded {spent} > cap {cap}");
                assert!(records.len() < 600, "{case}: the cap must stop the run");

                let higher = (cap * 3.0).to_string();
                let mut second = args.clone();
                second.extend(["--max-cost", &higher]);
                let r = run_bounded(&sim, &second, Duration::from_secs(60));
                assert!(r.code == 4 || r.code == 0, "{case}: {}", r.stderr);
                let records = read_jsonl(std::path::Path::new(output));
                let ids: HashSet<&str> =
                    records.iter().map(|r| r["id"].as_str().unwrap()).collect();
                assert_eq!(ids.len(), records.len(), "{case}: a row recorded twice");
                let spent_after = total_cost(&records);
                assert!(spent_after <= cap * 3.0 + 1e-9, "{case}: {spent_after}");
                assert!(
                    spent_after > spent || max_tokens.is_none() && cap < 0.06,
                    "{case}: the higher cap must continue ({spent} → {spent_after})"
                );
            }
        }
    }
}

#[test]
fn a_panicking_worker_is_named_and_never_reported_as_success() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let mut cmd = command();
    cmd.args(["run", "samples/prompts.jsonl", "-o"])
        .arg(&output)
        .args(["--base-url", &sim.base_url, "-q"])
        .env("PROMPTBATCH_TEST_PANIC_ON_ROW", "3");
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("every row has an ok record"), "{stderr}");
    assert!(stderr.contains("input row 3"), "{stderr}");
    assert_eq!(read_jsonl(&output).len(), 7, "the other rows are recorded");

    // The next run sends only the row that failed.
    let before = sim.requests();
    let r = run(&sim, "samples/prompts.jsonl".as_ref(), &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("7 of 8 rows done, 1 to send"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests() - before, 1);
    let rows: HashSet<u64> = read_jsonl(&output)
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, (1..=8).collect());
}

#[test]
fn non_ascii_model_names_and_ids_run_end_to_end() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\": \"日本-1\", \"prompt\": \"é\"}\n{\"id\": \"🙂\", \"prompt\": \"ß\"}\n{\"id\": \"\", \"prompt\": \"x\"}\n",
    );
    let output = dir.path("out.jsonl");
    for model in ["ééééééééé", "模型-2025-12-11", "é"] {
        let _ = std::fs::remove_file(&output);
        let r = run(&sim, &input, &output, &["--model", model, "-q"]);
        assert_eq!(r.code, 0, "{model}: {}", r.stderr);
        let records = read_jsonl(&output);
        assert_eq!(records.len(), 3, "{model}");
        for rec in &records {
            assert_eq!(rec["model"], model);
            assert_eq!(rec["status"], "ok");
            assert!(rec["cost_usd"].is_null(), "unpriced, not $0: {rec}");
        }
        let ids: HashSet<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
        assert_eq!(ids, HashSet::from(["日本-1", "🙂", ""]));
        let e = run_args(&["estimate", input.to_str().unwrap(), "--model", model]);
        assert_eq!(e.code, 0, "{model}: {}", e.stderr);
        let rep = run_args(&["report", output.to_str().unwrap(), "--json"]);
        assert_eq!(rep.code, 0, "{}", rep.stderr);
        let report: Value = serde_json::from_str(&rep.stdout).unwrap();
        assert!(
            report["cost"]["by_model"][0]["cost_usd"].is_null(),
            "{report}"
        );
    }
}

#[test]
fn simulated_answers_are_marked_and_never_resumed_as_real() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let input = "samples/prompts.jsonl";
    let dry = run_args(&[
        "run",
        input,
        "-o",
        output.to_str().unwrap(),
        "--dry-run",
        "-q",
    ]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 8);
    assert!(records.iter().all(|r| r["simulated"] == true));

    // `report` does not count the simulator's echoes as money spent.
    let rep = run_args(&["report", output.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&rep.stdout).unwrap();
    assert_eq!(report["simulated"], 8);
    assert_eq!(report["cost"]["total_usd"], 0.0);
    assert_eq!(
        report["cost"]["by_model"][0]["cost_usd"], 0.0,
        "priced, nothing spent"
    );
    assert!(report["cost"]["simulated_usd"].as_f64().unwrap() > 0.0);

    // Another dry run keeps them; a real run sends every row and says why.
    let again = run_args(&[
        "run",
        input,
        "-o",
        output.to_str().unwrap(),
        "--dry-run",
        "-q",
    ]);
    assert!(
        again.stderr.contains("already complete"),
        "{}",
        again.stderr
    );
    let real = run(&sim, input.as_ref(), &output, &["-q"]);
    assert_eq!(real.code, 0, "{}", real.stderr);
    assert!(
        real.stderr.contains(
            "0 of 8 rows done, 8 to send (8 simulated answers from --dry-run sent for real)"
        ),
        "{}",
        real.stderr
    );
    assert_eq!(sim.requests(), 8);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 8);
    assert!(records.iter().all(|r| r["simulated"] == false));
}

#[test]
fn validate_lists_every_bad_line_and_counts() {
    let dir = Workdir::new();
    let mut text = String::new();
    for i in 1..=150 {
        text.push_str(&format!("{{\"id\": \"a{i}\", \"prompt\": \"fine {i}\"}}\n"));
        text.push_str("not json\n");
    }
    text.push_str("{\"id\": \"a1\", \"prompt\": \"again\"}\n{\"id\": \"e\", \"prompt\": \"\"}\n");
    let input = dir.write("bad.jsonl", &text);
    let r = run_args(&["validate", input.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let shown: Vec<&str> = r
        .stdout
        .lines()
        .filter(|l| l.contains("bad.jsonl:"))
        .collect();
    assert_eq!(
        shown.len(),
        101,
        "100 problems and the count line: {}",
        r.stdout
    );
    // `FILE:LINE: invalid JSON at column N: ` is promptbatch's format; `expected ident` is
    // serde_json's wording (`ErrorCode::ExpectedSomeIdent`, version pinned by Cargo.lock), and
    // column 2 is the `o` of `not json`, where serde_json, reading a `null`, wanted a `u`.
    assert_eq!(
        shown[0],
        format!(
            "{}:2: invalid JSON at column 2: expected ident",
            input.display()
        )
    );
    assert!(
        r.stdout.contains("… and 52 more invalid rows"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("302 data rows: 150 valid, 152 invalid"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("not ok"), "{}", r.stdout);

    let clean = run_args(&["validate", "samples/reviews.csv", "--template", "{review}"]);
    assert_eq!(clean.code, 0, "{}", clean.stdout);
    assert!(
        clean
            .stdout
            .contains("columns: `id`, `product`, `rating`, `review`"),
        "{}",
        clean.stdout
    );
    assert!(
        clean.stdout.contains("ok: every row can be sent"),
        "{}",
        clean.stdout
    );

    let empty = dir.write("empty.csv", "id,prompt\n");
    let r = run_args(&["validate", empty.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("no data rows"), "{}", r.stdout);

    // estimate reports the invalid rows instead of stopping at the first one.
    let e = run_args(&["estimate", input.to_str().unwrap(), "--json"]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let estimate: Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(estimate["invalid_rows"], 152);
    assert_eq!(estimate["request_rows"], 150);
    assert!(estimate["first_invalid"]
        .as_str()
        .unwrap()
        .contains("bad.jsonl:2:"));
}

#[test]
fn an_input_without_data_rows_is_a_warning_not_success() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("empty.csv", "id,prompt\r\n");
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("no data rows"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("every row has an ok record"),
        "{}",
        r.stderr
    );
}

#[test]
fn limit_runs_the_first_rows_and_resume_keeps_the_rest() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = tickets(&dir, 40);
    let output = dir.path("out.jsonl");
    let args = ["--template", "{text}", "-q"];
    let r = run(
        &sim,
        &input,
        &output,
        &[&args[..], &["--limit", "5"]].concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("first 5 rows (--limit)"), "{}", r.stderr);
    let rows: HashSet<u64> = read_jsonl(&output)
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, (1..=5).collect());
    assert_eq!(sim.requests(), 5);

    let r = run(&sim, &input, &output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("5 of 40 rows done, 35 to send"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 40);

    // A smaller limit later neither sends nor drops anything.
    let r = run(
        &sim,
        &input,
        &output,
        &[&args[..], &["--limit", "3"]].concat(),
    );
    assert!(r.stderr.contains("already complete"), "{}", r.stderr);
    assert_eq!(sim.requests(), 40);
    assert_eq!(read_jsonl(&output).len(), 40);

    let e = run_args(&[
        "estimate",
        input.to_str().unwrap(),
        "--template",
        "{text}",
        "--limit",
        "7",
        "--json",
    ]);
    let estimate: Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(estimate["rows"], 7);
}

#[test]
fn estimate_from_a_sample_projects_cost_with_a_range() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = tickets(&dir, 300);
    let sample = dir.path("sample.jsonl");
    let r = run(
        &sim,
        &input,
        &sample,
        &["--template", "{text}", "--limit", "50", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&sample);
    let mean: f64 = records
        .iter()
        .map(|r| r["completion_tokens"].as_f64().unwrap())
        .sum::<f64>()
        / 50.0;
    let e = run_args(&[
        "estimate",
        input.to_str().unwrap(),
        "--template",
        "{text}",
        "--from-output",
        sample.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let estimate: Value = serde_json::from_str(&e.stdout).unwrap();
    let expected = &estimate["expected_output"];
    assert!((expected["tokens_per_row"].as_f64().unwrap() - mean).abs() < 1e-9);
    let (low, mid, high) = (
        estimate["expected_cost_low_usd"].as_f64().unwrap(),
        estimate["expected_cost_usd"].as_f64().unwrap(),
        estimate["expected_cost_high_usd"].as_f64().unwrap(),
    );
    assert!(low < mid && mid < high, "{low} {mid} {high}");
    assert_eq!(estimate["rows"], 300);
    assert_eq!(estimate["time"]["limited_by"], "latency");
}

#[test]
fn rerun_advice_only_for_retryable_errors() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let refused = dir.write(
        "refused.jsonl",
        "{\"prompt\": \"a #sim:status=400\"}\n{\"prompt\": \"b\"}\n",
    );
    let r = run(&sim, &refused, &output, &["-q"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        !r.stderr.contains("re-run the same command to retry"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("1 were refused by the API"),
        "{}",
        r.stderr
    );

    let output = dir.path("out2.jsonl");
    let flaky = dir.write("flaky.jsonl", "{\"prompt\": \"a #sim:fail=9:500\"}\n");
    let r = run(
        &sim,
        &flaky,
        &output,
        &["-q", "--max-retries", "1", "--backoff-base", "1ms"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("re-run the same command to retry them"),
        "{}",
        r.stderr
    );
}

#[test]
fn report_json_rounds_money_and_summary_groups_token_counts() {
    let dir = Workdir::new();
    let mut text = String::new();
    for (i, cost) in [0.1, 0.3, 4.408299].iter().enumerate() {
        text.push_str(&format!(
            "{{\"id\":\"{i}\",\"row\":{},\"prompt\":\"p\",\"completion\":\"c\",\"finish_reason\":\"stop\",\"model\":\"gpt-5.2\",\"prompt_tokens\":1,\"cached_tokens\":0,\"completion_tokens\":1,\"reasoning_tokens\":0,\"total_tokens\":2,\"latency_ms\":1,\"attempts\":1,\"status\":\"ok\",\"error\":null,\"response_id\":null,\"cost_usd\":{cost},\"fingerprint\":\"\"}}\n",
            i + 1
        ));
    }
    let output = dir.write("out.jsonl", &text);
    let r = run_args(&["report", output.to_str().unwrap(), "--json"]);
    assert!(
        r.stdout.contains("\"total_usd\": 4.808299,"),
        "{}",
        r.stdout
    );

    let sim = Sim::plain();
    let input = tickets(&dir, 400);
    let r = run(
        &sim,
        &input,
        &dir.path("big.jsonl"),
        &["--template", "{text}", "-q"],
    );
    let line = r.stderr.lines().find(|l| l.starts_with("tokens:")).unwrap();
    let prompt: &str = line.split_whitespace().nth(2).unwrap();
    assert!(prompt.contains(','), "thousands separators: {line}");
}

/// The `HH:MM:SS UTC` after `what` in the first progress line that has it.
fn clock_after(stderr: &str, what: &str) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("progress:") && l.contains(what))?;
    let at = line.split(what).nth(1)?;
    let clock = at.get(..12)?;
    let parts: Vec<&str> = clock[..8].split(':').collect();
    let well_formed = parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
        && clock.ends_with(" UTC");
    well_formed.then(|| clock.to_string())
}

#[test]
fn waits_for_the_server_show_until_when_in_the_progress_line() {
    let dir = Workdir::new();
    // A row waiting out its 429's advice (the others go on).
    let sim = Sim::start(promptbatch::sim::SimOptions {
        retry_after: Duration::from_secs(2),
        ..Default::default()
    });
    let input = dir.write("one.jsonl", "{\"prompt\": \"a #sim:fail=1:429\"}\n");
    let r = run(
        &sim,
        &input,
        &dir.path("one-out.jsonl"),
        &["--log-every", "100ms"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        clock_after(&r.stderr, "1 row waits to retry until ").is_some(),
        "{}",
        r.stderr
    );

    // The whole pool paused: the server says its window is exhausted (remaining 0, a reset).
    let sim = Sim::start(promptbatch::sim::SimOptions {
        limit_rpm: Some(promptbatch::sim::LimitSchedule::parse("120").unwrap()),
        limit_window: Duration::from_secs(2),
        rate_headers: true,
        ..Default::default()
    });
    let input = tickets(&dir, 8);
    let args = ["--template", "{text}", "-c", "2", "--log-every", "100ms"];
    let r = run(&sim, &input, &dir.path("pool-out.jsonl"), &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        clock_after(&r.stderr, "paused until ").is_some(),
        "{}",
        r.stderr
    );
}

#[test]
fn a_broken_record_past_the_limit_does_not_stop_the_smoke_test() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"1\"}\n{\"id\":\"b\",\"prompt\":\"2\"}\nnot json\n{\"id\":\"a\",\"prompt\":\"dup\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--limit", "2", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&output).len(), 2);
    assert_eq!(sim.requests(), 2);
}
