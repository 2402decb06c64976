//! Resume and durability: re-running the same command continues a partial run, `kill -9` at
//! any point loses nothing and pays for at most the rows in flight, edits re-send only what
//! changed, and two runs never share an output. Real binary, real simulator, real signals.

mod common;

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::Value;

fn jsonl_prompts(n: usize, with_ids: bool) -> String {
    (0..n)
        .map(|i| {
            if with_ids {
                format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt number {i}\"}}\n")
            } else {
                format!("{{\"prompt\":\"prompt number {i}\"}}\n")
            }
        })
        .collect()
}

/// Every row has exactly one record, ok, carrying its own answer.
fn assert_one_ok_record_per_prompt(output: &Path, n: usize) {
    let records = read_jsonl(output);
    let mut by_prompt: HashMap<String, usize> = HashMap::new();
    for r in &records {
        assert_eq!(r["status"], "ok", "{r}");
        let prompt = r["prompt"].as_str().unwrap();
        assert_eq!(r["completion"], format!("echo: {prompt}").as_str());
        *by_prompt.entry(prompt.to_string()).or_default() += 1;
    }
    assert_eq!(records.len(), n, "exactly one record per row");
    for i in 0..n {
        assert_eq!(
            by_prompt.get(&format!("prompt number {i}")),
            Some(&1),
            "row {i}"
        );
    }
}

fn spawn_run(sim: &Sim, input: &Path, output: &Path, args: &[&str]) -> Child {
    command()
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--base-url", &sim.base_url, "-q"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

/// Waits for the child to exit; kills it and fails the test after `hang` (a hang detector,
/// see [`HANG`]).
fn wait_exit(child: &mut Child, hang: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + hang;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("hang detector: {what} did not exit within {hang:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A child's standard error, read line by line on a thread of its own.
struct StderrLines {
    rx: mpsc::Receiver<String>,
    seen: String,
}

impl StderrLines {
    fn take(child: &mut Child) -> Self {
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        StderrLines {
            rx,
            seen: String::new(),
        }
    }

    /// Waits for a line containing `needle`; fails after [`HANG`] or when stderr closes first.
    fn wait_for(&mut self, needle: &str) {
        let deadline = Instant::now() + HANG;
        while !self.seen.contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => self.seen += &(line + "\n"),
                Err(e) => panic!("no {needle:?} on stderr ({e}): {}", self.seen),
            }
        }
    }

    /// Everything the child wrote, once it has exited.
    fn all(mut self) -> String {
        while let Ok(line) = self.rx.recv_timeout(HANG) {
            self.seen += &(line + "\n");
        }
        self.seen
    }
}

#[test]
fn rerunning_a_finished_run_sends_nothing() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(50, true));
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    let before = std::fs::read_to_string(&output).unwrap();
    let again = run(&sim, &input, &output, &["-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again
            .stderr
            .contains("already complete: all 50 rows have a record, nothing to send"),
        "{}",
        again.stderr
    );
    assert_eq!(sim.requests(), 50, "nothing paid twice");
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        before,
        "output untouched"
    );
}

