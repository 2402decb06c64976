//! End-to-end tests of `promptbatch run`: inputs, templates, ids, request bodies, records, rate
//! limits, malformed input and key hygiene — the real binary against the simulator over loopback.

mod common;

use std::path::Path;

use common::*;
use promptbatch::sim::SimOptions;
use serde_json::Value;

fn by_id(records: &[Value]) -> std::collections::HashMap<String, Value> {
    records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

#[test]
fn csv_template_rows_get_their_own_answers_and_usage() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let mut csv = String::from("sku,name,notes\n");
    for i in 0..40 {
        csv.push_str(&format!("S{i:03},Widget {i},\"line one, {i}\nline two\"\n"));
    }
    let input = dir.write("items.csv", &csv);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--template",
            "Describe {name} ({{sku}}): {notes}",
            "--concurrency",
            "8",
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 40);
    let mut rows: Vec<u64> = records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    rows.sort();
    assert_eq!(rows, (1..=40).collect::<Vec<_>>());
    for rec in &records {
        let i = rec["row"].as_u64().unwrap() - 1;
        let prompt = format!("Describe Widget {i} ({{sku}}): line one, {i}\nline two");
        assert_eq!(
            rec["id"],
            (i + 1).to_string(),
            "no id column: ids are row numbers"
        );
        assert_eq!(rec["prompt"], prompt.as_str());
        assert_eq!(rec["completion"], format!("echo: {prompt}").as_str());
        let prompt_tokens = sim_prompt_tokens(&[&prompt]);
        let completion_tokens = (format!("echo: {prompt}").len() as u64).div_ceil(4);
        assert_eq!(rec["prompt_tokens"], prompt_tokens);
        assert_eq!(rec["completion_tokens"], completion_tokens);
        assert_eq!(rec["total_tokens"], prompt_tokens + completion_tokens);
        assert_eq!(rec["cached_tokens"], 0);
        assert_eq!(rec["reasoning_tokens"], 0);
        assert_eq!(rec["status"], "ok");
        assert_eq!(rec["error"], Value::Null);
        assert_eq!(rec["attempts"], 1);
        assert_eq!(rec["finish_reason"], "stop");
        assert_eq!(rec["model"], "gpt-5.2");
        assert!(rec["response_id"]
            .as_str()
            .unwrap()
            .starts_with("chatcmpl-sim-"));
    }
    let first_line = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    let positions: Vec<usize> = promptbatch::internals::COLUMNS
        .iter()
        .map(|c| first_line.find(&format!("\"{c}\":")).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "fields in schema order: {first_line}"
    );
    assert_eq!(sim.requests(), 40);
}

#[test]
fn jsonl_shapes_system_message_and_batch_overrides() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "mixed.jsonl",
        concat!(
            r#"{"id": "p", "prompt": "plain prompt"}"#, "\n",
            "\n",
            r#"{"id": 7, "messages": [{"role": "system", "content": "own system"}, {"role": "user", "content": [{"type": "text", "text": "part one"}, {"type": "text", "text": "part two"}]}]}"#, "\n",
            r#"{"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gemini-3.1-pro-preview", "reasoning_effort": "high", "messages": [{"role": "user", "content": "batch prompt"}]}}"#, "\n",
            "   \n",
            r#"{"prompt": "no id here"}"#, "\n",
        ),
    );
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--system", "Be brief.", "--reasoning-effort", "low", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records.len(), 4);

    let p = &records["p"];
    assert_eq!(p["row"], 1);
    assert_eq!(p["completion"], "echo: plain prompt");
    // --system was prepended: its tokens count; a prefix this short is never cached (a
    // provider caches from 1,024 tokens: `tests/prompt_cache.rs`).
    assert_eq!(
        p["prompt_tokens"],
        sim_prompt_tokens(&["Be brief.", "plain prompt"])
    );
    assert_eq!(p["cached_tokens"], 0);
    assert_eq!(p["reasoning_tokens"], 16, "--reasoning-effort low was sent");

    let m = &records["7"];
    assert_eq!(m["row"], 2, "blank lines are not rows");
    assert_eq!(m["prompt"], "part one\npart two");
    assert_eq!(
        m["prompt_tokens"],
        sim_prompt_tokens(&["own system", "part one\npart two"])
    );
    assert_eq!(m["cached_tokens"], 0, "a short prefix is never cached");

    let b = &records["b1"];
    assert_eq!(
        b["model"], "gemini-3.1-pro-preview",
        "the batch body's model wins"
    );
    assert_eq!(
        b["reasoning_tokens"], 64,
        "the batch body's reasoning_effort wins"
    );
    assert_eq!(b["completion"], "echo: batch prompt");

    assert_eq!(
        records["4"]["completion"], "echo: no id here",
        "row number as id"
    );
}

