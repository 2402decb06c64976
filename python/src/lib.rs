//! `promptbatch._promptbatch`: the library's facade for Python. Each function takes the command
//! line's options as keyword arguments — parsed by the command line's own definitions
//! (`flags.rs` over `src/cli.rs`), so the names, defaults and messages are the same — runs the
//! library in this process with the GIL released, and returns plain Python data.
//! `promptbatch/__init__.py` adds the frame conversions on top.

mod bridge;
#[allow(dead_code, unreachable_pub)]
#[path = "../../src/cli.rs"]
mod cli;
mod flags;
mod records;

use std::path::PathBuf;

use promptbatch::{StopHandle, StopReason, Summary};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use bridge::{block_on, to_py, to_python};

pyo3::create_exception!(
    _promptbatch,
    RunStopped,
    PyRuntimeError,
    "The run stopped before every row had a record (budget cap, refused model, API or endpoint \
     failure). `.summary` holds the run's summary; the output keeps every record written, and \
     the same call resumes once the cause is fixed."
);

/// The allocator the command line uses: the runner allocates a few small buffers per row on
/// several threads at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `promptbatch run INPUT -o OUTPUT [flags]`; see `promptbatch/__init__.py` for the Python
/// arguments (`api_key`, `on_record`, `handle_signals`) that have no flag.
#[pyfunction]
#[pyo3(signature = (input, output, *, api_key=None, on_record=None, handle_signals=true, **options))]
fn run(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    api_key: Option<String>,
    on_record: Option<PyObject>,
    handle_signals: bool,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObject> {
    let options = options.cloned().unwrap_or_else(|| PyDict::new(py));
    let schema = take_schema(&options)?;
    options.set_item("output", output)?;
    let quiet = options
        .get_item("quiet")?
        .map(|q| q.is_truthy())
        .transpose()?
        .unwrap_or(false);
    let args: cli::RunArgs = flags::parse("run", &[input.into_os_string()], &options)?;
    let mut job = args.into_job();
    job.handle_signals = handle_signals;
    if let Some(key) = api_key {
        job = job.api_key(key);
    }
    if schema.is_some() {
        job.request.json_schema = schema;
    }
    let stop = StopHandle::new();
    let callback = on_record.map(|function| records::Callback::new(function, stop.clone()));
    if let Some(callback) = &callback {
        job = callback.attach(job);
    }
    let summary = block_on(py, async move {
        let summary = job.run_until(&stop).await;
        (job, summary)
    });
    let (job, summary) = summary?;
    let summary = summary.map_err(to_py)?;
    if let Some(error) = callback.and_then(|c| c.failure()) {
        return Err(error);
    }
    if !quiet {
        bridge::say(py, &summary.to_string());
    }
    finish(py, &job.output.path, summary)
}

/// The summary as a dict, or the exception that says why the run stopped early.
fn finish(py: Python<'_>, output: &std::path::Path, summary: Summary) -> PyResult<PyObject> {
    let dict = summary_dict(py, &summary)?;
    let output = output.display();
    let message = match &summary.stop {
        StopReason::Completed | StopReason::Detached { .. } => return Ok(dict),
        StopReason::Interrupted => {
            return Err(PyKeyboardInterrupt::new_err(format!(
                "interrupted: {output} holds whole records for the rows finished so far; the \
                 same call resumes where this run stopped"
            )))
        }
        StopReason::Budget { cap } => format!(
            "stopped by max_cost (${cap}) before every row had a record; raise max_cost and \
             run the same call again to continue"
        ),
        StopReason::Fatal(message) => format!(
            "the API refused the run: {message}; nothing more was sent. Check the key, the \
             model, base_url and your account's quota"
        ),
        StopReason::Unreachable(message) => format!(
            "{message}; rows without a record were not processed, the same call sends them \
             once this is fixed"
        ),
        StopReason::Failed(error) => error.to_string(),
        StopReason::Crashed(what) => format!(
            "the run did not finish every row: {what}; the same call sends the rows without a \
             record"
        ),
        StopReason::Refused(refusals) => refusals
            .iter()
            .map(|r| r.describe())
            .collect::<Vec<_>>()
            .join("\n"),
    };
    let error = RunStopped::new_err(message);
    error.value(py).setattr("summary", dict)?;
    Err(error)
}

/// The end-of-run summary as plain data (`Summary::to_json`).
fn summary_dict(py: Python<'_>, summary: &Summary) -> PyResult<PyObject> {
    to_python(py, &summary.to_json())
}

/// `json_schema` given as a dict or a pydantic model class (rather than a file, which the flag
/// takes) is taken out of `options` and returned.
fn take_schema(options: &Bound<'_, PyDict>) -> PyResult<Option<promptbatch::JsonSchema>> {
    let py = options.py();
    let Some(value) = options.get_item("json_schema")? else {
        return Ok(None);
    };
    let (name, schema) = if value.hasattr("model_json_schema")? {
        let name: String = value.getattr("__name__")?.extract()?;
        (name, value.call_method0("model_json_schema")?)
    } else if value.is_instance_of::<PyDict>() {
        ("answer".to_string(), value.clone())
    } else {
        return Ok(None);
    };
    options.del_item("json_schema")?;
    let text: String = py
        .import("json")?
        .call_method1("dumps", (schema,))?
        .extract()?;
    let schema: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| PyValueError::new_err(e.to_string()))?;
    promptbatch::JsonSchema::new(&name, schema)
        .map(Some)
        .map_err(|e| PyValueError::new_err(format!("run(): json_schema: {e}")))
}

