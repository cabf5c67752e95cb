//! The Python bindings, `tinylm._core`: the only place that knows about Python.
//!
//! Each call converts its arguments (checking them), releases the GIL, runs the core inside
//! tinylm's thread pool, and converts the result back. Core errors become tinylm's
//! exception classes in one place (`to_py_err`); a panic, which would be a bug, becomes a
//! `TinyLMError` too rather than a `PanicException` that `except Exception` would miss.
//! Locks on shared state are only taken with the GIL released, so no thread can hold one
//! while waiting for the GIL.

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Mutex, RwLock};

use numpy::{
    PyArray1, PyArrayMethods, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::{
    PyException, PyFileNotFoundError, PyIsADirectoryError, PyOSError, PyPermissionError,
    PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};

use crate::batch::BatchRunner;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::generate::{generate_with, GenerateOptions};
use crate::model::{Model, Workspace};
use crate::optim::{AdamW, AdamWConfig};
use crate::sample::SamplingParams;
use crate::threads;
use crate::tokenizer::{CharTokenizer, Tokenizer, WordTokenizer};
use crate::weights::{self, checkpoint, WeightsFormat};

create_exception!(
    tinylm,
    TinyLMError,
    PyException,
    "Base class of tinylm's errors."
);

/// Exception classes that are both a `TinyLMError` and a `ValueError`, made at import.
struct ErrorTypes {
    config: Py<PyType>,
    shape: Py<PyType>,
    format: Py<PyType>,
    tokenizer: Py<PyType>,
    non_finite: Py<PyType>,
}

static ERROR_TYPES: PyOnceLock<ErrorTypes> = PyOnceLock::new();

fn make_error_types(py: Python<'_>) -> PyResult<ErrorTypes> {
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

fn to_py_err(err: Error) -> PyErr {
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

/// Runs `f` with the GIL released, inside tinylm's thread pool, turning errors and panics
/// into Python exceptions.
fn run<T: Send>(py: Python<'_>, f: impl FnOnce() -> Result<T> + Send) -> PyResult<T> {
    let outcome = py.detach(|| catch_unwind(AssertUnwindSafe(|| threads::install(f))));
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(to_py_err(err)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(TinyLMError::new_err(format!(
                "internal error in tinylm (please report it): {what}"
            )))
        }
    }
}

fn lock_err<T>(_: T) -> Error {
    Error::value("a previous call failed while holding this object; it cannot be used any more")
}

/// Token ids from a 2-D int64 array: (ids, B, T).
fn ids_from_array(
    arr: &PyReadonlyArray2<'_, i64>,
    what: &str,
) -> PyResult<(Vec<u32>, usize, usize)> {
    let shape = arr.shape();
    let (b, t) = (shape[0], shape[1]);
    let view = arr.as_array();
    let mut ids = Vec::with_capacity(b * t);
    for ((i, j), &id) in view.indexed_iter() {
        if id < 0 || id > u32::MAX as i64 {
            return Err(PyValueError::new_err(format!(
                "{what}: token id {id} at position {j} of sequence {i} is out of range (ids are 0 to vocab_size - 1)"
            )));
        }
        ids.push(id as u32);
    }
    Ok((ids, b, t))
}

fn ids_from_list(ids: Vec<i64>, what: &str) -> PyResult<Vec<u32>> {
    ids.iter()
        .enumerate()
        .map(|(i, &id)| {
            if id < 0 || id > u32::MAX as i64 {
                Err(PyValueError::new_err(format!(
                    "{what}: token id {id} at position {i} is out of range (ids are 0 to vocab_size - 1)"
                )))
            } else {
                Ok(id as u32)
            }
        })
        .collect()
}

fn float_array<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, data)
        .reshape(shape.to_vec())?
        .into_any())
}

fn config_from_json(json: &str) -> Result<Config> {
    let config: Config = serde_json::from_str(json).map_err(|e| Error::config(e.to_string()))?;
    config.validate()?;
    Ok(config)
}

// ---------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------

/// A tokenizer (word or character level).
#[pyclass(name = "Tokenizer", module = "tinylm._core", frozen)]
pub struct PyTokenizer {
    inner: Tokenizer,
}

#[pymethods]
impl PyTokenizer {
    #[staticmethod]
    fn word_level(vocab: Vec<String>) -> PyResult<Self> {
        let inner = WordTokenizer::new(vocab).map_err(to_py_err)?;
        Ok(PyTokenizer {
            inner: Tokenizer::Word(inner),
        })
    }