#[test]
fn kill_9_at_several_points_then_resume_loses_nothing() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("5ms..25ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 400;
    let input = dir.write("in.jsonl", &jsonl_prompts(n, false));
    let output = dir.path("out.jsonl");
    let concurrency = 8;
    let mut kills = 0;
    // Kill each run once the output holds this many records: early, midway, late.
    for records in [40usize, 160, 280] {
        let mut child = spawn_run(&sim, &input, &output, &["-c", "8"]);
        wait_until(&format!("{records} records"), HANG, || {
            line_count(&output) >= records || child.try_wait().unwrap().is_some()
        });
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        // After kill -9: whole lines only, at most one per row (a torn tail is possible).
        let text = std::fs::read_to_string(&output).unwrap_or_default();
        for line in text.lines().take(text.lines().count().saturating_sub(1)) {
            serde_json::from_str::<Value>(line).expect("every complete line is a record");
        }
    }
    assert_eq!(kills, 3, "every run was killed mid-way");
    assert!(line_count(&output) < n, "the kills left work to do");
    let r = run(&sim, &input, &output, &["-c", "8", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming: "), "{}", r.stderr);
    assert_one_ok_record_per_prompt(&output, n);
    let sent = sim.requests() as usize;
    assert!(
        sent <= n + kills * concurrency,
        "{sent} requests for {n} rows: at most the in-flight ones ({concurrency}) are paid again per kill"
    );
}

#[test]
fn sigint_finishes_in_flight_rows_and_exits_130() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("100ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 200;
    let input = dir.write("in.jsonl", &jsonl_prompts(n, true));
    let output = dir.path("out.jsonl");
    let child = spawn_run(&sim, &input, &output, &["-c", "4", "--fresh"]);
    wait_until("8 records", HANG, || line_count(&output) >= 8);
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("to resume, run:"), "{stderr}");
    assert!(
        !stderr.contains("--fresh"),
        "the resume command drops --fresh: {stderr}"
    );
    let records = read_jsonl(&output);
    assert!(!records.is_empty() && records.len() < n);
    // In-flight requests were let finish: every request the server answered has a record.
    assert_eq!(
        records.len() as u64,
        sim.stats()["completions"].as_u64().unwrap()
    );

    let r = run(&sim, &input, &output, &["-c", "16", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_ok_record_per_prompt(&output, n);
    assert_eq!(sim.requests() as usize, n, "no row was paid twice");
}

#[test]
fn edited_input_resends_only_changed_and_new_rows() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv: String = std::iter::once("name,text\n".to_string())
        .chain((0..20).map(|i| format!("n{i},text {i}\n")))
        .collect();
    let input = dir.write("in.csv", &csv);
    let output = dir.path("out.csv");
    let template = ["--template", "About {name}: {text}", "-q"];
    assert_eq!(run(&sim, &input, &output, &template).code, 0);
    assert_eq!(sim.requests(), 20);

    // Insert a row near the top, change another: no id column, so identity is the request.
    let mut lines: Vec<String> = csv.lines().map(String::from).collect();
    lines.insert(3, "inserted,brand new".into());
    lines[10] = "n8,CHANGED".into();
    let edited = dir.write("in.csv", &(lines.join("\n") + "\n"));
    let r = run(&sim, &edited, &output, &template);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(
            "19 of 21 rows done, 2 to send (1 records of rows not in this input kept as they are)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        sim.requests(),
        22,
        "only the inserted and the changed row were sent"
    );

    let mut reader = csv::Reader::from_path(&output).unwrap();
    let prompts: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[2].to_string())
        .collect();
    // Without ids a changed row is a new request: the old answer, paid for, belongs to no
    // row of this input and is kept as it is (a paid record is never deleted).
    assert_eq!(prompts.len(), 22, "21 rows and the old n8 record");
    assert!(prompts.contains(&"About n8: CHANGED".to_string()));
    assert!(prompts.contains(&"About n8: text 8".to_string()));
    assert!(prompts.contains(&"About inserted: brand new".to_string()));
}

#[test]
fn changed_model_sends_every_row_to_it_and_ids_survive_reordering() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(10, true));
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);

    // Same rows in another order, with ids: nothing to send.
    let mut lines: Vec<&str> = jsonl_prompts(10, true).leak().lines().collect();
    lines.reverse();
    let reordered = dir.write("reordered.jsonl", &(lines.join("\n") + "\n"));
    let r = run(&sim, &reordered, &output, &["-q"]);
    assert!(
        r.stderr.contains("all 10 rows have a record"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 10);

    let r = run(
        &sim,
        &input,
        &output,
        &["--model", "gemini-3.1-pro-preview", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    // A model is a (row, model) pair of its own: every row goes to it, and the records of the
    // model no longer asked for stay as they are.
    assert!(
        r.stderr.contains("0 of 10 rows done, 10 to send"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 20);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 20);
    for model in ["gpt-5.2", "gemini-3.1-pro-preview"] {
        assert_eq!(
            records.iter().filter(|r| r["model"] == model).count(),
            10,
            "{model}"
        );
    }
}

#[test]
fn error_records_are_retried_unless_keep_errors() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"fine\"}\n{\"id\":\"b\",\"prompt\":\"flaky #sim:fail=1\"}\n",
    );
    let output = dir.path("out.jsonl");
    let first = run(&sim, &input, &output, &["--max-retries", "0", "-q"]);
    assert_eq!(first.code, 3);
    assert_eq!(sim.requests(), 2);

    let kept = run(
        &sim,
        &input,
        &output,
        &["--max-retries", "0", "--keep-errors", "-q"],
    );
    assert_eq!(
        kept.code, 3,
        "the kept error record still counts: {}",
        kept.stderr
    );
    assert!(
        kept.stderr.contains("all 2 rows have a record"),
        "{}",
        kept.stderr
    );
    assert_eq!(sim.requests(), 2);

    let retried = run(&sim, &input, &output, &["--max-retries", "0", "-q"]);
    assert_eq!(retried.code, 0, "{}", retried.stderr);
    assert!(
        retried.stderr.contains("(1 earlier errors retried)"),
        "{}",
        retried.stderr
    );
    assert_eq!(sim.requests(), 3);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2);
    assert!(records.iter().all(|r| r["status"] == "ok"));
}

