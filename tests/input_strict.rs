//! End-to-end tests of strict input reading (issue 9, "Trust the data"): nothing the CSV or JSONL
//! reader tolerates may silently change which text goes into a prompt or which rows exist, and
//! every input error says where (physical `file:line`) and what to do. The real binary against
//! the simulator; assertions on record counts, exact texts, exit codes and requests sent.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::*;
use serde_json::Value;

/// Records by row number.
fn by_row(records: &[Value]) -> HashMap<u64, Value> {
    records
        .iter()
        .map(|r| (r["row"].as_u64().unwrap(), r.clone()))
        .collect()
}

/// Records by id.
fn by_id(records: &[Value]) -> HashMap<String, Value> {
    records
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Writes `bytes` as input `name`, runs it with `args` (plus `-q`), returns the run and records.
fn run_bytes(sim: &Sim, dir: &Workdir, name: &str, bytes: &[u8], args: &[&str]) -> Outcome {
    let input = write_bytes(dir, name, bytes);
    let output = dir.path(&format!("{name}.out.jsonl"));
    let _ = std::fs::remove_file(&output);
    let mut all = args.to_vec();
    all.push("-q");
    let before = sim.requests();
    let result = run(sim, &input, &output, &all);
    let records = match output.exists() {
        true => read_jsonl(&output),
        false => Vec::new(),
    };
    let sent = sim.requests() - before;
    Outcome {
        result,
        records,
        sent,
    }
}

/// What a run produced.
struct Outcome {
    result: RunResult,
    records: Vec<Value>,
    /// Requests the simulator received during the run.
    sent: u64,
}

impl Outcome {
    /// Asserts the run stopped (exit 1) with `fragment` in its message, having sent nothing
    /// from row `row` on.
    fn assert_stopped_before(&self, row: u64, fragment: &str) {
        assert_eq!(self.result.code, 1, "{}", self.result.stderr);
        assert!(
            self.result.stderr.contains(fragment),
            "expected `{fragment}` in: {}",
            self.result.stderr
        );
        for record in &self.records {
            assert!(record["row"].as_u64().unwrap() < row, "{record}");
        }
    }

    /// The `error` text of the record for row `row`, which must be an error with no attempt.
    fn error_of(&self, row: u64) -> String {
        let record = &by_row(&self.records)[&row];
        assert_eq!(record["status"], "error", "{record}");
        assert_eq!(record["attempts"], 0, "nothing sent for a broken row");
        record["error"].as_str().unwrap().to_string()
    }
}

fn write_bytes(dir: &Workdir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Header `id,prompt` and 60 records (lines 2–61) `r{n},prompt {n}`; the record on line 38 opens
/// a quote that never closes.
fn csv_with_unclosed_quote_on_line_38() -> String {
    let mut csv = String::from("id,prompt\n");
    for n in 1..=60 {
        match n {
            37 => csv.push_str("r37,\"opens a quote, never closes it\n"),
            _ => csv.push_str(&format!("r{n},prompt {n}\n")),
        }
    }
    csv
}

#[test]
fn an_unclosed_quote_stops_the_run_at_the_line_where_it_opens() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = csv_with_unclosed_quote_on_line_38();
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["-c", "1"]);
    out.assert_stopped_before(
        37,
        "in.csv:38: a quote opens a field (column `prompt`) here and never closes",
    );
    assert!(
        out.result.stderr.contains("lines 38–61"),
        "{}",
        out.result.stderr
    );
    assert!(out.result.stderr.contains("--skip-invalid"));
    assert!(out.sent <= 36, "nothing sent from row 37 on");
}

#[test]
fn an_unclosed_quote_with_skip_invalid_is_one_error_record_and_later_lines_stay_rows() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = csv_with_unclosed_quote_on_line_38();
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 60, "one record per row, none swallowed");
    let error = out.error_of(37);
    assert!(
        error.contains("in.csv:38: a quote opens a field"),
        "{error}"
    );
    let records = by_id(&out.records);
    for n in (1..=60).filter(|&n| n != 37) {
        let record = &records[&format!("r{n}")];
        assert_eq!(record["status"], "ok");
        assert_eq!(record["prompt"], format!("prompt {n}").as_str());
        assert_eq!(record["row"], n);
    }
    assert_eq!(out.sent, 59);

    // Standard input cannot be re-read from the file: the reader replays from memory.
    let output = dir.path("stdin.jsonl");
    let args = ["--input-format", "csv", "--skip-invalid"];
    let r = run_stdin(&sim, &output, &args, csv.as_bytes());
    assert_eq!(r.code, 3, "{}", r.stderr);
    let records = read_jsonl(&output);
    assert_eq!(records.len(), 60);
    assert_eq!(records.iter().filter(|r| r["status"] == "ok").count(), 59);
}