    #[staticmethod]
    fn char_level(py: Python<'_>, text: String) -> PyResult<Self> {
        let inner = run(py, || CharTokenizer::from_text(&text))?;
        Ok(PyTokenizer {
            inner: Tokenizer::Char(inner),
        })
    }

    #[staticmethod]
    fn from_json(json: &str) -> PyResult<Self> {
        let inner = Tokenizer::from_json(json).map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    fn encode(&self, py: Python<'_>, text: String) -> PyResult<Vec<u32>> {
        run(py, || self.inner.encode(&text))
    }

    fn decode(&self, py: Python<'_>, ids: Vec<i64>) -> PyResult<String> {
        let ids = ids_from_list(ids, "decode")?;
        run(py, || self.inner.decode(&ids))
    }

    #[getter]
    fn vocab_size(&self) -> usize {
        self.inner.vocab_size()
    }

    #[getter]
    fn vocab(&self) -> Vec<String> {
        self.inner.vocab()
    }

    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }
}

// ---------------------------------------------------------------------------------------
// AdamW
// ---------------------------------------------------------------------------------------

/// AdamW's state (moments and step count) for one model.
#[pyclass(name = "AdamW", module = "tinylm._core", frozen)]
pub struct PyAdamW {
    inner: Mutex<AdamW>,
}

#[pymethods]
impl PyAdamW {
    #[new]
    #[pyo3(signature = (model, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0))]
    fn new(
        py: Python<'_>,
        model: &PyModel,
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
    ) -> PyResult<Self> {
        let config = AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        };
        let inner = run(py, || {
            let model = model.model.read().map_err(lock_err)?;
            AdamW::new(config, &model.layout)
        })?;
        Ok(PyAdamW {
            inner: Mutex::new(inner),
        })
    }

    #[getter]
    fn step(&self, py: Python<'_>) -> PyResult<u64> {
        run(py, || Ok(self.inner.lock().map_err(lock_err)?.step))
    }

    #[getter]
    fn hyperparameters(&self, py: Python<'_>) -> PyResult<(f32, f32, f32, f32)> {
        run(py, || {
            let c = self.inner.lock().map_err(lock_err)?.config;
            Ok((c.beta1, c.beta2, c.eps, c.weight_decay))
        })
    }
}

// ---------------------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------------------

/// A transformer: parameters plus a reusable activation workspace.
#[pyclass(name = "Model", module = "tinylm._core", frozen)]
pub struct PyModel {
    model: RwLock<Model>,
    /// For logits: one workspace, every operation split across the threads.
    workspace: Mutex<Workspace>,
    /// For losses, gradients and training steps: the batch split into shards.
    runner: Mutex<BatchRunner>,
}

impl PyModel {
    fn wrap(model: Model) -> PyModel {
        PyModel {
            model: RwLock::new(model),
            workspace: Mutex::new(Workspace::new()),
            runner: Mutex::new(BatchRunner::new()),
        }
    }
}

type NamedArrays = Vec<(String, Vec<usize>, Vec<f32>)>;
type NamedPyArrays<'py> = Vec<(String, Bound<'py, PyAny>)>;

fn named_arrays<'py>(py: Python<'py>, tensors: NamedArrays) -> PyResult<NamedPyArrays<'py>> {
    tensors
        .into_iter()
        .map(|(name, shape, data)| Ok((name, float_array(py, data, &shape)?)))
        .collect()
}

#[pymethods]
impl PyModel {
    /// A new model from a config (JSON text) with GPT-2 initialisation.
    #[new]
    fn new(py: Python<'_>, config_json: &str, seed: u64) -> PyResult<Self> {
        let config = config_from_json(config_json).map_err(to_py_err)?;
        let model = run(py, || Model::new(config, seed))?;
        Ok(PyModel::wrap(model))
    }

