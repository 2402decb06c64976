//! Dataset in, dataset out (issue 13): the user's own columns go through to the output, values
//! unchanged, with CSV and JSONL inputs and outputs, across resume, `--ordered` and `merge`. The
//! real binary against the simulator over loopback; assertions on the records' values.

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::{json, Value};

/// Records by id.
fn by_id(records: &[Value]) -> HashMap<String, Value> {
    records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// The rows of a CSV output as header-name → value maps, and its header.
fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<HashMap<String, String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            header
                .iter()
                .cloned()
                .zip(r.iter().map(String::from))
                .collect()
        })
        .collect();
    (header, rows)
}

#[test]
fn csv_columns_go_through_to_jsonl_as_strings_and_a_colliding_name_is_prefixed() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // Excel-style: BOM, CRLF; the user's key is `ticket_id`; `id` is taken by the row id.
    let input = dir.write(
        "t.csv",
        "\u{feff}id,ticket_id,text,team\r\n1,T-0042,Hello there,Billing\r\n2,T-0043,\"Multi\r\nline\",\"Ops, night\"\r\n",
    );
    let output = dir.path("t.jsonl");
    let result = run(
        &sim,
        &input,
        &output,
        &[
            "--prompt-column",
            "text",
            "--keep-columns",
            "ticket_id,team,id",
            "-q",
        ],
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records.len(), 2);
    assert_eq!(records["1"]["ticket_id"], "T-0042");
    assert_eq!(records["1"]["team"], "Billing");
    assert_eq!(
        records["1"]["input_id"], "1",
        "the input's `id` column is kept as input_id"
    );
    assert_eq!(records["2"]["team"], "Ops, night");
    assert_eq!(records["2"]["completion"], "echo: Multi\r\nline");
    assert_eq!(records["2"]["ticket_id"], "T-0043");
}