#[test]
fn torn_last_line_is_dropped_and_its_row_resent() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(5, true));
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    // Simulate a kill in the middle of the last write: cut the file inside its last line.
    let text = std::fs::read_to_string(&output).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 20;
    std::fs::write(&output, &text[..cut]).unwrap();
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("dropping a torn last record"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("4 of 5 rows done, 1 to send"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 6);
    assert_one_ok_record_per_prompt(&output, 5);
}

#[test]
fn identical_prompts_without_ids_are_told_apart_by_occurrence() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"prompt\":\"same\"}\n{\"prompt\":\"other\"}\n{\"prompt\":\"same\"}\n",
    );
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    let edited = dir.write(
        "in.jsonl",
        "{\"prompt\":\"new\"}\n{\"prompt\":\"same\"}\n{\"prompt\":\"other\"}\n{\"prompt\":\"same\"}\n{\"prompt\":\"same\"}\n",
    );
    let r = run(&sim, &edited, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("3 of 5 rows done, 2 to send"),
        "{}",
        r.stderr
    );
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 5);
    assert_eq!(records.iter().filter(|r| r["prompt"] == "same").count(), 3);
}

#[test]
fn a_second_run_on_the_same_output_refuses() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("200ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(40, true));
    let output = dir.path("out.jsonl");
    let mut first = spawn_run(&sim, &input, &output, &["-c", "2"]);
    // A run sends only once it holds the output's lock.
    wait_until("the first run's first request", HANG, || {
        sim.requests() >= 1
    });
    let second = run(&sim, &input, &output, &["-q"]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.code, 1);
    assert!(
        second.stderr.contains("another promptbatch run is writing"),
        "{}",
        second.stderr
    );
}

#[test]
fn budget_cap_stops_and_raising_it_continues() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(30, true));
    let output = dir.path("out.jsonl");
    // gpt-5.2: a row's worst case is 2 × ~9 prompt tokens × $1.75/M + 100 × $14/M ≈ $0.00143;
    // what it really costs in the simulator is about $0.0001.
    let args = ["--max-tokens", "100", "-c", "2", "-q"];
    let r = run(
        &sim,
        &input,
        &output,
        &[&args[..], &["--max-cost", "0.002"]].concat(),
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("budget cap"), "{}", r.stderr);
    let records = read_jsonl(&output);
    let spent: f64 = records
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(spent <= 0.002, "spent {spent}");
    assert!(
        spent + 0.0015 > 0.002,
        "stopped only when the next worst case did not fit: {spent}"
    );
    assert!(
        records.len() >= 3 && records.len() < 30,
        "{} rows",
        records.len()
    );
    for r in &records {
        let expected = (r["prompt_tokens"].as_f64().unwrap() * 1.75
            + r["completion_tokens"].as_f64().unwrap() * 14.0)
            / 1e6;
        assert!((r["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12);
    }

    let r = run(
        &sim,
        &input,
        &output,
        &[&args[..], &["--max-cost", "1"]].concat(),
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&output).len(), 30);
    assert_eq!(
        sim.requests(),
        30,
        "raising the cap continued without paying twice"
    );
}

#[test]
fn ordered_csv_output_survives_kill_9_and_resumes_in_order() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("2ms..20ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 300;
    let input = dir.write("in.jsonl", &jsonl_prompts(n, true));
    let output = dir.path("out.csv");
    let mut child = spawn_run(&sim, &input, &output, &["-c", "8", "--ordered"]);
    wait_until("60 records", HANG, || line_count(&output) > 60);
    child.kill().unwrap();
    child.wait().unwrap();
    let r = run(&sim, &input, &output, &["-c", "8", "--ordered", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let ids: Vec<String> = reader
        .records()
        .map(|r| r.unwrap()[0].to_string())
        .collect();
    assert_eq!(ids.len(), n, "one record per row");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), n, "no duplicates");
    // Each run wrote its records in input order.
    let rows: Vec<usize> = ids.iter().map(|id| id[1..].parse().unwrap()).collect();
    let descents = rows.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        descents <= 1,
        "at most one jump back, where the resumed run began: {rows:?}"
    );
}

