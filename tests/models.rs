//! Several models per row (`--model a,b`): one record per (row, model), resume per pair (after
//! `kill -9`, with a model added or dropped), `--ordered` in the list's order, `estimate` and
//! `report` per model, rows naming their own model, duplicate ids, `--via batch` per pair, `--output-format openai-batch`. Real
//! binary, real simulator over loopback.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::Value;

fn jsonl_rows(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt number {i}\",\"tag\":{i}}}\n"))
        .collect()
}

/// How many records each (id, model) pair has, asserting each is ok with its own answer and
/// its row number.
fn pairs(records: &[Value]) -> HashMap<(String, String), usize> {
    let mut count = HashMap::new();
    for r in records {
        assert_eq!(r["status"], "ok", "{r}");
        let id = r["id"].as_str().unwrap().to_string();
        let n: u64 = id[1..].parse().unwrap();
        assert_eq!(r["row"], n + 1, "the row's own number: {r}");
        assert_eq!(r["prompt"], format!("prompt number {n}"), "{r}");
        assert_eq!(r["completion"], format!("echo: prompt number {n}"), "{r}");
        *count
            .entry((id, r["model"].as_str().unwrap().to_string()))
            .or_default() += 1;
    }
    count
}

/// Exactly one ok record for each of `n` rows and each model, and nothing else.
fn assert_one_record_per_pair(output: &Path, n: usize, models: &[&str]) {
    let records = read_jsonl(output);
    let count = pairs(&records);
    assert_eq!(records.len(), n * models.len(), "rows × models records");
    for i in 0..n {
        for model in models {
            assert_eq!(
                count.get(&(format!("r{i}"), model.to_string())),
                Some(&1),
                "row r{i}, model {model}"
            );
        }
    }
}

#[test]
fn two_models_give_one_record_per_row_and_model_with_kept_columns() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_rows(30));
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--model", "m-one,m-two", "--keep-columns", "tag", "-q"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_record_per_pair(&output, 30, &["m-one", "m-two"]);
    assert_eq!(sim.requests(), 60, "one request per (row, model)");
    assert!(
        r.stderr
            .contains("(row, model) pairs: 60 ok, 0 error this run"),
        "the summary counts pairs, not rows: {}",
        r.stderr
    );
    for record in read_jsonl(&output) {
        let n: u64 = record["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(record["tag"], n, "kept column in each model's record");
    }
    // `report` groups them by model.
    let report = run_args(&["report", output.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    let by_model: Vec<(String, u64)> = report["cost"]["by_model"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["model"].as_str().unwrap().to_string(),
                m["rows"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_model,
        [("m-one".to_string(), 30), ("m-two".to_string(), 30)]
    );
}

#[test]
fn csv_output_with_two_models_keeps_columns_in_each_record() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.csv",
        "ticket,prompt\nT-1,\"first, with a comma\"\nT-2,second\n",
    );
    let output = dir.path("out.csv");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "--model",
            "a,b",
            "--keep-columns",
            "ticket",
            "--ordered",
            "-q",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let got: Vec<(String, String, String, String)> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            (
                r[col("row")].to_string(),
                r[col("model")].to_string(),
                r[col("ticket")].to_string(),
                r[col("completion")].to_string(),
            )
        })
        .collect();
    let want = [
        ("1", "a", "T-1", "echo: first, with a comma"),
        ("1", "b", "T-1", "echo: first, with a comma"),
        ("2", "a", "T-2", "echo: second"),
        ("2", "b", "T-2", "echo: second"),
    ]
    .map(|(a, b, c, d)| (a.into(), b.into(), c.into(), d.into()));
    assert_eq!(got, want);
}