#[test]
fn jsonl_fields_stay_json_and_a_missing_field_is_null() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "j.jsonl",
        concat!(
            r#"{"id": "a", "prompt": "p1", "meta": {"lang": "de", "score": 0.5}, "n": 7}"#,
            "\n",
            r#"{"id": "b", "prompt": "p2", "n": null}"#,
            "\n",
        ),
    );
    let output = dir.path("j.out.jsonl");
    let result = run(&sim, &input, &output, &["--keep-columns", "meta,n", "-q"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["a"]["meta"], json!({"lang": "de", "score": 0.5}));
    assert_eq!(records["a"]["n"], 7);
    assert_eq!(records["b"]["meta"], Value::Null);
    assert_eq!(records["b"]["n"], Value::Null);
    // `all` copies every field, ours included under input_ names.
    let output = dir.path("j.all.jsonl");
    let result = run(&sim, &input, &output, &["--keep-columns", "all", "-q"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["a"]["input_prompt"], "p1");
    assert_eq!(records["a"]["input_id"], "a");
    assert_eq!(records["a"]["meta"]["lang"], "de");
}

#[test]
fn a_csv_output_gets_the_kept_columns_and_keeps_them_through_resume_rewrites() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.csv");
    let first = dir.write("in.csv", "ticket_id,text\nT1,one\nT2,two\nT3,three\n");
    let args = [
        "--prompt-column",
        "text",
        "--id-column",
        "ticket_id",
        "--keep-columns",
        "all",
        "-q",
    ];
    let result = run(&sim, &first, &output, &args);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let (header, rows) = read_csv(&output);
    assert_eq!(&header[header.len() - 2..], ["ticket_id", "text"]);
    assert_eq!(rows.len(), 3);
    // The input changes: T2's text is new (its record is dropped by a rewrite and sent again),
    // T4 is added. Earlier records keep their kept values through the rewrite.
    let second = dir.write(
        "in.csv",
        "ticket_id,text\nT1,one\nT2,TWO\nT3,three\nT4,four\n",
    );
    let result = run(&sim, &second, &output, &args);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let (header, rows) = read_csv(&output);
    assert_eq!(&header[header.len() - 2..], ["ticket_id", "text"]);
    let by_ticket: HashMap<&str, &HashMap<String, String>> =
        rows.iter().map(|r| (r["id"].as_str(), r)).collect();
    assert_eq!(rows.len(), 4, "one record per row: {rows:?}");
    assert_eq!(by_ticket["T1"]["text"], "one");
    assert_eq!(by_ticket["T1"]["ticket_id"], "T1");
    assert_eq!(by_ticket["T2"]["text"], "TWO");
    assert_eq!(by_ticket["T2"]["completion"], "echo: TWO");
    assert_eq!(by_ticket["T4"]["text"], "four");
    // --ordered keeps them too.
    let result = run(
        &sim,
        &second,
        &output,
        &[&args[..], &["--ordered"]].concat(),
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    let (_, rows) = read_csv(&output);
    let ids: Vec<&str> = rows.iter().map(|r| r["ticket_id"].as_str()).collect();
    assert_eq!(ids, ["T1", "T2", "T3", "T4"]);
}

#[test]
fn other_kept_columns_than_a_csv_output_has_are_refused_before_anything_is_sent() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.csv");
    let input = dir.write("in.csv", "k,prompt,x\n1,a,u\n2,b,v\n");
    let result = run(
        &sim,
        &input,
        &output,
        &["--keep-columns", "k", "--limit", "1", "-q"],
    );
    assert_eq!(result.code, 0, "{}", result.stderr);
    let before = sim.requests();
    let result = run(&sim, &input, &output, &["--keep-columns", "k,x", "-q"]);
    assert_eq!(result.code, 1);
    assert!(
        result
            .stderr
            .contains("has the extra columns [k] but this run writes [k, x]")
            && result.stderr.contains("--fresh"),
        "{}",
        result.stderr
    );
    assert_eq!(sim.requests(), before, "nothing was sent");
    // A JSONL input cannot say which columns `all` means for a CSV header.
    let jsonl = dir.write("in.jsonl", "{\"prompt\": \"a\"}\n");
    let result = run(
        &sim,
        &jsonl,
        &dir.path("other.csv"),
        &["--keep-columns", "all", "-q"],
    );
    assert_eq!(result.code, 1);
    assert!(
        result.stderr.contains("name the fields"),
        "{}",
        result.stderr
    );
    // A column that does not exist is named, with the ones that do.
    let result = run(
        &sim,
        &input,
        &dir.path("third.jsonl"),
        &["--keep-columns", "nope", "-q"],
    );
    assert_eq!(result.code, 1);
    assert!(result.stderr.contains("`nope`"), "{}", result.stderr);
    assert_eq!(sim.requests(), before, "nothing was sent");
}