#[test]
fn a_second_ctrl_c_stops_at_once_and_the_output_stays_whole() {
    // Answers take 10 minutes and the grace period is 10 minutes: a second Ctrl-C that waited
    // for either would trip the hang detector many times over.
    let slow = Sim::start(SimOptions {
        latency: LatencySpec::parse("600s").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(20, true));
    let output = dir.path("out.jsonl");
    let mut child = spawn_run(&slow, &input, &output, &["-c", "4", "--grace", "600s"]);
    let mut stderr = StderrLines::take(&mut child);
    wait_until("4 requests in flight", HANG, || slow.requests() >= 4);
    interrupt(child.id());
    stderr.wait_for("interrupted: no new requests");
    interrupt(child.id());
    let status = wait_exit(&mut child, HANG, "the run after a second Ctrl-C");
    let stderr = stderr.all();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("stopping now"), "{stderr}");
    assert_eq!(slow.stats()["completions"], 0, "no answer was waited for");
    assert!(
        !output.exists(),
        "abandoned rows have no record (and no empty file is left)"
    );

    let sim = Sim::plain();
    let r = run(&sim, &input, &output, &["-c", "20", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&output).len(), 20);
}

/// Without dedup (`--no-dedup`): identical requests are each sent, and their records are told
/// apart by row (with dedup the second row's record is a copy: `tests/dedup.rs`).
#[test]
fn identical_requests_finished_out_of_order_keep_one_record_per_row() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("dup.csv", "prompt\nsame\nsame\nother\n");
    let output = dir.path("dup.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q", "--no-dedup"]).code, 0);
    // As if killed before row 1's record was written, while row 2 (same request) was.
    let text = std::fs::read_to_string(&output).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains("\"row\":1,"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&output, kept).unwrap();
    let r = run(&sim, &input, &output, &["-q", "--no-dedup"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut rows: Vec<(String, u64)> = read_jsonl(&output)
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["row"].as_u64().unwrap(),
            )
        })
        .collect();
    rows.sort();
    let expected: Vec<(String, u64)> = (1..=3).map(|i| (i.to_string(), i)).collect();
    assert_eq!(
        rows, expected,
        "one record per row, relabelled to the rows they stand for"
    );
    assert_eq!(sim.requests(), 4, "only one request was sent again");
}

/// Two rows with the same request, sent each (`--no-dedup`), one with an id and one without.
#[test]
fn mixed_explicit_and_missing_ids_resume_without_resending() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "mix.jsonl",
        "{\"id\":\"1\",\"prompt\":\"x\"}\n{\"prompt\":\"x\"}\n",
    );
    let output = dir.path("mix.out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q", "--no-dedup"]).code, 0);
    let r = run(&sim, &input, &output, &["-q", "--no-dedup"]);
    assert!(
        r.stderr
            .contains("all 2 rows have a record, nothing to send"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 2);
    assert_eq!(read_jsonl(&output).len(), 2);
}

