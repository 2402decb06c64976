//! The output file is the user's paid work: it is never lost (backups, torn records, `--ordered`
//! after `kill -9`), never exposed (a rewrite keeps its mode and links), never written by two runs
//! at once whatever path names it, and what the run says about it is true. Real binary, real
//! simulator, real signals.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;
use promptbatch::sim::{LatencySpec, SimOptions};
use serde_json::Value;

fn prompts(n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt number {i}\"}}\n"))
        .collect()
}

fn slow_sim(latency: &str) -> Sim {
    Sim::start(SimOptions {
        latency: LatencySpec::parse(latency).unwrap(),
        ..Default::default()
    })
}

fn spawn(sim: &Sim, input: &Path, output: &Path, args: &[&str]) -> Child {
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

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Waits until the simulator has received `n` requests (so the run is past its start-up: signal
/// handlers installed, output locked), at most 20 s.
fn wait_for_requests(sim: &Sim, n: u64) {
    wait_until(&format!("{n} requests"), Duration::from_secs(20), || {
        sim.requests() >= n
    });
}

/// Exactly one ok record per row 1..=n, in input order.
fn assert_one_ok_record_per_row_in_order(records: &[Value], n: u64) {
    let rows: Vec<u64> = records.iter().map(|r| r["row"].as_u64().unwrap()).collect();
    assert_eq!(
        rows,
        (1..=n).collect::<Vec<_>>(),
        "one record per row, in order"
    );
    assert!(records.iter().all(|r| r["status"] == "ok"));
}

// 1. --fresh backups

#[test]
fn fresh_never_replaces_a_backup_and_skips_empty_outputs() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(20));
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    let paid = std::fs::read(&output).unwrap();
    std::fs::set_permissions(&output, std::fs::Permissions::from_mode(0o600)).unwrap();

    // A --fresh run that fails on its third row (the key refused), re-run --fresh twice "as
    // told".
    let broken = dir.write(
        "broken.jsonl",
        "{\"prompt\":\"a\"}\n{\"prompt\":\"b\"}\n{\"prompt\":\"c #sim:status=401\"}\n",
    );
    let first = run(&sim, &broken, &output, &["--fresh", "-q", "-c", "1"]);
    assert_eq!(first.code, 1, "{}", first.stderr);
    assert!(
        first.stderr.contains("out.jsonl.bak"),
        "says where the backup went: {}",
        first.stderr
    );
    let second = run(&sim, &broken, &output, &["--fresh", "-q", "-c", "1"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert_eq!(
        std::fs::read(dir.path("out.jsonl.bak")).unwrap(),
        paid,
        "the paid records survive in the first backup"
    );
    assert!(
        second.stderr.contains("out.jsonl.bak.1"),
        "the partial output got a numbered backup: {}",
        second.stderr
    );
    assert!(dir.path("out.jsonl.bak.1").exists());
    let mode = std::fs::metadata(&output).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new output is as private as the old one");

    // An empty output is not backed up.
    std::fs::write(&output, "").unwrap();
    let r = run(&sim, &input, &output, &["--fresh", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        !dir.path("out.jsonl.bak.2").exists(),
        "no backup of nothing"
    );
    assert_eq!(std::fs::read(dir.path("out.jsonl.bak")).unwrap(), paid);
    assert_eq!(read_jsonl(&output).len(), 20);
}

// 2. one writer per output file, whatever path names it

fn second_writer_refused(link: impl Fn(&Path, &Path)) {
    let sim = slow_sim("200ms");
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(20));
    let real = dir.write("real.jsonl", "");
    let other = dir.path("other.jsonl");
    link(&real, &other);
    let mut first = spawn(&sim, &input, &real, &["-c", "2"]);
    wait_for_requests(&sim, 1);
    let second = run(&sim, &input, &other, &["-q", "-c", "2"]);
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("another promptbatch run is writing"),
        "{}",
        second.stderr
    );
}

#[test]
fn a_symlink_to_a_busy_output_is_refused() {
    second_writer_refused(|real, link| std::os::unix::fs::symlink(real, link).unwrap());
}

#[test]
fn a_hardlink_to_a_busy_output_is_refused() {
    second_writer_refused(|real, link| std::fs::hard_link(real, link).unwrap());
}

// 3. a resume rewrite keeps the file: links, mode

#[test]
fn resume_rewrite_keeps_symlinks_hardlinks_and_mode() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(5));
    let real = dir.path("real.jsonl");
    assert_eq!(run(&sim, &input, &real, &["-q"]).code, 0);
    // A torn last line forces a rewrite.
    let text = std::fs::read_to_string(&real).unwrap();
    let cut = text.trim_end().rfind('\n').unwrap() + 20;
    std::fs::write(&real, &text[..cut]).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path("link.jsonl");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let hard = dir.path("hard.jsonl");
    std::fs::hard_link(&real, &hard).unwrap();

    let r = run(&sim, &input, &link, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("dropping a torn last record"),
        "{}",
        r.stderr
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the symlink is still a symlink"
    );
    let meta = std::fs::metadata(&real).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600, "mode kept");
    assert_eq!(
        meta.ino(),
        std::fs::metadata(&hard).unwrap().ino(),
        "hardlink kept"
    );
    assert_eq!(read_jsonl(&real).len(), 5, "the real file holds the result");
    assert_eq!(sim.requests(), 6);
}

