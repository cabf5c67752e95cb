//! The Python bindings, `tinylm._core`: the only place that knows about Python, one file
//! per concept ([`errors`], [`tokenizer`], [`optimizer`], [`model`], test [`hooks`]).
//!
//! Each call converts its arguments, releases the GIL, takes the locks it needs on the
//! calling thread, and only then runs the core inside tinylm's thread pool ([`in_pool`]).
//! Never the other way round: a pool thread waiting for its own parallel work may pick up
//! another call's job, and if it held a lock that job needs, both would wait forever (two
//! Python threads sharing one model deadlocked that way). Locks are only taken with the
//! GIL released, so no thread can hold one while waiting for the GIL.

mod convert;
mod errors;
mod hooks;
mod model;
mod optimizer;
mod tokenizer;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use pyo3::prelude::*;

use crate::error::Result;
use crate::kernels::bf16::Dtype;
use crate::threads;
use crate::weights;

use errors::{panic_to_py_err, to_py_err, TinyLMError, ERROR_TYPES};

/// Runs `f` on the calling thread with the GIL released, turning errors and panics into
/// Python exceptions. `f` takes its locks, then does its work with [`in_pool`].
fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py_err(err)),
        Err(panic) => Err(panic_to_py_err(panic)),
    }
}

/// Runs `f` inside tinylm's thread pool, so that its parallel kernels use the pool's
/// threads. `f` must not take locks (see the module's documentation).
fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    threads::install(f)
}

/// How often a long call looks for Ctrl-C (a signal reaches Python only on the main thread).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// [`detached`] work that Ctrl-C can stop: `f` runs on a thread of its own (taking its
/// locks there, then working with [`in_pool`], as with [`detached`]) while this thread, the
/// one Python delivers signals to, checks for them every [`SIGNAL_CHECK`]. On a signal it
/// sets the flag `f` is given and, once `f` has returned, raises the signal's exception
/// (`KeyboardInterrupt`) instead of `f`'s result.
fn interruptible<T: Send>(
    py: Python<'_>,
    f: impl FnOnce(&AtomicBool) -> Result<T> + Send,
) -> PyResult<T> {
    let (outcome, interrupt) = py.detach(|| {
        let stop = AtomicBool::new(false);
        let (done, finished) = mpsc::channel::<()>();
        let mut interrupt = None;
        let outcome = std::thread::scope(|scope| {
            let worker = scope.spawn(|| {
                let out = catch_unwind(AssertUnwindSafe(|| f(&stop)));
                let _ = done.send(());
                out
            });
            while finished.recv_timeout(SIGNAL_CHECK) == Err(RecvTimeoutError::Timeout) {
                if let Err(err) = Python::attach(|py| py.check_signals()) {
                    interrupt = Some(err);
                    stop.store(true, Ordering::Relaxed);
                    let _ = finished.recv();
                    break;
                }
            }
            worker.join().unwrap_or_else(Err)
        });
        (outcome, interrupt)
    });
    if let Some(err) = interrupt {
        return Err(err);
    }
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py_err(err)),
        Err(panic) => Err(panic_to_py_err(panic)),
    }
}

/// [`detached`] work that takes no locks, run in the pool.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    detached(py, || in_pool(f))
}

/// Sets the number of threads tinylm's kernels use.
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    threads::set_num_threads(n).map_err(to_py_err)
}

/// The number of threads tinylm's kernels use.
#[pyfunction]
fn get_num_threads(py: Python<'_>) -> usize {
    py.detach(threads::num_threads)
}

/// The format of a weights file: "safetensors" or "go-json".
#[pyfunction]
fn detect_format(py: Python<'_>, path: PathBuf) -> PyResult<&'static str> {
    run(py, || weights::detect_file_format(&path).map(|f| f.name()))
}

/// The dtype `name` stands for, "float32" or "bfloat16" (also "fp32", "f32", "bf16"),
/// else an error listing them.
#[pyfunction]
fn dtype_name(name: &str) -> PyResult<&'static str> {
    Dtype::from_name(name).map(Dtype::name).map_err(to_py_err)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // NumPy's C API is looked up once, now: looked up on a first use, it could fail (and
    // panic) when a Ctrl-C is pending.
    numpy::PyArray1::<f32>::zeros(py, 0, false);
    let types = ERROR_TYPES.get_or_try_init(py, || errors::make_error_types(py))?;
    m.add("TinyLMError", py.get_type::<TinyLMError>())?;
    m.add("ConfigError", types.config.bind(py))?;
    m.add("ShapeError", types.shape.bind(py))?;
    m.add("FormatError", types.format.bind(py))?;
    m.add("TokenizerError", types.tokenizer.bind(py))?;
    m.add("NonFiniteError", types.non_finite.bind(py))?;
    m.add_class::<model::PyModel>()?;
    m.add_class::<model::PyGeneration>()?;
    m.add_class::<optimizer::PyAdamW>()?;
    m.add_class::<tokenizer::PyTokenizer>()?;
    m.add_class::<tokenizer::PyBpeDecoder>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(detect_format, m)?)?;
    m.add_function(wrap_pyfunction!(dtype_name, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::matmul, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::time_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::_panic_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::_scale_gradient_for_tests, m)?)?;
    m.add_function(wrap_pyfunction!(hooks::_times_packed_for_tests, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