#[test]
fn ctrl_c_does_not_wait_for_rows_queued_at_the_rate_limiter() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(5, true));
    let output = dir.path("out.jsonl");
    // At --rpm 1 the second row waits a minute at the limiter, and the grace period is 10
    // minutes: waiting for either would trip the hang detector.
    let mut child = spawn_run(&sim, &input, &output, &["--rpm", "1", "--grace", "600s"]);
    wait_until("the first record", HANG, || line_count(&output) >= 1);
    interrupt(child.id());
    // Hang detector: 30 s is far above the moment this takes and half the minute a queued row
    // would wait at the limiter.
    let status = wait_exit(&mut child, Duration::from_secs(30), "the interrupted run");
    assert_eq!(status.code(), Some(130));
    assert_eq!(sim.requests(), 1, "the queued rows were never sent");
    assert_eq!(
        read_jsonl(&output).len(),
        1,
        "the first row had been sent and answered"
    );
}

/// An input of `n` rows of about 3 KB (so a resume's rewrite of the output takes a while) where
/// every other row fails its first attempt (503), and the output of a first run with
/// `--max-retries 0`: half ok records, half error records, so every resume must rewrite it.
fn half_failed_output(sim: &Sim, dir: &Workdir, n: usize) -> (std::path::PathBuf, Vec<u8>) {
    let pad = "lorem ipsum ".repeat(250);
    let lines: String = (0..n)
        .map(|i| {
            let flaky = if i % 2 == 0 { " #sim:fail=1" } else { "" };
            format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt number {i} {pad}{flaky}\"}}\n")
        })
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let first = run(
        sim,
        &input,
        &output,
        &["--max-retries", "0", "-c", "64", "-q"],
    );
    assert_eq!(first.code, 3, "{}", first.stderr);
    (input, std::fs::read(&output).unwrap())
}

/// The ids of the complete lines of a JSONL output; fails on two records for one row.
fn unique_ids(text: &[u8], when: &str) -> usize {
    let text = String::from_utf8_lossy(text);
    let mut complete: Vec<&str> = text.lines().collect();
    if !text.ends_with('\n') {
        complete.pop(); // a torn last line
    }
    let mut ids: Vec<String> = complete
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].to_string())
        .collect();
    let all = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        all,
        "two records for one row after a kill {when}"
    );
    all
}