#[test]
fn id_column_and_duplicate_ids() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("ids.csv", "key,prompt\nk1,a\nk2,b\nk1,c\nk3,d\n");
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--id-column", "key", "--concurrency", "1", "-q"],
    );
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("ids.csv:4"), "{}", r.stderr);
    assert!(r.stderr.contains("duplicate id `k1`"), "{}", r.stderr);
    assert!(!output.exists(), "found before anything is sent");

    let missing = run(
        &sim,
        &input,
        &dir.path("o2.jsonl"),
        &["--id-column", "nope"],
    );
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("`nope`") && missing.stderr.contains("`key`, `prompt`"),
        "{}",
        missing.stderr
    );
}

#[test]
fn missing_template_column_fails_before_any_request() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.csv", "title,body\nx,y\n");
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--template", "{title}: {text}"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("`text`"), "{}", r.stderr);
    assert!(
        r.stderr.contains("`title`, `body`"),
        "lists the columns: {}",
        r.stderr
    );
    assert!(!output.exists(), "no output is created");
    assert_eq!(sim.requests(), 0);

    let no_prompt = run(&sim, &input, &output, &[]);
    assert_eq!(no_prompt.code, 1);
    assert!(
        no_prompt.stderr.contains("`prompt`"),
        "{}",
        no_prompt.stderr
    );
}

#[test]
fn malformed_jsonl_stops_with_file_and_line_or_becomes_an_error_record() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "bad.jsonl",
        "{\"prompt\": \"one\"}\n\n{\"prompt\": \"two\"}\n{\"prompt\": oops}\n{\"prompt\": \"four\"}\n[1,2]\n{\"messages\": \"not an array\"}\n",
    );
    let output = dir.path("out.jsonl");
    // Every unreadable line is listed before anything is sent (the rows before them are not
    // bought only for the run to stop at the first).
    let r = run(&sim, &input, &output, &["--concurrency", "1", "-q"]);
    assert_eq!(r.code, 1);
    for line in [
        "bad.jsonl:4: invalid JSON",
        "bad.jsonl:6: expected a JSON object",
        "bad.jsonl:7:",
    ] {
        assert!(r.stderr.contains(line), "{line}: {}", r.stderr);
    }
    assert!(r.stderr.contains("--skip-invalid"), "{}", r.stderr);
    assert_eq!(sim.requests(), 0);
    assert!(!output.exists());

    let output2 = dir.path("out2.jsonl");
    let r = run(&sim, &input, &output2, &["--skip-invalid", "-q"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output2));
    assert_eq!(records.len(), 6);
    for (id, what) in [
        ("3", "bad.jsonl:4: invalid JSON"),
        ("5", "bad.jsonl:6: expected a JSON object"),
        ("6", "`messages` must be an array"),
    ] {
        assert_eq!(records[id]["status"], "error");
        assert_eq!(records[id]["attempts"], 0);
        assert!(
            records[id]["error"].as_str().unwrap().contains(what),
            "{id}: {}",
            records[id]["error"]
        );
    }
    assert_eq!(records["4"]["completion"], "echo: four");
}

