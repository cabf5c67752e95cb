//! tinylm's Python exception classes, and the one place core errors and panics become them.

use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyIsADirectoryError, PyMemoryError, PyOSError,
    PyPermissionError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::error::Error;

create_exception!(
    tinylm,
    TinyLMError,
    PyException,
    "Base class of tinylm's errors."
);

/// Exception classes that are both a `TinyLMError` and a `ValueError`, made at import.
pub struct ErrorTypes {
    pub config: Py<PyType>,
    pub shape: Py<PyType>,
    pub format: Py<PyType>,
    pub tokenizer: Py<PyType>,
    pub non_finite: Py<PyType>,
}

pub static ERROR_TYPES: PyOnceLock<ErrorTypes> = PyOnceLock::new();

pub fn make_error_types(py: Python<'_>) -> PyResult<ErrorTypes> {
    let builtins = py.import("builtins")?;
    let type_fn = builtins.getattr("type")?;
    let base = py.get_type::<TinyLMError>();
    let value_error = py.get_type::<PyValueError>();
    let make = |name: &str, doc: &str| -> PyResult<Py<PyType>> {
        let dict = PyDict::new(py);
        dict.set_item("__module__", "tinylm")?;
        dict.set_item("__doc__", doc)?;
        let bases = PyTuple::new(py, [base.as_any(), value_error.as_any()])?;
        Ok(type_fn
            .call1((name, bases, dict))?
            .cast_into::<PyType>()?
            .unbind())
    };
    Ok(ErrorTypes {
        config: make("ConfigError", "An invalid model configuration.")?,
        shape: make("ShapeError", "A tensor or array of the wrong shape.")?,
        format: make(
            "FormatError",
            "A malformed weights, checkpoint or tokenizer file.",
        )?,
        tokenizer: make(
            "TokenizerError",
            "Text that cannot be encoded or ids that cannot be decoded.",
        )?,
        non_finite: make(
            "NonFiniteError",
            "NaN or infinite numbers where finite ones are needed.",
        )?,
    })
}

/// The Python exception for a core error.
pub fn to_py_err(err: Error) -> PyErr {
    let msg = err.to_string();
    Python::attach(|py| {
        let types = match ERROR_TYPES.get(py) {
            Some(t) => t,
            None => return TinyLMError::new_err(msg),
        };
        let ty = match &err {
            Error::Config(_) => &types.config,
            Error::Shape { .. } => &types.shape,
            Error::Format { .. } => &types.format,
            Error::Tokenizer(_) => &types.tokenizer,
            Error::NonFinite(_) => &types.non_finite,
            Error::Value(_) => return PyValueError::new_err(msg),
            Error::OutOfMemory { .. } => return PyMemoryError::new_err(msg),
            Error::Io { detail, .. } => {
                return match detail.as_str() {
                    "no such file" => PyFileNotFoundError::new_err(msg),
                    "permission denied" => PyPermissionError::new_err(msg),
                    d if d.starts_with("is a directory") => PyIsADirectoryError::new_err(msg),
                    _ => PyOSError::new_err(msg),
                }
            }
        };
        PyErr::from_type(ty.bind(py).clone(), msg)
    })
}

/// A panic (a bug) as a `TinyLMError`, rather than a `PanicException` that
/// `except Exception` would miss.
pub fn panic_to_py_err(panic: Box<dyn std::any::Any + Send>) -> PyErr {
    let what = panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    TinyLMError::new_err(format!(
        "internal error in tinylm (please report it): {what}"
    ))
}

/// The error for a lock that a panicked call left poisoned.
pub fn lock_err<T>(_: T) -> Error {
    Error::value("a previous call failed while holding this object; it cannot be used any more")
}