/// The final run after the kills: it must send exactly the rows that had no ok record before
/// (nothing paid twice, nothing lost), leaving one ok record per row.
fn assert_resume_completes(sim: &Sim, input: &Path, output: &Path, n: usize, to_send: u64) {
    let before = sim.requests();
    let r = run(sim, input, output, &["-c", "16", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.requests() - before, to_send, "rows sent by the resume");
    let records = read_jsonl(output);
    assert_eq!(records.len(), n);
    for rec in &records {
        assert_eq!(rec["status"], "ok");
        let prompt = rec["prompt"].as_str().unwrap();
        assert_eq!(rec["completion"], format!("echo: {prompt}").as_str());
    }
}

/// Starts a resume and kills it (-9) as soon as `ready` holds; returns whether the run was
/// still going (false: it finished or failed first). Starts from `base`, without leftovers.
fn kill_when(
    sim: &Sim,
    input: &Path,
    output: &Path,
    base: &[u8],
    ready: impl Fn() -> bool,
) -> bool {
    for leftover in [".rewrite", ".rewrite-tmp"] {
        let _ = std::fs::remove_file(format!("{}{leftover}", output.display()));
    }
    std::fs::write(output, base).unwrap();
    let mut child = spawn_run(sim, input, output, &["-c", "16"]);
    let deadline = Instant::now() + HANG;
    let running = loop {
        if ready() {
            break true;
        }
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        assert!(
            Instant::now() < deadline,
            "hang detector: the rewrite never came"
        );
        std::thread::sleep(Duration::from_micros(200));
    };
    let _ = child.kill();
    child.wait().unwrap();
    running
}

/// `kill -9` inside the rewrite of a resume (`output/replace.rs`), observed by its files: a
/// kill while the new contents are staged (`OUTPUT.rewrite-tmp` left, no journal) leaves the
/// output untouched; a kill after the commit point (the journal `OUTPUT.rewrite` left behind)
/// leaves the old contents or a prefix of the journal, and the next run finishes the copy
/// instead of re-sending the rows the prefix lacks. A kill that misses (the rewrite done) is
/// retried from the same starting output.
#[test]
fn kill_9_during_the_resume_rewrite_never_leaves_two_records_for_a_row() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 2000;
    let (input, base) = half_failed_output(&sim, &dir, n);
    assert_eq!(unique_ids(&base, "never"), n);
    let failed = String::from_utf8_lossy(&base)
        .matches("\"status\":\"error\"")
        .count() as u64;
    assert_eq!(failed, n as u64 / 2, "every other row failed");
    let output = dir.path("out.jsonl");
    let staging = dir.path("out.jsonl.rewrite-tmp");
    let journal = dir.path("out.jsonl.rewrite");

    // Before the commit point: killed once the staging file appears.
    let staged = (1..=20).find(|_| {
        kill_when(&sim, &input, &output, &base, || staging.exists())
            && staging.exists()
            && !journal.exists()
    });
    assert!(
        staged.is_some(),
        "no kill landed while the rewrite was staged"
    );
    assert!(
        std::fs::read(&output).unwrap() == base,
        "output touched before the commit point"
    );

    // After it, in the copy: killed once the journal exists and the output was emptied or has
    // grown back; the journal is left, the output holds a prefix of it.
    let base_len = base.len() as u64;
    let copying =
        || journal.exists() && std::fs::metadata(&output).is_ok_and(|m| m.len() != base_len);
    let copied =
        (1..=20).find(|_| kill_when(&sim, &input, &output, &base, copying) && journal.exists());
    assert!(
        copied.is_some(),
        "no kill landed after the rewrite's commit point"
    );
    let (now, new) = (
        std::fs::read(&output).unwrap(),
        std::fs::read(&journal).unwrap(),
    );
    assert!(
        now == base || new.starts_with(&now),
        "the output is neither its old contents nor a prefix of the new ones"
    );
    unique_ids(&now, "after the commit point");
    eprintln!(
        "kill landed while staged at attempt {staged:?}, in the copy at attempt {copied:?} \
         with {} of {} bytes copied",
        if now == base { 0 } else { now.len() },
        new.len()
    );
    assert_resume_completes(&sim, &input, &output, n, failed);
    assert!(!journal.exists() && !staging.exists(), "leftovers removed");
}

/// The state a kill in the middle of the copy leaves, made by hand (the test above cannot choose
/// where in the copy its kill lands): the journal holds the new contents, the output a prefix
/// of them cut inside a record. The next run finishes the copy and sends only the rows without
/// an ok record.
#[test]
fn a_rewrite_killed_mid_copy_is_finished_by_the_next_run() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 200;
    let (input, base) = half_failed_output(&sim, &dir, n);
    let output = dir.path("out.jsonl");
    let ok: Vec<u8> = String::from_utf8(base)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"status\":\"ok\""))
        .flat_map(|l| format!("{l}\n").into_bytes())
        .collect();
    assert_eq!(unique_ids(&ok, "never"), n / 2);
    std::fs::write(dir.path("out.jsonl.rewrite"), &ok).unwrap();
    std::fs::write(&output, &ok[..ok.len() / 3]).unwrap();
    assert_resume_completes(&sim, &input, &output, n, n as u64 / 2);
    assert!(!dir.path("out.jsonl.rewrite").exists());
}