#[test]
fn malformed_csv_record_names_its_line() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "bad.csv",
        "prompt,extra\nfine,1\nalso fine,2\ntoo,many,fields\n",
    );
    let r = run(&sim, &input, &dir.path("out.csv"), &["-q"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr
            .contains("bad.csv:4: record has 3 fields, but the header has 2"),
        "{}",
        r.stderr
    );
}

#[test]
fn empty_prompts_and_permanent_errors_become_error_records() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"a\",\"prompt\":\"fine\"}\n{\"id\":\"b\",\"prompt\":\"  \\n \"}\n{\"id\":\"c\",\"prompt\":\"bad #sim:status=400\"}\n{\"id\":\"d\",\"prompt\":\"too big #sim:status=413\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["a"]["status"], "ok");
    assert_eq!(records["b"]["status"], "error");
    assert_eq!(records["b"]["attempts"], 0);
    assert!(records["b"]["error"]
        .as_str()
        .unwrap()
        .contains("empty prompt"));
    assert_eq!(
        records["b"]["prompt"], "  \n ",
        "prompts are kept byte for byte"
    );
    for (id, status) in [("c", 400), ("d", 413)] {
        assert_eq!(records[id]["status"], "error");
        assert_eq!(
            records[id]["attempts"], 1,
            "permanent errors are not retried"
        );
        let error = records[id]["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("HTTP {status}: simulated HTTP {status}")),
            "{error}"
        );
        assert_eq!(records[id]["completion"], Value::Null);
    }
    assert_eq!(sim.requests(), 3, "no request for the empty prompt");
}

#[test]
fn rpm_limit_spreads_requests_over_time() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let lines: String = (0..30)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--rpm", "600", "--concurrency", "16", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&output).len(), 30);
    // 600/min = one per 100 ms with no start-up burst: 30 requests need at least 2.9 s.
    let secs = r.elapsed.as_secs_f64();
    assert!(secs >= 2.8, "30 rows at --rpm 600 took only {secs:.2}s");
    assert!(secs < 15.0, "30 rows at --rpm 600 took {secs:.2}s");
    // The arrivals are evenly spaced too: any 10 consecutive ones span at least 8 intervals of
    // 100 ms (the limiter's capacity of two lets one late wake-up be caught up, never more; a
    // loaded machine only makes the spans longer).
    let arrivals: Vec<u64> = sim.stats()["arrivals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a[0].as_u64().unwrap())
        .collect();
    let shortest = arrivals.windows(10).map(|w| w[9] - w[0]).min().unwrap();
    assert!(
        shortest >= 780,
        "{shortest} ms for 10 arrivals: {arrivals:?}"
    );
}

#[test]
fn transient_faults_are_retried_until_every_row_is_ok() {
    let sim = Sim::start(SimOptions {
        rate_500: 0.15,
        rate_503: 0.1,
        rate_drop: 0.1,
        rate_malformed: 0.1,
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..200)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--max-retries",
            "30",
            "--backoff-base",
            "5ms",
            "--backoff-max",
            "50ms",
            "-c",
            "32",
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 200, "exactly one record per row");
    let ids = by_id(&records);
    assert_eq!(ids.len(), 200);
    for i in 0..200 {
        let rec = &ids[&format!("r{i}")];
        assert_eq!(rec["status"], "ok");
        assert_eq!(rec["completion"], format!("echo: p{i}").as_str());
    }
    let retried = records
        .iter()
        .filter(|r| r["attempts"].as_u64().unwrap() > 1)
        .count();
    assert!(
        retried > 20,
        "faults at ~45% must cause retries; {retried} rows retried"
    );
    let attempts: u64 = records
        .iter()
        .map(|r| r["attempts"].as_u64().unwrap())
        .sum();
    assert_eq!(
        attempts,
        sim.requests(),
        "attempts count every request the server saw"
    );
}