// 4. a CSV record cut after a newline inside a quoted field is torn

#[test]
fn csv_cut_after_a_newline_inside_a_quoted_field_is_a_torn_record() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input: String = (0..5)
        .map(|i| format!("{{\"id\":\"r{i}\",\"prompt\":\"line one {i}\\nline two\"}}\n"))
        .collect();
    let input = dir.write("in.jsonl", &input);
    let output = dir.path("out.csv");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    let text = std::fs::read_to_string(&output).unwrap();
    let last = text.rfind("line one").unwrap();
    let cut = last + text[last..].find('\n').unwrap() + 1;
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
    let mut reader = csv::Reader::from_path(&output).unwrap();
    let records: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(records.len(), 5);
}

// 5. --ordered: every finished row is on disk

#[test]
fn ordered_run_killed_mid_way_repays_at_most_the_rows_in_flight() {
    let sim = slow_sim("1ms");
    let dir = Workdir::new();
    let n = 3000u64;
    // The first row is slow, so every later row waits for it in input order. Its 4 s at the
    // simulator are the situation under test (finished rows held back behind an unfinished
    // one), not a synchronisation: the test waits for 500 requests, then checks that row 1 was
    // indeed still unanswered when the kill came.
    let input: String = (0..n)
        .map(|i| {
            let slow = if i == 0 { " #sim:sleep=4s" } else { "" };
            format!("{{\"id\":\"r{i}\",\"prompt\":\"prompt number {i}{slow}\"}}\n")
        })
        .collect();
    let input = dir.write("in.jsonl", &input);
    let output = dir.path("out.jsonl");
    let concurrency = 8;
    let mut child = spawn(&sim, &input, &output, &["-c", "8", "--ordered"]);
    wait_for_requests(&sim, 500);
    assert!(
        child.try_wait().unwrap().is_none(),
        "still waiting for row 1"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    let on_disk = std::fs::read_to_string(&output).unwrap_or_default();
    assert!(
        !on_disk.contains("\"id\":\"r0\""),
        "row 1 was answered before the kill: the run was not held back by it"
    );
    let paid_before_kill = sim.requests();
    assert!(paid_before_kill < n, "the kill left work to do");

    let r = run(&sim, &input, &output, &["-c", "8", "--ordered", "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let sent = sim.requests();
    assert!(
        sent <= n + concurrency,
        "{sent} requests for {n} rows: at most the {concurrency} in flight are paid again"
    );
    assert_one_ok_record_per_row_in_order(&read_jsonl(&output), n);
}

// 6. SIGHUP is an interrupt

#[test]
fn sighup_stops_gracefully_like_sigterm() {
    let sim = slow_sim("100ms");
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(200));
    let output = dir.path("out.jsonl");
    let child = spawn(&sim, &input, &output, &["-c", "4"]);
    wait_for_requests(&sim, 8);
    signal(child.id(), "HUP");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("rows: "), "a summary: {stderr}");
    assert!(stderr.contains("to resume, run:"), "{stderr}");
    let records = read_jsonl(&output);
    assert_eq!(
        records.len() as u64,
        sim.stats()["completions"].as_u64().unwrap(),
        "in-flight rows were let finish"
    );
}

// 7. what the run says is true

#[test]
fn a_non_utf8_output_path_gets_a_resume_command_that_works() {
    use std::os::unix::ffi::OsStrExt;
    let sim = slow_sim("100ms");
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(100));
    let output = dir
        .dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"out-\xff it's.jsonl"));
    let child = spawn(&sim, &input, &output, &["-c", "4"]);
    wait_for_requests(&sim, 8);
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    let command = stderr
        .split("to resume, run:\n")
        .nth(1)
        .unwrap_or_else(|| panic!("{stderr}"))
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_string();
    let resumed = std::process::Command::new("bash")
        .args(["-c", &command])
        .env("EVOLINK_API_KEY", KEY)
        .output()
        .unwrap();
    assert_eq!(
        resumed.status.code(),
        Some(0),
        "{command}: {}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert_eq!(read_jsonl(&output).len(), 100);
    assert_eq!(sim.requests(), 100);
}