/// `promptbatch estimate INPUT [flags] --json`, as a dict.
#[pyfunction]
#[pyo3(signature = (input, **options))]
fn estimate(
    py: Python<'_>,
    input: PathBuf,
    options: Option<&Bound<'_, PyDict>>,
) -> PyResult<PyObject> {
    let options = options.cloned().unwrap_or_else(|| PyDict::new(py));
    if options.contains("json")? {
        return Err(pyo3::exceptions::PyTypeError::new_err(
            "estimate() got an unexpected keyword argument 'json' (it always returns a dict)",
        ));
    }
    let args: cli::EstimateArgs = flags::parse("estimate", &[input.into_os_string()], &options)?;
    let estimate = block_on(py, async move {
        tokio::task::spawn_blocking(move || promptbatch::estimate(&args.into_options()))
            .await
            .map_err(|e| promptbatch::Error::Config(format!("the estimate failed: {e}")))?
    })?
    .map_err(to_py)?;
    to_python(py, &estimate)
}

/// `promptbatch report OUTPUT --json [--html FILE]`, as a dict.
#[pyfunction]
#[pyo3(signature = (output, *, prices=None, html=None))]
fn report(
    py: Python<'_>,
    output: PathBuf,
    prices: Option<PathBuf>,
    html: Option<PathBuf>,
) -> PyResult<PyObject> {
    let report = py
        .allow_threads(|| {
            let report = promptbatch::report(&output, prices.as_deref())?;
            if let Some(html) = &html {
                promptbatch::write_html_report(&report, html)?;
            }
            Ok(report)
        })
        .map_err(to_py)?;
    to_python(py, &report)
}

/// `promptbatch export SOURCE DEST --force`: the typed table `read()` loads. Returns the number
/// of records written.
#[pyfunction]
fn export(py: Python<'_>, source: PathBuf, dest: PathBuf) -> PyResult<u64> {
    let options = promptbatch::ExportOptions {
        source,
        dest,
        force: true,
    };
    let exported = py
        .allow_threads(|| promptbatch::export(&options))
        .map_err(to_py)?;
    Ok(exported.records)
}

/// The options of `run` or `estimate` as the command line defines them: for each, its keyword,
/// its flag, what it takes (`bool`, `list`, `duration`, `choice` or `value`), its default, its
/// possible values and its help. The stubs, the docstrings and the docs page are made from it.
#[pyfunction]
fn options(py: Python<'_>, command: &str) -> PyResult<PyObject> {
    let command = match command {
        "run" => flags::command::<cli::RunArgs>("run"),
        "estimate" => flags::command::<cli::EstimateArgs>("estimate"),
        other => {
            return Err(PyValueError::new_err(format!(
                "options(): no command `{other}` (run, estimate)"
            )))
        }
    };
    let list: Vec<serde_json::Value> = command
        .get_arguments()
        .filter(|arg| !arg.is_positional())
        .filter_map(|arg| flags::keyword(arg).map(|name| (name, arg)))
        .filter(|(name, _)| name != "output" && name != "json")
        .map(|(name, arg)| {
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            let kind = match arg.get_action() {
                clap::ArgAction::SetTrue => "bool",
                clap::ArgAction::Append => "list",
                _ if flags::is_duration(arg) => "duration",
                _ if !values.is_empty() => "choice",
                _ => "value",
            };
            let default: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            serde_json::json!({
                "name": name,
                "flag": format!("--{}", arg.get_long().unwrap_or_default()),
                "kind": kind,
                "default": if default.is_empty() { None } else { Some(default.join(",")) },
                "env": arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                "values": values,
                "value_name": arg.get_value_names().and_then(|n| n.first()).map(|n| n.to_string()),
                "help": arg.get_long_help().or(arg.get_help()).map(|h| h.to_string()).unwrap_or_default(),
            })
        })
        .collect();
    to_python(py, &list)
}

#[pymodule]
fn _promptbatch(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(run, module)?)?;
    module.add_function(wrap_pyfunction!(estimate, module)?)?;
    module.add_function(wrap_pyfunction!(report, module)?)?;
    module.add_function(wrap_pyfunction!(export, module)?)?;
    module.add_function(wrap_pyfunction!(options, module)?)?;
    module.add("RunStopped", module.py().get_type::<RunStopped>())?;
    Ok(())
}