    /// Loads a model file in either format: (model, tokenizer or None, format name).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<(Self, Option<PyTokenizer>, &'static str)> {
        let loaded = run(py, || weights::load(&path))?;
        Ok((
            PyModel::wrap(loaded.model),
            loaded.tokenizer.map(|inner| PyTokenizer { inner }),
            loaded.format.name(),
        ))
    }

    /// Saves atomically; `format` is "safetensors" or "go-json".
    #[pyo3(signature = (path, tokenizer, format))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        tokenizer: Option<&PyTokenizer>,
        format: &str,
    ) -> PyResult<()> {
        let format = WeightsFormat::from_name(format).map_err(to_py_err)?;
        let tokenizer = tokenizer.map(|t| &t.inner);
        run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            weights::save(&path, &model, tokenizer, format)
        })
    }

    #[pyo3(signature = (path, optimizer, tokenizer, metadata))]
    fn save_checkpoint(
        &self,
        py: Python<'_>,
        path: PathBuf,
        optimizer: &PyAdamW,
        tokenizer: Option<&PyTokenizer>,
        metadata: BTreeMap<String, String>,
    ) -> PyResult<()> {
        let tokenizer = tokenizer.map(|t| &t.inner);
        run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let opt = optimizer.inner.lock().map_err(lock_err)?;
            checkpoint::save_checkpoint(&path, &model, tokenizer, &opt, &metadata)
        })
    }

    /// (model, optimizer, tokenizer or None, metadata) from a checkpoint.
    #[staticmethod]
    #[allow(clippy::type_complexity)]
    fn load_checkpoint(
        py: Python<'_>,
        path: PathBuf,
    ) -> PyResult<(Self, PyAdamW, Option<PyTokenizer>, BTreeMap<String, String>)> {
        let (loaded, opt, meta) = run(py, || checkpoint::load_checkpoint(&path))?;
        Ok((
            PyModel::wrap(loaded.model),
            PyAdamW {
                inner: Mutex::new(opt),
            },
            loaded.tokenizer.map(|inner| PyTokenizer { inner }),
            meta,
        ))
    }

    fn config_json(&self, py: Python<'_>) -> PyResult<String> {
        run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            Ok(serde_json::to_string(&model.config).expect("a config always serialises"))
        })
    }

    fn num_parameters(&self, py: Python<'_>) -> PyResult<usize> {
        run(py, || Ok(self.model.read().map_err(lock_err)?.layout.total))
    }

    /// Logits (B, T, V) for ids (B, T).
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, b, t) = ids_from_array(&ids, "input ids")?;
        let (logits, v) = run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut ws = self.workspace.lock().map_err(lock_err)?;
            model.forward(&mut ws, &ids, b, t)?;
            Ok((ws.logits(&model.config).to_vec(), model.config.vocab_size))
        })?;
        float_array(py, logits, &[b, t, v])
    }

    /// Mean cross-entropy of the next-token predictions.
    fn loss(
        &self,
        py: Python<'_>,
        inputs: PyReadonlyArray2<'_, i64>,
        targets: PyReadonlyArray2<'_, i64>,
    ) -> PyResult<f32> {
        let (ids, b, t) = ids_from_array(&inputs, "inputs")?;
        let (tg, tb, tt) = ids_from_array(&targets, "targets")?;
        check_same_shape(b, t, tb, tt)?;
        run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            runner.loss(&model, &ids, &tg, b, t)
        })
    }

    /// (loss, [(name, gradient array)]) in parameter order.
    fn gradients<'py>(
        &self,
        py: Python<'py>,
        inputs: PyReadonlyArray2<'py, i64>,
        targets: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<(f32, NamedPyArrays<'py>)> {
        let (ids, b, t) = ids_from_array(&inputs, "inputs")?;
        let (tg, tb, tt) = ids_from_array(&targets, "targets")?;
        check_same_shape(b, t, tb, tt)?;
        let (loss, tensors) = run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let mut grads = vec![0.0f32; model.layout.total];
            let loss = runner.loss_and_grads(&model, &ids, &tg, b, t, &mut grads)?;
            let tensors: NamedArrays = model
                .layout
                .specs
                .iter()
                .map(|s| (s.name.clone(), s.shape.clone(), grads[s.range()].to_vec()))
                .collect();
            Ok((loss, tensors))
        })?;
        Ok((loss, named_arrays(py, tensors)?))
    }

    /// One AdamW step: forward, backward, optional clipping, update. Returns (loss, grad norm
    /// before clipping). A non-finite loss or gradient leaves the parameters untouched.
    #[pyo3(signature = (optimizer, inputs, targets, lr, grad_clip=None))]
    fn train_step(
        &self,
        py: Python<'_>,
        optimizer: &PyAdamW,
        inputs: PyReadonlyArray2<'_, i64>,
        targets: PyReadonlyArray2<'_, i64>,
        lr: f32,
        grad_clip: Option<f32>,
    ) -> PyResult<(f32, f32)> {
        let (ids, b, t) = ids_from_array(&inputs, "inputs")?;
        let (tg, tb, tt) = ids_from_array(&targets, "targets")?;
        check_same_shape(b, t, tb, tt)?;
        if let Some(c) = grad_clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(PyValueError::new_err(format!(
                    "grad_clip must be positive, got {c}"
                )));
            }
        }
        run(py, || {
            let mut model = self.model.write().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let mut opt = optimizer.inner.lock().map_err(lock_err)?;
            runner.train_step(&mut model, &mut opt, &ids, &tg, b, t, lr, grad_clip)
        })
    }

    /// One plain SGD step (the Go TinyLM's training). Returns the loss before the step.
    fn sgd_step(
        &self,
        py: Python<'_>,
        inputs: PyReadonlyArray2<'_, i64>,
        targets: PyReadonlyArray2<'_, i64>,
        lr: f32,
    ) -> PyResult<f32> {
        let (ids, b, t) = ids_from_array(&inputs, "inputs")?;
        let (tg, tb, tt) = ids_from_array(&targets, "targets")?;
        check_same_shape(b, t, tb, tt)?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "learning rate must be >= 0 and finite, got {lr}"
            )));
        }
        run(py, || {
            let mut model = self.model.write().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            runner.sgd_step(&mut model, &ids, &tg, b, t, lr)
        })
    }

    /// New token ids after `prompt`.
    #[pyo3(signature = (prompt, max_new_tokens, temperature=0.0, top_k=None, top_p=None, seed=0, stop=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Vec<i64>,
        max_new_tokens: usize,
        temperature: f32,
        top_k: Option<usize>,
        top_p: Option<f32>,
        seed: u64,
        stop: Vec<i64>,
    ) -> PyResult<Vec<u32>> {
        let prompt = ids_from_list(prompt, "prompt")?;
        let stop = ids_from_list(stop, "stop")?;
        let opts = GenerateOptions {
            max_new_tokens,
            sampling: SamplingParams {
                temperature,
                top_k,
                top_p,
            },
            seed,
            stop,
        };
        run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            generate_with(&model, &prompt, &opts, |_| true)
        })
    }

    /// [(name, array)] copies of every parameter, in layout order.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<NamedPyArrays<'py>> {
        let tensors = run(py, || {
            let model = self.model.read().map_err(lock_err)?;
            Ok(model
                .layout
                .specs
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.shape.clone(),
                        model.params()[s.range()].to_vec(),
                    )
                })
                .collect::<NamedArrays>())
        })?;
        named_arrays(py, tensors)
    }

    /// Replaces every parameter; the dict must hold exactly the model's names and shapes,
    /// float32, finite. Nothing changes if any entry is wrong.
    fn load_state_dict(&self, py: Python<'_>, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let mut entries: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        for (key, value) in state.iter() {
            let name: String = key.extract()?;
            let arr: PyReadonlyArrayDyn<'_, f32> = value.extract().map_err(|_| {
                PyValueError::new_err(format!(
                    "state_dict[{name:?}] must be a float32 NumPy array"
                ))
            })?;
            let data: Vec<f32> = arr.as_array().iter().copied().collect();
            entries.insert(name, (arr.shape().to_vec(), data));
        }
        run(py, || {
            let mut model = self.model.write().map_err(lock_err)?;
            let layout = model.layout.clone();
            if let Some(extra) = entries.keys().find(|k| layout.get(k).is_none()) {
                return Err(Error::value(format!(
                    "state_dict has an unexpected entry {extra:?}"
                )));
            }
            for spec in &layout.specs {
                let (shape, data) = entries.get(&spec.name).ok_or_else(|| {
                    Error::value(format!("state_dict is missing {:?}", spec.name))
                })?;
                if *shape != spec.shape {
                    return Err(Error::shape(
                        format!("state_dict[{:?}]", spec.name),
                        &spec.shape,
                        shape,
                    ));
                }
                if data.iter().any(|x| !x.is_finite()) {
                    return Err(Error::NonFinite(format!(
                        "state_dict[{:?}] holds NaN or infinite values",
                        spec.name
                    )));
                }
            }
            for spec in &layout.specs {
                model.params_mut()[spec.range()].copy_from_slice(&entries[&spec.name].1);
            }
            Ok(())
        })
    }
}

