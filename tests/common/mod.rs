//! Test harness: the real `promptbatch` binary against the built-in simulator, over real loopback
//! HTTP. The simulator runs in this test process on a runtime of its own, so its request
//! counters can be read back through `GET /_sim/stats`.
#![allow(dead_code)]

pub mod batch;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use promptbatch::sim::{self, SimHandle, SimOptions};
use serde_json::Value;

/// The key every test run uses; it must never show up in any output.
pub const KEY: &str = "sk-test-7f3a9c1e5b-SECRET";

/// A simulator on a free loopback port, alive as long as this value.
pub struct Sim {
    runtime: tokio::runtime::Runtime,
    handle: Option<SimHandle>,
    pub base_url: String,
}

impl Sim {
    /// A simulator standing in for a real API: its answers carry no simulator mark
    /// (`SimOptions::unmarked`), so runs record them as paid answers.
    pub fn start(options: SimOptions) -> Self {
        Sim::start_as(SimOptions {
            unmarked: true,
            ..options
        })
    }

    /// A simulator with exactly these options (`unmarked: false`: it says it is one, as
    /// `promptbatch mock-server` does).
    pub fn start_as(options: SimOptions) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let handle = runtime
            .block_on(sim::start("127.0.0.1:0", options))
            .unwrap();
        let base_url = handle.base_url();
        Sim {
            runtime,
            handle: Some(handle),
            base_url,
        }
    }

    pub fn plain() -> Self {
        Sim::start(SimOptions::default())
    }

    /// The simulator's counters: `requests`, `completions`, `arrivals` ([ms, status] pairs).
    pub fn stats(&self) -> Value {
        let url = self.base_url.replace("/v1", "/_sim/stats");
        self.runtime.block_on(async {
            let body = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
            serde_json::from_slice(&body).unwrap()
        })
    }

    pub fn requests(&self) -> u64 {
        self.stats()["requests"].as_u64().unwrap()
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _guard = self.runtime.enter();
        self.handle.take();
    }
}

/// A temporary folder with helpers to write inputs.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, content).unwrap();
        path
    }
}

/// One test's setting: a simulator (none for runs that must reach nothing), a temporary folder,
/// the input path `in.jsonl` and the output path `out.jsonl` in it. Built in one line, e.g.
/// `Scenario::new().rows(40)` or `Scenario::with_sim(options).input(text).output("out.csv")`;
/// the runs are methods (`command`, and `run_batch` & co. in [`batch`]).
pub struct Scenario {
    sim: Option<Sim>,
    pub work: Workdir,
    pub input: PathBuf,
    pub output: PathBuf,
}

// No `Default`: a scenario starts a simulator and makes a folder, not a plain value.
#[allow(clippy::new_without_default)]
impl Scenario {
    /// A plain simulator ([`Sim::plain`]); nothing written yet.
    pub fn new() -> Self {
        Scenario::on(Some(Sim::plain()))
    }

    /// A simulator with these options ([`Sim::start`]).
    pub fn with_sim(options: SimOptions) -> Self {
        Scenario::on(Some(Sim::start(options)))
    }

    /// No simulator: for runs against something else (a closed port, another server), or none.
    pub fn without_sim() -> Self {
        Scenario::on(None)
    }

    fn on(sim: Option<Sim>) -> Self {
        let work = Workdir::new();
        Scenario {
            sim,
            input: work.path("in.jsonl"),
            output: work.path("out.jsonl"),
            work,
        }
    }

    /// The input: `n` rows with ids `r1..rn` and prompts `prompt {i}` ([`batch::rows`]).
    pub fn rows(self, n: usize) -> Self {
        self.rows_with(n, |_| "")
    }

    /// The input: [`batch::rows`] with `extra(i)` after prompt `i`.
    pub fn rows_with(self, n: usize, extra: impl Fn(usize) -> &'static str) -> Self {
        self.input(&batch::rows(n, extra))
    }

    /// The input: this text.
    pub fn input(self, text: &str) -> Self {
        std::fs::write(&self.input, text).unwrap();
        self
    }

    /// The output path: `name` in the folder instead of `out.jsonl`.
    pub fn output(mut self, name: &str) -> Self {
        self.output = self.work.path(name);
        self
    }

    /// The simulator; panics for a scenario [`without_sim`](Self::without_sim).
    pub fn sim(&self) -> &Sim {
        self.sim.as_ref().expect("a scenario without a simulator")
    }

    /// `promptbatch run INPUT -o OUTPUT --base-url BASE_URL`, not started.
    pub fn command(&self, base_url: &str) -> Command {
        run_command(base_url, &self.input, &self.output)
    }
}

/// Hang detector for the polling waits ([`wait_until`]): far above what any of them normally
/// takes (well under a second to a few seconds), so it never decides a passing test; it only
/// turns a hang into a failure instead of a stuck test run.
pub const HANG: Duration = Duration::from_secs(60);

