//! `run(..., on_record=f)`: every record, once it is safely in the output file, reaches `f` as
//! a dict (the JSONL line's fields), on the writer's thread with the GIL taken for the call.
//! If `f` raises, it is not called again, the run stops as a first Ctrl-C would (in-flight rows
//! finish and are written; the output stays resumable) and `run` raises that exception.

use std::sync::{Arc, Mutex};

use promptbatch::{Job, StopHandle};
use pyo3::prelude::*;

/// A Python callable as a record callback, with the first exception it raised.
pub(crate) struct Callback {
    function: Arc<PyObject>,
    failure: Arc<Mutex<Option<PyErr>>>,
    stop: StopHandle,
}

impl Callback {
    pub(crate) fn new(function: PyObject, stop: StopHandle) -> Self {
        Callback {
            function: Arc::new(function),
            failure: Arc::default(),
            stop,
        }
    }

    /// `job`, handing every record it writes to the callable.
    pub(crate) fn attach(&self, job: Job) -> Job {
        let function = self.function.clone();
        let failure = self.failure.clone();
        let stop = self.stop.clone();
        job.on_record(move |record| {
            let line = record.to_json();
            Python::with_gil(|py| {
                let Ok(mut failure) = failure.lock() else {
                    return;
                };
                if failure.is_some() {
                    return;
                }
                let called = crate::bridge::json_to_py(py, &line)
                    .and_then(|dict| function.call1(py, (dict,)));
                if let Err(error) = called {
                    *failure = Some(error);
                    stop.stop();
                }
            });
        })
    }

    /// The exception the callable raised, if it did.
    pub(crate) fn failure(&self) -> Option<PyErr> {
        self.failure.lock().ok().and_then(|mut f| f.take())
    }
}
