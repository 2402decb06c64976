//! Paying once for each distinct request: rows repeating a request are sent once and every row
//! still gets exactly one record (`duplicate_of`, cost 0); `--reuse` takes earlier outputs' ok
//! answers (`reused_from`); both keep resume (kill -9), `--ordered`, `--shard`, `--model a,b`,
//! `--via batch` and `--max-cost` whole. The real binary against the simulator over loopback.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;

use common::batch::run_batch;
use common::{kill_9_after_lines, read_jsonl, run, Scenario, Sim};
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::Value;

/// `n` JSONL rows `r1..rn` whose prompts take `distinct` values (`question {i % distinct}`).
fn repeated_rows(n: usize, distinct: usize) -> String {
    (1..=n)
        .map(|i| {
            format!(
                "{{\"id\": \"r{i}\", \"prompt\": \"question {}\"}}\n",
                i % distinct
            )
        })
        .collect()
}

/// The lines of every batch the simulator was sent (its requests bought through the Batch API).
fn batch_lines(s: &Scenario) -> u64 {
    s.batch_stats()["batches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["total"].as_u64().unwrap())
        .sum()
}

/// A simulator standing in for a real API whose answers take `latency` (a kill lands mid-run).
fn answering_in(latency: &str) -> Sim {
    Sim::start(SimOptions {
        latency: LatencySpec::parse(latency).unwrap(),
        ..SimOptions::default()
    })
}

fn by_id(records: &[Value]) -> HashMap<String, &Value> {
    records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect()
}

/// Every row `r1..rn` has exactly one record (one per model); each record marked
/// `duplicate_of` copies the answer of a paid record of the same request, at cost 0.
/// Returns the number of such records.
fn assert_whole_and_duplicates_consistent(output: &Path, n: usize, models: usize) -> usize {
    let records = read_jsonl(output);
    assert_eq!(records.len(), n * models, "one record per row and model");
    let keys: HashSet<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().into(),
                r["model"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(keys.len(), n * models, "no (row, model) twice");
    let paid: HashMap<(String, String), &Value> = records
        .iter()
        .filter(|r| r.get("duplicate_of").is_none())
        .map(|r| {
            (
                (
                    r["id"].as_str().unwrap().into(),
                    r["model"].as_str().unwrap().into(),
                ),
                r,
            )
        })
        .collect();
    let mut duplicates = 0;
    for record in records.iter().filter(|r| r.get("duplicate_of").is_some()) {
        duplicates += 1;
        let first = record["duplicate_of"].as_str().unwrap().to_string();
        let model = record["model"].as_str().unwrap().to_string();
        let source = paid
            .get(&(first.clone(), model))
            .unwrap_or_else(|| panic!("{record}: duplicate_of {first} has no paid record"));
        assert_eq!(record["prompt"], source["prompt"], "{record}");
        assert_eq!(record["fingerprint"], source["fingerprint"], "{record}");
        assert_eq!(record["completion"], source["completion"], "{record}");
        assert_eq!(record["status"], source["status"], "{record}");
        assert_eq!(record["cost_usd"].as_f64(), Some(0.0), "{record}");
        assert_eq!(record["attempts"], 0, "{record}");
        assert_eq!(record["latency_ms"], 0, "{record}");
        assert_eq!(
            record["completion_tokens"], source["completion_tokens"],
            "the answer's"
        );
        assert_eq!(record["saved_usd"], source["cost_usd"], "{record}");
    }
    duplicates
}

#[test]
fn each_distinct_request_is_sent_once_and_every_row_gets_its_record() {
    let s = Scenario::new().input(&repeated_rows(300, 70));
    let r = run(s.sim(), &s.input, &s.output, &["-c", "8"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 70, "one request per distinct prompt");
    assert_eq!(
        assert_whole_and_duplicates_consistent(&s.output, 300, 1),
        230
    );
    assert!(
        r.stderr.contains("230 rows repeat a request"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("not sent: 230 repeated"), "{}", r.stderr);
    // The first row of each request is the one that paid: `duplicate_of` names an earlier row.
    let records = read_jsonl(&s.output);
    let rows = by_id(&records);
    for record in records.iter().filter(|r| r.get("duplicate_of").is_some()) {
        let first = rows[record["duplicate_of"].as_str().unwrap()];
        assert!(first["row"].as_u64() < record["row"].as_u64(), "{record}");
    }
}

#[test]
fn no_dedup_sends_every_row() {
    let s = Scenario::new().input(&repeated_rows(60, 10));
    let r = run(s.sim(), &s.input, &s.output, &["--no-dedup"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 60);
    let records = read_jsonl(&s.output);
    assert_eq!(records.len(), 60);
    assert!(records.iter().all(|r| r.get("duplicate_of").is_none()));
}

#[test]
fn a_first_rows_error_is_its_duplicates_error_and_a_rerun_sends_it_once_more() {
    let mut input = repeated_rows(20, 5);
    for i in 21..=24 {
        input.push_str(&format!(
            "{{\"id\": \"r{i}\", \"prompt\": \"broken #sim:status=400\"}}\n"
        ));
    }
    let s = Scenario::new().input(&input);
    let r = run(s.sim(), &s.input, &s.output, &[]);
    assert!(r.stderr.contains("done with errors"), "{}", r.stderr);
    assert_eq!(
        s.sim().requests(),
        6,
        "5 prompts and the broken one, once each"
    );
    assert_whole_and_duplicates_consistent(&s.output, 24, 1);
    let records = read_jsonl(&s.output);
    let errors: Vec<&Value> = records.iter().filter(|r| r["status"] == "error").collect();
    assert_eq!(errors.len(), 4, "each broken row has its error record");
    assert_eq!(
        errors
            .iter()
            .filter(|r| r.get("duplicate_of").is_some())
            .count(),
        3
    );
    // A re-run sends error rows again: the broken request once, not four times.
    let r = run(s.sim(), &s.input, &s.output, &[]);
    assert!(r.stderr.contains("done with errors"), "{}", r.stderr);
    assert_eq!(s.sim().requests(), 7);
    assert_whole_and_duplicates_consistent(&s.output, 24, 1);
}

#[test]
fn kill_9_then_resume_pays_each_request_once_and_loses_no_row() {
    let sim = answering_in("15ms");
    let s = Scenario::new().input(&repeated_rows(400, 120));
    let args = ["-c", "4"];
    let left = kill_9_after_lines(&sim, &s.input, &s.output, &args, 40);
    assert!(left < 400);
    let r = run(&sim, &s.input, &s.output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_whole_and_duplicates_consistent(&s.output, 400, 1);
    // At most the rows in flight at the kill (-c 4) were paid without a record.
    let requests = sim.requests();
    assert!((120..=124).contains(&requests), "{requests} requests");
    // Run again: nothing is sent, nothing is written.
    let r = run(&sim, &s.input, &s.output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.requests(), requests);
    assert_eq!(read_jsonl(&s.output).len(), 400);
}

#[test]
fn ordered_with_two_models_keeps_input_order_and_one_record_per_pair() {
    let s = Scenario::new().input(&repeated_rows(50, 12));
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--model", "m-a,m-b", "--ordered", "-c", "6"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 24, "12 prompts × 2 models");
    assert_eq!(assert_whole_and_duplicates_consistent(&s.output, 50, 2), 76);
    let order: Vec<(u64, String)> = read_jsonl(&s.output)
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["model"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(
        order, sorted,
        "--ordered: input order, then the models' order"
    );
}

#[test]
fn a_shard_dedups_its_own_rows_and_the_merge_is_whole() {
    let s = Scenario::new().input(&repeated_rows(120, 30));
    let mut total = 0;
    for k in 0..2 {
        let out = s.work.path(&format!("shard{k}.jsonl"));
        let r = run(s.sim(), &s.input, &out, &["--shard", &format!("{k}/2")]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let records = read_jsonl(&out);
        let distinct: HashSet<&str> = records
            .iter()
            .map(|r| r["prompt"].as_str().unwrap())
            .collect();
        total += distinct.len() as u64;
        assert_eq!(
            s.sim().requests(),
            total,
            "shard {k}: one request per distinct prompt"
        );
    }
    let merged = s.work.path("all.jsonl");
    let r = common::run_args(&[
        "merge",
        s.work.path("shard0.jsonl").to_str().unwrap(),
        s.work.path("shard1.jsonl").to_str().unwrap(),
        "-o",
        merged.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_whole_and_duplicates_consistent(&merged, 120, 1);
}

#[test]
fn max_cost_stops_and_a_resume_with_more_budget_pays_each_request_once() {
    let s = Scenario::new().input(&repeated_rows(200, 50));
    let cap = ["--max-cost", "0.0006", "--max-tokens", "16", "-c", "2"];
    let r = run(s.sim(), &s.input, &s.output, &cap);
    assert!(
        r.stderr.contains("budget cap"),
        "the cap stops the run: {}",
        r.stderr
    );
    let first = s.sim().requests();
    assert!((1..50).contains(&first), "{first} requests under the cap");
    let records = read_jsonl(&s.output);
    let spent: f64 = records.iter().filter_map(|r| r["cost_usd"].as_f64()).sum();
    assert!(spent <= 0.0006 + 1e-12, "spent {spent}");
    assert!(
        records.len() as u64 > first,
        "the duplicates of the rows answered before the cap have their records"
    );
    let more = ["--max-cost", "1", "--max-tokens", "16"];
    let r = run(s.sim(), &s.input, &s.output, &more);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        s.sim().requests(),
        50,
        "each prompt paid once over both runs"
    );
    assert_whole_and_duplicates_consistent(&s.output, 200, 1);
}

#[test]
fn via_batch_submits_each_request_once_and_records_every_row() {
    let s = Scenario::new().input(&repeated_rows(90, 25));
    let r = run_batch(s.sim(), &s.input, &s.output, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(batch_lines(&s), 25, "one batch line per distinct prompt");
    assert_eq!(s.sim().requests(), 0, "nothing sent live");
    let records = read_jsonl(&s.output);
    assert!(
        records.iter().all(|r| r["status"] == "ok"),
        "every row answered"
    );
    assert_eq!(assert_whole_and_duplicates_consistent(&s.output, 90, 1), 65);
}

#[test]
fn reuse_takes_ok_answers_of_identical_requests_from_earlier_outputs() {
    let s = Scenario::new().input(&repeated_rows(40, 40));
    let earlier = s.work.path("earlier.csv");
    // The earlier output: rows 1..40, of which r7 failed.
    let mut first = repeated_rows(40, 40);
    first = first.replace("\"question 7\"", "\"question 7 #sim:status=400\"");
    let first_input = s.work.write("first.jsonl", &first);
    let r = run(s.sim(), &first_input, &earlier, &[]);
    assert!(r.stderr.contains("done with errors"), "{}", r.stderr);
    assert_eq!(s.sim().requests(), 40);
    // This run: the same 40 prompts (question 7 without the directive: not the earlier
    // request) plus 10 new ones, into another output.
    let mut input = repeated_rows(40, 40);
    for i in 41..=50 {
        input.push_str(&format!("{{\"id\": \"n{i}\", \"prompt\": \"new {i}\"}}\n"));
    }
    std::fs::write(&s.input, input).unwrap();
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--reuse", earlier.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        s.sim().requests(),
        40 + 11,
        "question 7 and the 10 new prompts"
    );
    let records = read_jsonl(&s.output);
    assert_eq!(records.len(), 50);
    let reused: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("reused_from").is_some())
        .collect();
    assert_eq!(reused.len(), 39);
    let earlier_rows: HashMap<String, Vec<String>> = {
        let text = std::fs::read_to_string(&earlier).unwrap();
        let mut reader = csv::Reader::from_reader(text.as_bytes());
        let headers = reader.headers().unwrap().clone();
        reader
            .records()
            .map(|r| {
                let r = r.unwrap();
                let field = |n: &str| r[headers.iter().position(|h| h == n).unwrap()].to_string();
                (
                    field("prompt"),
                    vec![field("completion"), field("cost_usd")],
                )
            })
            .collect()
    };
    for record in &reused {
        assert_eq!(record["reused_from"], earlier.to_str().unwrap());
        assert_eq!(record["cost_usd"].as_f64(), Some(0.0));
        let source = &earlier_rows[record["prompt"].as_str().unwrap()];
        assert_eq!(record["completion"].as_str().unwrap(), source[0]);
        assert_eq!(record["saved_usd"].as_f64(), source[1].parse::<f64>().ok());
    }
    assert!(
        r.stderr.contains("39 answered from earlier outputs"),
        "{}",
        r.stderr
    );
}

#[test]
fn simulated_answers_are_never_reused_by_a_real_run() {
    let s = Scenario::new().input(&repeated_rows(30, 30));
    let simulated = s.work.path("dry.jsonl");
    let r = common::run_args(&[
        "run",
        s.input.to_str().unwrap(),
        "-o",
        simulated.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--reuse", simulated.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 30, "every row sent to the real API");
    let records = read_jsonl(&s.output);
    assert!(records
        .iter()
        .all(|r| r.get("reused_from").is_none() && r["simulated"] == false));
    // A dry run may reuse them.
    let again = s.work.path("dry2.jsonl");
    let r = common::run_args(&[
        "run",
        s.input.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
        "--dry-run",
        "--reuse",
        simulated.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        read_jsonl(&again)
            .iter()
            .filter(|r| r.get("reused_from").is_some())
            .count(),
        30
    );
}

#[test]
fn reuse_of_a_missing_output_is_refused_before_anything_is_sent() {
    let s = Scenario::new().input(&repeated_rows(5, 5));
    let missing = s.work.path("nope.jsonl");
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--reuse", missing.to_str().unwrap()],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains("--reuse") && r.stderr.contains("nope.jsonl"),
        "{}",
        r.stderr
    );
    assert_eq!(s.sim().requests(), 0);
    assert!(!s.output.exists());
}

#[test]
fn a_csv_output_has_the_marker_columns_and_resumes() {
    let s = Scenario::new()
        .input(&repeated_rows(30, 10))
        .output("out.csv");
    let r = run(s.sim(), &s.input, &s.output, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let text = std::fs::read_to_string(&s.output).unwrap();
    let header = text.lines().next().unwrap();
    assert!(
        header.ends_with(",duplicate_of,reused_from,saved_usd"),
        "{header}"
    );
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let duplicates = reader
        .deserialize::<HashMap<String, String>>()
        .filter(|r| !r.as_ref().unwrap()["duplicate_of"].is_empty())
        .count();
    assert_eq!(duplicates, 20);
    let r = run(s.sim(), &s.input, &s.output, &["--no-dedup"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 10, "nothing left to send");
}

#[test]
fn estimate_counts_rows_not_sent_and_report_splits_paid_deduplicated_and_reused() {
    let s = Scenario::new().input(&repeated_rows(100, 40));
    let input = s.input.to_str().unwrap();
    let estimate = |extra: &[&str]| -> Value {
        let mut args = vec!["estimate", input, "--expect-output", "50", "--json"];
        args.extend_from_slice(extra);
        let r = common::run_args(&args);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let plain = estimate(&["--no-dedup"]);
    let deduped = estimate(&[]);
    assert!(plain["not_sent"].is_null());
    assert_eq!(plain["request_rows"], 100);
    assert_eq!(deduped["rows"], 100);
    assert_eq!(deduped["request_rows"], 40);
    assert_eq!(deduped["not_sent"]["duplicate_rows"], 60);
    // The cost of what is sent plus what is not sent is the cost of sending every row.
    let sum = deduped["expected_cost_usd"].as_f64().unwrap()
        + deduped["not_sent"]["expected_cost_usd"].as_f64().unwrap();
    let all = plain["expected_cost_usd"].as_f64().unwrap();
    assert!((sum - all).abs() < 1e-9, "{sum} vs {all}");

    // An earlier output answering 25 of the 40 prompts.
    let earlier_input = s.work.write("earlier.jsonl", &repeated_rows(25, 25));
    let earlier = s.work.path("earlier.out.jsonl");
    let r = run(s.sim(), &earlier_input, &earlier, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let reusing = estimate(&["--reuse", earlier.to_str().unwrap()]);
    let reused = reusing["not_sent"]["reused_rows"].as_u64().unwrap();
    let duplicates = reusing["not_sent"]["duplicate_rows"].as_u64().unwrap();
    assert_eq!(
        reusing["request_rows"], 15,
        "40 prompts, 25 answered earlier"
    );
    assert_eq!(reused + duplicates, 85);

    // The run does what the estimate said, and the report splits the records.
    let before = s.sim().requests();
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--reuse", earlier.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests() - before, 15);
    let r = common::run_args(&["report", "--json", s.output.to_str().unwrap()]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    let answered = &report["answered"];
    assert_eq!(answered["sent"], 15);
    assert_eq!(answered["reused"].as_u64().unwrap(), reused);
    assert_eq!(answered["deduplicated"].as_u64().unwrap(), duplicates);
    let saved: f64 = read_jsonl(&s.output)
        .iter()
        .filter_map(|r| r["saved_usd"].as_f64())
        .sum();
    assert!((answered["saved_usd"].as_f64().unwrap() - saved).abs() < 1e-9);
    // The HTML page shows the same split.
    let page = s.work.path("report.html");
    let r = common::run_args(&[
        "report",
        s.output.to_str().unwrap(),
        "--html",
        page.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let html = std::fs::read_to_string(&page).unwrap();
    for (path, value) in [
        ("answered.reused", reused),
        ("answered.deduplicated", duplicates),
    ] {
        assert!(
            html.contains(&format!("data-json=\"{path}\">{value}<")),
            "{path} = {value} on the page"
        );
    }
    // The event log tells the plan.
    let log = std::fs::read_to_string(s.work.path("out.jsonl.events.jsonl")).unwrap();
    let plan: Value = log
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["event"] == "pay_once")
        .expect("a pay_once event");
    assert_eq!(plan["reused"].as_u64(), Some(reused));
    assert_eq!(plan["duplicates"].as_u64(), Some(duplicates));
}

#[test]
fn reuse_reads_parquet_outputs_with_or_without_their_checkpoint() {
    let s = Scenario::new().input(&repeated_rows(30, 30));
    // A Parquet output written by a run (its checkpoint beside it)…
    let with_checkpoint = s.work.path("earlier.parquet");
    let r = run(s.sim(), &s.input, &with_checkpoint, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // … and one exported from a JSONL output that is then removed.
    let jsonl = s.work.path("other.jsonl");
    let r = run(s.sim(), &s.input, &jsonl, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let exported = s.work.path("exported.parquet");
    let r = common::run_args(&[
        "export",
        jsonl.to_str().unwrap(),
        exported.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::remove_file(&jsonl).unwrap();
    assert_eq!(s.sim().requests(), 60);
    for (n, earlier) in [&with_checkpoint, &exported].into_iter().enumerate() {
        let output = s.work.path(&format!("again{n}.jsonl"));
        let r = run(
            s.sim(),
            &s.input,
            &output,
            &["--reuse", earlier.to_str().unwrap()],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            s.sim().requests(),
            60,
            "{}: nothing sent",
            earlier.display()
        );
        let records = read_jsonl(&output);
        assert_eq!(records.len(), 30);
        for record in &records {
            assert_eq!(record["reused_from"], earlier.to_str().unwrap());
            let prompt = record["prompt"].as_str().unwrap();
            assert_eq!(record["completion"], format!("echo: {prompt}"));
            assert!(record["saved_usd"].as_f64().unwrap() > 0.0);
        }
    }
    // Not an output: refused before anything is sent, naming what is missing.
    let not_output = s.work.path("plain.parquet");
    let ids: arrow_array::ArrayRef = std::sync::Arc::new(arrow_array::StringArray::from(vec!["a"]));
    let batch =
        arrow_array::RecordBatch::try_from_iter([("id", ids.clone()), ("prompt", ids)]).unwrap();
    let file = std::fs::File::create(&not_output).unwrap();
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let r = run(
        s.sim(),
        &s.input,
        &s.work.path("x.jsonl"),
        &["--reuse", not_output.to_str().unwrap()],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr.contains(
            "not a promptbatch output (no column fingerprint, model, status, completion)"
        ),
        "{}",
        r.stderr
    );
    assert_eq!(s.sim().requests(), 60);
}

#[test]
fn a_detached_batch_run_submits_each_request_once_and_the_collecting_run_copies_the_rest() {
    let s = Scenario::new().input(&repeated_rows(90, 25));
    let r = run_batch(s.sim(), &s.input, &s.output, &["--detach"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(batch_lines(&s), 25, "one batch line per distinct prompt");
    assert!(common::batch::state_file(&s.output).exists());
    // Meanwhile a row is inserted at the top with the request of a row in a batch (r1's).
    let input = format!(
        "{{\"id\": \"r0\", \"prompt\": \"question 1\"}}\n{}",
        repeated_rows(90, 25)
    );
    std::fs::write(&s.input, input).unwrap();
    // The collecting run: the batch's rows are their requests' first rows, whatever their
    // place; the others wait for them instead of going into new batches.
    let r = run_batch(s.sim(), &s.input, &s.output, &[], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(batch_lines(&s), 25, "nothing submitted twice: {}", r.stderr);
    assert_eq!(s.sim().requests(), 0);
    assert!(!common::batch::state_file(&s.output).exists());
    let ids: Vec<String> = (0..=90).map(|i| format!("r{i}")).collect();
    let records = read_jsonl(&s.output);
    let rows = by_id(&records);
    assert_eq!(records.len(), 91);
    assert!(ids.iter().all(|id| rows.contains_key(id)));
    assert_eq!(rows["r0"]["duplicate_of"], "r1", "r1 was in the batch");
    assert!(rows["r1"].get("duplicate_of").is_none());
    assert!(
        !s.work.path("out.jsonl.unmatched.jsonl").exists(),
        "no paid answer left over"
    );
}

#[test]
fn a_batch_run_killed_at_any_step_submits_each_request_once() {
    for point in ["after-create", "during-download"] {
        let s = Scenario::new().input(&repeated_rows(120, 30));
        let r = s.run_batch_aborted_at(point, &["--batch-max-requests", "10"]);
        assert_ne!(r.code, 0, "{point}: aborted");
        let r = s.run_batch(&["--batch-max-requests", "10"]);
        assert_eq!(r.code, 0, "{point}: {}", r.stderr);
        assert_eq!(
            batch_lines(&s),
            30,
            "{point}: one batch line per distinct prompt"
        );
        assert_eq!(
            assert_whole_and_duplicates_consistent(&s.output, 120, 1),
            90,
            "{point}"
        );
        assert!(!s.state_file().exists(), "{point}");
    }
}

#[test]
fn kill_9_with_reuse_two_models_ordered_and_a_budget_loses_nothing_and_pays_once() {
    let sim = answering_in("10ms");
    let s = Scenario::new().input(&repeated_rows(300, 100));
    // An earlier output answering the first 20 questions for gpt-5.2.
    let earlier_input = s.work.write("earlier.jsonl", &repeated_rows(20, 20));
    let earlier = s.work.path("earlier.out.jsonl");
    let r = run(
        &sim,
        &earlier_input,
        &earlier,
        &["--model", "gpt-5.2", "--max-tokens", "16"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let before = sim.requests();
    let reuse = earlier.to_str().unwrap();
    let args = [
        "--model",
        "gpt-5.2,gemini-3.1-pro-preview",
        "--ordered",
        "--max-cost",
        "10",
        "--max-tokens",
        "16",
        "--reuse",
        reuse,
        "-c",
        "4",
    ];
    let left = kill_9_after_lines(&sim, &s.input, &s.output, &args, 150);
    assert!(left < 600);
    let r = run(&sim, &s.input, &s.output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_whole_and_duplicates_consistent(&s.output, 300, 2);
    // 100 questions × 2 models, less the 20 gpt-5.2 answers reused, plus at most the 4 rows in
    // flight at the kill.
    let sent = sim.requests() - before;
    assert!((180..=184).contains(&sent), "{sent} requests");
    let records = read_jsonl(&s.output);
    let reused = records
        .iter()
        .filter(|r| r.get("reused_from").is_some())
        .count();
    assert_eq!(reused, 60, "3 rows × 20 questions for gpt-5.2");
    assert!(records
        .iter()
        .filter(|r| r.get("reused_from").is_some())
        .all(|r| r["model"] == "gpt-5.2"));
    // --ordered: input order, then the order of --model's list.
    let order: Vec<(u64, bool)> = records
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r["model"] != "gpt-5.2"))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "--ordered");
}

#[test]
fn a_shard_killed_and_resumed_pays_each_of_its_requests_once() {
    let sim = answering_in("15ms");
    let s = Scenario::new().input(&repeated_rows(400, 100));
    let args = ["--shard", "1/2", "-c", "4"];
    // What the shard holds: the same run, uninterrupted, into another output.
    let whole = s.work.path("whole.jsonl");
    let r = run(s.sim(), &s.input, &whole, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let expected: HashSet<String> = read_jsonl(&whole)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let distinct = s.sim().requests();
    kill_9_after_lines(&sim, &s.input, &s.output, &args, 30);
    let r = run(&sim, &s.input, &s.output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&s.output);
    let ids: HashSet<String> = records
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        records.len(),
        expected.len(),
        "one record per row of the shard"
    );
    assert_eq!(ids, expected);
    let sent = sim.requests();
    assert!(
        (distinct..=distinct + 4).contains(&sent),
        "{sent} requests for {distinct} distinct prompts"
    );
}

#[test]
fn fallback_live_after_an_expired_batch_pays_each_request_once() {
    let s = Scenario::with_sim(SimOptions {
        batch_expire: 1,
        ..SimOptions::default()
    })
    .input(&repeated_rows(60, 20));
    let r = s.run_batch(&["--fallback", "live"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let batch = batch_lines(&s);
    let live = s.sim().requests();
    assert_eq!(batch, 20, "one batch line per distinct prompt");
    assert_eq!(
        live,
        20 - 10,
        "the expired batch's unanswered half went live: {}",
        r.stderr
    );
    assert_eq!(assert_whole_and_duplicates_consistent(&s.output, 60, 1), 40);
}

#[test]
fn max_cost_with_an_unpriced_model_is_refused_before_any_record() {
    let s = Scenario::new().input(&repeated_rows(20, 5));
    let earlier = s.work.path("earlier.jsonl");
    let r = run(s.sim(), &s.input, &earlier, &["--model", "no-such-price"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("cost $0.00 when bought (+ 15 unpriced)"),
        "copies of unpriced answers are said apart: {}",
        r.stderr
    );
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &[
            "--model",
            "no-such-price",
            "--max-cost",
            "1",
            "--reuse",
            earlier.to_str().unwrap(),
        ],
    );
    assert_ne!(r.code, 0);
    assert!(
        r.stderr
            .contains("--max-cost cannot be enforced: model `no-such-price` has no price"),
        "{}",
        r.stderr
    );
    assert!(!s.output.exists(), "nothing written");
}

#[test]
fn an_output_saved_again_by_pandas_is_reused_and_reported() {
    let s = Scenario::new().input(&repeated_rows(30, 30));
    let earlier = s.work.path("earlier.csv");
    let r = run(s.sim(), &s.input, &earlier, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // As `pd.read_csv(...).to_csv(...)` writes it back: an unnamed index column first, and
    // booleans as `False`/`True`.
    let text = std::fs::read_to_string(&earlier).unwrap();
    let pandas: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let line = line
                .replace(",false,", ",False,")
                .replace(",true,", ",True,");
            match i {
                0 => format!(",{line}\n"),
                _ => format!("{},{line}\n", i - 1),
            }
        })
        .collect();
    assert!(
        pandas.contains(",False,"),
        "the rewrite changed the booleans"
    );
    let saved = s.work.write("pandas.csv", &pandas);
    let r = run(
        s.sim(),
        &s.input,
        &s.output,
        &["--reuse", saved.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(s.sim().requests(), 30, "nothing sent again");
    let reused = read_jsonl(&s.output)
        .iter()
        .filter(|r| r.get("reused_from").is_some())
        .count();
    assert_eq!(reused, 30);
    let r = common::run_args(&["report", "--json", saved.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (report["rows"].as_u64(), report["simulated"].as_u64()),
        (Some(30), Some(0))
    );
    let parquet = s.work.path("pandas.parquet");
    let r = common::run_args(&["export", saved.to_str().unwrap(), parquet.to_str().unwrap()]);
    assert_eq!(r.code, 0, "export reads its booleans too: {}", r.stderr);
}