/// Polls `done` every 5 ms until it holds; panics naming `what` once `within` has passed.
/// For waiting on a condition another process brings about (a file's lines, a server's
/// counter, a port closed) instead of sleeping a guessed time.
pub fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "hang detector: still waiting for {what} after {within:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a run of the binary produced.
pub struct RunResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl RunResult {
    fn from(output: Output, elapsed: Duration) -> Self {
        RunResult {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed,
        }
    }
}

/// The binary with a clean environment: the test key set, no base URL from the environment.
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promptbatch"));
    cmd.env("EVOLINK_API_KEY", KEY)
        .env_remove("OPENAI_API_KEY")
        .env_remove("PROMPTBATCH_BASE_URL")
        .env_remove("RUST_LOG");
    cmd
}

/// `promptbatch run INPUT -o OUTPUT --base-url BASE_URL`, not started.
pub fn run_command(base_url: &str, input: &Path, output: &Path) -> Command {
    let mut cmd = command();
    cmd.arg("run")
        .arg(input)
        .arg("-o")
        .arg(output)
        .args(["--base-url", base_url]);
    cmd
}

/// `promptbatch run INPUT -o OUTPUT --base-url SIM ARGS...`, waited for.
pub fn run(sim: &Sim, input: &Path, output: &Path, args: &[&str]) -> RunResult {
    let mut cmd = run_command(&sim.base_url, input, output);
    cmd.args(args);
    let start = Instant::now();
    let out = cmd.output().unwrap();
    RunResult::from(out, start.elapsed())
}

/// `promptbatch run - -o OUTPUT --base-url SIM -q ARGS...` with `input` on standard input.
pub fn run_stdin(sim: &Sim, output: &Path, args: &[&str], input: &[u8]) -> RunResult {
    use std::io::Write;
    let start = Instant::now();
    let mut child = command()
        .args(["run", "-", "-o"])
        .arg(output)
        .args(["--base-url", &sim.base_url, "-q"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    RunResult::from(out, start.elapsed())
}

/// Sends SIGINT (Ctrl-C) to a process.
pub fn interrupt(pid: u32) {
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -INT {pid}");
}

/// Any command of the binary, waited for.
pub fn run_args(args: &[&str]) -> RunResult {
    let start = Instant::now();
    let out = command().args(args).output().unwrap();
    RunResult::from(out, start.elapsed())
}

/// The records of a JSONL output; panics on any line that is not a whole JSON object.
pub fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "output must end with a newline"
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

/// `(id, model)` of each record of a JSONL output, in file order.
pub fn ids_and_models(path: &Path) -> Vec<(String, String)> {
    read_jsonl(path)
        .iter()
        .map(|r| {
            let field = |name: &str| r[name].as_str().unwrap_or_default().to_string();
            (field("id"), field("model"))
        })
        .collect()
}

/// The simulator's prompt-token count for messages with these texts (see `sim` docs).
pub fn sim_prompt_tokens(texts: &[&str]) -> u64 {
    texts.iter().map(|t| (t.len() as u64).div_ceil(4) + 4).sum()
}

/// Asserts the API key appears nowhere in these texts.
pub fn assert_no_key(texts: &[&str]) {
    for t in texts {
        assert!(!t.contains(KEY), "the API key leaked into: {t}");
        assert!(
            !t.contains("SECRET"),
            "part of the API key leaked into: {t}"
        );
    }
}

/// Starts `promptbatch run INPUT -o OUTPUT --base-url SIM ARGS…` and kills it (`kill -9`) once
/// OUTPUT holds `lines` lines, asserting it was still running then (hang detector: 60 s).
/// Returns how many lines the kill left.
#[allow(dead_code)] // not every test file kills a run
pub fn kill_9_after_lines(
    sim: &Sim,
    input: &Path,
    output: &Path,
    args: &[&str],
    lines: usize,
) -> usize {
    let mut child = run_command(&sim.base_url, input, output)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let count = || std::fs::read_to_string(output).map_or(0, |t| t.lines().count());
    wait_until(&format!("{lines} lines"), HANG, || {
        count() >= lines || child.try_wait().unwrap().is_some()
    });
    assert!(child.try_wait().unwrap().is_none(), "killed mid-way");
    child.kill().unwrap();
    child.wait().unwrap();
    count()
}

/// A schema for a sentiment label and a score .
pub const LABEL_SCHEMA: &str = r#"{"type": "object",
  "properties": {"label": {"enum": ["pos", "neg"]}, "score": {"type": "number"}},
  "required": ["label", "score"], "additionalProperties": false}"#;

/// Three rows whose prompts are the answers the simulator gives a structured-outputs request:
/// `a` valid JSON, `b` prose in its first batch then JSON, `c` never matching (`meh`).
pub const SCHEMA_ROWS: &str = concat!(
    r#"{"id": "a", "prompt": "{\"label\": \"pos\", \"score\": 0.9}"}"#,
    "\n",
    r#"{"id": "b", "prompt": "{\"label\": \"neg\", \"score\": 0.1} #sim:prose=1"}"#,
    "\n",
    r#"{"id": "c", "prompt": "{\"label\": \"meh\", \"score\": 1}"}"#,
    "\n",
);