#[test]
fn an_unclosed_quote_in_the_last_record_is_an_error_too() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = b"id,prompt\na,first\nb,\"last, never closed\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["-c", "1"]);
    out.assert_stopped_before(2, "in.csv:3: a quote opens a field (column `prompt`) here and never closes: the field would run to the end of the file;");
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 2);
    assert!(out.error_of(2).contains("in.csv:3: a quote opens a field"));
    assert_eq!(out.sent, 1);

    // Two broken quotes in a row, the last one at the end of a file without a final line end.
    let csv = b"id,prompt\na,first\nb,\"second\nc,\"last, never closed";
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["-c", "1"]);
    out.assert_stopped_before(2, "in.csv:3: a quote opens a field (column `prompt`) here and closes at line 4, followed by `last, never closed`");

    let out = run_bytes(&sim, &dir, "in.csv", csv, &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 3, "a, the broken b, then c read again");
    assert!(out.error_of(2).contains("in.csv:3:"));
    assert!(out.error_of(3).contains("in.csv:4: a quote opens a field"));
    assert!(out.error_of(3).contains("never closes"));
    assert_eq!(by_id(&out.records)["a"]["prompt"], "first");
    assert_eq!(out.sent, 1);
}

#[test]
fn a_quote_closed_lines_later_by_another_field_is_reported_where_it_opens() {
    // The csv crate reads this as 2 records, the second's prompt holding lines 3–5.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = b"id,prompt\na,fine\nb,\"He said hi\nc,third\nd,\"quoted, fine\"\ne,last\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["-c", "1"]);
    out.assert_stopped_before(
        2,
        "in.csv:3: a quote opens a field (column `prompt`) here and closes at line 5, followed by `quoted, fine\"`",
    );

    let out = run_bytes(&sim, &dir, "in.csv", csv, &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    let records = by_id(&out.records);
    assert_eq!(out.records.len(), 5);
    assert!(out.error_of(2).contains("in.csv:3:"));
    for (id, prompt) in [
        ("a", "fine"),
        ("c", "third"),
        ("d", "quoted, fine"),
        ("e", "last"),
    ] {
        assert_eq!(records[id]["prompt"], prompt);
        assert_eq!(records[id]["status"], "ok");
    }
    assert_eq!(out.sent, 4);
}

#[test]
fn text_after_a_closing_quote_and_stray_quotes_are_errors() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = "prompt,n\n\"abc\"def,1\nab\"c,2\nfine, 3\nx, \"y,z\"\n\"ok \"\"quoted\"\"\",5\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &[]);
    out.assert_stopped_before(
        1,
        "in.csv:2: text `def,1` after the closing quote of a quoted field (column `prompt`)",
    );
    assert_eq!(out.sent, 0);

    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 5);
    assert!(out
        .error_of(2)
        .contains("in.csv:3: a quote inside an unquoted field (column `prompt`)"));
    assert!(out
        .error_of(4)
        .contains("in.csv:5: a space before the opening quote of a field (column `n`)"));
    let rows = by_row(&out.records);
    assert_eq!(rows[&3]["prompt"], "fine", "a space after a comma is text");
    assert_eq!(rows[&5]["prompt"], "ok \"quoted\"");
    assert_eq!(out.sent, 2);
}

#[test]
fn ragged_records_are_errors_with_a_grammatical_message() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = "prompt,a,b\nfine,1,2\nshort\nlong,1,2,3\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["-c", "1"]);
    out.assert_stopped_before(2, "in.csv:3: record has 1 field, but the header has 3");

    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["--skip-invalid"]);
    assert_eq!(out.result.code, 3);
    assert!(out
        .error_of(3)
        .contains("in.csv:4: record has 4 fields, but the header has 3"));
    assert_eq!(out.sent, 1);
}