fn check_same_shape(b: usize, t: usize, tb: usize, tt: usize) -> PyResult<()> {
    if (b, t) != (tb, tt) {
        return Err(to_py_err(Error::shape("targets", &[b, t], &[tb, tt])));
    }
    Ok(())
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

/// a (M, K) @ b (K, N) with tinylm's matrix multiplication, in float32.
#[pyfunction]
fn matmul<'py>(
    py: Python<'py>,
    a: PyReadonlyArray2<'py, f32>,
    b: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyAny>> {
    let (m, k) = (a.shape()[0], a.shape()[1]);
    let (k2, n) = (b.shape()[0], b.shape()[1]);
    if k != k2 {
        return Err(to_py_err(Error::shape(
            "matmul right operand",
            &[k, n],
            &[k2, n],
        )));
    }
    let a: Vec<f32> = a.as_array().iter().copied().collect();
    let b: Vec<f32> = b.as_array().iter().copied().collect();
    let out = run(py, || {
        let mut out = vec![0.0f32; m * n];
        crate::kernels::matmul::matmul(
            crate::kernels::matmul::MatMut::new(&mut out, m, n),
            crate::kernels::matmul::MatRef::new(&a, m, k),
            crate::kernels::matmul::MatRef::new(&b, k, n),
            false,
        );
        Ok(out)
    })?;
    float_array(py, out, &[m, n])
}

/// Seconds per call of an (M, K) @ (K, N) product on preallocated buffers, timed inside
/// the core (for benchmarks; `transpose_a` reads a as the transpose of a (K, M) matrix,
/// as the backward pass does).
#[pyfunction]
#[pyo3(signature = (m, k, n, iters, transpose_a=false))]
fn time_matmul(
    py: Python<'_>,
    m: usize,
    k: usize,
    n: usize,
    iters: usize,
    transpose_a: bool,
) -> PyResult<f64> {
    use crate::kernels::matmul::{matmul, MatMut, MatRef};
    if m * k * n == 0 || m.max(k).max(n) > 1 << 14 || iters == 0 {
        return Err(PyValueError::new_err(
            "time_matmul: sizes must be in 1..=16384 and iters >= 1",
        ));
    }
    run(py, || {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut out = vec![0.0f32; m * n];
        let mut once = || {
            let a_view = if transpose_a {
                MatRef::new(&a, k, m).t()
            } else {
                MatRef::new(&a, m, k)
            };
            matmul(
                MatMut::new(&mut out, m, n),
                a_view,
                MatRef::new(&b, k, n),
                false,
            );
        };
        once();
        let start = std::time::Instant::now();
        for _ in 0..iters {
            once();
        }
        Ok(start.elapsed().as_secs_f64() / iters as f64)
    })
}

/// Panics inside the core on purpose, so that tests can check that a panic (a bug) reaches
/// Python as a `TinyLMError` and not as a `PanicException`.
#[pyfunction]
fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    run(py, move || -> Result<()> { panic!("{message}") })
}

/// The format of a weights file: "safetensors" or "go-json".
#[pyfunction]
fn detect_format(py: Python<'_>, path: PathBuf) -> PyResult<&'static str> {
    run(py, || {
        let bytes = weights::read_file(&path)?;
        Ok(weights::detect_format(&bytes).name())
    })
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let types = ERROR_TYPES.get_or_try_init(py, || make_error_types(py))?;
    m.add("TinyLMError", py.get_type::<TinyLMError>())?;
    m.add("ConfigError", types.config.bind(py))?;
    m.add("ShapeError", types.shape.bind(py))?;
    m.add("FormatError", types.format.bind(py))?;
    m.add("TokenizerError", types.tokenizer.bind(py))?;
    m.add("NonFiniteError", types.non_finite.bind(py))?;
    m.add_class::<PyModel>()?;
    m.add_class::<PyAdamW>()?;
    m.add_class::<PyTokenizer>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(detect_format, m)?)?;
    m.add_function(wrap_pyfunction!(matmul, m)?)?;
    m.add_function(wrap_pyfunction!(time_matmul, m)?)?;
    m.add_function(wrap_pyfunction!(_panic_for_tests, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
