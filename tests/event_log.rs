//! The event log beside the output (`OUTPUT.events.jsonl`), end to end on the real binary: its
//! intervals add up to the records, every run ends with a `stop` line saying why, a `kill -9`
//! leaves a log the next run appends to, and `report` lists the runs.

mod common;

use std::path::Path;

use common::{kill_9_after_lines, read_jsonl, run, Scenario, Sim, Workdir};
use promptbatch::SimOptions;
use serde_json::Value;

/// The event log's lines; each must be a JSON object except perhaps a torn last one.
fn events(output: &Path) -> Vec<Value> {
    let path = format!("{}.events.jsonl", output.display());
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines
        .iter()
        .enumerate()
        .filter_map(|(i, line)| match serde_json::from_str::<Value>(line) {
            Ok(value) => Some(value),
            Err(e) => {
                assert_eq!(i + 1, lines.len(), "line {} is not JSON: {e}", i + 1);
                None
            }
        })
        .collect()
}

fn rows(n: usize, sleep_ms: u64) -> String {
    (0..n)
        .map(|i| {
            let fault = if i % 40 == 0 { " #sim:status=400" } else { "" };
            format!("{{\"id\": \"r{i}\", \"prompt\": \"p {i}{fault} #sim:sleep={sleep_ms}ms\"}}\n")
        })
        .collect()
}

#[test]
fn intervals_add_up_to_the_records_and_the_stop_line_says_why() {
    let sim = Sim::start(SimOptions {
        rate_500: 0.05,
        ..SimOptions::default()
    });
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(400, 3));
    let output = work.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "-c",
            "4",
            "--event-interval",
            "1s",
            "--backoff-base",
            "10ms",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = read_jsonl(&output);
    let ok = records.iter().filter(|r| r["status"] == "ok").count() as u64;
    let errors = records.len() as u64 - ok;
    assert_eq!((ok, errors), (390, 10));

    let log = events(&output);
    assert_eq!(log[0]["event"], "start");
    assert_eq!(log[0]["concurrency"], 4);
    let last = log.last().unwrap();
    assert_eq!(
        (last["event"].as_str(), last["reason"].as_str()),
        (Some("stop"), Some("completed"))
    );
    assert_eq!(
        (last["ok"].as_u64(), last["errors"].as_u64()),
        (Some(ok), Some(errors))
    );
    let intervals: Vec<&Value> = log.iter().filter(|e| e["event"] == "interval").collect();
    let sum = |key: &str| {
        intervals
            .iter()
            .map(|e| e[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!((sum("ok"), sum("errors")), (ok, errors));
    assert!(sum("server_errors") > 0 && sum("retries") >= sum("server_errors"));
    assert!(log.iter().all(|e| e["run"] == log[0]["run"]), "one run id");
}

#[test]
fn a_killed_run_leaves_a_log_the_next_run_appends_to() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(2000, 20));
    let output = work.path("out.jsonl");
    let args = ["-c", "8", "--event-interval", "1s"];
    let written = kill_9_after_lines(&sim, &input, &output, &args, 100);
    assert!(written >= 100);
    let ok_before = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|record| record["status"] == "ok")
        .count() as u64;
    let killed = events(&output);
    assert_eq!(killed[0]["event"], "start");
    assert!(
        killed.iter().all(|e| e["event"] != "stop"),
        "no stop line after kill -9"
    );

    let r = run(&sim, &input, &output, &args);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let log = events(&output);
    let starts: Vec<&Value> = log.iter().filter(|e| e["event"] == "start").collect();
    assert_eq!(starts.len(), 2);
    assert_ne!(starts[0]["run"], starts[1]["run"]);
    let stop = log.last().unwrap();
    assert_eq!(stop["event"], "stop");
    assert_eq!(stop["run"], starts[1]["run"]);
    assert_eq!(
        stop["done_before"].as_u64(),
        Some(ok_before),
        "the resume kept the ok records"
    );
    assert_eq!(read_jsonl(&output).len(), 2000);

    let report = common::run_args(&["report", "--json", output.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        runs[0]["stopped_at"].is_null(),
        "the killed run has no stop: {runs:?}"
    );
    assert_eq!(runs[1]["reason"], "completed");
}

#[test]
fn no_event_log_writes_none() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(5, 0));
    let output = work.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--no-event-log"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!Path::new(&format!("{}.events.jsonl", output.display())).exists());
}

#[test]
fn a_batch_runs_batches_are_in_the_log_and_the_report() {
    let s = common::Scenario::new().rows(250);
    let r = s.run_batch(&["-q", "--batch-max-requests", "100"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let log = events(&s.output);
    let submitted: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "batch_submitted")
        .collect();
    let collected: Vec<&Value> = log
        .iter()
        .filter(|e| e["event"] == "batch_collected")
        .collect();
    assert_eq!((submitted.len(), collected.len()), (3, 3));
    let rows: u64 = submitted.iter().map(|e| e["rows"].as_u64().unwrap()).sum();
    assert_eq!(rows, 250);

    let report = common::run_args(&["report", "--json", s.output.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let batches = report["batches"].as_array().unwrap();
    assert_eq!(batches.len(), 3);
    assert!(batches
        .iter()
        .all(|b| b["status"] == "completed" && !b["collected_at"].is_null()));
    assert_eq!(
        batches
            .iter()
            .map(|b| b["rows"].as_u64().unwrap())
            .sum::<u64>(),
        250
    );
}

#[test]
fn a_breaker_trip_and_a_budget_stop_are_in_the_log() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let refused: String = (0..30)
        .map(|i| format!("{{\"id\": \"r{i}\", \"prompt\": \"p{i} #sim:status=400\"}}\n"))
        .collect();
    let input = work.write("refused.jsonl", &refused);
    let output = work.path("refused.out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let log = events(&output);
    let trip = log
        .iter()
        .find(|e| e["event"] == "breaker_trip")
        .expect("a breaker_trip line");
    assert_eq!(
        (trip["model"].as_str(), trip["had_worked"].as_bool()),
        (Some("gpt-5.2"), Some(false))
    );
    assert!(trip["error"].as_str().unwrap().contains("400"), "{trip}");
    assert_eq!(log.last().unwrap()["reason"], "refused");

    let input = work.write("in.jsonl", &rows(200, 1));
    let output = work.path("budget.out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-c", "2", "--max-cost", "0.002", "--max-tokens", "50"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let log = events(&output);
    let budget = log
        .iter()
        .find(|e| e["event"] == "budget")
        .expect("a budget line");
    assert_eq!(budget["cap"], 0.002);
    assert_eq!(log.last().unwrap()["reason"], "budget");
}

#[test]
fn fresh_moves_the_event_log_with_the_output() {
    let s = Scenario::new().rows(5);
    let r = run(s.sim(), &s.input, &s.output, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(s.sim(), &s.input, &s.output, &["--fresh"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let backup_log = s.work.path("out.jsonl.bak.events.jsonl");
    let starts = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .filter(|l| l.contains("\"event\":\"start\""))
            .count()
    };
    assert_eq!(
        starts(&backup_log),
        1,
        "the first run's log went with its output"
    );
    assert_eq!(
        starts(&s.work.path("out.jsonl.events.jsonl")),
        1,
        "the new output's own run"
    );
    let r = common::run_args(&["report", "--json", s.output.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 1);
}
