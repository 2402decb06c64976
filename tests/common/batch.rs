//! Helpers of the `--via batch` tests: JSONL rows, the batch command against the simulator,
//! its Batch API counters, the state file's path.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::{read_jsonl, run_command, RunResult, Sim, Workdir, LABEL_SCHEMA, SCHEMA_ROWS};

/// `n` JSONL rows with ids `r1..rn` and prompts `prompt {i}` (plus `extra(i)` when given).
pub fn rows(n: usize, extra: impl Fn(usize) -> &'static str) -> String {
    let mut text = String::new();
    for i in 1..=n {
        text.push_str(&format!(
            "{{\"id\": \"r{i}\", \"prompt\": \"prompt {i}{}\"}}\n",
            extra(i)
        ));
    }
    text
}

/// `promptbatch run INPUT -o OUTPUT --base-url SIM --via batch --poll-every 50ms`, not started.
pub fn batch_command(sim: &Sim, input: &Path, output: &Path) -> std::process::Command {
    let mut cmd = run_command(&sim.base_url, input, output);
    cmd.args(["--via", "batch", "--poll-every", "50ms"]);
    cmd
}

/// [`batch_command`] with ARGS and `env` set, waited for.
pub fn run_batch(
    sim: &Sim,
    input: &Path,
    output: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> RunResult {
    let mut cmd = batch_command(sim, input, output);
    cmd.args(args).env_remove("PROMPTBATCH_TEST_ABORT_AT");
    for (name, value) in env {
        cmd.env(name, value);
    }
    let start = Instant::now();
    let out = cmd.output().unwrap();
    RunResult {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The simulator's Batch API counters.
pub fn batch_stats(sim: &Sim) -> Value {
    sim.stats()["batch"].clone()
}

pub fn count(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

/// Exactly one ok record per row `r1..rn`, nothing else; returns the records by id.
pub fn assert_one_ok_record_per_row(output: &Path, n: usize) -> HashMap<String, Value> {
    let records = read_jsonl(output);
    assert_eq!(records.len(), n, "one record per row");
    let mut by_id = HashMap::new();
    for record in records {
        assert_eq!(record["status"], "ok", "{record}");
        let id = record["id"].as_str().unwrap().to_string();
        let row: usize = id[1..].parse().unwrap();
        assert_eq!(
            record["completion"],
            format!("echo: prompt {row}"),
            "{record}"
        );
        assert!(by_id.insert(id.clone(), record).is_none(), "{id} twice");
    }
    by_id
}

pub fn state_file(output: &Path) -> std::path::PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(".batch.json");
    name.into()
}

/// The `--json-schema` rows in `work`: the input (`SCHEMA_ROWS`), the output path `output` and
/// `--json-schema`'s argument (`LABEL_SCHEMA` written to a file).
pub fn schema_files(
    work: &Workdir,
    output: &str,
) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let schema = work.write("sentiment.json", LABEL_SCHEMA);
    let input = work.write("in.jsonl", SCHEMA_ROWS);
    (input, work.path(output), schema.display().to_string())
}
