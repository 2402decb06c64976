//! Issue 23's paths, end to end on the real binary: a key given where a variable's name
//! belongs is never echoed; simulated answers are marked so wherever they come from; a bad line
//! in the middle of a file is found before the first request; records no row claims are kept.

mod common;

use common::{command, read_jsonl, run, run_args, Sim, Workdir};
use promptbatch::SimOptions;
use serde_json::Value;

/// `n` JSONL rows with ids `r1..rn`.
fn rows(n: usize) -> String {
    common::batch::rows(n, |_| "")
}

#[test]
fn a_key_passed_as_the_variable_name_is_never_printed() {
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(3));
    let output = work.path("out.jsonl");
    let secret = "sk-abc123secret";
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args(["--api-key-env", secret])
        .env_remove("EVOLINK_API_KEY")
        .env_remove("OPENAI_API_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("abc123secret"), "{stderr}");
    assert!(stderr.contains("--api-key-env takes the NAME"), "{stderr}");

    // The command printed to resume a run hides it too (a budget stop of a --dry-run).
    let out = command()
        .arg("run")
        .arg(&input)
        .arg("-o")
        .arg(&output)
        .args([&format!("--api-key-env={secret}"), "--dry-run"])
        .args(["--max-cost", "0.0000001", "--max-tokens", "100"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--api-key-env=[redacted]"), "{stderr}");
    assert!(!stderr.contains("abc123secret"), "{stderr}");
}

#[test]
fn answers_of_the_mock_server_are_recorded_simulated_and_bought_for_real_later() {
    // A simulator that says it is one, as `promptbatch mock-server` does.
    let mock = Sim::start_as(SimOptions::default());
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(6));
    let output = work.path("out.jsonl");
    let first = run(&mock, &input, &output, &["-q"]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 6);
    assert!(
        records.iter().all(|r| r["simulated"] == true),
        "{records:?}"
    );
    let report = run_args(&["report", output.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["simulated"], 6);
    assert_eq!(report["cost"]["total_usd"], 0.0, "nothing was spent");

    // The mock again: its answers count as done there.
    let again = run(&mock, &input, &output, &["-q"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stderr.contains("already complete"),
        "{}",
        again.stderr
    );
    assert_eq!(mock.requests(), 6);

    // A real API (the simulator without its mark): every row is bought for real.
    let real = Sim::plain();
    let bought = run(&real, &input, &output, &["-q"]);
    assert_eq!(bought.code, 0, "{}", bought.stderr);
    assert_eq!(real.requests(), 6);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r["simulated"] == false));

    // Batch answers of the mock are marked too.
    let output = work.path("batch.jsonl");
    let batch = run(
        &mock,
        &input,
        &output,
        &["-q", "--via", "batch", "--poll-every", "50ms"],
    );
    assert_eq!(batch.code, 0, "{}", batch.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 6);
    assert!(records.iter().all(|r| r["simulated"] == true));
}

#[test]
fn a_bad_record_deep_in_the_file_is_found_before_the_first_request() {
    let sim = Sim::plain();
    let work = Workdir::new();
    // A CSV as pandas writes it, with two broken records far down (an unclosed quote would
    // swallow the rest; these are a wrong field count and a bad UTF-8 byte).
    let mut text = String::from(",id,prompt\n");
    for i in 1..=1000 {
        match i {
            900 => text.push_str("899,r900,one,field,too,many\n"),
            950 => text.push_str("949,r950,\"caf\u{e9}\"\n"),
            _ => text.push_str(&format!("{},r{i},\"question {i}, please\"\n", i - 1)),
        }
    }
    let mut bytes = text.into_bytes();
    let at = bytes.windows(3).position(|w| w == b"caf").unwrap();
    bytes[at + 3] = 0xff; // not UTF-8
    let input = work.path("in.csv");
    std::fs::write(&input, &bytes).unwrap();
    let output = work.path("out.jsonl");
    let refused = run(&sim, &input, &output, &["--id-column", "id", "-q"]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert_eq!(sim.requests(), 0, "nothing bought before the refusal");
    assert!(!output.exists());
    assert!(refused.stderr.contains("in.csv:901"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("--skip-invalid"),
        "{}",
        refused.stderr
    );

    let skipped = run(
        &sim,
        &input,
        &output,
        &["--id-column", "id", "-q", "--skip-invalid"],
    );
    assert_eq!(skipped.code, 3, "{}", skipped.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 1000, "rows in = records out");
    let errors = records.iter().filter(|r| r["status"] == "error").count();
    assert_eq!(errors, 2);
}

#[test]
fn records_no_row_claims_are_kept_and_another_shard_spec_is_refused() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(400));
    let output = work.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    let paid = std::fs::read(&output).unwrap();

    // The same output resumed as one shard: refused, nothing touched.
    let shard = run(&sim, &input, &output, &["-q", "--shard", "0/2"]);
    assert_eq!(shard.code, 1, "{}", shard.stderr);
    assert!(shard.stderr.contains("--shard"), "{}", shard.stderr);
    assert_eq!(std::fs::read(&output).unwrap(), paid);

    // A 10-row subset: those 10 are done, the 390 others are kept and counted.
    let subset = work.write("subset.jsonl", &rows(10));
    let r = run(&sim, &subset, &output, &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("390 records of rows not in this input kept as they are"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 400, "nothing bought again");
    assert_eq!(read_jsonl(&output).len(), 400);

    // Shards written apart, each resumed with its own spec: fine; 1/2 as 1/3 is refused.
    let part = work.path("part1.jsonl");
    assert_eq!(run(&sim, &input, &part, &["-q", "--shard", "1/2"]).code, 0);
    let again = run(&sim, &input, &part, &["-q", "--shard", "1/2"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    let other = run(&sim, &input, &part, &["-q", "--shard", "1/3"]);
    assert_eq!(other.code, 1, "{}", other.stderr);
}

#[test]
fn kept_columns_that_would_share_a_name_all_keep_their_values() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write(
        "in.csv",
        "id,status,input_status,input_id,prompt\nr1,open,migrated,legacy-7,hello\n",
    );
    for output in ["out.jsonl", "out.csv"] {
        let output = work.path(output);
        let keep = ["--keep-columns", "id,status,input_status,input_id", "-q"];
        let r = run(&sim, &input, &output, &keep);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let record: Value = if output.extension().unwrap() == "csv" {
            let mut reader = csv::Reader::from_path(&output).unwrap();
            let headers = reader.headers().unwrap().clone();
            let row = reader.records().next().unwrap().unwrap();
            headers
                .iter()
                .zip(row.iter())
                .map(|(h, v)| (h.to_string(), Value::from(v)))
                .collect::<serde_json::Map<_, _>>()
                .into()
        } else {
            read_jsonl(&output).remove(0)
        };
        assert_eq!(record["status"], "ok", "{record}");
        assert_eq!(record["input_status"], "migrated", "{record}");
        assert_eq!(record["input_input_status"], "open", "{record}");
        assert_eq!(record["input_id"], "legacy-7", "{record}");
        assert_eq!(record["input_input_id"], "r1", "{record}");
    }
}

#[test]
fn numbers_are_kept_as_written_in_kept_fields_parsed_answers_and_exports() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write(
        "in.jsonl",
        concat!(
            r#"{"id": "a", "amount": 123456789012345678901234567890, "price": 1.50, "#,
            r#""prompt": "{\"label\": \"pos\", \"score\": 123456789012345678901234567891}"}"#,
            "\n"
        ),
    );
    let schema = work.write("schema.json", common::LABEL_SCHEMA);
    let output = work.path("out.jsonl");
    let schema_arg = schema.display().to_string();
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--keep-columns",
            "amount,price",
            "--json-schema",
            &schema_arg,
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line = std::fs::read_to_string(&output).unwrap();
    for written in [
        r#""amount":123456789012345678901234567890"#,
        r#""price":1.50"#,
        r#""score":123456789012345678901234567891"#,
    ] {
        assert!(line.contains(written), "{written} in {line}");
    }
    let csv = work.path("out.csv");
    let exported = run_args(&["export", output.to_str().unwrap(), csv.to_str().unwrap()]);
    assert_eq!(exported.code, 0, "{}", exported.stderr);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.contains("123456789012345678901234567890"), "{text}");
    assert!(text.contains(",1.50"), "{text}");
}

#[test]
fn messages_count_right_and_money_is_written_rounded() {
    let sim = Sim::plain();
    let work = Workdir::new();
    // 50 malformed lines and 30 empty prompts under --skip-invalid: a few warnings of each kind.
    let mut text = String::new();
    for i in 1..=50 {
        text.push_str(&format!(
            "{{\"id\": \"ok{i}\", \"prompt\": \"fine {i}\"}}\nnot json {i}\n"
        ));
    }
    for i in 1..=30 {
        text.push_str(&format!("{{\"id\": \"e{i}\", \"prompt\": \"\"}}\n"));
    }
    let input = work.write("in.jsonl", &text);
    let output = work.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--skip-invalid"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let warnings = r
        .stderr
        .lines()
        .filter(|l| l.contains("row not sent"))
        .count();
    assert!(warnings <= 6, "{warnings} warnings: {}", r.stderr);
    // Money is written rounded to 1e-9.
    let raw = std::fs::read_to_string(&output).unwrap();
    for line in raw.lines() {
        if let Some(at) = line.find("\"cost_usd\":") {
            let value: String = line[at + 11..]
                .chars()
                .take_while(|c| *c != ',' && *c != '}')
                .collect();
            let decimals = value.split_once('.').map_or(0, |(_, d)| d.len());
            assert!(decimals <= 9, "{value} in {line}");
        }
    }

    // One attempt is "1 attempt".
    let input = work.write(
        "one.jsonl",
        "{\"id\": \"x\", \"prompt\": \"x #sim:status=500\"}\n",
    );
    let r = run(
        &sim,
        &input,
        &work.path("one.out.jsonl"),
        &["--max-retries", "0"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let record = &read_jsonl(&work.path("one.out.jsonl"))[0];
    assert!(
        record["error"]
            .as_str()
            .unwrap()
            .starts_with("gave up after 1 attempt:"),
        "{record}"
    );

    // A negative cap is told so, not "use -- -1".
    let r = run(&sim, &input, &work.path("neg.jsonl"), &["--max-cost", "-1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("must be a positive amount"),
        "{}",
        r.stderr
    );

    // The budget stop's command raises the cap instead of repeating it.
    let input = work.write("many.jsonl", &rows(30));
    let capped = work.path("capped.jsonl");
    let r = run(
        &sim,
        &input,
        &capped,
        &["--max-cost", "0.001", "--max-tokens", "100"],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("--max-cost 0.002"), "{}", r.stderr);
}

#[test]
fn a_parquet_output_stopped_early_says_what_the_old_file_still_holds() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(30));
    let output = work.path("out.parquet");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    // Changed prompts (a template) and a cap that stops the run at once.
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--template",
            "Again: {prompt}",
            "--max-cost",
            "0.0001",
            "--max-tokens",
            "100",
        ],
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("still holds the 30 records of an earlier run"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("is not written yet"), "{}", r.stderr);
}

#[test]
fn files_named_otherwise_are_read_by_their_content_and_a_spreadsheet_output_is_refused() {
    let sim = Sim::plain();
    let work = Workdir::new();
    // A CSV named .txt, as a spreadsheet export may be: read as CSV, not as broken JSONL.
    let input = work.write("tickets.txt", "id,prompt\nt1,hello\nt2,\"a, b\"\n");
    let output = work.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2);
    let t2 = records.iter().find(|r| r["id"] == "t2").unwrap();
    assert_eq!(t2["prompt"], "a, b");
    // JSONL without an extension is still JSONL.
    let jsonl = work.write("rows", &rows(3));
    assert_eq!(
        run(&sim, &jsonl, &work.path("rows.out.jsonl"), &["-q"]).code,
        0
    );

    // An output named .xlsx would hold JSONL no spreadsheet opens: refused, nothing sent.
    let before = sim.requests();
    let xlsx = work.path("out.xlsx");
    let r = run(&sim, &input, &xlsx, &["-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--output-format"), "{}", r.stderr);
    assert_eq!(sim.requests(), before);
    assert!(!xlsx.exists());
    let r = run(&sim, &input, &xlsx, &["-q", "--output-format", "jsonl"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn merge_names_shards_of_other_model_lists() {
    let sim = Sim::plain();
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(40));
    let (a, b) = (work.path("a.jsonl"), work.path("b.jsonl"));
    assert_eq!(run(&sim, &input, &a, &["-q", "--shard", "0/2"]).code, 0);
    let other = ["-q", "--shard", "1/2", "--model", "gemini-3.1-pro-preview"];
    assert_eq!(run(&sim, &input, &b, &other).code, 0);
    let all = work.path("all.jsonl");
    let r = run_args(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        all.to_str().unwrap(),
    ]);
    assert!(
        r.stderr.contains("different --model lists") && r.stderr.contains("gemini-3.1-pro-preview"),
        "{}",
        r.stderr
    );
}

/// A program stops a run from a record callback through `StopHandle`, as Ctrl-C would: the rows
/// in flight finish, every record written is whole, and the next run sends only the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_handle_ends_a_run_resumably() {
    use promptbatch::{Job, LatencySpec, StopHandle, StopReason};
    let work = Workdir::new();
    let input = work.write("in.jsonl", &rows(400));
    let output = work.path("out.jsonl");
    let slow = SimOptions {
        latency: LatencySpec::parse("5ms").unwrap(),
        ..SimOptions::default()
    };
    let stop = StopHandle::new();
    let stopper = stop.clone();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = seen.clone();
    let first = Job::new(&input, &output)
        .concurrency(4)
        .dry_run(slow.clone())
        .on_record(move |_| {
            if counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 20 {
                stopper.stop();
            }
        })
        .run_until(&stop)
        .await
        .unwrap();
    assert!(
        matches!(first.stop, StopReason::Interrupted),
        "{:?}",
        first.stop
    );
    let written = read_jsonl(&output).len() as u64;
    assert_eq!(written, first.ok);
    assert!((20..400).contains(&written), "{written} records");

    let rest = Job::new(&input, &output).dry_run(slow).run().await.unwrap();
    assert!(
        matches!(rest.stop, StopReason::Completed),
        "{:?}",
        rest.stop
    );
    assert_eq!((rest.done_before, rest.ok), (written, 400 - written));
    let ids: std::collections::HashSet<String> = read_jsonl(&output)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!((read_jsonl(&output).len(), ids.len()), (400, 400));
}