#[test]
fn blank_lines_are_not_rows_but_still_count_as_lines() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = "prompt,n\r\n\r\none,1\n\n\n\"two\n\nlines\",2\n\nbad\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 3, "blank lines are skipped");
    let rows = by_row(&out.records);
    assert_eq!(rows[&1]["prompt"], "one");
    assert_eq!(
        rows[&2]["prompt"], "two\n\nlines",
        "blank lines inside quotes are text"
    );
    assert!(out.error_of(3).contains("in.csv:10: record has 1 field"));
}

#[test]
fn duplicate_or_empty_column_names_named_by_a_flag_are_errors() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let out = run_bytes(&sim, &dir, "dup.csv", b"prompt,prompt\na,b\n", &[]);
    out.assert_stopped_before(
        1,
        "dup.csv:1: --prompt-column (default `prompt`) names column `prompt`, which the header has 2 times (columns 1, 2)",
    );
    let out = run_bytes(&sim, &dir, "ids.csv", b"id,prompt,id\n1,a,2\n", &[]);
    out.assert_stopped_before(
        1,
        "ids.csv:1: the default id column names column `id`, which the header has 2 times",
    );
    let out = run_bytes(
        &sim,
        &dir,
        "tpl.csv",
        b"t,t,prompt\n1,2,x\n",
        &["--template", "{t}"],
    );
    out.assert_stopped_before(1, "`t`, which the header has 2 times");
    let out = run_bytes(
        &sim,
        &dir,
        "empty.csv",
        b",prompt\n1,x\n",
        &["--id-column", ""],
    );
    out.assert_stopped_before(1, "--id-column names a column with an empty name");
    assert_eq!(sim.requests(), 0, "nothing sent for any of them");

    // Duplicate and unnamed columns no flag uses are fine.
    let out = run_bytes(&sim, &dir, "ok.csv", b",note,note,prompt\n0,a,b,x\n", &[]);
    assert_eq!(out.result.code, 0, "{}", out.result.stderr);
    assert_eq!(out.records[0]["prompt"], "x");
}

#[test]
fn likely_header_mistakes_are_pointed_out() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let out = run_bytes(&sim, &dir, "in.csv", b"id, prompt\n1,x\n", &[]);
    out.assert_stopped_before(1, "(` prompt` has spaces around its name");
    // European Excel separates with `;`.
    let out = run_bytes(&sim, &dir, "eu.csv", b"id;prompt\n1;x\n", &[]);
    out.assert_stopped_before(1, "is the file separated by `;` or tabs?");
}

#[test]
fn nul_bytes_and_utf16_files_are_errors() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let out = run_bytes(
        &sim,
        &dir,
        "nul.csv",
        b"prompt,n\nok,1\n\"a\nb\0c\",2\n",
        &["-c", "1"],
    );
    out.assert_stopped_before(
        2,
        "nul.csv:4: column `prompt` contains a NUL byte (character 4 of the field)",
    );

    // Excel's "Unicode text" and PowerShell write UTF-16 (little-endian, with a BOM).
    let mut utf16 = vec![0xFF, 0xFE];
    for unit in "prompt\nhello\n".encode_utf16() {
        utf16.extend_from_slice(&unit.to_le_bytes());
    }
    let out = run_bytes(&sim, &dir, "u16.csv", &utf16, &[]);
    out.assert_stopped_before(1, "u16.csv:1: in the header: field 1 is not UTF-8");
    assert!(
        out.result.stderr.contains("iconv -f UTF-16 -t UTF-8"),
        "{}",
        out.result.stderr
    );
    assert_eq!(out.sent, 0);
}

#[test]
fn a_lone_carriage_return_is_an_error_crlf_is_not() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = b"prompt,n\r\na,1\rb,2\r\nc,3\r\n\"d\re\",4\r\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["--skip-invalid"]);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert_eq!(out.records.len(), 3);
    let error = out.error_of(1);
    assert!(
        error.contains("in.csv:2: a carriage return (CR) that does not end a line (column `n`)"),
        "{error}"
    );
    let rows = by_row(&out.records);
    assert_eq!(
        rows[&2]["prompt"], "c",
        "CRLF ends a record, the CR is not text"
    );
    assert_eq!(rows[&3]["prompt"], "d\re", "a quoted CR is text");

    // A classic-Mac file (CR line ends only) fails on its header.
    let out = run_bytes(
        &sim,
        &dir,
        "mac.csv",
        b"prompt,n\ra,1\rb,2\r",
        &["--skip-invalid"],
    );
    out.assert_stopped_before(1, "mac.csv:1: in the header: a carriage return (CR)");
    assert!(
        out.result.stderr.contains("tr '\\r' '\\n'"),
        "{}",
        out.result.stderr
    );
}