#[test]
fn an_interrupted_stdin_run_says_how_to_continue() {
    use std::io::Write;
    let sim = slow_sim("100ms");
    let dir = Workdir::new();
    let output = dir.path("out.jsonl");
    let mut child = command()
        .args(["run", "-", "-o"])
        .arg(&output)
        .args(["--base-url", &sim.base_url, "-q", "-c", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(prompts(50).as_bytes()).unwrap();
    wait_for_requests(&sim, 4);
    interrupt(child.id());
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        !stderr.contains("to resume, run:"),
        "no command that would be refused: {stderr}"
    );
    assert!(
        stderr.contains("standard input") && stderr.contains("save"),
        "{stderr}"
    );
    assert!(stderr.contains(" run FILE -o "), "{stderr}");
}

#[test]
fn counters_count_only_records_on_disk_when_the_disk_is_full() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(3));
    let output = dir.path("out.jsonl");
    std::os::unix::fs::symlink("/dev/full", &output).unwrap();
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("rows: 0 ok, 0 error"), "{}", r.stderr);
}

#[test]
fn a_torn_record_of_a_row_that_is_done_is_not_announced_as_resent() {
    let sim = Sim::plain();
    let dir = Workdir::new();
    let input = dir.write("in.jsonl", &prompts(5));
    let output = dir.path("out.jsonl");
    assert_eq!(run(&sim, &input, &output, &["-q"]).code, 0);
    // A torn fragment after five whole records: no row lacks its record.
    let mut text = std::fs::read_to_string(&output).unwrap();
    let fragment = text[..30].to_string();
    text.push_str(&fragment);
    std::fs::write(&output, &text).unwrap();
    let r = run(&sim, &input, &output, &["-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("dropping a torn last record"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("nothing to send"), "{}", r.stderr);
    assert!(
        !r.stderr.contains("will be sent again"),
        "nothing is sent again: {}",
        r.stderr
    );
    assert_eq!(sim.requests(), 5);
    let by_id: HashMap<String, usize> =
        read_jsonl(&output).iter().fold(HashMap::new(), |mut m, r| {
            *m.entry(r["id"].as_str().unwrap().to_string()).or_default() += 1;
            m
        });
    assert_eq!(by_id.len(), 5);
}