/// `promptbatch run` with every sorter of the resume plan (and the duplicate-id set) capped at
/// 8 items (PROMPTBATCH_TEST_SPILL_ITEMS, debug builds), so the plan sorts in spilled runs.
fn run_spilled(sim: &Sim, input: &Path, output: &Path, args: &[&str]) -> (i32, String) {
    let out = command()
        .env("PROMPTBATCH_TEST_SPILL_ITEMS", "8")
        .arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--base-url", &sim.base_url, "-q"])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn resume_over_a_spilled_index_with_ids() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_prompts(300, true));
    let output = dir.path("out.jsonl");
    let (code, stderr) = run_spilled(&sim, &input, &output, &["--limit", "120"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(line_count(&output), 120);
    // Reverse the rows and change two prompts: ids keep their records (relabelled with their
    // new row numbers), the two changed rows and the 180 new ones are sent.
    let mut lines: Vec<String> = jsonl_prompts(300, true).lines().map(String::from).collect();
    lines.reverse();
    let edited: String = lines
        .iter()
        .map(|l| {
            let l = if l.contains("\"r5\"") || l.contains("\"r77\"") {
                l.replace("\"}", " (edited)\"}")
            } else {
                l.clone()
            };
            l + "\n"
        })
        .collect();
    std::fs::write(&input, edited).unwrap();
    let (code, stderr) = run_spilled(&sim, &input, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming: 118 of 300 rows done, 182 to send (2 changed rows re-sent)"),
        "{stderr}"
    );
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 300);
    let mut rows: Vec<u64> = records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=300).collect::<Vec<_>>(), "one record per row");
    for r in &records {
        let id = r["id"].as_str().unwrap();
        let i: u64 = id[1..].parse().unwrap();
        assert_eq!(r["row"].as_u64().unwrap(), 300 - i, "{r}");
        assert_eq!(r["status"], "ok");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("spill"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let (code, stderr) = run_spilled(&sim, &input, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("already complete: all 300 rows"),
        "{stderr}"
    );
}

#[test]
fn resume_over_a_spilled_index_without_ids_and_with_numeric_ids() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // 60 rows, 3 distinct prompts: occurrences tell them apart.
    let anonymous: String = (0..60)
        .map(|i| format!("{{\"prompt\":\"same {}\"}}\n", i % 3))
        .collect();
    let input = dir.write("anon.jsonl", &anonymous);
    let output = dir.path("anon.out.jsonl");
    let (code, stderr) = run_spilled(&sim, &input, &output, &["--limit", "25"]);
    assert_eq!(code, 0, "{stderr}");
    // Two rows inserted at the top: the 25 records keep their occurrences.
    let edited = format!("{{\"prompt\":\"new a\"}}\n{{\"prompt\":\"same 1\"}}\n{anonymous}");
    std::fs::write(&input, &edited).unwrap();
    let (code, stderr) = run_spilled(&sim, &input, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("resuming: 25 of 62 rows done"), "{stderr}");
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 62);
    let mut rows: Vec<u64> = records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    rows.sort_unstable();
    assert_eq!(rows, (1..=62).collect::<Vec<_>>());
    let lines: Vec<&str> = edited.lines().collect();
    for r in &records {
        let row = r["row"].as_u64().unwrap() as usize;
        assert_eq!(r["id"], row.to_string());
        let want: Value = serde_json::from_str(lines[row - 1]).unwrap();
        assert_eq!(r["prompt"], want["prompt"], "{r}");
    }

    // Numeric ids equal to the row numbers: records have id == row, found by number.
    let numeric: String = (1..=40)
        .map(|i| format!("{{\"id\":{i},\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("num.jsonl", &numeric);
    let output = dir.path("num.out.jsonl");
    let (code, stderr) = run_spilled(&sim, &input, &output, &["--limit", "30"]);
    assert_eq!(code, 0, "{stderr}");
    let (code, stderr) = run_spilled(&sim, &input, &output, &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("resuming: 30 of 40 rows done, 10 to send"),
        "{stderr}"
    );
    assert_eq!(read_jsonl(&output).len(), 40);
}

#[test]
fn a_duplicate_id_found_by_the_resume_plan_names_its_line() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let rows = jsonl_prompts(100, true);
    let input = dir.write("in.jsonl", &rows);
    let output = dir.path("out.jsonl");
    let (code, stderr) = run_spilled(&sim, &input, &output, &["--limit", "50"]);
    assert_eq!(code, 0, "{stderr}");
    // Row 101 repeats row 7's id (r6): the resumed run stops there, as a fresh one would.
    std::fs::write(
        &input,
        format!("{rows}{{\"id\":\"r6\",\"prompt\":\"again\"}}\n"),
    )
    .unwrap();
    let (code, stderr) = run_spilled(&sim, &input, &output, &[]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("in.jsonl:101"), "{stderr}");
    assert!(stderr.contains("duplicate id `r6`"), "{stderr}");
    let records = read_jsonl(&output);
    assert!(records.iter().all(|r| r["prompt"] != "again"));
    assert_eq!(records.len(), 50, "nothing sent: the plan stops first");
}
