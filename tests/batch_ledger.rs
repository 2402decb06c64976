//! `--via batch` never buys a row twice and never drops a paid answer: the real binary against
//! the simulator's Batch API over loopback, on the paths a user meets — a live run over running
//! batches, an input edited while batches run, `--max-cost`, another `--model` list, a download
//! that is a 200 with the wrong body, contradicting output and error files, a create whose
//! answer was lost on a server that cannot list batches. Each counts what the server received
//! per row and what the output holds.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::batch::{batch_stats, count, rows, run_batch, schema_files, state_file};
use common::{assert_no_key, read_jsonl, run, run_args, Sim, Workdir};
use promptbatch::SimOptions;
use serde_json::Value;

/// Lines submitted in all batches (the sum of their sizes).
fn lines_submitted(sim: &Sim) -> u64 {
    batch_stats(sim)["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .sum()
}

/// The records by id, asserting each id has exactly one and each ok record holds its own
/// prompt's answer.
fn records_by_id(output: &Path) -> HashMap<String, Value> {
    let mut by_id = HashMap::new();
    for record in read_jsonl(output) {
        let id = record["id"].as_str().unwrap().to_string();
        if record["status"] == "ok" {
            let prompt = record["prompt"].as_str().unwrap();
            assert_eq!(
                record["completion"].as_str().unwrap(),
                format!("echo: {prompt}"),
                "{record}"
            );
        }
        assert!(by_id.insert(id.clone(), record).is_none(), "{id} twice");
    }
    by_id
}

/// The records by id (any content).
fn records_by_id_any(output: &Path) -> HashMap<String, Value> {
    read_jsonl(output)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

/// `promptbatch report OUTPUT --json`.
fn report_json(output: &Path) -> Value {
    let result = run_args(&["report", output.to_str().unwrap(), "--json"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    serde_json::from_str(&result.stdout).unwrap()
}

/// A batch simulator whose batches take `secs` to finish.
fn slow_batches(secs: u64) -> Sim {
    Sim::start(SimOptions {
        batch_time: std::time::Duration::from_secs(secs),
        ..SimOptions::default()
    })
}

#[test]
fn a_live_run_over_running_batches_is_refused_and_the_batch_run_collects_them() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(30, |_| ""));
    let output = work.path("out.jsonl");
    let detached = run_batch(&sim, &input, &output, &["--detach"], &[]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);

    let report = report_json(&output);
    assert_eq!(report["beside"]["batches_running"], 1, "{report}");
    assert_eq!(report["beside"]["rows_in_batches"], 30, "{report}");

    // The same command without --via batch: nothing sent, nothing written, told what to do.
    let live = run(&sim, &input, &output, &[]);
    assert_eq!(live.code, 1, "{}", live.stderr);
    assert!(
        live.stderr
            .contains("a live run would buy those rows a second time")
            && live.stderr.contains("--via batch"),
        "{}",
        live.stderr
    );
    assert_eq!(sim.requests(), 0, "no live request");
    assert_eq!(std::fs::metadata(&output).map_or(0, |m| m.len()), 0);
    let fresh = run(&sim, &input, &output, &["--fresh"]);
    assert_eq!(fresh.code, 1, "--fresh is refused too: {}", fresh.stderr);
    assert_eq!(sim.requests(), 0);

    let collected = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    assert_eq!(records_by_id(&output).len(), 30);
    assert_eq!(lines_submitted(&sim), 30, "each row submitted once");
    assert!(!state_file(&output).exists());
    // Every batch collected: a live run may go now (and finds nothing to send).
    let live = run(&sim, &input, &output, &[]);
    assert_eq!(live.code, 0, "{}", live.stderr);
    assert_eq!(sim.requests(), 0);
    assert_no_key(&[&detached.stderr, &live.stderr, &collected.stderr]);
}

#[test]
fn rows_inserted_and_deleted_while_batches_run_are_matched_by_id_and_request() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(20, |_| ""));
    let output = work.path("out.jsonl");
    let args = ["--batch-max-requests", "8"];
    let detached = run_batch(&sim, &input, &output, &["--detach", args[0], args[1]], &[]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    assert_eq!(lines_submitted(&sim), 20);

    // A new row at the top, row r7 deleted.
    let edited: String =
        std::iter::once("{\"id\": \"r0\", \"prompt\": \"a new row\"}\n".to_string())
            .chain(
                rows(20, |_| "")
                    .lines()
                    .filter(|l| !l.contains("\"r7\""))
                    .map(|l| format!("{l}\n")),
            )
            .collect();
    std::fs::write(&input, edited).unwrap();
    let collected = run_batch(&sim, &input, &output, &args, &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    let records = records_by_id(&output);
    assert_eq!(records.len(), 20, "r0 and r1..r20 but r7");
    assert!(!records.contains_key("r7"));
    assert!(records.values().all(|r| r["status"] == "ok"));
    assert_eq!(lines_submitted(&sim), 21, "only the new row was bought");
    // The deleted row's paid answer is kept beside the output and said by row.
    let kept = read_jsonl(&work.path("out.jsonl.unmatched.jsonl"));
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0]["custom_id"], "r7");
    assert_eq!(
        kept[0]["line"]["response"]["body"]["choices"][0]["message"]["content"],
        "echo: prompt 7"
    );
    assert!(collected.stderr.contains("r7"), "{}", collected.stderr);
}