#[test]
fn row_number_ids_are_announced_once() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.csv", "prompt\na\nb\nc\n");
    let result = run(&sim, &input, &dir.path("o.jsonl"), &["-q"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    assert_eq!(
        result
            .stderr
            .matches("identified by their row number")
            .count(),
        1,
        "{}",
        result.stderr
    );
    assert!(result.stderr.contains("--id-column"), "{}", result.stderr);
    let with_ids = dir.write("ids.csv", "id,prompt\n7,a\n");
    let result = run(&sim, &with_ids, &dir.path("o2.jsonl"), &["-q"]);
    assert!(!result.stderr.contains("row number"), "{}", result.stderr);
}

#[test]
fn merge_keeps_the_kept_columns_of_every_shard() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let mut lines = String::from("id,prompt,label\n");
    for i in 0..40 {
        lines.push_str(&format!("r{i},p{i},L{}\n", i % 3));
    }
    let input = dir.write("in.csv", &lines);
    let mut shards = Vec::new();
    for k in 0..2 {
        let out = dir.path(&format!("s{k}.csv"));
        let shard = format!("{k}/2");
        let result = run(
            &sim,
            &input,
            &out,
            &["--shard", &shard, "--keep-columns", "label", "-q"],
        );
        assert_eq!(result.code, 0, "{}", result.stderr);
        shards.push(out);
    }
    let merged = dir.path("all.csv");
    let mut args = vec!["merge".to_string()];
    args.extend(shards.iter().map(|p| p.display().to_string()));
    args.extend([
        "-o".into(),
        merged.display().to_string(),
        "--expect-rows".into(),
        "40".into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = run_args(&args);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let (header, rows) = read_csv(&merged);
    assert_eq!(header.last().map(String::as_str), Some("label"));
    assert_eq!(rows.len(), 40);
    for row in &rows {
        let i: usize = row["id"][1..].parse().unwrap();
        assert_eq!(row["label"], format!("L{}", i % 3));
    }
}

#[test]
fn records_carry_rfc3339_times_and_keep_response_stores_the_whole_body() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"hello\"}\n{\"id\": \"b\", \"prompt\": \"  \"}\n",
    );
    let output = dir.path("out.jsonl");
    let before = std::time::SystemTime::now();
    let result = run(&sim, &input, &output, &["--keep-response", "-q"]);
    assert_eq!(result.code, 3, "b is an empty prompt: {}", result.stderr);
    let records = by_id(&read_jsonl(&output));
    let parse = |v: &Value| humantime::parse_rfc3339(v.as_str().unwrap()).unwrap();
    for record in records.values() {
        let (started, finished) = (parse(&record["started_at"]), parse(&record["finished_at"]));
        assert!(
            record["started_at"].as_str().unwrap().ends_with('Z'),
            "UTC: {record}"
        );
        assert!(started <= finished, "{record}");
        let slack = std::time::Duration::from_secs(1); // millisecond rounding, clock steps
        assert!(started + slack >= before, "{record}");
    }
    let a = &records["a"];
    assert_eq!(a["response"]["object"], "chat.completion");
    assert_eq!(
        a["response"]["choices"][0]["message"]["content"],
        "echo: hello"
    );
    assert_eq!(a["response"]["usage"]["prompt_tokens"], a["prompt_tokens"]);
    assert!(
        records["b"].get("response").is_none(),
        "no answer, no response"
    );
    // Without the flag there is no `response`; a CSV output gets it as JSON text.
    let csv_out = dir.path("out.csv");
    let result = run(&sim, &input, &csv_out, &["--keep-response", "-q"]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    let (header, rows) = read_csv(&csv_out);
    assert_eq!(header.last().map(String::as_str), Some("response"));
    let a = rows.iter().find(|r| r["id"] == "a").unwrap();
    let body: Value = serde_json::from_str(&a["response"]).unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "echo: hello");
    let plain = dir.path("plain.jsonl");
    run(&sim, &input, &plain, &["-q"]);
    let records = read_jsonl(&plain);
    assert_eq!(records.len(), 2, "a record per row, b's an error");
    assert!(records.iter().all(|r| r.get("response").is_none()));
}

