//! Parquet in and out, end to end: Parquet inputs written here with the `parquet` crate run every
//! row (template columns of several types, ids from a column, a `messages` list<struct> column);
//! a missing column, a null or duplicate id and an unsupported type are clear errors; `export`
//! round-trips (read back with the `parquet` crate's own reader: row count, column types,
//! values); `-o x.parquet` keeps a JSONL checkpoint that an interrupted run resumes from; and a
//! torn last record is left out of an export.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{ListBuilder, StringBuilder, StructBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, Int8Type, UInt32Type, UInt64Type};
use arrow_array::{
    Array, ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float64Array, Int32Array,
    Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType, Field, Fields, Schema};
use common::*;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::{json, Map, Value};

/// Writes `columns` as a Parquet file with row groups of `group_rows` rows.
fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>, group_rows: usize) {
    let batch = RecordBatch::try_from_iter(columns).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(group_rows))
        .build();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// A Parquet file read back: its schema and every row as a JSON object.
fn read_parquet(path: &Path) -> (Arc<Schema>, Vec<Map<String, Value>>) {
    let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(path).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let mut rows = Vec::new();
    for batch in builder.build().unwrap() {
        let batch = batch.unwrap();
        for i in 0..batch.num_rows() {
            let mut row = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                row.insert(field.name().clone(), cell(column.as_ref(), i));
            }
            rows.push(row);
        }
    }
    (schema, rows)
}

fn cell(array: &dyn Array, i: usize) -> Value {
    if array.is_null(i) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => json!(array.as_string::<i32>().value(i)),
        DataType::Int64 => json!(array.as_primitive::<Int64Type>().value(i)),
        DataType::UInt64 => json!(array.as_primitive::<UInt64Type>().value(i)),
        DataType::UInt32 => json!(array.as_primitive::<UInt32Type>().value(i)),
        DataType::Float64 => json!(array.as_primitive::<Float64Type>().value(i)),
        DataType::Boolean => json!(array.as_boolean().value(i)),
        other => panic!("unexpected type {other}"),
    }
}

fn type_of(schema: &Schema, name: &str) -> (DataType, bool) {
    let field = schema
        .field_with_name(name)
        .unwrap_or_else(|_| panic!("no column {name}"));
    (field.data_type().clone(), field.is_nullable())
}

/// Ten rows: `ticket` (int64 ids 101…110), `title` (text, row 3 null), `n` (int32), `score`
/// (float64), `flag` (bool), `kind` (dictionary-encoded text, as pandas writes a categorical);
/// row groups of 3 rows.
fn ticket_table(dir: &Workdir) -> std::path::PathBuf {
    let path = dir.path("tickets.parquet");
    let titles: Vec<Option<String>> = (0..10)
        .map(|i| (i != 2).then(|| format!("title {i}")))
        .collect();
    write_parquet(
        &path,
        vec![
            (
                "ticket",
                Arc::new(Int64Array::from_iter_values(101..111)) as ArrayRef,
            ),
            ("title", Arc::new(StringArray::from(titles))),
            ("n", Arc::new(Int32Array::from_iter_values(0..10))),
            (
                "score",
                Arc::new(Float64Array::from_iter_values(
                    (0..10).map(|i| i as f64 + 0.5),
                )),
            ),
            (
                "flag",
                Arc::new(BooleanArray::from_iter((0..10).map(|i| Some(i % 2 == 0)))),
            ),
            (
                "kind",
                Arc::new(DictionaryArray::<Int8Type>::from_iter((0..10).map(|i| {
                    if i % 3 == 0 {
                        "bug"
                    } else {
                        "question"
                    }
                }))),
            ),
        ],
        3,
    );
    path
}

