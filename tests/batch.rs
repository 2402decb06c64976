//! `run --via batch` end to end: the real binary against the simulator's Batch API over
//! loopback. Splitting into batches, the records written (same schema, batch price), resuming
//! after the process is killed at each step (debug builds' `PROMPTBATCH_TEST_ABORT_AT`) without
//! creating a second batch for the same rows, expired and failed batches, per-row errors from
//! the error file, `--detach` then collect, `cancel`, `--max-cost`, `--fallback live`, and a
//! provider without a Batch API.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use common::batch::{assert_one_ok_record_per_row, batch_stats, count, rows, run_batch};
use common::{assert_no_key, read_jsonl, wait_until, Scenario, Sim, HANG, LABEL_SCHEMA};
use promptbatch::SimOptions;
use serde_json::{json, Value};

/// The live cost of gpt-5.2 for a record's tokens (USD per 1M: 1.75 input, 14 output).
fn live_cost(record: &Value) -> f64 {
    let prompt = record["prompt_tokens"].as_f64().unwrap();
    let completion = record["completion_tokens"].as_f64().unwrap();
    (prompt * 1.75 + completion * 14.0) / 1e6
}

#[test]
fn a_run_of_120000_rows_goes_out_as_3_batches_of_at_most_50000() {
    let s = Scenario::new().rows(120_000);
    // The real default split: 50,000 requests per file.
    let result = s.run_batch(&["-q"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert_no_key(&[&result.stderr, &result.stdout]);
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "files_created"), 3);
    assert_eq!(count(&stats, "batches_created"), 3);
    let totals: Vec<u64> = stats["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .collect();
    assert_eq!(totals, [50_000, 50_000, 20_000]);
    assert_eq!(s.sim().stats()["completions"], 0, "nothing was sent live");

    let records = assert_one_ok_record_per_row(&s.output, 120_000);
    let record = &records["r77"];
    assert_eq!(record["attempts"], 1);
    assert_eq!(record["model"], "gpt-5.2");
    assert_eq!(
        record["prompt_tokens"].as_u64().unwrap(),
        common::sim_prompt_tokens(&["prompt 77"])
    );
    let cost = record["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - live_cost(record) / 2.0).abs() < 1e-12,
        "batch price is half the live price: {cost} vs {}",
        live_cost(record)
    );
    assert!(
        !s.state_file().exists(),
        "the state goes once all is collected"
    );

    // `report` reads a batch run's output like any other.
    let report = common::run_args(&["report", s.output.to_str().unwrap(), "--json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(
        (report["rows"].as_u64(), report["ok"].as_u64()),
        (Some(120_000), Some(120_000))
    );
}

#[test]
fn a_download_cut_short_is_downloaded_again_from_its_start() {
    // The first two downloads (the output files of both batches) end halfway through their
    // body (after the headers): each is fetched again from its start, no row is lost or sent
    // again. (Fails if a body cut short is taken as final: the run stops with exit 1.)
    let s = Scenario::with_sim(SimOptions {
        batch_cut_downloads: 2,
        ..SimOptions::default()
    })
    .rows(300);
    let result = s.run_batch(&["--batch-max-requests", "200", "--backoff-max", "100ms"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let stats = s.batch_stats();
    assert_eq!(
        count(&stats, "batches_created"),
        2,
        "no row went into a new batch"
    );
    assert_eq!(count(&stats, "downloads"), 4, "2 cut short + 2 whole");
    let records = assert_one_ok_record_per_row(&s.output, 300);
    assert!(records.values().all(|r| r["attempts"] == 1));
    assert_eq!(
        result.stderr.matches("retrying").count(),
        2,
        "{}",
        result.stderr
    );
}

/// Kills the run at `point` (as `kill -9` would), then runs the same command again: no second
/// upload or batch for the same rows, and exactly one ok record per row. Returns the Batch API
/// counters after the kill.
fn killed_then_resumed(point: &str, sim_options: SimOptions) -> Value {
    let s = Scenario::with_sim(sim_options).rows(300);
    let args = ["--batch-max-requests", "200"];
    let killed = s.run_batch_aborted_at(point, &args);
    assert_ne!(killed.code, 0, "the run must have been aborted at {point}");
    assert!(
        killed
            .stderr
            .contains(&format!("PROMPTBATCH_TEST_ABORT_AT={point}")),
        "{}",
        killed.stderr
    );
    assert!(s.state_file().exists(), "the state survives the kill");
    let before = s.batch_stats();

    let resumed = s.run_batch(&args);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_no_key(&[&killed.stderr, &resumed.stderr]);
    let after = s.batch_stats();
    // 300 rows at 200 per file: two files and two batches, whatever happened in between.
    assert_eq!(count(&after, "files_created"), 2, "{before} → {after}");
    assert_eq!(count(&after, "batches_created"), 2, "{before} → {after}");
    let records = assert_one_ok_record_per_row(&s.output, 300);
    assert!(records.values().all(|r| r["attempts"] == 1));
    assert!(!s.state_file().exists());
    // The downloads' temporary file is unlinked as soon as it is open: a kill leaves nothing
    // (besides the output, its input and the run's event log).
    let mut left: Vec<String> = std::fs::read_dir(s.work.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["in.jsonl", "out.jsonl", "out.jsonl.events.jsonl"]);
    before
}

#[test]
fn killed_between_upload_and_create_the_resume_creates_the_batch_from_the_uploaded_file() {
    let before = killed_then_resumed("after-upload", SimOptions::default());
    assert_eq!(count(&before, "files_created"), 1);
    assert_eq!(count(&before, "batches_created"), 0);
}

#[test]
fn killed_after_create_before_saving_the_resume_finds_the_batch_instead_of_creating_another() {
    let before = killed_then_resumed("create-unsaved", SimOptions::default());
    assert_eq!(count(&before, "files_created"), 1);
    assert_eq!(count(&before, "batches_created"), 1);
}

#[test]
fn killed_between_create_and_completion_the_resume_polls_the_same_batches() {
    let options = SimOptions {
        batch_time: Duration::from_millis(300),
        ..SimOptions::default()
    };
    let before = killed_then_resumed("after-create", options);
    assert_eq!(count(&before, "batches_created"), 1);
    assert_eq!(count(&before, "downloads"), 0);
}

#[test]
fn killed_during_the_download_the_resume_writes_only_the_missing_records() {
    let s = Scenario::new().rows(300);
    let killed = s.run_batch_aborted_at("during-download", &[]);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    let partial = std::fs::read_to_string(&s.output).unwrap();
    let whole_lines = partial.lines().filter(|l| l.ends_with('}')).count();
    assert!(
        (150..300).contains(&whole_lines),
        "about half the records are written before the kill: {whole_lines}"
    );
    assert_eq!(s.batch_count("downloads"), 1);

    let resumed = s.run_batch(&[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "files_created"), 1);
    assert_eq!(count(&stats, "batches_created"), 1, "no second batch");
    assert_eq!(count(&stats, "downloads"), 2, "the output file again");
    assert_one_ok_record_per_row(&s.output, 300);
}

#[test]
fn an_expired_batch_sends_its_unanswered_rows_in_a_new_batch() {
    let s = Scenario::with_sim(SimOptions {
        batch_expire: 1,
        ..SimOptions::default()
    })
    .rows(100);
    let result = s.run_batch(&[]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(result.stderr.contains("expired"), "{}", result.stderr);
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "batches_created"), 2);
    let totals: Vec<u64> = stats["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .collect();
    assert_eq!(
        totals,
        [100, 50],
        "the second batch holds the expired half only"
    );
    let records = assert_one_ok_record_per_row(&s.output, 100);
    let twice = records.values().filter(|r| r["attempts"] == 2).count();
    assert_eq!(
        twice, 50,
        "rows answered by the second batch went through two"
    );
}

#[test]
fn error_file_rows_become_error_records_or_go_into_new_batches() {
    // Row 3 is refused (400: permanent); row 5 always meets a 503 (transient: new batches
    // until the third, then an error record); row 7 meets a 503 in its first batch only.
    let s = Scenario::new().rows_with(10, |i| match i {
        3 => " #sim:status=400",
        5 => " #sim:status=503",
        7 => " #sim:fail=1",
        _ => "",
    });
    let result = s.run_batch(&[]);
    assert_eq!(
        result.code, 3,
        "some rows are error records: {}",
        result.stderr
    );
    assert_eq!(s.batch_count("batches_created"), 3);
    let records = read_jsonl(&s.output);
    assert_eq!(records.len(), 10);
    let by_id: HashMap<&str, &Value> = records
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    let refused = by_id["r3"];
    assert_eq!(refused["status"], "error");
    assert_eq!(refused["attempts"], 1);
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains("HTTP 400") && message.contains("requested by #sim:status"),
        "{message}"
    );
    let busy = by_id["r5"];
    assert_eq!(busy["status"], "error");
    assert_eq!(busy["attempts"], 3);
    let message = busy["error"].as_str().unwrap();
    assert!(
        message.starts_with("gave up after 3 batches: HTTP 503"),
        "{message}"
    );
    let ok = records.iter().filter(|r| r["status"] == "ok").count();
    assert_eq!(ok, 8);
    let recovered = by_id["r7"];
    assert_eq!(recovered["status"], "ok", "{recovered}");
    assert_eq!(recovered["attempts"], 2, "answered by its second batch");
    assert_eq!(recovered["completion"], "echo: prompt 7 #sim:fail=1");

    // A re-run sends the two error rows again in one batch (and the 503 row twice more).
    let again = s.run_batch(&[]);
    assert_eq!(again.code, 3, "{}", again.stderr);
    let stats = s.batch_stats();
    let totals: Vec<u64> = stats["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .collect();
    assert_eq!(
        totals,
        [10, 2, 1, 2, 1, 1],
        "only the error rows are sent again"
    );
    assert_eq!(read_jsonl(&s.output).len(), 10);
}

#[test]
fn detach_submits_and_exits_then_the_same_command_collects() {
    let s = Scenario::new().rows(40);
    let detached = s.run_batch(&["--detach"]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    assert!(detached.stderr.contains("detached"), "{}", detached.stderr);
    let command_line = detached
        .stderr
        .lines()
        .skip_while(|l| !l.contains("collect the results later with"))
        .nth(1)
        .unwrap_or_else(|| panic!("no command: {}", detached.stderr))
        .trim()
        .to_string();
    assert!(command_line.contains("--via batch"), "{command_line}");
    assert!(!command_line.contains("--detach"), "{command_line}");
    let state = std::fs::read_to_string(s.state_file()).unwrap();
    assert_no_key(&[&state]);
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["batches"][0]["rows"].as_array().unwrap().len(), 40);
    assert_eq!(
        std::fs::metadata(&s.output).map(|m| m.len()).unwrap_or(0),
        0
    );
    assert_eq!(s.batch_count("downloads"), 0);

    let collected = s.run_batch(&[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "files_created"), 1);
    assert_eq!(count(&stats, "batches_created"), 1);
    assert_one_ok_record_per_row(&s.output, 40);
    assert_no_key(&[&detached.stderr, &collected.stderr]);
}

#[test]
fn cancel_cancels_the_running_batches() {
    let s = Scenario::with_sim(SimOptions {
        batch_time: Duration::from_secs(3600),
        ..SimOptions::default()
    })
    .rows(30);
    let detached = s.run_batch(&["--detach", "--batch-max-requests", "20"]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let out = s.output.to_str().unwrap();
    let cancelled = common::run_args(&["cancel", out, "--base-url", &s.sim().base_url]);
    assert_eq!(cancelled.code, 0, "{}", cancelled.stderr);
    assert!(
        cancelled.stderr.contains("cancelled 2"),
        "{}",
        cancelled.stderr
    );
    assert_eq!(s.batch_count("cancels"), 2);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_file()).unwrap()).unwrap();
    let statuses: Vec<&str> = state["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["cancelled", "cancelled"]);
    assert_no_key(&[&cancelled.stderr]);
}

#[test]
fn max_cost_refuses_a_batch_whose_worst_case_passes_the_cap() {
    let s = Scenario::new().rows(100);
    // Worst case per row at batch prices: 1,000 output tokens × $7/1M = $0.007; 100 rows: $0.70+.
    let result = s.run_batch(&["--max-tokens", "1000", "--max-cost", "0.5"]);
    assert_eq!(result.code, 4, "{}", result.stderr);
    assert!(result.stderr.contains("--max-cost"), "{}", result.stderr);
    assert_eq!(s.batch_count("files_created"), 0);
    assert_eq!(s.batch_count("batches_created"), 0);

    let result = s.run_batch(&["--max-tokens", "1000", "--max-cost", "1"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert_eq!(s.batch_count("batches_created"), 1);
}

#[test]
fn fallback_live_sends_the_rows_of_a_failed_batch_live() {
    let s = Scenario::with_sim(SimOptions {
        batch_fail: 1,
        ..SimOptions::default()
    })
    .rows(20);
    let result = s.run_batch(&["--fallback", "live"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(result.stderr.contains("failed"), "{}", result.stderr);
    assert_eq!(s.batch_count("batches_created"), 1);
    assert_eq!(s.sim().stats()["completions"], 20, "every row went live");
    let records = assert_one_ok_record_per_row(&s.output, 20);
    let record = &records["r4"];
    let cost = record["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - live_cost(record)).abs() < 1e-12,
        "live rows cost the live price"
    );
}

/// The figures of a run's printed summary: rows ok and error, total tokens, the cost line and
/// each model's cost line (`model` → `$x`).
fn summary_figures(stderr: &str) -> (u64, u64, u64, String, HashMap<String, String>) {
    let line = |prefix: &str| {
        stderr
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in {stderr}"))
            .to_string()
    };
    let number = |text: &str| -> u64 { text.replace(',', "").parse().unwrap() };
    let rows = line("rows: ");
    let mut words = rows.split(' ');
    let ok = number(words.next().unwrap());
    let errors = number(rows.split(", ").nth(1).unwrap().split(' ').next().unwrap());
    let total = number(line("tokens: ").rsplit(' ').next().unwrap());
    let cost = line("cost this run: ");
    let mut by_model = HashMap::new();
    let costs = stderr.split("cost this run: ").nth(1).unwrap();
    for l in costs.lines().skip(1) {
        let Some((model, usd)) = l.strip_prefix("  ").and_then(|l| l.split_once(": ")) else {
            break;
        };
        by_model.insert(model.to_string(), usd.to_string());
    }
    (ok, errors, total, cost, by_model)
}

#[test]
fn fallback_live_summary_counts_the_batch_part_and_the_live_part() {
    // Two batches of 10: the first fails, so 10 rows are written from the second batch (batch
    // price) and 10 are sent live (live price); the printed summary must match `report`.
    let s = Scenario::with_sim(SimOptions {
        batch_fail: 1,
        ..SimOptions::default()
    })
    .rows(20);
    let result = s.run_batch(&["--fallback", "live", "--batch-max-requests", "10"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert_eq!(s.batch_count("batches_created"), 2);
    assert_eq!(
        s.sim().stats()["completions"],
        10,
        "the failed batch's rows went live"
    );
    assert_one_ok_record_per_row(&s.output, 20);
    let report = common::run_args(&["report", s.output.to_str().unwrap(), "--json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let (ok, errors, total, cost, by_model) = summary_figures(&result.stderr);
    assert_eq!((ok, errors), (20, 0), "{}", result.stderr);
    assert_eq!(total, report["tokens"]["total"].as_u64().unwrap());
    let spent = report["cost"]["total_usd"].as_f64().unwrap();
    assert!(spent > 0.0);
    assert_eq!(cost, promptbatch::internals::human::format_usd(spent));
    let models = report["cost"]["by_model"].as_array().unwrap();
    assert_eq!(by_model.len(), models.len(), "{}", result.stderr);
    for model in models {
        let name = model["model"].as_str().unwrap();
        let usd = model["cost_usd"].as_f64().unwrap();
        assert_eq!(
            by_model[name],
            promptbatch::internals::human::format_usd(usd),
            "{name}"
        );
    }
}

#[test]
fn a_provider_without_a_batch_api_gets_one_clear_line() {
    let s = Scenario::with_sim(SimOptions {
        no_batch: true,
        ..SimOptions::default()
    })
    .rows(5);
    let result = s.run_batch(&[]);
    assert_eq!(result.code, 1, "{}", result.stderr);
    let errors: Vec<&str> = result
        .stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", result.stderr);
    assert!(errors[0].contains("no Batch API"), "{}", errors[0]);
    assert!(errors[0].contains("--via live"), "{}", errors[0]);
    assert!(!s.state_file().exists(), "nothing was submitted");
    assert_no_key(&[&result.stderr]);
}

#[test]
fn estimate_shows_the_batch_cost_beside_the_live_cost() {
    let s = Scenario::without_sim().rows(50);
    let result = common::run_args(&[
        "estimate",
        s.input.to_str().unwrap(),
        "--max-tokens",
        "100",
        "--expect-output",
        "40",
        "--json",
    ]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let estimate: Value = serde_json::from_str(&result.stdout).unwrap();
    let half = |live: &str, batch: &str| {
        let live = estimate[live].as_f64().unwrap();
        let batch = estimate[batch].as_f64().unwrap();
        assert!(
            live > 0.0 && (batch - live / 2.0).abs() < 1e-12,
            "{live} vs {batch}"
        );
    };
    half("expected_cost_usd", "batch_expected_cost_usd");
    half("worst_cost_usd", "batch_worst_cost_usd");
    let table = common::run_args(&[
        "estimate",
        s.input.to_str().unwrap(),
        "--max-tokens",
        "100",
        "--expect-output",
        "40",
    ]);
    assert!(
        table.stdout.contains("batch expected cost"),
        "{}",
        table.stdout
    );
    assert!(
        table.stdout.contains("batch worst-case cost"),
        "{}",
        table.stdout
    );
}

/// The library alone (no command line): a `Job` through the Batch API of a `--dry-run`
/// simulator, with `--ordered`.
#[tokio::test(flavor = "multi_thread")]
async fn a_library_job_runs_through_the_batch_api() {
    use promptbatch::{BatchOptions, Job, StopReason, Via};
    let s = Scenario::without_sim().rows(25);
    let summary = Job::new(&s.input, &s.output)
        .via(Via::Batch)
        .batch_options(BatchOptions {
            max_requests: 10,
            poll_every: Duration::from_millis(20),
            ..BatchOptions::default()
        })
        .ordered()
        .dry_run(SimOptions::default())
        .run()
        .await
        .unwrap();
    assert!(
        matches!(summary.stop, StopReason::Completed),
        "{:?}",
        summary.stop
    );
    assert_eq!((summary.ok, summary.errors), (25, 0));
    let records = read_jsonl(&s.output);
    let rows: Vec<u64> = records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(
        rows,
        (1..=25).collect::<Vec<u64>>(),
        "--ordered puts them in input order"
    );
    assert!(records.iter().all(|r| r["simulated"] == true));
}

#[test]
fn killed_for_real_while_waiting_the_resume_collects_the_same_batch() {
    let s = Scenario::with_sim(SimOptions {
        batch_time: Duration::from_secs(2),
        ..SimOptions::default()
    })
    .rows(50);
    let mut child = s
        .batch_command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the state names the created batch, then SIGKILL.
    let state = s.state_file();
    wait_until("the state file to name the created batch", HANG, || {
        let named = std::fs::read_to_string(&state)
            .unwrap_or_default()
            .contains("\"batch_id\":\"batch_");
        assert!(
            named || child.try_wait().unwrap().is_none(),
            "the run ended before its batch was created"
        );
        named
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(s.batch_count("batches_created"), 1);

    let resumed = s.run_batch(&[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "files_created"), 1);
    assert_eq!(count(&stats, "batches_created"), 1);
    assert_one_ok_record_per_row(&s.output, 50);
}

#[test]
fn ctrl_c_while_waiting_leaves_the_batches_running_for_the_next_run() {
    let s = Scenario::with_sim(SimOptions {
        batch_time: Duration::from_secs(2),
        ..SimOptions::default()
    })
    .rows(30);
    let mut child = s
        .batch_command()
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let state = s.state_file();
    wait_until("the state file to name the created batch", HANG, || {
        let named = std::fs::read_to_string(&state)
            .unwrap_or_default()
            .contains("\"batch_id\":\"batch_");
        assert!(
            named || child.try_wait().unwrap().is_none(),
            "the run ended before its batch was created"
        );
        named
    });
    common::interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("keep running at the provider"), "{stderr}");
    assert!(stderr.contains("to resume, run:"), "{stderr}");

    let resumed = s.run_batch(&[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(s.batch_count("batches_created"), 1);
    assert_one_ok_record_per_row(&s.output, 30);
}

#[test]
fn standard_input_is_refused_with_what_to_do() {
    let s = Scenario::new();
    let result = common::run_stdin(
        s.sim(),
        &s.output,
        &["--input-format", "jsonl", "--via", "batch"],
        rows(3, |_| "").as_bytes(),
    );
    assert_eq!(result.code, 1, "{}", result.stderr);
    assert!(
        result.stderr.contains("--via batch") && result.stderr.contains("save it to a file"),
        "{}",
        result.stderr
    );
    assert_eq!(s.batch_count("files_created"), 0);
}

/// `--batch-max-pending`: no more rows in batches at once than it allows. A detached run
/// submits up to it (the last file cut short there); the collecting run submits the rest as
/// batches are collected, each row exactly once.
#[test]
fn rows_in_batches_at_once_stay_within_batch_max_pending() {
    let s = Scenario::new().rows(55);
    let args = ["--batch-max-requests", "10", "--batch-max-pending", "25"];
    let detached = s.run_batch(&[&args[..], &["--detach"]].concat());
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_file()).unwrap()).unwrap();
    let sizes: Vec<usize> = state["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["rows"].as_array().unwrap().len())
        .collect();
    assert_eq!(
        sizes,
        [10, 10, 5],
        "25 rows pending, the third file cut at the cap"
    );

    let collected = s.run_batch(&args);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    assert_one_ok_record_per_row(&s.output, 55);
    let stats = s.batch_stats();
    let totals: Vec<u64> = stats["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .collect();
    assert_eq!(
        totals.iter().sum::<u64>(),
        55,
        "each row in one batch: {totals:?}"
    );
    assert!(totals.iter().all(|t| *t <= 10), "{totals:?}");
    assert!(!s.state_file().exists());
}

/// The records of an output by id.
fn records_by_id(output: &Path) -> HashMap<String, Value> {
    read_jsonl(output)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

/// The batch price of a record's tokens: half of gpt-5.2's live price.
fn batch_cost(record: &Value) -> f64 {
    live_cost(record) / 2.0
}

#[test]
fn json_schema_batch_answers_are_checked_and_failures_retried_in_new_batches_with_their_cost() {
    let (s, schema_arg) = Scenario::new().schema_rows();
    let result = s.run_batch(&["--json-schema", &schema_arg, "-q"]);
    assert_eq!(result.code, 3, "c is an error record: {}", result.stderr);
    // Batch 1: a, b, c; batch 2: b (prose the first time) and c; batch 3: c alone.
    let stats = s.batch_stats();
    assert_eq!(count(&stats, "batches_created"), 3, "{stats}");
    assert!(!s.state_file().exists(), "the state is gone once done");
    let records = records_by_id(&s.output);
    assert_eq!(records.len(), 3);
    // The simulator's tokens for one answer to a row (the prompt without its directive words
    // answered back; prose is counted as the JSON it replaced).
    let one = |prompt: &str, answer: &str| {
        (
            common::sim_prompt_tokens(&[prompt]),
            answer.len().div_ceil(4) as u64,
        )
    };

    let a = &records["a"];
    assert_eq!((&a["status"], &a["attempts"]), (&json!("ok"), &json!(1)));
    assert_eq!(a["parsed"], json!({"label": "pos", "score": 0.9}));
    let (prompt, completion) = one(
        r#"{"label": "pos", "score": 0.9}"#,
        r#"{"label": "pos", "score": 0.9}"#,
    );
    assert_eq!(a["prompt_tokens"], prompt);
    assert_eq!(a["completion_tokens"], completion);
    assert!((a["cost_usd"].as_f64().unwrap() - batch_cost(a)).abs() < 1e-12);

    // b: two answers paid for, both on its record.
    let b = &records["b"];
    assert_eq!((&b["status"], &b["attempts"]), (&json!("ok"), &json!(2)));
    assert_eq!(b["parsed"], json!({"label": "neg", "score": 0.1}));
    let (prompt, completion) = one(
        r#"{"label": "neg", "score": 0.1} #sim:prose=1"#,
        r#"{"label": "neg", "score": 0.1}"#,
    );
    assert_eq!(b["prompt_tokens"], 2 * prompt, "{b}");
    assert_eq!(b["completion_tokens"], 2 * completion, "{b}");
    assert!(
        (b["cost_usd"].as_f64().unwrap() - batch_cost(b)).abs() < 1e-12,
        "both answers at the batch price: {b}"
    );

    // c: an error record naming the rule, after 3 batches, holding the 3 answers' cost.
    let c = &records["c"];
    assert_eq!((&c["status"], &c["attempts"]), (&json!("error"), &json!(3)));
    let message = c["error"].as_str().unwrap();
    assert!(
        message.contains("gave up after 3 batches")
            && message.contains("answer does not match --json-schema")
            && message.contains("/label")
            && message.contains("enum"),
        "{message}"
    );
    assert!(c.get("parsed").is_none(), "{c}");
    let (prompt, completion) = one(
        r#"{"label": "meh", "score": 1}"#,
        r#"{"label": "meh", "score": 1}"#,
    );
    assert_eq!(c["prompt_tokens"], 3 * prompt, "{c}");
    assert_eq!(c["completion_tokens"], 3 * completion, "{c}");
    let c_cost = c["cost_usd"].as_f64().unwrap();
    assert!(
        c_cost > 0.0 && (c_cost - batch_cost(c)).abs() < 1e-12,
        "{c}"
    );

    // report: one schema failure; its cost and tokens are the records' sums (what was billed).
    let report = common::run_args(&["report", s.output.to_str().unwrap(), "--json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["schema_failures"], 1, "{report}");
    assert_eq!(
        (report["ok"].as_u64(), report["error"].as_u64()),
        (Some(2), Some(1))
    );
    let sum_cost: f64 = records
        .values()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    let reported = report["cost"]["total_usd"].as_f64().unwrap();
    assert!(
        (reported - sum_cost).abs() < 1e-9,
        "{reported} vs {sum_cost}"
    );
    let sum_tokens: u64 = records
        .values()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(report["tokens"]["total"], sum_tokens);
    // 6 answers were billed in all: 1 for a, 2 for b, 3 for c.
    let billed_prompt: u64 = records
        .values()
        .map(|r| r["prompt_tokens"].as_u64().unwrap())
        .sum();
    assert_eq!(report["tokens"]["prompt"], billed_prompt, "{report}");
}

#[test]
fn json_schema_batch_answers_become_csv_columns() {
    let (s, schema_arg) = Scenario::new().output("out.csv").schema_rows();
    let result = s.run_batch(&["--json-schema", &schema_arg, "-q"]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    let mut reader = csv::Reader::from_path(&s.output).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(&header[header.len() - 2..], ["label", "score"]);
    assert!(!header.iter().any(|h| h == "parsed"), "{header:?}");
    let rows: HashMap<String, HashMap<String, String>> = reader
        .records()
        .map(|r| {
            let row: HashMap<String, String> = header
                .iter()
                .cloned()
                .zip(r.unwrap().iter().map(String::from))
                .collect();
            (row["id"].clone(), row)
        })
        .collect();
    assert_eq!(rows.len(), 3);
    let column = |id: &str, name: &str| rows[id][name].clone();
    assert_eq!(
        (column("a", "label"), column("a", "score")),
        ("pos".into(), "0.9".into())
    );
    assert_eq!(
        (column("b", "label"), column("b", "attempts")),
        ("neg".into(), "2".into())
    );
    assert_eq!(
        (column("c", "status"), column("c", "label")),
        ("error".into(), String::new())
    );
}

#[test]
fn max_cost_counts_the_answers_that_failed_the_schema_before_a_new_batch() {
    // One row whose answer is never JSON: 400 bytes of prose, cut at --max-tokens 100, so each
    // answer costs nearly the batch's worst case.
    let prose = "word ".repeat(100);
    let s = Scenario::new().input(&format!("{{\"id\": \"p\", \"prompt\": \"{prose}\"}}\n"));
    let schema = s.work.write("sentiment.json", LABEL_SCHEMA);
    let schema_arg = schema.display().to_string();
    let args = |cap: &str| {
        vec![
            "--json-schema".to_string(),
            schema_arg.clone(),
            "--max-tokens".into(),
            "100".into(),
            "--max-cost".into(),
            cap.into(),
        ]
    };
    // The worst case of the row's batch, from the refusal under a tiny cap.
    let tiny = args("0.0000001");
    let tiny: Vec<&str> = tiny.iter().map(String::as_str).collect();
    let refused = s.run_batch(&tiny);
    assert_eq!(refused.code, 4, "{}", refused.stderr);
    let worst: f64 = refused
        .stderr
        .split("could cost up to $")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|usd| usd.parse().ok())
        .unwrap_or_else(|| panic!("{}", refused.stderr));
    assert!(worst > 0.0008, "{worst}");
    assert_eq!(s.batch_count("batches_created"), 0);

    // A cap of 1.5 worst cases: the first batch fits; the second does not once the first
    // answer's cost (paid, failed the schema, no record yet) is counted.
    let cap = format!("{:.8}", worst * 1.5);
    let capped = args(&cap);
    let capped: Vec<&str> = capped.iter().map(String::as_str).collect();
    let stopped = s.run_batch(&capped);
    assert_eq!(stopped.code, 4, "{}", stopped.stderr);
    assert_eq!(s.batch_count("batches_created"), 1, "{}", stopped.stderr);
    assert!(stopped.stderr.contains("--max-cost"), "{}", stopped.stderr);
    // The refusal names the first answer's cost as spent.
    let spent: f64 = stopped
        .stderr
        .split(" spent, ")
        .next()
        .and_then(|text| text.rsplit('$').next())
        .and_then(|usd| usd.parse().ok())
        .unwrap_or_else(|| panic!("{}", stopped.stderr));
    assert!(spent > 0.0, "{}", stopped.stderr);
    // The answer's cost waits in the state for the row's record.
    let state: Value = serde_json::from_slice(&std::fs::read(s.state_file()).unwrap()).unwrap();
    let waiting = state["spent"]["1"]["cost"].as_f64().unwrap();
    assert!(waiting > worst / 2.0 && waiting <= worst, "{state}");
    assert!(!s.output.exists() || read_jsonl(&s.output).is_empty());

    // With room for every batch the row ends an error record holding all three answers' cost.
    let open = args("1");
    let open: Vec<&str> = open.iter().map(String::as_str).collect();
    let done = s.run_batch(&open);
    assert_eq!(done.code, 3, "{}", done.stderr);
    assert_eq!(s.batch_count("batches_created"), 3);
    let records = read_jsonl(&s.output);
    assert_eq!(records.len(), 1);
    let p = &records[0];
    assert_eq!((&p["status"], &p["attempts"]), (&json!("error"), &json!(3)));
    let cost = p["cost_usd"].as_f64().unwrap();
    assert!(
        (cost - 3.0 * waiting).abs() < 1e-12,
        "{cost} vs 3 × {waiting}"
    );
    assert!(!s.state_file().exists());
}

#[test]
fn killed_while_collecting_schema_retries_the_resume_counts_each_paid_answer_once() {
    let (s, schema_arg) = Scenario::new().schema_rows();
    let args = ["--json-schema", schema_arg.as_str(), "-q"];
    // Batch 1 writes a and sends b and c again (their first answers' cost kept in the state);
    // the kill comes once b's record from batch 2 is written, before c's answer is handled and
    // before the state is saved.
    let killed = s.run_batch_aborted_at("during-download", &args);
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    assert!(killed.stderr.contains("aborting"), "{}", killed.stderr);
    let state: Value = serde_json::from_slice(&std::fs::read(s.state_file()).unwrap()).unwrap();
    assert_eq!(
        state["spent"].as_object().map(|s| s.len()),
        Some(2),
        "b's and c's first answers wait in the state: {state}"
    );
    let written = records_by_id(&s.output);
    assert_eq!(written.len(), 2, "a and b: {written:?}");

    let resumed = s.run_batch(&args);
    assert_eq!(resumed.code, 3, "{}", resumed.stderr);
    assert_eq!(s.batch_count("batches_created"), 3, "no batch twice");
    assert!(!s.state_file().exists());
    let records = records_by_id(&s.output);
    assert_eq!(records.len(), 3);
    let answers = |record: &Value, prompt: &str| {
        record["prompt_tokens"].as_u64().unwrap() / common::sim_prompt_tokens(&[prompt])
    };
    let b = &records["b"];
    assert_eq!((&b["status"], &b["attempts"]), (&json!("ok"), &json!(2)));
    assert_eq!(
        answers(b, r#"{"label": "neg", "score": 0.1} #sim:prose=1"#),
        2,
        "{b}"
    );
    let c = &records["c"];
    assert_eq!((&c["status"], &c["attempts"]), (&json!("error"), &json!(3)));
    assert_eq!(
        c["prompt_tokens"].as_u64().unwrap(),
        3 * common::sim_prompt_tokens(&[r#"{"label": "meh", "score": 1}"#]),
        "each of c's answers counted once: {c}"
    );
    assert!((c["cost_usd"].as_f64().unwrap() - batch_cost(c)).abs() < 1e-12);
}

#[test]
fn json_schema_with_fallback_live_carries_the_batch_answers_cost_to_the_live_records() {
    // One batch: a is answered valid; b (prose the first time) and c (a label the schema
    // refuses) fail --json-schema and go live. Their live records hold the failed batch
    // answer too, at the batch price, and the summary, `report` and the records agree.
    let (s, schema_arg) = Scenario::new().schema_rows();
    let args = [
        "--json-schema",
        schema_arg.as_str(),
        "--fallback",
        "live",
        "--max-retries",
        "1",
        "--max-cost",
        "5",
    ];
    let result = s.run_batch(&args);
    assert_eq!(result.code, 3, "c is an error record: {}", result.stderr);
    assert_eq!(s.batch_count("batches_created"), 1);
    assert!(!s.state_file().exists(), "the spend is on the records");
    let records = records_by_id(&s.output);
    assert_eq!(records.len(), 3);
    let a = &records["a"];
    assert_eq!(a["status"], "ok");
    assert!((a["cost_usd"].as_f64().unwrap() - batch_cost(a)).abs() < 1e-12);
    // b: its batch answer (batch price) and its live answer (live price): 1/2 + 1 of the live
    // price of one answer, the record holding two.
    let b = &records["b"];
    assert_eq!(
        (&b["status"], &b["attempts"]),
        (&json!("ok"), &json!(2)),
        "{b}"
    );
    assert_eq!(b["parsed"], json!({"label": "neg", "score": 0.1}));
    let one = common::sim_prompt_tokens(&[r#"{"label": "neg", "score": 0.1} #sim:prose=1"#]);
    assert_eq!(b["prompt_tokens"], 2 * one, "{b}");
    let cost = b["cost_usd"].as_f64().unwrap();
    assert!((cost - 0.75 * live_cost(b)).abs() < 1e-12, "{b}");
    // c: one batch answer and two live ones (--max-retries 1), all refused.
    let c = &records["c"];
    assert_eq!(
        (&c["status"], &c["attempts"]),
        (&json!("error"), &json!(3)),
        "{c}"
    );
    let message = c["error"].as_str().unwrap();
    assert!(
        message.contains("gave up after 3 attempts") && message.contains("/label"),
        "{c}"
    );
    let one = common::sim_prompt_tokens(&[r#"{"label": "meh", "score": 1}"#]);
    assert_eq!(c["prompt_tokens"], 3 * one, "{c}");
    let cost = c["cost_usd"].as_f64().unwrap();
    assert!((cost - 2.5 / 3.0 * live_cost(c)).abs() < 1e-12, "{c}");
    // The summary counts what the records hold, once.
    let report = common::run_args(&["report", s.output.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let (ok, errors, total, cost, _) = summary_figures(&result.stderr);
    assert_eq!((ok, errors), (2, 1), "{}", result.stderr);
    assert_eq!(total, report["tokens"]["total"].as_u64().unwrap());
    assert_eq!(
        cost,
        promptbatch::internals::human::format_usd(report["cost"]["total_usd"].as_f64().unwrap())
    );
    assert_eq!(report["schema_failures"], 1, "{report}");
}

#[test]
fn killed_in_the_live_part_the_batch_answers_cost_reaches_the_records_on_resume() {
    // The batch part hands b and c to the live part with one failed answer each; the run is
    // killed while their live requests wait (60 s: they are never answered). The state file
    // must still hold that spend, and the run resumed against another server must put every
    // answer paid for on the records.
    let (s, schema_arg) = Scenario::with_sim(SimOptions {
        latency: promptbatch::sim::LatencySpec::parse("60s").unwrap(),
        ..SimOptions::default()
    })
    .schema_rows();
    let slow = s.sim();
    let args = [
        "--json-schema",
        schema_arg.as_str(),
        "--fallback",
        "live",
        "--max-retries",
        "1",
        "-q",
    ];
    let mut child = s
        .batch_command()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both live requests sent", HANG, || {
        let sent = slow.requests() >= 2;
        assert!(
            sent || child.try_wait().unwrap().is_none(),
            "ended before going live"
        );
        sent
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(s.state_file()).unwrap()).unwrap();
    assert_eq!(
        state["spent"].as_object().map(|s| s.len()),
        Some(2),
        "{state}"
    );

    let sim = Sim::plain();
    let result = run_batch(&sim, &s.input, &s.output, &args, &[]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    assert!(!s.state_file().exists());
    let records = records_by_id(&s.output);
    assert_eq!(records.len(), 3);
    assert_eq!(records["b"]["status"], "ok");
    assert_eq!(records["c"]["status"], "error");
    for (id, prompt) in [
        ("b", r#"{"label": "neg", "score": 0.1} #sim:prose=1"#),
        ("c", r#"{"label": "meh", "score": 1}"#),
    ] {
        let record = &records[id];
        let attempts = record["attempts"].as_u64().unwrap();
        assert!(attempts >= 2, "{record}");
        let one = common::sim_prompt_tokens(&[prompt]);
        assert_eq!(record["prompt_tokens"], attempts * one, "{record}");
    }
    // Every answer paid for — each batch line, each live answer, on either server — is on a
    // record (the two live requests the kill cut off were never answered).
    let paid = |sim: &Sim| -> u64 {
        let lines: u64 = batch_stats(sim)["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["total"].as_u64().unwrap())
            .sum();
        lines + sim.stats()["completions"].as_u64().unwrap()
    };
    let on_records: u64 = records
        .values()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(on_records, paid(slow) + paid(&sim), "{records:?}");
    // The summary's tokens are this run's: the records' less a's (written before the kill)
    // and less b's and c's first answers, paid then too, which it names apart.
    let per_answer = |id: &str| {
        let r = &records[id];
        r["total_tokens"].as_u64().unwrap() / r["attempts"].as_u64().unwrap()
    };
    let all: u64 = records
        .values()
        .map(|r| r["total_tokens"].as_u64().unwrap())
        .sum();
    let earlier = per_answer("b") + per_answer("c");
    let (_, _, total, _, _) = summary_figures(&result.stderr);
    assert_eq!(total, all - per_answer("a") - earlier, "{}", result.stderr);
    assert!(
        result.stderr.contains(&format!(
            "and {earlier} tokens paid by earlier runs: answers that failed --json-schema)"
        )),
        "{}",
        result.stderr
    );
}

/// `--batch-max-attempts`: a row meeting a 503 in every batch gets its error record after that
/// many batches.
#[test]
fn batch_max_attempts_bounds_the_batches_a_row_goes_through() {
    let s = Scenario::new().rows_with(4, |i| if i == 2 { " #sim:status=503" } else { "" });
    let result = s.run_batch(&["--batch-max-attempts", "5"]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    assert_eq!(s.batch_count("batches_created"), 5);
    let records = read_jsonl(&s.output);
    let busy = records.iter().find(|r| r["id"] == "r2").unwrap();
    assert_eq!(busy["attempts"], 5);
    assert!(
        busy["error"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 5 batches: HTTP 503"),
        "{busy}"
    );
}