#[test]
fn json_schema_answers_are_parsed_retried_and_failures_name_the_rule() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let schema = dir.write("sentiment.json", LABEL_SCHEMA);
    // The simulator answers a structured-outputs request with the prompt itself: each row's
    // prompt is the answer it will get. `b` answers prose once, then JSON; `c` never matches.
    let input = dir.write("in.jsonl", SCHEMA_ROWS);
    let output = dir.path("out.jsonl");
    let schema_arg = schema.display().to_string();
    let args = [
        "--json-schema",
        &schema_arg,
        "--max-retries",
        "2",
        "--backoff-base",
        "1ms",
        "-q",
    ];
    let result = run(&sim, &input, &output, &args);
    assert_eq!(result.code, 3, "c is an error record: {}", result.stderr);
    // Issue 21: not "transient" (a re-run would not just retry it for free: it pays again).
    assert!(
        result
            .stderr
            .contains("1 got answers that failed --json-schema after every retry")
            && !result.stderr.contains("failed on transient errors"),
        "{}",
        result.stderr
    );
    let records = by_id(&read_jsonl(&output));
    assert_eq!(
        records["a"]["parsed"],
        json!({"label": "pos", "score": 0.9})
    );
    assert_eq!(records["a"]["attempts"], 1);
    let b = &records["b"];
    assert_eq!((&b["status"], &b["attempts"]), (&json!("ok"), &json!(2)));
    assert_eq!(b["parsed"]["label"], "neg");
    // Both of b's answers were paid for: its tokens are the sum of two answers.
    let one_answer = records["a"]["prompt_tokens"].as_u64().unwrap();
    assert!(b["prompt_tokens"].as_u64().unwrap() > one_answer, "{b}");
    let c = &records["c"];
    assert_eq!((&c["status"], &c["attempts"]), (&json!("error"), &json!(3)));
    let message = c["error"].as_str().unwrap();
    assert!(
        message.contains("answer does not match --json-schema") && message.contains("/label"),
        "{message}"
    );
    assert!(
        c["completion_tokens"].as_u64().unwrap() > 0,
        "c's three answers were paid for"
    );
    assert!(c.get("parsed").is_none());
    // report counts the schema failures.
    let report = run_args(&["report", "--json", &output.display().to_string()]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["schema_failures"], 1);
    assert_eq!(report["error"], 1);
}

#[test]
fn json_schema_properties_become_csv_columns_and_estimate_counts_the_schema() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let schema = dir.write("s.json", LABEL_SCHEMA);
    let schema_arg = schema.display().to_string();
    let input = dir.write(
        "in.jsonl",
        concat!(
            r#"{"id": "a", "prompt": "{\"label\": \"pos\", \"score\": 0.75}"}"#,
            "\n",
            r#"{"id": "b", "prompt": "{\"label\": \"neg\", \"score\": 2}"}"#,
            "\n",
        ),
    );
    let output = dir.path("out.csv");
    let result = run(&sim, &input, &output, &["--json-schema", &schema_arg, "-q"]);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let (header, rows) = read_csv(&output);
    assert_eq!(&header[header.len() - 2..], ["label", "score"]);
    let a = rows.iter().find(|r| r["id"] == "a").unwrap();
    assert_eq!((a["label"].as_str(), a["score"].as_str()), ("pos", "0.75"));
    // estimate: the schema's tokens are part of every request's prompt.
    let input_arg = input.display().to_string();
    let plain = run_args(&["estimate", &input_arg, "--json"]);
    let with = run_args(&[
        "estimate",
        &input_arg,
        "--json",
        "--json-schema",
        &schema_arg,
    ]);
    let plain: Value = serde_json::from_str(&plain.stdout).unwrap();
    let with: Value = serde_json::from_str(&with.stdout).unwrap();
    let per_row = with["schema_tokens_per_row"].as_u64().unwrap();
    assert!(per_row > 20, "{with}");
    assert_eq!(
        with["prompt_tokens"].as_u64().unwrap(),
        plain["prompt_tokens"].as_u64().unwrap() + 2 * per_row
    );
    // A schema that is not one is refused before anything is sent.
    let bad = dir.write("bad.json", r#"{"type": "nope"}"#);
    let before = sim.requests();
    let result = run(
        &sim,
        &input,
        &dir.path("x.jsonl"),
        &["--json-schema", &bad.display().to_string()],
    );
    assert_eq!(result.code, 2, "{}", result.stderr);
    assert!(
        result.stderr.contains("not a valid JSON Schema"),
        "{}",
        result.stderr
    );
    assert_eq!(sim.requests(), before);
}