#[test]
fn retries_run_out_into_an_error_record_and_timeouts_count_as_transient() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"flaky\",\"prompt\":\"x #sim:fail=2\"}\n{\"id\":\"down\",\"prompt\":\"y #sim:fail=99\"}\n{\"id\":\"slow\",\"prompt\":\"z #sim:sleep=600s\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--max-retries",
            "2",
            "--backoff-base",
            "5ms",
            "--timeout",
            "300ms",
            "-q",
        ],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["flaky"]["status"], "ok");
    assert_eq!(records["flaky"]["attempts"], 3);
    assert_eq!(records["down"]["status"], "error");
    assert_eq!(records["down"]["attempts"], 3);
    assert!(records["down"]["error"]
        .as_str()
        .unwrap()
        .contains("gave up after 3 attempts: HTTP 503"));
    assert_eq!(records["slow"]["status"], "error");
    assert!(
        records["slow"]["error"]
            .as_str()
            .unwrap()
            .contains("timed out after 300ms"),
        "{}",
        records["slow"]["error"]
    );
    // Not a timing claim but a hang detector: the slow answer takes 10 minutes, the run about a
    // second; a timeout that waited for the answer would be 10 times over this bound.
    assert!(
        r.elapsed < std::time::Duration::from_secs(60),
        "timeouts do not wait for the slow answer"
    );
}

#[test]
fn wrong_key_stops_the_run_fast_without_error_records() {
    let sim = Sim::start(SimOptions {
        require_key: Some("the-right-key".into()),
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..500)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "4", "-v"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401"), "{}", r.stderr);
    assert!(r.stderr.contains("Check the key"), "{}", r.stderr);
    // Stopping fast is counted in requests (of 500 rows), not in seconds.
    assert!(
        sim.requests() <= 8,
        "only a handful of requests: {}",
        sim.requests()
    );
    assert!(
        !output.exists(),
        "no error records for unsent rows (and no empty file)"
    );
    assert_no_key(&[&r.stdout, &r.stderr]);
}

/// The breaker stops the run after the first streak; the rows it sent keep their error
/// records (the next run sends them again), the rest get none.
#[test]
fn an_unknown_model_trips_the_circuit_breaker_with_only_the_streaks_records() {
    let sim = Sim::start(SimOptions {
        models: vec!["gpt-5.2".into()],
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..200)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--model", "gpt-9", "-c", "4", "-q"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("model `gpt-9` was refused: HTTP 404") && r.stderr.contains("gpt-9"),
        "{}",
        r.stderr
    );
    assert_eq!(
        r.stderr.matches("was refused").count(),
        1,
        "the server's message once: {}",
        r.stderr
    );
    let requests = sim.requests();
    assert!(
        requests <= 5 + 4,
        "stopped after the breaker's 5: {requests}"
    );
    let records = read_jsonl(&output);
    assert_eq!(
        records.len() as u64,
        requests,
        "one error record per row sent, none for the rows not sent"
    );
    assert!(records.len() >= 5, "the streak's records are written");
    assert!(records
        .iter()
        .all(|r| r["status"] == "error" && r["error"].as_str().unwrap().contains("HTTP 404")));
    assert!(r.stderr.contains("check the key"), "{}", r.stderr);
}

#[test]
fn a_few_rows_of_an_unknown_model_still_get_error_records() {
    let sim = Sim::start(SimOptions {
        models: vec!["gpt-5.2".into()],
        ..Default::default()
    });
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n");
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--model", "gpt-9", "-q"]);
    assert_eq!(
        r.code, 3,
        "too few to be sure it is systematic: {}",
        r.stderr
    );
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2);
    assert!(records[0]["error"].as_str().unwrap().contains("HTTP 404"));
}