/// Rows with the same request, each bought (`--no-dedup`: the claims by request are what is
/// tested; `tests/dedup.rs` has the deduplicated runs).
#[test]
fn anonymous_rows_shifted_by_an_insert_keep_their_answers() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let text: String = (1..=12)
        .map(|i| format!("{{\"prompt\": \"question {}\"}}\n", i % 5))
        .collect();
    let input = work.write("in.jsonl", &text);
    let output = work.path("out.jsonl");
    let detached = run_batch(&sim, &input, &output, &["--detach", "--no-dedup"], &[]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    std::fs::write(&input, format!("{{\"prompt\": \"inserted\"}}\n{text}")).unwrap();
    let collected = run_batch(&sim, &input, &output, &["--no-dedup"], &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    let records = records_by_id(&output);
    assert_eq!(records.len(), 13);
    assert_eq!(
        lines_submitted(&sim),
        13,
        "only the inserted row was bought"
    );
    assert!(!work.path("out.jsonl.unmatched.jsonl").exists());
}

#[test]
fn max_cost_collects_the_batches_in_flight_instead_of_stopping_at_their_reservation() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(100, |_| ""));
    let output = work.path("out.jsonl");
    // Worst case per row at batch prices: 1,000 output tokens × $7/1M = $0.007 (+ the prompt):
    // four batches of 10 rows fit in a cap of $0.30 at once. The re-run finds them in flight,
    // with the rest to submit: it collects them, then submits more.
    let args = ["--max-tokens", "1000", "--batch-max-requests", "10"];
    let cap = ["--max-cost", "0.3"];
    let detached = run_batch(
        &sim,
        &input,
        &output,
        &[&args[..], &cap, &["--detach"]].concat(),
        &[],
    );
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    assert_eq!(lines_submitted(&sim), 40, "{}", detached.stderr);

    let capped = run_batch(&sim, &input, &output, &[&args[..], &cap].concat(), &[]);
    assert_eq!(capped.code, 0, "{}", capped.stderr);
    assert!(
        capped.stderr.contains("they are collected first"),
        "{}",
        capped.stderr
    );
    let records = records_by_id(&output);
    assert_eq!(records.len(), 100);
    let spent: f64 = records
        .values()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(spent <= 0.3, "{spent}");
    assert_eq!(lines_submitted(&sim), 100, "no row bought twice");
    assert!(!state_file(&output).exists());

    // In one run, a cap that holds one batch's worst case at a time: each is collected before
    // the next goes, and every row is done.
    let output = work.path("out2.jsonl");
    let serial = run_batch(
        &sim,
        &input,
        &output,
        &[&args[..], &["--max-cost", "0.09"]].concat(),
        &[],
    );
    assert_eq!(serial.code, 0, "{}", serial.stderr);
    assert_eq!(records_by_id(&output).len(), 100);
    assert_eq!(lines_submitted(&sim), 200);
}

#[test]
fn another_model_list_of_the_same_length_is_refused_while_batches_run() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(10, |_| ""));
    let output = work.path("out.jsonl");
    let models = ["--model", "gpt-5.2,gemini-3.1-pro-preview"];
    let detached = run_batch(
        &sim,
        &input,
        &output,
        &[&models[..], &["--detach"]].concat(),
        &[],
    );
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let state_before = std::fs::read(state_file(&output)).unwrap();
    let created = count(&batch_stats(&sim), "batches_created");

    let other = run_batch(&sim, &input, &output, &["--model", "gpt-5.2,gpt-4o"], &[]);
    assert_eq!(other.code, 1, "{}", other.stderr);
    assert!(
        other
            .stderr
            .contains("--model gpt-5.2,gemini-3.1-pro-preview")
            && other.stderr.contains("gpt-5.2,gpt-4o"),
        "{}",
        other.stderr
    );
    assert_eq!(std::fs::read(state_file(&output)).unwrap(), state_before);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), created);

    let collected = run_batch(&sim, &input, &output, &models, &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    assert_eq!(read_jsonl(&output).len(), 20);
    assert_eq!(lines_submitted(&sim), 20);
}