#[test]
fn csv_not_utf8_names_the_column_its_line_and_how_to_reencode() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    // Windows-1252 `é` (0xE9) on the second line of a quoted field.
    let csv = b"prompt,notes\nok,fine\nx,\"first line\ncaf\xE9\"\n";
    let out = run_bytes(&sim, &dir, "in.csv", csv, &["-c", "1"]);
    out.assert_stopped_before(
        2,
        "in.csv:4: column `notes` is not UTF-8 (byte 0xE9 at character 15 of the field)",
    );
    assert!(
        out.result.stderr.contains("iconv -f WINDOWS-1252 -t UTF-8"),
        "{}",
        out.result.stderr
    );
}

#[test]
fn excel_csv_with_bom_crlf_and_multi_line_cells() {
    // Excel "CSV UTF-8": a BOM, CRLF record ends, LF inside cells (Alt+Enter), `""` for quotes.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = "\u{FEFF}id,question,context\r\n\
               q1,What is this?,\"Line one\nLine two\"\r\n\
               q2,\"Say \"\"hi\"\", please\",\r\n\
               q3,Café ☕,\"a, b\nc\n\"\r\n\
               q4,too,many,fields\r\n";
    let args = ["--template", "{question} / {context}", "--skip-invalid"];
    let out = run_bytes(&sim, &dir, "excel.csv", csv.as_bytes(), &args);
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    let records = by_id(&out.records);
    assert_eq!(out.records.len(), 4, "the BOM'd `id` column names the rows");
    assert_eq!(
        records["q1"]["prompt"],
        "What is this? / Line one\nLine two"
    );
    assert_eq!(records["q2"]["prompt"], "Say \"hi\", please / ");
    assert_eq!(records["q3"]["prompt"], "Café ☕ / a, b\nc\n");
    let error = out.error_of(4);
    assert!(
        error.contains("excel.csv:8: record has 4 fields"),
        "physical line: {error}"
    );
    assert_eq!(out.sent, 3);
}

#[test]
fn pandas_csv_with_an_unnamed_index_column() {
    // `df.to_csv("p.csv")`: an unnamed index column, LF ends, quotes only where needed.
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv =
        ",id,prompt\n0,7,plain\n1,8,\"with, comma\"\n2,9,\"multi\nline \"\"quoted\"\"\"\n3,10,\n";
    let out = run_bytes(&sim, &dir, "p.csv", csv.as_bytes(), &[]);
    assert_eq!(
        out.result.code, 3,
        "the empty prompt is an error record: {}",
        out.result.stderr
    );
    let records = by_id(&out.records);
    assert_eq!(records.len(), 4);
    assert_eq!(records["7"]["prompt"], "plain");
    assert_eq!(records["8"]["prompt"], "with, comma");
    assert_eq!(records["9"]["prompt"], "multi\nline \"quoted\"");
    assert!(records["10"]["error"]
        .as_str()
        .unwrap()
        .contains("empty prompt"));
    assert_eq!(out.sent, 3);
}

#[test]
fn jsonl_not_utf8_says_so_and_how_to_reencode() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let jsonl = b"{\"prompt\": \"fine\"}\n{\"prompt\": \"caf\xE9\"}\n";
    let out = run_bytes(&sim, &dir, "in.jsonl", jsonl, &["-c", "1"]);
    out.assert_stopped_before(2, "in.jsonl:2: not UTF-8 (byte 0xE9 at character 16)");
    assert!(out.result.stderr.contains("iconv -f WINDOWS-1252 -t UTF-8"));
    assert!(
        !out.result.stderr.contains("unicode code point"),
        "{}",
        out.result.stderr
    );
}

#[test]
fn jsonl_syntax_errors_name_one_location() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let jsonl = "{\"prompt\": \"a\"}\n\n{\"日本\": 1, \"prompt\": oops}\n";
    let out = run_bytes(&sim, &dir, "in.jsonl", jsonl.as_bytes(), &["-c", "1"]);
    out.assert_stopped_before(2, "in.jsonl:3: invalid JSON at column 21: expected value");
    assert!(
        !out.result.stderr.contains("at line"),
        "{}",
        out.result.stderr
    );
    assert!(
        !out.result.stderr.contains("column 25"),
        "a byte column: {}",
        out.result.stderr
    );
}