#[test]
fn the_key_appears_in_no_output_or_log() {
    let sim = Sim::start(SimOptions {
        rate_500: 0.3,
        ..Default::default()
    });
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"prompt\":\"a\"}\n{\"prompt\":\"b #sim:status=400\"}\n{\"prompt\":\"c\"}\n",
    );
    let output = dir.path("out.csv");
    let r = run(
        &sim,
        &input,
        &output,
        &["-vv", "--backoff-base", "1ms", "--max-retries", "20"],
    );
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("DEBUG") || r.stderr.contains("WARN"),
        "logs were produced: {}",
        r.stderr
    );
    let written = std::fs::read_to_string(&output).unwrap();
    assert_no_key(&[&r.stdout, &r.stderr, &written]);
}

#[test]
fn csv_output_round_trips_multiline_text() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"x\",\"prompt\":\"line 1\\nline \\\"2\\\", with comma\"}\n{\"id\":\"y\",\"prompt\":\"plain\"}\n",
    );
    let output = dir.path("out.csv");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(headers, promptbatch::internals::COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    let x = rows.iter().find(|r| &r[0] == "x").unwrap();
    assert_eq!(&x[2], "line 1\nline \"2\", with comma");
    assert_eq!(&x[3], "echo: line 1\nline \"2\", with comma");
    assert_eq!(&x[13], "ok");
    assert_eq!(&x[14], "", "null error is an empty field");
}