#[test]
fn parquet_input_runs_every_row_with_ids_from_the_id_column() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = ticket_table(&dir);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &[
            "-q",
            "--id-column",
            "ticket",
            "--template",
            "{title} n={n} s={score} f={flag} {kind}",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut records = read_jsonl(&output);
    records.sort_by_key(|r| r["row"].as_u64());
    assert_eq!(records.len(), 10);
    for (i, record) in records.iter().enumerate() {
        let title = if i == 2 {
            String::new()
        } else {
            format!("title {i}")
        };
        let kind = if i % 3 == 0 { "bug" } else { "question" };
        let prompt = format!("{title} n={i} s={}.5 f={} {kind}", i, i % 2 == 0);
        assert_eq!(record["id"], json!(format!("{}", 101 + i)), "{record}");
        assert_eq!(record["row"], json!(i + 1));
        assert_eq!(record["prompt"], json!(prompt));
        assert_eq!(record["completion"], json!(format!("echo: {prompt}")));
        assert_eq!(record["status"], "ok");
    }
    assert_eq!(sim.requests(), 10);

    // --limit, and validate, go through the same reader.
    let limited = dir.path("limited.jsonl");
    let r = run(
        &sim,
        &input,
        &limited,
        &[
            "-q",
            "--id-column",
            "ticket",
            "--template",
            "{title} {n}",
            "--limit",
            "4",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(read_jsonl(&limited).len(), 4);
    let v = run_args(&[
        "validate",
        input.to_str().unwrap(),
        "--template",
        "{title} {n}",
        "--id-column",
        "ticket",
    ]);
    assert_eq!(v.code, 0, "{}{}", v.stdout, v.stderr);
    assert!(v.stdout.contains("`ticket`, `title`, `n`"), "{}", v.stdout);
    let e = run_args(&[
        "estimate",
        input.to_str().unwrap(),
        "--template",
        "{title} {n}",
        "--json",
    ]);
    assert_eq!(e.code, 0, "{}", e.stderr);
    let estimate: Value = serde_json::from_str(&e.stdout).unwrap();
    assert_eq!(estimate["rows"], json!(10), "{estimate}");
}

/// A `messages` column of list<struct<role, content>> is sent as the chat messages, exactly as
/// the same messages in a JSONL input are.
#[test]
fn parquet_messages_column_matches_the_same_jsonl_input() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let conversations = [
        vec![("system", "be brief"), ("user", "hello there")],
        vec![("user", "second row")],
        vec![
            ("user", "a"),
            ("assistant", "b"),
            ("user", "third, with a comma"),
        ],
    ];
    let fields = Fields::from(vec![
        Field::new("role", DataType::Utf8, false),
        Field::new("content", DataType::Utf8, false),
    ]);
    let mut list = ListBuilder::new(StructBuilder::from_fields(fields, 8));
    for conversation in &conversations {
        for (role, content) in conversation {
            let item = list.values();
            item.field_builder::<StringBuilder>(0)
                .unwrap()
                .append_value(role);
            item.field_builder::<StringBuilder>(1)
                .unwrap()
                .append_value(content);
            item.append(true);
        }
        list.append(true);
    }
    let input = dir.path("chats.parquet");
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["c1", "c2", "c3"])) as ArrayRef,
            ),
            ("messages", Arc::new(list.finish())),
        ],
        2,
    );
    let jsonl: String = conversations
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let messages: Vec<Value> = c
                .iter()
                .map(|(role, content)| json!({"role": role, "content": content}))
                .collect();
            format!(
                "{}\n",
                json!({"id": format!("c{}", i + 1), "messages": messages})
            )
        })
        .collect();
    let same = dir.write("chats.jsonl", &jsonl);

    let from_parquet = dir.path("p.jsonl");
    let from_jsonl = dir.path("j.jsonl");
    for (input, output) in [(&input, &from_parquet), (&same, &from_jsonl)] {
        let r = run(&sim, input, output, &["-q", "--ordered"]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let (p, j) = (read_jsonl(&from_parquet), read_jsonl(&from_jsonl));
    assert_eq!(p.len(), 3);
    for (a, b) in p.iter().zip(&j) {
        for field in ["id", "row", "prompt", "completion", "fingerprint"] {
            assert_eq!(a[field], b[field], "{field}: {a} vs {b}");
        }
    }
    assert_eq!(p[1]["completion"], "echo: second row");
    assert_eq!(p[2]["id"], "c3");
}

#[test]
fn parquet_input_errors_name_the_file_row_row_group_and_column() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = ticket_table(&dir);
    let output = dir.path("out.jsonl");
    let r = run(
        &sim,
        &input,
        &output,
        &["-q", "--template", "{title} {body}"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("tickets.parquet")
            && r.stderr
                .contains("--template names column `body`, which the file lacks")
            && r.stderr.contains("`ticket`, `title`, `n`, `score`, `flag`"),
        "{}",
        r.stderr
    );
    // No template and no `prompt` or `messages` column.
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("column `prompt`, which the file lacks"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 0);
    // Duplicate ids, and a null id (an error record with --skip-invalid), name their row.
    let ids = dir.path("ids.parquet");
    write_parquet(
        &ids,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec![
                    Some("a"),
                    None,
                    Some("c"),
                    Some("a"),
                ])) as ArrayRef,
            ),
            (
                "prompt",
                Arc::new(StringArray::from(vec!["p1", "p2", "p3", "p4"])),
            ),
        ],
        2,
    );
    let r = run(&sim, &ids, &output, &["-q", "--fresh", "--skip-invalid"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("ids.parquet:4: duplicate id `a`"),
        "{}",
        r.stderr
    );
    let records = read_jsonl(&output);
    let null_id = records
        .iter()
        .find(|r| r["row"] == 2)
        .expect("row 2 has a record");
    assert_eq!(null_id["status"], "error");
    assert!(
        null_id["error"]
            .as_str()
            .unwrap()
            .contains("column `id` (row 2, row group 0) is null"),
        "{null_id}"
    );
    assert_eq!(
        sim.requests(),
        2,
        "rows 1 and 3 were sent, nothing after the duplicate"
    );
    // A value of a type a prompt cannot hold names the file, row, row group and column.
    let dated = dir.path("dated.parquet");
    write_parquet(
        &dated,
        vec![
            (
                "title",
                Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
            ),
            ("when", Arc::new(Date32Array::from(vec![1, 2, 3]))),
        ],
        2,
    );
    let r = run(
        &sim,
        &dated,
        &output,
        &["-q", "--fresh", "--template", "{title} {when}"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("dated.parquet:1: column `when` (row 1, row group 0): values of type Date32")
            && r.stderr.contains("cast the column to string"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 2, "nothing more was sent");
}

/// A finished JSONL output with fields promptbatch does not know (as later options add) exports
/// to Parquet: one row per record, the record's fields typed exactly, the others inferred, every
/// value equal; CSV → Parquet gives the same table.
#[test]
fn export_to_parquet_round_trips_with_typed_columns() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let n = 25;
    let input: String = (0..n)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt {i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &input);
    let plain = dir.path("plain.jsonl");
    let r = run(&sim, &input, &plain, &["-q", "--ordered"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Extra fields, as --keep-columns / --json-schema would write them.
    let mut records = read_jsonl(&plain);
    let mut text = String::new();
    for (i, record) in records.iter_mut().enumerate() {
        let object = record.as_object_mut().unwrap();
        object.insert("ticket".into(), json!(1000 + i));
        object.insert("parsed".into(), json!({"label": "x", "n": i}));
        object.insert(
            "score".into(),
            if i % 2 == 0 {
                json!(i)
            } else {
                json!(i as f64 + 0.25)
            },
        );
        object.insert(
            "tag".into(),
            if i == 3 {
                Value::Null
            } else {
                json!(format!("t{i}"))
            },
        );
        text += &format!("{record}\n");
    }
    let output = dir.write("out.jsonl", &text);
    let dest = dir.path("out.parquet");
    let r = run_args(&["export", output.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("wrote {n} records")),
        "{}",
        r.stderr
    );

    let (schema, rows) = read_parquet(&dest);
    assert_eq!(rows.len(), n);
    for (name, data_type, nullable) in [
        ("id", DataType::Utf8, false),
        ("row", DataType::UInt64, false),
        ("completion", DataType::Utf8, true),
        ("prompt_tokens", DataType::UInt64, false),
        ("attempts", DataType::UInt32, false),
        ("cost_usd", DataType::Float64, true),
        ("simulated", DataType::Boolean, false),
        ("started_at", DataType::Utf8, true),
        ("ticket", DataType::Int64, false),
        ("parsed", DataType::Utf8, false),
        ("score", DataType::Float64, false),
        ("tag", DataType::Utf8, true),
    ] {
        assert_eq!(type_of(&schema, name), (data_type, nullable), "{name}");
    }
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        &names[..promptbatch::internals::COLUMNS.len()],
        promptbatch::internals::COLUMNS,
        "the record's fields first"
    );
    // Then the others as the file first has them (serde_json writes the keys sorted here).
    assert_eq!(
        &names[promptbatch::internals::COLUMNS.len()..],
        ["parsed", "score", "tag", "ticket"]
    );
    for (record, row) in records.iter().zip(&rows) {
        for (name, value) in record.as_object().unwrap() {
            let got = &row[name];
            match name.as_str() {
                "parsed" => assert_eq!(
                    serde_json::from_str::<Value>(got.as_str().unwrap()).unwrap(),
                    *value
                ),
                "score" => assert_eq!(got.as_f64(), value.as_f64(), "score"),
                _ => assert_eq!(got, value, "{name}"),
            }
        }
    }

    // CSV destination, then CSV → Parquet: the record's columns keep their types and values.
    let csv = dir.path("out.csv");
    let r = run_args(&["export", output.to_str().unwrap(), csv.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again = dir.path("again.parquet");
    let r = run_args(&["export", csv.to_str().unwrap(), again.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (schema2, rows2) = read_parquet(&again);
    assert_eq!(rows2.len(), n);
    for name in [
        "id",
        "row",
        "completion",
        "attempts",
        "cost_usd",
        "simulated",
        "ticket",
    ] {
        assert_eq!(type_of(&schema2, name), type_of(&schema, name), "{name}");
        for (a, b) in rows.iter().zip(&rows2) {
            assert_eq!(a[name], b[name], "{name}");
        }
    }
    // JSONL destination: every record comes back equal, extra fields (objects too) included;
    // `score` is a Float64 column, and its numbers come back as written (`2` stays `2`).
    let copy = dir.path("copy.jsonl");
    let r = run_args(&["export", output.to_str().unwrap(), copy.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let copied = read_jsonl(&copy);
    assert_eq!(copied.len(), n);
    for (a, b) in records.iter().zip(&copied) {
        assert_eq!(a, b);
    }
    // An existing destination is not replaced without --force.
    let r = run_args(&["export", output.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
}

#[test]
fn export_skips_a_torn_last_record() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input: String = (0..6)
        .map(|i| format!("{{\"prompt\":\"p{i}\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &input);
    let output = dir.path("out.jsonl");
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // As if killed in the middle of writing the last record.
    let text = std::fs::read_to_string(&output).unwrap();
    std::fs::write(&output, &text[..text.len() - 20]).unwrap();
    let dest = dir.path("out.parquet");
    let r = run_args(&["export", output.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("line 6) is incomplete and was skipped"),
        "{}",
        r.stderr
    );
    let (_, rows) = read_parquet(&dest);
    let complete: Vec<Value> = text
        .lines()
        .take(5)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 5);
    for (record, row) in complete.iter().zip(&rows) {
        assert_eq!(row["id"], record["id"]);
        assert_eq!(row["completion"], record["completion"]);
    }
    assert!(!dir.path("out.parquet.export-tmp").exists());
}

#[test]
fn an_output_without_records_exports_the_record_schema() {
    let dir = Workdir::new();
    let output = dir.write("empty.jsonl", "");
    let dest = dir.path("empty.parquet");
    let r = run_args(&["export", output.to_str().unwrap(), dest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (schema, rows) = read_parquet(&dest);
    assert!(rows.is_empty());
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, promptbatch::internals::COLUMNS);
    assert_eq!(type_of(&schema, "latency_ms"), (DataType::UInt64, false));
    // Exporting a Parquet file is refused with what to pass instead.
    let r = run_args(&[
        "export",
        dest.to_str().unwrap(),
        dir.path("x.csv").to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("empty.parquet.jsonl"), "{}", r.stderr);
}

fn wait_for_lines(path: &Path, lines: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < lines {
        assert!(Instant::now() < deadline, "hang detector: {lines} records");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `-o x.parquet`: records go to the checkpoint `x.parquet.jsonl`; an interrupted run (Ctrl-C,
/// then `kill -9`) writes no Parquet; the same command resumes from the checkpoint and, once
/// every row has a record, writes the Parquet file with exactly one row per input row.
#[test]
fn parquet_output_checkpoints_and_resumes_after_interrupt_and_kill() {
    let sim = Sim::start(SimOptions {
        latency: LatencySpec::parse("50ms").unwrap(),
        ..Default::default()
    });
    let dir = Workdir::new();
    let n = 120;
    let input = ticket_table_of(&dir, n);
    let dest = dir.path("results.parquet");
    let checkpoint = dir.path("results.parquet.jsonl");
    let spawn = || {
        command()
            .arg("run")
            .arg(&input)
            .arg("-o")
            .arg(&dest)
            .args(["--base-url", &sim.base_url, "-q", "-c", "4"])
            .args(["--id-column", "ticket", "--template", "{title}"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = spawn();
    wait_for_lines(&checkpoint, 8);
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("results.parquet is not written yet") && stderr.contains("checkpoint"),
        "{stderr}"
    );
    assert!(!dest.exists(), "no Parquet before every row has a record");

    let mut child = spawn();
    let before = read_jsonl(&checkpoint).len();
    wait_for_lines(&checkpoint, before + 8);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dest.exists());

    let r = run(
        &sim,
        &input,
        &dest,
        &[
            "-q",
            "-c",
            "4",
            "--id-column",
            "ticket",
            "--template",
            "{title}",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("resuming: "), "{}", r.stderr);
    let records = read_jsonl(&checkpoint);
    assert_eq!(records.len(), n, "one record per row in the checkpoint");
    let (schema, rows) = read_parquet(&dest);
    assert_eq!(rows.len(), n, "one Parquet row per input row");
    assert_eq!(type_of(&schema, "row"), (DataType::UInt64, false));
    let ids: HashSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let expected: HashSet<String> = (0..n).map(|i| (100 + i).to_string()).collect();
    assert_eq!(ids, expected);
    let by_id: HashMap<&str, &Map<String, Value>> = rows
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r))
        .collect();
    for record in &records {
        let row = by_id[record["id"].as_str().unwrap()];
        assert_eq!(row["completion"], record["completion"]);
        assert_eq!(row["status"], "ok");
    }
    // `report` reads a Parquet output through its checkpoint.
    let report = run_args(&["report", dest.to_str().unwrap(), "--json"]);
    assert_eq!(report.code, 0, "{}", report.stderr);
    let report: Value = serde_json::from_str(&report.stdout).unwrap();
    assert_eq!(report["rows"], json!(n), "{report}");

    // A Parquet file without its checkpoint is not replaced.
    std::fs::remove_file(&checkpoint).unwrap();
    let r = run(
        &sim,
        &input,
        &dest,
        &["-q", "--id-column", "ticket", "--template", "{title}"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("its checkpoint"), "{}", r.stderr);
}

/// `n` rows: `ticket` 100…, `title`; one row group per 16 rows.
fn ticket_table_of(dir: &Workdir, n: usize) -> std::path::PathBuf {
    let path = dir.path("in.parquet");
    write_parquet(
        &path,
        vec![
            (
                "ticket",
                Arc::new(Int64Array::from_iter_values(100..100 + n as i64)) as ArrayRef,
            ),
            (
                "title",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("title number {i}")),
                )),
            ),
        ],
        16,
    );
    path
}

#[test]
fn parquet_columns_are_kept_with_their_types() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = ticket_table(&dir);
    let output = dir.path("kept.jsonl");
    let args = [
        "-q",
        "--id-column",
        "ticket",
        "--template",
        "{title}",
        "--keep-columns",
        "n,score,flag,title",
    ];
    let r = run(&sim, &input, &output, &args);
    assert_eq!(
        r.code, 3,
        "row 3's empty title is an error record: {}",
        r.stderr
    );
    let mut records = read_jsonl(&output);
    records.sort_by_key(|r| r["row"].as_u64());
    assert_eq!(records.len(), 10);
    for (i, record) in records.iter().enumerate() {
        assert_eq!(record["n"], json!(i), "integers stay integers: {record}");
        assert_eq!(record["score"], json!(i as f64 + 0.5), "{record}");
        assert_eq!(record["flag"], json!(i % 2 == 0), "{record}");
    }
    assert_eq!(records[2]["title"], Value::Null, "a null stays null");
    // A CSV output gets them as columns, `all` included.
    let csv_out = dir.path("kept.csv");
    let all = [
        "-q",
        "--id-column",
        "ticket",
        "--template",
        "{kind}",
        "--keep-columns",
        "all",
    ];
    let r = run(&sim, &input, &csv_out, &all);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut reader = csv::Reader::from_path(&csv_out).unwrap();
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert!(
        header.iter().any(|h| h == "ticket") && header.iter().any(|h| h == "kind"),
        "{header:?}"
    );
    assert_eq!(reader.records().count(), 10);
    // A kept column the file lacks is named.
    let r = run(
        &sim,
        &input,
        &dir.path("x.jsonl"),
        &["-q", "--keep-columns", "nope", "--template", "{kind}"],
    );
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("`nope`") && r.stderr.contains("`ticket`"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_model_column_sends_each_row_to_its_own_model() {
    // `--model-column llm`: a value sends the row to that model alone; null or empty goes to
    // each model of --model's list.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.path("in.parquet");
    write_parquet(
        &input,
        vec![
            (
                "id",
                Arc::new(StringArray::from(vec!["a", "b", "c", "d"])) as ArrayRef,
            ),
            (
                "prompt",
                Arc::new(StringArray::from(vec!["p a", "p b", "p c", "p d"])) as ArrayRef,
            ),
            (
                "llm",
                Arc::new(StringArray::from(vec![
                    Some("mine"),
                    None,
                    Some(""),
                    Some("théirs"),
                ])) as ArrayRef,
            ),
        ],
        2,
    );
    let output = dir.path("out.jsonl");
    let args = ["-q", "--model", "x,y", "--model-column", "llm", "--ordered"];
    let r = run(&sim, &input, &output, &args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let got = ids_and_models(&output);
    let want = [
        ("a", "mine"),
        ("b", "x"),
        ("b", "y"),
        ("c", "x"),
        ("c", "y"),
        ("d", "théirs"),
    ]
    .map(|(i, m)| (i.to_string(), m.to_string()));
    assert_eq!(got, want);
    assert_eq!(sim.requests(), 6);
    let r = run(&sim, &input, &output, &args);
    assert!(
        r.stderr
            .contains("already complete: all 6 (row, model) pairs have a record"),
        "{}",
        r.stderr
    );
    assert_eq!(sim.requests(), 6);
    // A column the file lacks is refused before anything is sent, naming the ones it has.
    let r = run(
        &sim,
        &input,
        &dir.path("other.jsonl"),
        &["--model-column", "engine"],
    );
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--model-column"), "{}", r.stderr);
    assert!(r.stderr.contains("engine"), "{}", r.stderr);
    assert!(r.stderr.contains("llm"), "{}", r.stderr);
    assert_eq!(sim.requests(), 6);
}