#[test]
fn jsonl_repeated_keys_are_errors_not_a_silent_choice() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let jsonl = "{\"prompt\": \"a\"}\n\
                 {\"prompt\": \"b\", \"prompt\": \"c\"}\n\
                 {\"messages\": [{\"role\": \"user\", \"content\": \"d\", \"content\": \"e\"}]}\n";
    let out = run_bytes(&sim, &dir, "in.jsonl", jsonl.as_bytes(), &["-c", "1"]);
    out.assert_stopped_before(
        2,
        "in.jsonl:2: invalid JSON at column 24: key `prompt` appears twice in one object",
    );
    let out = run_bytes(
        &sim,
        &dir,
        "in.jsonl",
        jsonl.as_bytes(),
        &["--skip-invalid"],
    );
    assert_eq!(out.result.code, 3, "{}", out.result.stderr);
    assert!(out
        .error_of(3)
        .contains("in.jsonl:3: invalid JSON at column 56: key `content` appears twice"));
    assert_eq!(out.sent, 1);
}

#[test]
fn numeric_ids_are_kept_exactly_as_written() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let jsonl = "{\"id\": 123456789012345678901234567890, \"prompt\": \"a\"}\n\
                 {\"id\": 123456789012345678901234567891, \"prompt\": \"b\"}\n\
                 {\"id\": 1.50, \"prompt\": \"c\"}\n\
                 {\"id\": 18446744073709551616, \"prompt\": \"d\"}\n";
    let out = run_bytes(&sim, &dir, "in.jsonl", jsonl.as_bytes(), &[]);
    assert_eq!(out.result.code, 0, "{}", out.result.stderr);
    let records = by_id(&out.records);
    assert_eq!(records.len(), 4, "{:?}", records.keys());
    assert_eq!(records["123456789012345678901234567890"]["prompt"], "a");
    assert_eq!(records["123456789012345678901234567891"]["prompt"], "b");
    assert_eq!(records["1.50"]["prompt"], "c");
    assert_eq!(records["18446744073709551616"]["prompt"], "d");

    // The same holds for numbers a template puts into the prompt.
    let jsonl = "{\"n\": 123456789012345678901234567891, \"x\": 1.50, \"s\": null}\n";
    let args = ["--template", "{n} costs {x}{s}"];
    let out = run_bytes(&sim, &dir, "t.jsonl", jsonl.as_bytes(), &args);
    assert_eq!(out.result.code, 0, "{}", out.result.stderr);
    assert_eq!(
        out.records[0]["prompt"],
        "123456789012345678901234567891 costs 1.50"
    );
}

#[test]
fn non_ascii_column_names_and_ids_work_end_to_end() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let csv = "é,日本,note\n🦀,東京,x\nélan,\"改行\nあり\",y\n";
    let args = ["--template", "{日本}: {note}", "--id-column", "é"];
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &args);
    assert_eq!(out.result.code, 0, "{}", out.result.stderr);
    let records = by_id(&out.records);
    assert_eq!(records["🦀"]["prompt"], "東京: x");
    assert_eq!(records["élan"]["prompt"], "改行\nあり: y");

    let jsonl = "{\"é\": \"ü-1\", \"日本\": \"語\"}\n{\"é\": \"🦀\", \"日本\": \"海\"}\n";
    let out = run_bytes(
        &sim,
        &dir,
        "in.jsonl",
        jsonl.as_bytes(),
        &["--template", "<{日本}>", "--id-column", "é"],
    );
    assert_eq!(out.result.code, 0, "{}", out.result.stderr);
    let records = by_id(&out.records);
    assert_eq!(records["ü-1"]["prompt"], "<語>");
    assert_eq!(records["🦀"]["prompt"], "<海>");

    let out = run_bytes(
        &sim,
        &dir,
        "in.csv",
        csv.as_bytes(),
        &["--template", "日本語 {note"],
    );
    out.assert_stopped_before(1, "`{` at character 5 is not closed");
    let out = run_bytes(&sim, &dir, "in.csv", csv.as_bytes(), &["--id-column", "日"]);
    out.assert_stopped_before(1, "columns are: `é`, `日本`, `note`");
}