#[test]
fn ordered_output_follows_input_order() {
    let sim = Sim::start(SimOptions {
        latency: promptbatch::sim::LatencySpec::parse("1ms..30ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..120)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--ordered", "-c", "32", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rows: Vec<u64> = read_jsonl(&output)
        .iter()
        .map(|r| r["row"].as_u64().unwrap())
        .collect();
    assert_eq!(rows, (1..=120).collect::<Vec<_>>());
}

#[test]
fn foreign_output_is_refused_unless_fresh() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", "{\"prompt\":\"a\"}\n");
    let output = dir.write("out.jsonl", "precious\n");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("out.jsonl:1: not an output record") && r.stderr.contains("--fresh"),
        "{}",
        r.stderr
    );
    assert_eq!(std::fs::read_to_string(&output).unwrap(), "precious\n");

    let r = run(&sim, &input, &output, &["--fresh", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(dir.path("out.jsonl.bak")).unwrap(),
        "precious\n"
    );
    assert_eq!(read_jsonl(&output).len(), 1);
}

#[test]
fn params_and_max_tokens_reach_the_request() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"prompt\":\"a fairly long prompt that the limit will cut\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--max-tokens",
            "3",
            "--param",
            "reasoning_effort=\"medium\"",
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let rec = &read_jsonl(&output)[0];
    assert_eq!(rec["finish_reason"], "length");
    assert_eq!(
        rec["completion"], "echo: a fair",
        "3 tokens = 12 bytes in the simulator"
    );
    assert_eq!(rec["reasoning_tokens"], 32);
    assert_eq!(rec["completion_tokens"], 3 + 32);
}

#[test]
fn missing_key_and_bad_flags_are_explained() {
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", "{\"prompt\":\"a\"}\n");
    let out = dir.path("o.jsonl");
    let r = command()
        .env_remove("EVOLINK_API_KEY")
        .args(["run", input.to_str().unwrap(), "-o", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(
        stderr.contains("EVOLINK_API_KEY or OPENAI_API_KEY") && stderr.contains("--dry-run"),
        "{stderr}"
    );
    assert!(!out.exists());

    let usage = run_args(&["run", "x.csv", "-o", "y.jsonl", "--concurrency", "zero"]);
    assert_eq!(usage.code, 2);
    let missing_input = run_args(&[
        "run",
        "/nonexistent/in.csv",
        "-o",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(missing_input.code, 1);
    assert!(
        missing_input.stderr.contains("/nonexistent/in.csv"),
        "{}",
        missing_input.stderr
    );
}

#[test]
fn dry_run_needs_no_key_and_runs_the_samples() {
    let dir = Workdir::new();
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("samples");
    let out = dir.path("reviews.jsonl");
    let r = command()
        .env_remove("EVOLINK_API_KEY")
        .arg("run")
        .arg(samples.join("reviews.csv"))
        .arg("-o")
        .arg(&out)
        .args([
            "--dry-run",
            "--template",
            "Summarize this {rating}-star review of {product}: {review}",
        ])
        .output()
        .unwrap();
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    let records = read_jsonl(&out);
    assert_eq!(records.len(), 12);
    let r010 = records.iter().find(|r| r["id"] == "r-010").unwrap();
    assert!(r010["prompt"]
        .as_str()
        .unwrap()
        .contains("within a week,\nand the corners"));
}

#[test]
fn jsonl_template_and_standard_input() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let r = run_stdin(
        &sim,
        &output,
        &["--input-format", "jsonl", "--template", "{title} ({year}): {meta}"],
        b"{\"id\":\"m1\",\"title\":\"Dune\",\"year\":1965,\"meta\":{\"pages\":412}}\n{\"id\":\"m2\",\"title\":\"Emma\",\"year\":1815,\"meta\":null}\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["m1"]["prompt"], "Dune (1965): {\"pages\":412}");
    assert_eq!(records["m2"]["prompt"], "Emma (1815): ");

    let missing = dir.write("bad.jsonl", "{\"title\":\"x\",\"year\":1}\n");
    let r = run(
        &sim,
        &missing,
        &dir.path("o2.jsonl"),
        &["--template", "{title} {meta}"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("bad.jsonl:1")
            && r.stderr.contains("`meta`")
            && r.stderr.contains("`title`, `year`"),
        "{}",
        r.stderr
    );
}

#[test]
fn unpriced_models_are_never_shown_as_free() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n");
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["--model", "my-local-model"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("has no price").count(),
        1,
        "one warning: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("my-local-model: unpriced (2 rows"),
        "{}",
        r.stderr
    );
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 2, "a record per row");
    assert!(records.iter().all(|r| r["cost_usd"].is_null()));

    let prices = dir.write(
        "p.toml",
        "[models.\"my-local-model\"]\ninput = 1000000\ncached_input = 0\noutput = 0\n",
    );
    let r = run(
        &sim,
        &input,
        &dir.path("o2.jsonl"),
        &[
            "--model",
            "my-local-model",
            "--prices",
            prices.to_str().unwrap(),
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&dir.path("o2.jsonl"));
    assert_eq!(records.len(), 2, "a record per row");
    for rec in records {
        assert_eq!(
            rec["cost_usd"].as_f64().unwrap(),
            rec["prompt_tokens"].as_f64().unwrap()
        );
    }
}

#[test]
fn byte_order_marks_and_crlf_are_accepted_and_output_cannot_be_the_input() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = dir.write("bom.csv", "\u{feff}id,prompt\r\na1,hello\r\n");
    let jsonl = dir.write(
        "bom.jsonl",
        "\u{feff}{\"id\":\"j1\",\"prompt\":\"hi\"}\r\n{\"id\":\"j2\",\"prompt\":\"yo\"}\r\n",
    );
    for (input, ids) in [(&csv, vec!["a1"]), (&jsonl, vec!["j1", "j2"])] {
        let output = dir.path(&format!(
            "{}.out.jsonl",
            input.file_name().unwrap().to_str().unwrap()
        ));
        let r = run(&sim, input, &output, &["-q"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let records = by_id(&read_jsonl(&output));
        for id in ids {
            assert_eq!(records[id]["status"], "ok", "{id}");
        }
    }
    assert_eq!(
        by_id(&read_jsonl(&dir.path("bom.csv.out.jsonl")))["a1"]["prompt"],
        "hello"
    );

    let r = run(&sim, &jsonl, &jsonl, &["-q"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is the input file"), "{}", r.stderr);
}

#[test]
fn csv_from_standard_input() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let r = run_stdin(
        &sim,
        &output,
        &["--input-format", "csv"],
        b"id,prompt\na,hello\nb,world\n",
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = by_id(&read_jsonl(&output));
    assert_eq!(records["a"]["completion"], "echo: hello");
    assert_eq!(records["b"]["completion"], "echo: world");
}

/// 200 rows with ids; row 150 repeats row 3's id and row 190 row 170's.
fn ids_with_two_duplicates() -> String {
    (1..=200)
        .map(|row| {
            let id = match row {
                150 => 3,
                190 => 170,
                n => n,
            };
            format!("{{\"id\":\"r{id}\",\"prompt\":\"prompt {row}\"}}\n")
        })
        .collect()
}

fn no_spill_files_left(dir: &Path) {
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("spill"))
        .collect();
    assert!(left.is_empty(), "spill files left: {left:?}");
}

#[test]
fn duplicate_ids_are_found_across_spilled_runs() {
    // PROMPTBATCH_TEST_SPILL_ITEMS=8 (debug builds): 8 ids in memory, then the pre-pass sorts
    // the ids in runs of 8 on disk and merges them.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &ids_with_two_duplicates());
    let output = dir.path("out.jsonl");
    let spill = |args: &[&str], output: &Path| {
        let out = command()
            .env("PROMPTBATCH_TEST_SPILL_ITEMS", "8")
            .arg("run")
            .arg(&input)
            .arg("-o")
            .arg(output)
            .args(["--base-url", &sim.base_url, "-q", "--concurrency", "1"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = spill(&[], &output);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("in.jsonl:150"), "{stderr}");
    assert!(stderr.contains("duplicate id `r3`"), "{stderr}");
    assert!(!output.exists(), "found before anything is sent");
    no_spill_files_left(dir.path("").as_path());

    // validate lists both, at their lines.
    let out = command()
        .env("PROMPTBATCH_TEST_SPILL_ITEMS", "8")
        .arg("validate")
        .arg(&input)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("in.jsonl:150"), "{text}");
    assert!(text.contains("in.jsonl:190"), "{text}");
    assert_eq!(text.matches("duplicate id").count(), 2, "{text}");
}

/// The benchmark's simulator mode: the reference answer, sent chunked (no `Content-Length`), is
/// read whole, and every row of the run gets it.
#[test]
fn chunked_seed_answers_are_read_whole() {
    let sim = Sim::start(SimOptions {
        answer: promptbatch::AnswerBody::Seed,
        chunked: true,
        ..Default::default()
    });
    let dir = Workdir::new();
    let lines: String = (0..50)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "8", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(by_id(&records).len(), 50);
    for rec in &records {
        assert_eq!(rec["status"], "ok");
        assert_eq!(
            rec["response_id"],
            "chatcmpl-20251010015944503180122WJNB8Eid"
        );
        assert_eq!(rec["completion_tokens"], 1891);
        assert_eq!(rec["reasoning_tokens"], 1480);
        assert!(rec["completion"]
            .as_str()
            .unwrap()
            .ends_with("understanding capabilities..."));
    }
}

/// Issue 21: fast refusals of the first five rows arrive before the slower answers of good
/// ones. The breaker waits for those answers: one success and the refusals are row problems.
#[test]
fn five_refused_rows_before_the_first_success_do_not_trip_a_model_that_works() {
    let sim = Sim::start(SimOptions::default());
    let dir = Workdir::new();
    let lines: String = (0..60)
        .map(|i| {
            if i < 5 {
                format!("{{\"id\":\"r{i}\",\"prompt\":\"bad {i} #sim:status=400\"}}\n")
            } else {
                format!("{{\"id\":\"r{i}\",\"prompt\":\"good {i} #sim:sleep=300ms\"}}\n")
            }
        })
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-c", "16", "-q"]);
    assert_eq!(r.code, 3, "errors, not a refusal: {}", r.stderr);
    assert!(!r.stderr.contains("check the key"), "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 60, "every row has a record");
    let errors: Vec<&str> = records
        .iter()
        .filter(|r| r["status"] == "error")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(errors
        .iter()
        .all(|id| ["r0", "r1", "r2", "r3", "r4"].contains(id)));
}

/// Issue 21: an output with ok records and a few permanent-400 error records of one model. The
/// re-run sends the error rows again; they all fail, no row succeeds in that run, but the model
/// has ok records on disk: it works, so the breaker does not trip, no record is lost, exit 3.
#[test]
fn a_rerun_of_refused_rows_of_a_model_with_ok_records_keeps_every_record() {
    let sim = Sim::start(SimOptions::default());
    let dir = Workdir::new();
    let lines: String = (0..100)
        .map(|i| {
            let bad = if i % 10 == 7 { " #sim:status=400" } else { "" };
            format!("{{\"id\":\"r{i}\",\"prompt\":\"row {i}{bad}\"}}\n")
        })
        .collect();
    let input = dir.write("in.jsonl", &lines);
    let output = dir.path("out.jsonl");
    let first = run(&sim, &input, &output, &["-c", "1", "-q"]);
    assert_eq!(first.code, 3, "{}", first.stderr);
    assert_eq!(read_jsonl(&output).len(), 100);
    for attempt in 1..=2 {
        let before = sim.requests();
        let r = run(&sim, &input, &output, &["-c", "4", "-q"]);
        assert_eq!(r.code, 3, "run {attempt}: {}", r.stderr);
        assert_eq!(
            sim.requests() - before,
            10,
            "only the error rows are sent again"
        );
        assert!(!r.stderr.contains("was refused"), "{}", r.stderr);
        let records = read_jsonl(&output);
        assert_eq!(
            records.len(),
            100,
            "run {attempt}: a record per row, none removed"
        );
        let errors = records.iter().filter(|r| r["status"] == "error").count();
        assert_eq!(errors, 10);
    }
}

/// Issue 21: an answer without `usage` has an unknown cost — null on its record, a warning —
/// and `--max-cost` counts its worst case as spent, never $0.
#[test]
fn an_answer_without_usage_has_an_unknown_cost_that_the_budget_counts_at_its_worst() {
    let sim = Sim::start(SimOptions::default());
    let dir = Workdir::new();
    let rows = |directive: &str| -> String {
        (0..20)
            .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"row {i} {directive}\"}}\n"))
            .collect()
    };
    let args = [
        "-c",
        "1",
        "--max-tokens",
        "1000",
        "--max-cost",
        "0.05",
        "-q",
    ];

    let without = dir.write("without.jsonl", &rows("#sim:no-usage"));
    let output = dir.path("without.out.jsonl");
    let r = run(&sim, &without, &output, &args);
    assert!(r.stderr.contains("reported no `usage`"), "{}", r.stderr);
    let records = read_jsonl(&output);
    assert!(!records.is_empty());
    // -c 1: one row at a time, each counted at its worst case, 1,000 output tokens of gpt-5.2
    // ($0.014 and a little for the prompt): 3 fit under $0.05, a 4th would not.
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(
        records.iter().all(|r| r["cost_usd"].is_null()),
        "{records:?}"
    );
    // Each row's worst case (1,000 completion tokens) is a few cents: the cap stops the run
    // after a few rows, as if each had cost that.
    assert!(
        records.len() <= 5,
        "{} rows under a $0.05 cap",
        records.len()
    );
    assert_eq!(r.code, 4, "stopped at the budget: {}", r.stderr);

    // The same rows with usage cost a fraction of a cent each: all 20 fit.
    let with = dir.write("with.jsonl", &rows(""));
    let output = dir.path("with.out.jsonl");
    let r = run(&sim, &with, &output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 20);
    assert!(records
        .iter()
        .all(|r| r["cost_usd"].as_f64().unwrap() > 0.0));
}
