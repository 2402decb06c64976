//! Helpers of the `--via batch` tests: JSONL rows, the batch command against the simulator,
//! its Batch API counters, the state file's path.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use super::{
    read_jsonl, run_command, RunResult, Scenario, Sim, Workdir, LABEL_SCHEMA, SCHEMA_ROWS,
};

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
    let schema = write_schema_files(work);
    (work.path("in.jsonl"), work.path(output), schema)
}

/// Writes `in.jsonl` (`SCHEMA_ROWS`) and `sentiment.json` (`LABEL_SCHEMA`) into `work`; returns
/// `--json-schema`'s argument.
fn write_schema_files(work: &Workdir) -> String {
    let schema = work.write("sentiment.json", LABEL_SCHEMA);
    work.write("in.jsonl", SCHEMA_ROWS);
    schema.display().to_string()
}

/// The `--via batch` runs of a scenario.
impl Scenario {
    /// The `--json-schema` rows as the input ([`schema_files`]); returns the scenario and
    /// `--json-schema`'s argument.
    pub fn schema_rows(self) -> (Self, String) {
        let schema = write_schema_files(&self.work);
        (self, schema)
    }

    /// [`batch_command`] on this scenario, not started.
    pub fn batch_command(&self) -> std::process::Command {
        batch_command(self.sim(), &self.input, &self.output)
    }

    /// [`run_batch`] with ARGS, waited for.
    pub fn run_batch(&self, args: &[&str]) -> RunResult {
        run_batch(self.sim(), &self.input, &self.output, args, &[])
    }

    /// [`run_batch`] with ARGS, made to abort at `point` (`PROMPTBATCH_TEST_ABORT_AT`, as
    /// `kill -9` would), waited for.
    pub fn run_batch_aborted_at(&self, point: &str, args: &[&str]) -> RunResult {
        let env = [("PROMPTBATCH_TEST_ABORT_AT", point)];
        run_batch(self.sim(), &self.input, &self.output, args, &env)
    }

    /// The simulator's Batch API counters ([`batch_stats`]).
    pub fn batch_stats(&self) -> Value {
        batch_stats(self.sim())
    }

    /// One of the simulator's Batch API counters ([`count`]).
    pub fn batch_count(&self, name: &str) -> u64 {
        count(&self.batch_stats(), name)
    }

    /// The output's batch state file ([`state_file`]).
    pub fn state_file(&self) -> std::path::PathBuf {
        state_file(&self.output)
    }
}