#[test]
fn openai_batch_shaped_output_reads_like_batch_results_and_resumes() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"one\"}\n{\"id\": \"b\", \"prompt\": \"  \"}\n{\"id\": \"c\", \"prompt\": \"three\"}\n",
    );
    let output = dir.path("out.jsonl");
    let args = ["--output-format", "openai-batch", "-q"];
    let result = run(&sim, &input, &output, &args);
    assert_eq!(result.code, 3, "b is an empty prompt: {}", result.stderr);
    let lines = read_jsonl(&output);
    let by_custom: HashMap<&str, &Value> = lines
        .iter()
        .map(|l| (l["custom_id"].as_str().unwrap(), l))
        .collect();
    let a = by_custom["a"];
    assert!(a["id"].as_str().unwrap().starts_with("batch_req_"), "{a}");
    assert_eq!(a["response"]["status_code"], 200);
    assert_eq!(
        a["response"]["body"]["choices"][0]["message"]["content"],
        "echo: one"
    );
    assert_eq!(
        a["response"]["body"]["usage"]["prompt_tokens"],
        a["promptbatch"]["prompt_tokens"]
    );
    assert_eq!(a["error"], Value::Null);
    let b = by_custom["b"];
    assert_eq!(b["response"], Value::Null);
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("empty prompt"),
        "{b}"
    );
    // It resumes like any output: a new row is sent, the done ones are not, the shape is kept.
    let sent = sim.requests();
    let more = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"one\"}\n{\"id\": \"b\", \"prompt\": \"  \"}\n{\"id\": \"c\", \"prompt\": \"three\"}\n{\"id\": \"d\", \"prompt\": \"four\"}\n",
    );
    let result = run(&sim, &more, &output, &["--ordered", "-q"]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    assert_eq!(sim.requests(), sent + 1, "only d was sent");
    let lines = read_jsonl(&output);
    let ids: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"], "batch-shaped and in input order");
    let report = run_args(&["report", "--json", &output.display().to_string()]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(
        (report["rows"].as_u64(), report["ok"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(report["format"], "openai-batch");
    // Asking for plain JSONL lines in it is refused before anything is sent.
    let result = run(&sim, &more, &output, &["--output-format", "jsonl", "-q"]);
    assert_eq!(result.code, 1);
    assert!(
        result.stderr.contains("holds openai-batch records"),
        "{}",
        result.stderr
    );
    assert_eq!(sim.requests(), sent + 1);
    // A changed row is dropped by a rewrite, which keeps the shape, and sent again.
    let changed = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"one\"}\n{\"id\": \"b\", \"prompt\": \"  \"}\n{\"id\": \"c\", \"prompt\": \"THREE\"}\n{\"id\": \"d\", \"prompt\": \"four\"}\n",
    );
    let result = run(&sim, &changed, &output, &["-q"]);
    assert_eq!(result.code, 3, "{}", result.stderr);
    assert_eq!(sim.requests(), sent + 2, "only c was sent again");
    let lines = read_jsonl(&output);
    assert_eq!(lines.len(), 4);
    let c = lines.iter().find(|l| l["custom_id"] == "c").unwrap();
    assert_eq!(
        c["response"]["body"]["choices"][0]["message"]["content"],
        "echo: THREE"
    );
    assert!(lines
        .iter()
        .all(|l| l["promptbatch"]["id"] == l["custom_id"]));
}

#[test]
fn schema_retries_under_max_cost_reserve_first_and_stop_before_the_cap() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let schema = dir.write("s.json", LABEL_SCHEMA);
    // $1 per output token, prompts free: a request's worst case is --max-tokens 10 = $10.
    let prices = dir.write(
        "prices.toml",
        "[models.\"m\"]\ninput = 0.0\ncached_input = 0.0\noutput = 1000000.0\nsource = \"test\"\ndate = \"2026-11-30\"\n",
    );
    let input = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"{\\\"label\\\": \\\"pos\\\", \\\"score\\\": 1} #sim:prose=5\"}\n",
    );
    let output = dir.path("out.jsonl");
    let (schema, prices) = (schema.display().to_string(), prices.display().to_string());
    let result = run(
        &sim,
        &input,
        &output,
        &[
            "--json-schema",
            &schema,
            "--prices",
            &prices,
            "--model",
            "m",
            "--max-tokens",
            "10",
            "--max-cost",
            "15",
            "--backoff-base",
            "1ms",
            "-q",
        ],
    );
    assert_eq!(result.code, 3, "{}", result.stderr);
    let records = read_jsonl(&output);
    let a = &records[0];
    // One attempt fits the cap with its $10 reservation; a second would need $10 more.
    assert_eq!(a["attempts"], 1, "{a}");
    let message = a["error"].as_str().unwrap();
    assert!(
        message.contains("not retried: another attempt could pass --max-cost"),
        "{message}"
    );
    let cost = a["cost_usd"].as_f64().unwrap();
    assert!(
        cost > 0.0 && cost <= 15.0,
        "the prose answer was paid for: {a}"
    );
    assert_eq!(sim.requests(), 1);
}

/// `kill -9` in the middle of a run with every dataset option at once (`--keep-columns all`,
/// `--json-schema`, `--keep-response`, `--output-format openai-batch`), then the same command:
/// one ok line per row, each with its kept columns, its parsed answer and its whole response,
/// and at most the requests in flight at the kill paid twice.
#[test]
fn kill_9_then_resume_with_every_dataset_option_gives_one_whole_record_per_row() {
    use promptbatch::sim::{LatencySpec, SimOptions};

    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("5ms..25ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let schema = dir.write("sentiment.json", LABEL_SCHEMA);
    let n = 200;
    let rows: String = (0..n)
        .map(|i| {
            let answer = json!({"label": if i % 2 == 0 { "pos" } else { "neg" }, "score": 0.5});
            let line = json!({"id": format!("t{i}"), "prompt": answer.to_string(), "team": {"n": i}, "note": "ü ✓"});
            format!("{line}\n")
        })
        .collect();
    let input = dir.write("in.jsonl", &rows);
    let output = dir.path("out.jsonl");
    let schema_arg = schema.display().to_string();
    let args = [
        "--keep-columns",
        "all",
        "--json-schema",
        &schema_arg,
        "--keep-response",
        "--output-format",
        "openai-batch",
        "-c",
        "8",
        "-q",
    ];
    let left = kill_9_after_lines(&sim, &input, &output, &args, 80);
    assert!(left < n, "the kill left work to do");

    let result = run(&sim, &input, &output, &args);
    assert_eq!(result.code, 0, "{}", result.stderr);
    let lines = read_jsonl(&output);
    assert_eq!(lines.len(), n, "one line per row");
    let mut seen = std::collections::HashSet::new();
    for line in &lines {
        let record = &line["promptbatch"];
        let id = record["id"].as_str().unwrap();
        assert!(seen.insert(id.to_string()), "{id} twice");
        assert_eq!(line["custom_id"], id);
        assert_eq!(record["status"], "ok", "{line}");
        let i: u64 = id[1..].parse().unwrap();
        assert_eq!(
            record["team"],
            json!({"n": i}),
            "kept column, JSON as it was"
        );
        assert_eq!(record["note"], "ü ✓");
        let label = if i.is_multiple_of(2) { "pos" } else { "neg" };
        assert_eq!(record["parsed"], json!({"label": label, "score": 0.5}));
        assert_eq!(
            record["response"]["usage"]["prompt_tokens"],
            record["prompt_tokens"]
        );
        assert_eq!(
            line["response"]["body"], record["response"],
            "the real body"
        );
    }
    let sent = sim.requests() as usize;
    assert!(
        sent <= n + 8,
        "{sent} requests for {n} rows: at most the 8 in flight paid twice"
    );
}