#[test]
fn kill_9_then_resume_gives_one_record_per_row_and_model() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("5ms..25ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 200;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let output = dir.path("out.jsonl");
    let concurrency = 8;
    let before = kill_9_after_lines(
        &sim,
        &input,
        &output,
        &["-q", "-c", "8", "--model", "m-one,m-two"],
        150,
    );
    assert!(before < 2 * n, "the kill left work to do");

    let r = run(
        &sim,
        &input,
        &output,
        &["-c", "8", "-q", "--model", "m-one,m-two"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("(row, model) pairs done"), "{}", r.stderr);
    assert_one_record_per_pair(&output, n, &["m-one", "m-two"]);
    let sent = sim.requests() as usize;
    assert!(
        sent <= 2 * n + concurrency,
        "{sent} requests for {n} rows × 2 models: at most the in-flight ones ({concurrency}) are paid again"
    );
    // And a re-run sends nothing.
    let r = run(&sim, &input, &output, &["-q", "--model", "m-one,m-two"]);
    assert!(
        r.stderr
            .contains("already complete: all 400 (row, model) pairs have a record"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests() as usize, sent);
}

#[test]
fn adding_a_model_sends_only_its_requests_and_dropping_one_keeps_its_records() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 20;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let anonymous = dir.write(
        "anon.jsonl",
        &(0..n)
            .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
            .collect::<String>(),
    );
    let output = dir.path("out.jsonl");
    let anon_out = dir.path("anon-out.jsonl");
    for (input, output) in [(&input, &output), (&anonymous, &anon_out)] {
        assert_eq!(run(&sim, input, output, &["-q", "--model", "a,b"]).code, 0);
    }
    assert_eq!(sim.requests(), 80);

    // A third model: only its requests go out, for rows with ids and without.
    for (input, output) in [(&input, &output), (&anonymous, &anon_out)] {
        let r = run(&sim, input, output, &["-q", "--model", "a,b,c"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            r.stderr
                .contains("resuming: 40 of 60 (row, model) pairs done, 20 to send\n"),
            "{}",
            r.stderr
        );
    }
    assert_eq!(sim.requests(), 120, "20 more per input");
    assert_one_record_per_pair(&output, n, &["a", "b", "c"]);
    let anon_records = read_jsonl(&anon_out);
    assert_eq!(anon_records.len(), 60);
    let models: Vec<&str> = anon_records
        .iter()
        .filter(|r| r["model"] == "c")
        .map(|r| r["prompt"].as_str().unwrap())
        .collect();
    assert_eq!(models.len(), 20, "one record of c per row");

    // Dropping a and b: their records stay; c is done, nothing is sent.
    let r = run(&sim, &input, &output, &["-q", "--model", "c"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("already complete: all 20 rows have a record"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 120);
    assert_one_record_per_pair(&output, n, &["a", "b", "c"]);
}

#[test]
fn ordered_puts_each_rows_records_in_the_lists_order() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("1ms..20ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 40;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "-c", "16", "--ordered", "--model", "zeta,alpha"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got: Vec<(u64, String)> = read_jsonl(&output)
        .iter()
        .map(|r| {
            (
                r["row"].as_u64().unwrap(),
                r["model"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want: Vec<(u64, String)> = (1..=n as u64)
        .flat_map(|row| [(row, "zeta".to_string()), (row, "alpha".to_string())])
        .collect();
    assert_eq!(got, want);
}

#[test]
fn estimate_prices_each_model_of_the_list_and_the_total() {
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_rows(10));
    let input = input.to_str().unwrap();
    let json = |models: &str| -> Value {
        let r = run_args(&[
            "estimate",
            input,
            "--model",
            models,
            "--max-tokens",
            "100",
            "--json",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    let one = json("gpt-5.2");
    let other = json("gemini-3.1-pro-preview");
    let both = json("gpt-5.2,gemini-3.1-pro-preview");
    assert_eq!(both["rows"], 20, "rows × models requests");
    assert_eq!(both["models_per_row"], 2);
    let models = both["models"].as_array().unwrap();
    let by_name: HashMap<&str, &Value> = models
        .iter()
        .map(|m| (m["model"].as_str().unwrap(), m))
        .collect();
    assert_eq!(by_name.len(), 2);
    for (name, alone) in [("gpt-5.2", &one), ("gemini-3.1-pro-preview", &other)] {
        assert_eq!(by_name[name]["rows"], 10, "{name}");
        assert_eq!(
            by_name[name]["worst_cost_usd"], alone["worst_cost_usd"],
            "{name}: the same cost as alone"
        );
    }
    let sum = one["worst_cost_usd"].as_f64().unwrap() + other["worst_cost_usd"].as_f64().unwrap();
    let total = both["worst_cost_usd"].as_f64().unwrap();
    assert!((total - sum).abs() < 1e-9, "total {total} = {sum}");
    assert!(one["worst_cost_usd"].as_f64().unwrap() > 0.0);
    // The table says so.
    let r = run_args(&[
        "estimate",
        input,
        "--model",
        "gpt-5.2,gemini-3.1-pro-preview",
    ]);
    assert!(
        r.stdout.contains("each row goes to 2 models"),
        "{}",
        r.stdout
    );
}

#[test]
fn progress_counts_a_row_naming_its_own_model_as_one_unit() {
    // 12 rows to `--model a,b`, 4 of which name their own model: 8 × 2 + 4 = 20 units. The
    // pre-count says 24; each such row read takes one off, so the total falls to 20.
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("150ms").unwrap(),
        ..SimOptions::default()
    });
    let dir = Workdir::new();
    let rows: String = (0..12)
        .map(|i| match i % 3 {
            0 => format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\",\"model\":\"mine\"}}\n"),
            _ => format!("{{\"id\":\"r{i}\",\"prompt\":\"p{i}\"}}\n"),
        })
        .collect();
    let input = dir.write("in.jsonl", &rows);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["--model", "a,b", "-c", "2", "--log-every", "100ms"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&output).len(), 20);
    let totals: Vec<&str> = r
        .stderr
        .lines()
        .filter_map(|l| l.strip_prefix("progress: "))
        .filter_map(|l| l.split_once(' ').map(|(count, _)| count))
        .filter_map(|count| count.split_once('/').map(|(_, total)| total))
        .collect();
    assert!(totals.len() >= 3, "{}", r.stderr);
    assert_eq!(totals.last(), Some(&"20"), "{}", r.stderr);
    let totals: Vec<u64> = totals.iter().map(|t| t.parse().unwrap()).collect();
    assert!(totals.windows(2).all(|w| w[0] >= w[1]), "{totals:?}");
    assert!(totals.iter().all(|t| (20..=24).contains(t)), "{totals:?}");
}

#[test]
fn a_csv_model_column_sends_each_row_to_its_own_model() {
    // An Excel-style CSV (BOM, CRLF): a value in `llm` sends the row to that model alone
    // (trimmed); an empty cell goes to each model of --model's list.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.csv",
        "\u{feff}id,prompt,llm\r\nr1,one,mine\r\nr2,two,\r\nr3,three, spaced \r\n",
    );
    let output = dir.path("out.jsonl");
    let args = ["-q", "--model", "a,b", "--model-column", "llm", "--ordered"];
    let r = run(&sim, &input, &output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = ids_and_models(&output);
    let want = [("r1", "mine"), ("r2", "a"), ("r2", "b"), ("r3", "spaced")]
        .map(|(i, m)| (i.to_string(), m.to_string()));
    assert_eq!(got, want);
    assert_eq!(sim.requests(), 4);
    let r = run(&sim, &input, &output, &args);
    assert!(
        r.stderr
            .contains("already complete: all 4 (row, model) pairs have a record"),
        "{}",
        r.stderr
    );
    // `estimate` prices each row at its own model.
    let r = run_args(&[
        "estimate",
        input.to_str().unwrap(),
        "--model",
        "gpt-5.2,gemini-3.1-pro-preview",
        "--model-column",
        "llm",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("mine"), "{}", r.stdout);
    // A missing column, and the flag on a JSONL input, are refused with what to do.
    let r = run(
        &sim,
        &input,
        &dir.path("o2.jsonl"),
        &["--model-column", "engine"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("--model-column") && r.stderr.contains("llm"),
        "{}",
        r.stderr
    );
    let jsonl = dir.write("in.jsonl", "{\"prompt\":\"x\"}\n");
    let r = run(
        &sim,
        &jsonl,
        &dir.path("o3.jsonl"),
        &["--model-column", "llm"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("JSONL rows name their own model with a `model` field"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 4);
}

#[test]
fn a_row_naming_its_own_model_is_sent_to_it_alone() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        concat!(
            "{\"id\":\"plain\",\"prompt\":\"to both\"}\n",
            "{\"id\":\"own\",\"prompt\":\"to mine\",\"model\":\"mine\"}\n",
            "{\"custom_id\":\"batch\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",",
            "\"body\":{\"model\":\"theirs\",\"messages\":[{\"role\":\"user\",\"content\":\"to theirs\"}]}}\n",
        ),
    );
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "--model", "a,b", "--ordered"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = ids_and_models(&output);
    let want = [
        ("plain", "a"),
        ("plain", "b"),
        ("own", "mine"),
        ("batch", "theirs"),
    ]
    .map(|(i, m)| (i.to_string(), m.to_string()));
    assert_eq!(got, want);
    assert_eq!(sim.requests(), 4);
    // Resumed: all done, the own-model rows included.
    let r = run(&sim, &input, &output, &["-q", "--model", "a,b"]);
    assert!(
        r.stderr
            .contains("already complete: all 4 (row, model) pairs have a record"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 4);
}

#[test]
fn a_duplicate_id_is_reported_once_per_row_not_per_model() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"x\",\"prompt\":\"one\"}\n{\"id\":\"y\",\"prompt\":\"two\"}\n{\"id\":\"x\",\"prompt\":\"three\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q", "--model", "a,b"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("duplicate id `x`").count(),
        1,
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("in.jsonl:3:"), "{}", r.stderr);
    // Found before anything is sent.
    assert_eq!(sim.requests(), 0);
    // validate counts rows, not (row, model) pairs, and finds it once.
    let v = run_args(&["validate", input.to_str().unwrap(), "--model", "a,b"]);
    assert!(
        v.stdout.contains("3 data rows: 2 valid, 1 invalid"),
        "{}",
        v.stdout
    );
}

#[test]
fn model_lists_that_cannot_work_are_refused_with_what_to_do() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_rows(2));
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q", "--model", "a,a"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("names `a` twice"), "{}", r.stderr);
    let r = run(&sim, &input, &output, &["-q", "--model", "a,,b"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("model 2 of the list is empty"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 0);
    assert!(!output.exists() || std::fs::read_to_string(&output).unwrap().is_empty());
}

#[test]
fn shards_with_two_models_merge_into_one_record_per_row_and_model() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 30;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let mut parts = Vec::new();
    for k in 0..2 {
        let part = dir.path(&format!("part-{k}.jsonl"));
        let shard = format!("{k}/2");
        let r = run(
            &sim,
            &input,
            &part,
            &["-q", "--model", "a,b", "--shard", &shard],
        );
        assert_eq!(r.code, 0, "{}", r.stderr);
        parts.push(part.to_str().unwrap().to_string());
    }
    let all = dir.path("all.jsonl");
    let expect = (2 * n).to_string();
    let mut args = vec!["merge"];
    args.extend(parts.iter().map(String::as_str));
    args.extend(["-o", all.to_str().unwrap(), "--expect-rows", &expect]);
    let r = run_args(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_record_per_pair(&all, n, &["a", "b"]);
    // A copy of a shard is an overlap, named with its model.
    let all2 = dir.path("all2.jsonl");
    let copy = dir.path("copy-of-part-0.jsonl");
    std::fs::copy(&parts[0], &copy).unwrap();
    let copy = copy.to_str().unwrap();
    let r = run_args(&["merge", &parts[0], copy, "-o", all2.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("` for model `a` is in"), "{}", r.stderr);
}

#[test]
fn max_cost_reserves_each_row_and_models_own_worst_case() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_rows(30));
    let output = dir.path("out.jsonl");
    // Worst case of one request: ~2 × 9 prompt tokens plus 100 output tokens, about $0.0014 at
    // gpt-5.2's prices ($1.75 / $14 per M) and $0.0012 at gemini-3.1-pro-preview's ($2 / $12);
    // what the simulator's answers really cost is about $0.0001 each.
    let models = ["gpt-5.2", "gemini-3.1-pro-preview"];
    let prices = [(1.75, 14.0), (2.0, 12.0)];
    let args = ["--max-tokens", "100", "-c", "2", "-q", "--model"];
    let list = models.join(",");
    let r = run(
        &sim,
        &input,
        &output,
        &[&args[..], &[list.as_str(), "--max-cost", "0.003"]].concat(),
    );
    assert_eq!(r.code, 4, "{}", r.stderr);
    let records = read_jsonl(&output);
    let spent: f64 = records
        .iter()
        .map(|r| r["cost_usd"].as_f64().unwrap())
        .sum();
    assert!(spent <= 0.003, "spent {spent}");
    assert!(
        spent + 0.0015 > 0.003,
        "stopped only when the next worst case did not fit: {spent}"
    );
    assert!(
        records.len() >= 4 && records.len() < 60,
        "{}",
        records.len()
    );
    for r in &records {
        let m = models.iter().position(|m| r["model"] == *m).unwrap();
        let (input_price, output_price) = prices[m];
        let expected = (r["prompt_tokens"].as_f64().unwrap() * input_price
            + r["completion_tokens"].as_f64().unwrap() * output_price)
            / 1e6;
        assert!(
            (r["cost_usd"].as_f64().unwrap() - expected).abs() < 1e-12,
            "each record priced at its own model's rates: {r}"
        );
    }
    assert!(
        records.iter().any(|r| r["model"] == models[1]),
        "both models ran"
    );
    assert_eq!(
        sim.requests() as usize,
        records.len(),
        "no request without a record"
    );
}

#[test]
fn a_row_that_cannot_be_sent_has_one_error_record_per_model_or_under_its_own() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\":\"blank\",\"prompt\":\" \"}\n{\"id\":\"own\",\"prompt\":\"\",\"model\":\"mine\"}\n",
    );
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "--model", "a,b", "--ordered"],
    );
    assert_eq!(r.code, 3, "finished with error records: {}", r.stderr);
    let got: Vec<(String, String, String)> = read_jsonl(&output)
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["model"].as_str().unwrap().to_string(),
                r["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let empty = "empty prompt: nothing to send".to_string();
    let want = [("blank", "a"), ("blank", "b"), ("own", "mine")]
        .map(|(i, m)| (i.to_string(), m.to_string(), empty.clone()));
    assert_eq!(got, want);
    assert_eq!(sim.requests(), 0);
}

#[test]
fn an_earlier_record_named_by_a_dated_snapshot_counts_for_its_model() {
    // Outputs written before a record's `model` was the requested one hold the name the answer
    // gave, e.g. a dated snapshot: resume files them under the model without the date.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &jsonl_rows(5));
    let output = dir.path("out.jsonl");
    assert_eq!(
        run(&sim, &input, &output, &["-q", "--model", "gpt-5.2"]).code,
        0
    );
    let text = std::fs::read_to_string(&output).unwrap();
    let dated = text.replace("\"model\":\"gpt-5.2\"", "\"model\":\"gpt-5.2-2025-12-11\"");
    assert_ne!(dated, text);
    std::fs::write(&output, &dated).unwrap();
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "--model", "gpt-5.2,gemini-3.1-pro-preview"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("resuming: 5 of 10 (row, model) pairs done, 5 to send\n"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 10, "only gemini's requests");
    assert_eq!(read_jsonl(&output).len(), 10);
    // A list naming a model and its snapshot is refused.
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "--model", "gpt-5.2,gpt-5.2-2025-12-11"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("a dated snapshot of it"), "{}", r.stderr);
}

#[test]
fn an_earlier_record_named_as_a_gateway_answered_counts_for_the_model_it_was_sent_to() {
    // An output written before a record's `model` was the requested one holds the name the
    // answer gave, which a gateway may rename (`openai/gpt-5.2`). Its fingerprint still names
    // the request: resume must not pay for those rows again, whichever planner it uses (rows
    // with ids: the sorted merge; without: by fingerprint; a mix: the in-memory index).
    let with_ids = jsonl_rows(6);
    let without_ids: String = (0..6)
        .map(|i| format!("{{\"prompt\":\"prompt number {i}\"}}\n"))
        .collect();
    let mixed: String = (0..6)
        .map(|i| match i % 2 {
            0 => format!("{{\"id\":\"é {i}\",\"prompt\":\"prompt number {i}\"}}\n"),
            _ => format!("{{\"prompt\":\"prompt number {i}\"}}\n"),
        })
        .collect();
    for (name, rows) in [
        ("with ids", with_ids),
        ("without ids", without_ids),
        ("mixed", mixed),
    ] {
        let sim = Sim::plain();
        let dir = Workdir::new();
        let input = dir.write("in.jsonl", &rows);
        let output = dir.path("out.jsonl");
        let r = run(&sim, &input, &output, &["-q", "--model", "gpt-5.2"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let text = std::fs::read_to_string(&output).unwrap();
        let renamed = text.replace("\"model\":\"gpt-5.2\"", "\"model\":\"openai/gpt-5.2\"");
        assert_eq!(renamed.matches("openai/gpt-5.2").count(), 6, "{name}");
        std::fs::write(&output, &renamed).unwrap();
        let r = run(&sim, &input, &output, &["-q", "--model", "gpt-5.2"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(
                "already complete: all 6 rows have a record, nothing to send (use --fresh"
            ),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(sim.requests(), 6, "{name}: nothing sent again");
        // Rewritten in place under the name the requests went to: the file as first written.
        assert_eq!(std::fs::read_to_string(&output).unwrap(), text, "{name}");
        // Adding a model sends only its requests.
        let r = run(
            &sim,
            &input,
            &output,
            &["-q", "--model", "gpt-5.2,gemini-3.1-pro-preview"],
        );
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(
            r.stderr
                .contains("resuming: 6 of 12 (row, model) pairs done, 6 to send\n"),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(sim.requests(), 12, "{name}: only gemini's requests");
        let records = read_jsonl(&output);
        assert_eq!(records.len(), 12, "{name}");
        let models = |model: &str| records.iter().filter(|r| r["model"] == model).count();
        assert_eq!(models("gpt-5.2"), 6, "{name}");
        assert_eq!(models("gemini-3.1-pro-preview"), 6, "{name}");
        // Renamed again: a renamed record whose row changed since is not claimed: it is kept
        // as another model's (as gemini's are, now out of the list), and the row is sent again.
        let text = std::fs::read_to_string(&output).unwrap();
        std::fs::write(
            &output,
            text.replace("\"model\":\"gpt-5.2\"", "\"model\":\"openai/gpt-5.2\""),
        )
        .unwrap();
        let changed = rows.replacen("prompt number 0", "prompt number zero", 1);
        let input = dir.write("in.jsonl", &changed);
        let r = run(&sim, &input, &output, &["-q", "--model", "gpt-5.2"]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        assert!(
            r.stderr.contains(
                "resuming: 5 of 6 rows done, 1 to send (7 records of models not in --model kept as they are)"
            ),
            "{name}: {}",
            r.stderr
        );
        assert_eq!(sim.requests(), 13, "{name}");
        let records = read_jsonl(&output);
        assert_eq!(records.len(), 13, "{name}: nothing lost");
        let models = |model: &str| records.iter().filter(|r| r["model"] == model).count();
        assert_eq!(
            (
                models("gpt-5.2"),
                models("openai/gpt-5.2"),
                models("gemini-3.1-pro-preview")
            ),
            (6, 1, 6),
            "{name}"
        );
    }
}

#[test]
fn via_batch_sends_each_row_to_each_model_and_resumes_per_pair() {
    // One batch per model (a batch runs one model; the simulator fails a mixed one). The first
    // batch, a's, expires (half its lines answered): its other half goes into another one.
    let sim = Sim::start(SimOptions {
        batch_expire: 1,
        ..SimOptions::default()
    });
    let dir = Workdir::new();
    let n = 30;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let output = dir.path("out.jsonl");
    let batch = |models: &str, more: &[&str]| {
        let mut args = vec![
            "-q",
            "--via",
            "batch",
            "--poll-every",
            "50ms",
            "--model",
            models,
        ];
        args.extend_from_slice(more);
        run(&sim, &input, &output, &args)
    };
    let totals = |sim: &Sim| -> Vec<u64> {
        sim.stats()["batch"]["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["total"].as_u64().unwrap())
            .collect()
    };
    let r = batch("a,b", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_record_per_pair(&output, n, &["a", "b"]);
    assert_eq!(
        totals(&sim),
        [30, 30, 15],
        "the expired half, and only it, again"
    );
    let twice = read_jsonl(&output)
        .iter()
        .filter(|r| r["attempts"] == 2)
        .count();
    assert_eq!(twice, 15);

    // A third model: one batch of its 30 requests.
    let r = batch("a,b,c", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(totals(&sim), [30, 30, 15, 30]);
    assert_one_record_per_pair(&output, n, &["a", "b", "c"]);

    // Batches in flight were made for one list: another list is refused until they are in.
    let r = batch("d,e", &["--detach"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = batch("d", &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("run with --model d,e to collect them"),
        "{}",
        r.stderr
    );
    let r = batch("d,e", &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_one_record_per_pair(&output, n, &["a", "b", "c", "d", "e"]);
    assert_eq!(totals(&sim), [30, 30, 15, 30, 30, 30]);
}

#[test]
fn via_batch_killed_during_the_download_resumes_with_one_record_per_pair() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 100;
    let input = dir.write("in.jsonl", &jsonl_rows(n));
    let output = dir.path("out.jsonl");
    let batch = |abort: Option<&str>| {
        let mut cmd = command();
        cmd.arg("run")
            .arg(&input)
            .arg("-o")
            .arg(&output)
            .args(["--base-url", &sim.base_url, "--via", "batch"])
            .args(["--poll-every", "50ms", "--model", "a,b"])
            .env_remove("PROMPTBATCH_TEST_ABORT_AT");
        if let Some(point) = abort {
            cmd.env("PROMPTBATCH_TEST_ABORT_AT", point);
        }
        cmd.output().unwrap()
    };
    let killed = batch(Some("during-download"));
    assert_ne!(killed.status.code(), Some(0), "aborted mid-download");
    let partial = read_jsonl_lenient(&output);
    assert!(
        (n..2 * n).contains(&partial),
        "about half the records are written before the kill: {partial}"
    );
    let resumed = batch(None);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert_eq!(resumed.status.code(), Some(0), "{stderr}");
    let stats = sim.stats()["batch"].clone();
    // One batch per model, none created again; the resume downloads both outputs once more.
    assert_eq!(stats["batches_created"], 2, "no new batch: {stats}");
    assert_eq!(stats["downloads"], 4, "each output file again: {stats}");
    assert_one_record_per_pair(&output, n, &["a", "b"]);
}

/// Whole records in an output a kill may have cut.
fn read_jsonl_lenient(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).is_ok())
        .count()
}

/// `--output-format openai-batch` with two models: every line's `custom_id` is unique
/// (`ID#MODEL`, as the Batch API's are within a file), and stays so when a resume with a
/// retried error record rewrites the file.
#[test]
fn openai_batch_lines_with_two_models_have_one_custom_id_each() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write(
        "in.jsonl",
        "{\"id\": \"a\", \"prompt\": \"one\"}\n{\"id\": \"b\", \"prompt\": \"two #sim:fail=1\"}\n",
    );
    let output = dir.path("out.jsonl");
    let args = [
        "--model",
        "m-one,m-two",
        "--output-format",
        "openai-batch",
        "--max-retries",
        "0",
        "-q",
    ];
    let first = run(&sim, &input, &output, &args);
    assert_ne!(first.code, 0, "b failed for both models: {}", first.stderr);
    let custom_ids = |path: &Path| -> Vec<String> {
        let mut ids: Vec<String> = read_jsonl(path)
            .iter()
            .map(|l| l["custom_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(
        custom_ids(&output),
        ["a#m-one", "a#m-two", "b#m-one", "b#m-two"]
    );
    // The rerun retries b's error records: the file is rewritten without them, then b's
    // answers are appended; still one line per (row, model).
    let second = run(&sim, &input, &output, &[&args[..4], &["-q"]].concat());
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert_eq!(
        custom_ids(&output),
        ["a#m-one", "a#m-two", "b#m-one", "b#m-two"]
    );
    for line in read_jsonl(&output) {
        let custom_id = line["custom_id"].as_str().unwrap();
        let record = &line["promptbatch"];
        assert_eq!(record["status"], "ok", "{line}");
        let expected = format!(
            "{}#{}",
            record["id"].as_str().unwrap(),
            record["model"].as_str().unwrap()
        );
        assert_eq!(custom_id, expected);
    }
}
