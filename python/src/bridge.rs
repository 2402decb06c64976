//! What every call shares on its way between Python and the library: running async work with
//! the GIL released, the library's messages written to Python's `sys.stderr` (so a notebook
//! shows them, and pytest captures them), errors as Python exceptions, and JSON as Python data.

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;

/// A library error as the Python exception that fits it, with the command line's message: a
/// mistake in the options or the input is a `ValueError`, anything else a `RuntimeError`.
pub(crate) fn to_py(error: promptbatch::Error) -> PyErr {
    match error {
        promptbatch::Error::Config(message) => PyValueError::new_err(message),
        promptbatch::Error::Input { .. } => PyValueError::new_err(error.to_string()),
        other => PyRuntimeError::new_err(other.to_string()),
    }
}

/// Runs `work` to its end on a worker thread of its own runtime (as the command line does: the
/// dispatcher then shares the runtime's threads), with the GIL released and the library's
/// messages going to `sys.stderr`.
pub(crate) fn block_on<T: Send + 'static>(
    py: Python<'_>,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> PyResult<T> {
    let _messages = MessagesToPython::install();
    py.allow_threads(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the async runtime: {e}")))?;
        let result = runtime.block_on(runtime.spawn(work));
        // Every task ends here, with the GIL still released (a task may be writing a message).
        drop(runtime);
        result.map_err(|e| PyRuntimeError::new_err(format!("the run's task failed: {e}")))
    })
}

/// While it lives, the library's messages (progress lines, resume plans, warnings) are written
/// to Python's `sys.stderr` rather than to file descriptor 2, which a notebook does not show.
pub(crate) struct MessagesToPython;

impl MessagesToPython {
    pub(crate) fn install() -> Self {
        promptbatch::set_observer(|event| {
            let promptbatch::Event::Notice(text) = event else {
                return;
            };
            Python::with_gil(|py| say(py, text));
        });
        MessagesToPython
    }
}

impl Drop for MessagesToPython {
    fn drop(&mut self) {
        promptbatch::clear_observer();
    }
}

/// Writes one message line to `sys.stderr` (to file descriptor 2 if that fails).
pub(crate) fn say(py: Python<'_>, text: &str) {
    let written = py.import("sys").and_then(|sys| {
        let stderr = sys.getattr("stderr")?;
        stderr.call_method1("write", (format!("{text}\n"),))?;
        stderr.call_method0("flush")
    });
    if written.is_err() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{text}");
    }
}

/// A JSON value as Python data (through the `json` module: one conversion rule, Python's).
pub(crate) fn json_to_py(py: Python<'_>, json: &str) -> PyResult<PyObject> {
    let module = py.import("json")?;
    Ok(module.call_method1("loads", (json,))?.unbind())
}

/// Any serializable value as Python data.
pub(crate) fn to_python(py: Python<'_>, value: &impl serde::Serialize) -> PyResult<PyObject> {
    let json = serde_json::to_string(value).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
    json_to_py(py, &json)
}