#[test]
fn a_download_that_is_an_html_page_is_downloaded_again_never_resubmitted() {
    let sim = Sim::start(SimOptions {
        batch_bad_downloads: 2,
        ..SimOptions::default()
    });
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(20, |_| ""));
    let output = work.path("out.jsonl");
    let result = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert!(
        result.stderr.contains("downloading them again"),
        "{}",
        result.stderr
    );
    assert_eq!(records_by_id(&output).len(), 20);
    assert_eq!(lines_submitted(&sim), 20, "never resubmitted");
    assert_eq!(count(&batch_stats(&sim), "downloads"), 3);

    // A server whose file stays short: the run stops, keeps the batch, buys nothing again.
    let sim = Sim::start(SimOptions {
        batch_bad_downloads: 4,
        ..SimOptions::default()
    });
    let output = work.path("out2.jsonl");
    let result = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(result.code, 1, "{}", result.stderr);
    assert!(
        result.stderr.contains("not submitted again"),
        "{}",
        result.stderr
    );
    assert_eq!(lines_submitted(&sim), 20);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_file(&output)).unwrap()).unwrap();
    assert_eq!(state["batches"].as_array().unwrap().len(), 1);
    // The user's way out, named by the message: collect it as it is; its rows go again.
    let id = state["batches"][0]["batch_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        result
            .stderr
            .contains(&format!("--batch-accept-short {id}")),
        "{}",
        result.stderr
    );
    let accepted = run_batch(&sim, &input, &output, &["--batch-accept-short", &id], &[]);
    assert_eq!(accepted.code, 0, "{}", accepted.stderr);
    assert_eq!(records_by_id(&output).len(), 20);
    assert_eq!(lines_submitted(&sim), 40, "sent again by the user's choice");
}

#[test]
fn contradicting_batch_files_never_drop_a_paid_answer() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write(
        "in.jsonl",
        &rows(12, |i| match i {
            3 | 5 => " #sim:batch-twice",
            8 => " #sim:batch-also-error",
            10 => " #sim:batch-foreign",
            _ => "",
        }),
    );
    let output = work.path("out.jsonl");
    let result = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let records = records_by_id(&output);
    assert_eq!(records.len(), 12);
    // The row's first answer is its record; the answer beats the error line.
    assert!(records.values().all(|r| r["status"] == "ok"), "{records:?}");
    assert_eq!(lines_submitted(&sim), 12, "nothing bought again");
    let (kept, errors): (Vec<Value>, Vec<Value>) =
        read_jsonl(&work.path("out.jsonl.unmatched.jsonl"))
            .into_iter()
            .partition(|k| k["paid"] == true);
    let mut ids: Vec<&str> = kept
        .iter()
        .map(|k| k["custom_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["r10-not-in-this-batch", "r3", "r5"]);
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["custom_id"], "r8");
    assert_eq!(errors[0]["line"]["response"]["status_code"], 500);
    assert!(kept.iter().all(|k| k["cost_usd"].as_f64().unwrap() > 0.0));
    // `report` names them beside the records' cost.
    let report = report_json(&output);
    assert_eq!(report["beside"]["unmatched_answers"], 3, "{report}");
    let kept_cost: f64 = kept.iter().map(|k| k["cost_usd"].as_f64().unwrap()).sum();
    let reported = report["beside"]["unmatched_usd"].as_f64().unwrap();
    assert!((reported - kept_cost).abs() < 1e-9, "{report}");
    for id in ["r3", "r5", "r8", "r10-not-in-this-batch"] {
        assert!(result.stderr.contains(id), "{id}: {}", result.stderr);
    }
}

#[test]
fn a_create_without_an_answer_on_a_server_without_a_list_asks_then_collects() {
    let sim = Sim::start(SimOptions {
        batch_drop_creates: 1,
        batch_no_list: true,
        ..SimOptions::default()
    });
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(10, |_| ""));
    let output = work.path("out.jsonl");
    let stopped = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(stopped.code, 1, "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("--batch-of-file") && !stopped.stderr.contains("--via live"),
        "{}",
        stopped.stderr
    );
    let stats = batch_stats(&sim);
    assert_eq!(count(&stats, "batches_created"), 1);
    let batch = &stats["batches"][0];
    let (file, id) = (
        batch["input_file_id"].as_str().unwrap(),
        batch["id"].as_str().unwrap(),
    );
    assert!(stopped.stderr.contains(file), "{}", stopped.stderr);

    // Asked again without the answer: the same question, nothing created.
    let again = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), 1);

    let told = format!("{file}={id}");
    let collected = run_batch(&sim, &input, &output, &["--batch-of-file", &told], &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    assert_eq!(records_by_id(&output).len(), 10);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), 1);
    assert_no_key(&[&stopped.stderr, &collected.stderr]);
}

