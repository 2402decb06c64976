//! `promptbatch._promptbatch`: the library's facade for Python. Each function takes the
//! command line's options as keyword arguments (the same names, the same defaults), runs with
//! the GIL released, and returns plain Python data; `promptbatch/__init__.py` adds the frame
//! conversions on top.

use std::path::PathBuf;

use promptbatch::{Job, SimOptions, StopReason};
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// A library error as the Python exception that fits it, with the command line's message.
fn to_py(error: promptbatch::Error) -> PyErr {
    match error {
        promptbatch::Error::Config(message) => PyValueError::new_err(message),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// The allocator the command line uses: the runner allocates a few small buffers per row on
/// several threads at once.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runs `work` on a worker thread of its own runtime (as the command line does: the dispatcher
/// then shares the runtime's threads), the GIL released.
fn block_on<T: Send + 'static>(
    py: Python<'_>,
    work: impl std::future::Future<Output = Result<T, promptbatch::Error>> + Send + 'static,
) -> PyResult<T> {
    py.allow_threads(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the async runtime: {e}")))?;
        match runtime.block_on(runtime.spawn(work)) {
            Ok(result) => result.map_err(to_py),
            Err(e) => Err(PyRuntimeError::new_err(format!("the run's task failed: {e}"))),
        }
    })
}

/// `promptbatch run INPUT -o OUTPUT [options]`: returns the summary as a dict. Re-running with
/// the same output resumes it, as on the command line.
#[pyfunction]
#[pyo3(signature = (input, output, *, model=None, template=None, system=None, max_tokens=None,
    concurrency=None, rpm=None, tpm=None, max_cost=None, base_url=None, dry_run=false,
    fresh=false, ordered=false, handle_signals=true))]
#[allow(clippy::too_many_arguments)]
fn run(
    py: Python<'_>,
    input: PathBuf,
    output: PathBuf,
    model: Option<String>,
    template: Option<String>,
    system: Option<String>,
    max_tokens: Option<u32>,
    concurrency: Option<u32>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    max_cost: Option<f64>,
    base_url: Option<String>,
    dry_run: bool,
    fresh: bool,
    ordered: bool,
    handle_signals: bool,
) -> PyResult<PyObject> {
    let mut job = Job::new(input, output);
    if let Some(model) = model {
        job = job.model(model);
    }
    if let Some(template) = template {
        job = job.template(template);
    }
    if let Some(system) = system {
        job = job.system(system);
    }
    if let Some(n) = max_tokens {
        job = job.max_tokens(n);
    }
    if let Some(n) = concurrency {
        job = job.concurrency(n);
    }
    if let Some(n) = rpm {
        job = job.rpm(n);
    }
    if let Some(n) = tpm {
        job = job.tpm(n);
    }
    if let Some(usd) = max_cost {
        job = job.max_cost(usd);
    }
    if let Some(url) = base_url {
        job = job.base_url(url);
    }
    if dry_run {
        job = job.dry_run(SimOptions::default());
    }
    if fresh {
        job = job.fresh();
    }
    if ordered {
        job = job.ordered();
    }
    job.handle_signals = handle_signals;
    let summary = block_on(py, async move { job.run().await })?;
    if matches!(summary.stop, StopReason::Interrupted) {
        return Err(PyKeyboardInterrupt::new_err(
            "interrupted: in-flight rows finished; the same call resumes where this run stopped",
        ));
    }
    let value = serde_json::json!({
        "ok": summary.ok,
        "errors": summary.errors,
        "done_before": summary.done_before,
        "unrecorded": summary.unrecorded,
        "simulated": summary.simulated,
        "cost_usd": summary.costs.spent_usd() + summary.costs.simulated_usd(),
        "elapsed_s": summary.elapsed.as_secs_f64(),
        "stop": format!("{:?}", summary.stop),
    });
    json_to_py(py, &value)
}

/// `promptbatch report OUTPUT --json`, as a dict.
#[pyfunction]
#[pyo3(signature = (output, *, prices=None))]
fn report(py: Python<'_>, output: PathBuf, prices: Option<PathBuf>) -> PyResult<PyObject> {
    let report = py
        .allow_threads(|| promptbatch::report(&output, prices.as_deref()))
        .map_err(to_py)?;
    let value =
        serde_json::to_value(&report).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    json_to_py(py, &value)
}

/// A JSON value as Python data (through the `json` module: one conversion rule, Python's).
fn json_to_py(py: Python<'_>, value: &serde_json::Value) -> PyResult<PyObject> {
    let json = py.import("json")?;
    Ok(json.call_method1("loads", (value.to_string(),))?.unbind())
}

#[pymodule]
fn _promptbatch(module: &Bound<'_, PyModule>) -> PyResult<()> {
    module.add_function(wrap_pyfunction!(run, module)?)?;
    module.add_function(wrap_pyfunction!(report, module)?)?;
    Ok(())
}