#[test]
fn killed_between_upload_and_create_on_a_server_without_a_list_creates_the_batch() {
    let sim = Sim::start(SimOptions {
        batch_no_list: true,
        ..SimOptions::default()
    });
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(10, |_| ""));
    let output = work.path("out.jsonl");
    let killed = run_batch(
        &sim,
        &input,
        &output,
        &[],
        &[("PROMPTBATCH_TEST_ABORT_AT", "after-upload")],
    );
    assert_ne!(killed.code, 0);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), 0);
    // The create was never sent: no question to ask.
    let resumed = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), 1);
    assert_eq!(records_by_id(&output).len(), 10);
}

#[test]
fn the_collecting_run_reports_the_cost_of_what_it_collected() {
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(25, |_| ""));
    let output = work.path("out.jsonl");
    let detached = run_batch(&sim, &input, &output, &["--detach"], &[]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let collected = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(collected.code, 0, "{}", collected.stderr);
    let spent: f64 = read_jsonl(&output)
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    let line = collected
        .stderr
        .lines()
        .find(|l| l.starts_with("cost this run"))
        .unwrap_or_else(|| panic!("{}", collected.stderr))
        .to_string();
    assert!(
        line.contains(&promptbatch::internals::human::format_usd(spent)),
        "{line} vs {spent}"
    );
    let again = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let line = again
        .stderr
        .lines()
        .find(|l| l.starts_with("cost this run"))
        .unwrap_or("cost this run: $0")
        .to_string();
    assert!(
        !line.contains(&promptbatch::internals::human::format_usd(spent)),
        "{line}"
    );
}

#[test]
fn a_live_run_after_a_batch_run_stopped_before_resending_gives_its_records_the_paid_answers() {
    // Batch 1 answers b in prose and c with a label the schema refuses: both were paid and go
    // into a new batch, which the run is killed right after uploading (no create sent). A
    // live run may then go (no batch can exist); b's and c's live records hold the batch
    // answers' cost too, and the state is gone once every row has a record.
    let sim = Sim::plain();
    let work = Workdir::new();
    let (input, output, schema_arg) = schema_files(&work, "out.jsonl");
    let args = ["--json-schema", schema_arg.as_str(), "--max-retries", "1"];
    let detached = run_batch(
        &sim,
        &input,
        &output,
        &[&args[..], &["--detach"]].concat(),
        &[],
    );
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    let killed = run_batch(
        &sim,
        &input,
        &output,
        &args,
        &[("PROMPTBATCH_TEST_ABORT_AT", "after-upload")],
    );
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(state_file(&output)).unwrap()).unwrap();
    assert_eq!(state["spent"].as_object().unwrap().len(), 2, "{state}");
    assert_eq!(state["batches"][0]["status"], "uploaded", "{state}");
    assert_eq!(read_jsonl(&output).len(), 1, "a has its record");

    let live = run(&sim, &input, &output, &args);
    assert_eq!(live.code, 3, "c never matches: {}", live.stderr);
    assert_eq!(count(&batch_stats(&sim), "batches_created"), 1);
    let records = records_by_id_any(&output);
    let b = &records["b"];
    assert_eq!(b["status"], "ok");
    assert_eq!(b["attempts"], 2, "the batch answer and the live one: {b}");
    assert!(!state_file(&output).exists(), "{}", live.stderr);
}

#[test]
fn killed_while_collecting_into_an_edited_input_the_resume_writes_the_rest_and_keeps_nothing_twice()
{
    let sim = slow_batches(1);
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(20, |_| ""));
    let output = work.path("out.jsonl");
    let detached = run_batch(&sim, &input, &output, &["--detach"], &[]);
    assert_eq!(detached.code, 0, "{}", detached.stderr);
    // A new row at the top: every row is one place further down than when it was submitted.
    let edited = format!(
        "{{\"id\": \"r0\", \"prompt\": \"a new row\"}}\n{}",
        rows(20, |_| "")
    );
    std::fs::write(&input, edited).unwrap();
    let killed = run_batch(
        &sim,
        &input,
        &output,
        &[],
        &[("PROMPTBATCH_TEST_ABORT_AT", "during-download")],
    );
    assert_ne!(killed.code, 0, "{}", killed.stderr);
    let written = read_jsonl(&output).len();
    assert!((1..20).contains(&written), "{written}");

    let resumed = run_batch(&sim, &input, &output, &[], &[]);
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(records_by_id(&output).len(), 21);
    assert_eq!(lines_submitted(&sim), 21, "only the new row was bought");
    // The answers the killed run had written are done, not unmatched.
    assert!(
        !work.path("out.jsonl.unmatched.jsonl").exists(),
        "{}",
        resumed.stderr
    );
}
