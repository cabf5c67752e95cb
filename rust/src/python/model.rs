//! `tinylm._core.Model` (a transformer with its workspaces) and `Generation` (a resumable
//! generation that streams its ids a chunk at a time).

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use numpy::{PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::batch::BatchRunner;
use crate::beam::{beam_search_until, BeamOptions, EarlyStopping};
use crate::config::Config;
use crate::decode::{Decoder, PackedCache};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Generation, Window};
use crate::generate_many::BatchGeneration;
use crate::kernels::bf16::{check_fits_bf16, Dtype};
use crate::model::{check_ids, Backend, Model, Workspace};
use crate::reference::trace;
use crate::sample::{check_finite_logits, SamplingParams};
use crate::weights::{self, checkpoint, WeightsFormat};

use super::convert::{
    copy_out, float_array, ids_from_array, ids_from_list, named_arrays, NamedArrays, NamedPyArrays,
};
use super::errors::{lock_err, panic_to_py_err, to_py_err};
use super::hooks::spoil_gradient;
use super::optimizer::PyAdamW;
use super::tokenizer::PyTokenizer;
use super::{detached, in_pool, interruptible, run, SIGNAL_CHECK};

/// A transformer: parameters plus reusable activation workspaces, and its weights packed
/// for generation.
#[pyclass(name = "Model", module = "tinylm._core", frozen)]
pub struct PyModel {
    /// Read it with `model.read()`; change it only through [`PyModel::write`].
    pub model: RwLock<Model>,
    /// The weights packed for generation from the current parameters (see
    /// [`crate::decode::decoder`]): packed by the first generation that needs them, shared
    /// by the ones after it, emptied by every change to the parameters.
    packed: Mutex<Arc<PackedCache>>,
    /// For logits: one workspace, every operation split across the threads.
    workspace: Mutex<Workspace>,
    /// For losses, gradients and training steps: the batch split into shards.
    runner: Mutex<BatchRunner>,
    /// Counts the changes to the parameters, so that a generation made before a change
    /// refuses to go on with a stale cache.
    version: AtomicU64,
}

impl PyModel {
    fn wrap(model: Model) -> PyModel {
        PyModel {
            model: RwLock::new(model),
            packed: Mutex::new(Arc::default()),
            workspace: Mutex::new(Workspace::new()),
            runner: Mutex::new(BatchRunner::new()),
            version: AtomicU64::new(0),
        }
    }

    /// The model, to change (the caller holds the lock while it changes), once `check`
    /// accepts it as it is: counts the change and drops the packed weights, which the next
    /// generation packs anew. A change refused changes nothing, not even the packed weights
    /// a generation under way reads. Every change to the parameters comes through here.
    fn write(
        &self,
        check: impl FnOnce(&Model) -> Result<()>,
    ) -> Result<RwLockWriteGuard<'_, Model>> {
        let guard = self.model.write().map_err(lock_err)?;
        check(&guard)?;
        self.version.fetch_add(1, Ordering::AcqRel);
        *self.packed.lock().map_err(lock_err)? = Arc::default();
        Ok(guard)
    }

    /// A decoder of the model, while the caller holds `model`, the read lock of
    /// `self.model` (so no change can come between): it shares the packed weights of the
    /// current parameters.
    fn decoder<'m>(&self, model: &'m RwLockReadGuard<'_, Model>) -> Result<Decoder<'m>> {
        let packed = self.packed.lock().map_err(lock_err)?.clone();
        Ok(Decoder::sharing(model, packed))
    }
}

/// The config Python's `Config.to_json` wrote, checked. Its JSON is one generated line,
/// so serde's "at line 1 column N" is dropped from an error: the message names the field.
fn config_from_json(json: &str) -> Result<Config> {
    let config: Config = serde_json::from_str(json).map_err(|e| {
        let message = e.to_string();
        let field_only = message
            .rfind(" at line ")
            .map_or(&message[..], |at| &message[..at]);
        Error::config(field_only)
    })?;
    config.validate()?;
    Ok(config)
}

fn check_same_shape(b: usize, t: usize, tb: usize, tt: usize) -> PyResult<()> {
    if (b, t) != (tb, tt) {
        return Err(to_py_err(Error::shape("targets", &[b, t], &[tb, tt])));
    }
    Ok(())
}

/// Inputs and targets as checked (ids, targets, B, T).
fn batch_pair(
    inputs: &PyReadonlyArray2<'_, i64>,
    targets: &PyReadonlyArray2<'_, i64>,
) -> PyResult<(Vec<u32>, Vec<u32>, usize, usize)> {
    let (ids, b, t) = ids_from_array(inputs, "inputs")?;
    let (tg, tb, tt) = ids_from_array(targets, "targets")?;
    check_same_shape(b, t, tb, tt)?;
    Ok((ids, tg, b, t))
}

/// A NaN or infinite logit names its sequence and position: the weights are broken.
fn check_logits(logits: &[f32], t: usize, v: usize) -> Result<()> {
    check_finite_logits(logits, |i| {
        format!("sequence {}, position {}", i / (t * v), (i / v) % t)
    })
}

fn check_grad_clip(grad_clip: Option<f32>) -> PyResult<()> {
    match grad_clip {
        Some(c) if !(c.is_finite() && c > 0.0) => Err(PyValueError::new_err(format!(
            "grad_clip must be positive, got {c}"
        ))),
        _ => Ok(()),
    }
}

/// Generation options from the dict the Python layer builds (every value already checked
/// there): max_new_tokens, seed, stop, window and the sampler chain's settings.
fn generate_options(options: &Bound<'_, PyDict>) -> PyResult<GenerateOptions> {
    let get = |key: &str| -> PyResult<Bound<'_, PyAny>> {
        options
            .get_item(key)?
            .ok_or_else(|| PyValueError::new_err(format!("generation option {key:?} is missing")))
    };
    let window: String = get("window")?.extract()?;
    let logit_bias: BTreeMap<i64, f32> = get("logit_bias")?.extract()?;
    let logit_bias = logit_bias
        .into_iter()
        .map(|(id, bias)| {
            u32::try_from(id)
                .map(|id| (id, bias))
                .map_err(|_| PyValueError::new_err(format!("logit_bias: id {id} is out of range")))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(GenerateOptions {
        max_new_tokens: get("max_new_tokens")?.extract()?,
        sampling: SamplingParams {
            temperature: get("temperature")?.extract()?,
            top_k: get("top_k")?.extract()?,
            top_p: get("top_p")?.extract()?,
            min_p: get("min_p")?.extract()?,
            repetition_penalty: get("repetition_penalty")?.extract()?,
            frequency_penalty: get("frequency_penalty")?.extract()?,
            presence_penalty: get("presence_penalty")?.extract()?,
            penalty_last_n: get("penalty_last_n")?.extract()?,
            logit_bias,
        },
        seed: get("seed")?.extract()?,
        stop: ids_from_list(get("stop")?.extract()?, "stop")?,
        window: Window::from_name(&window).map_err(to_py_err)?,
    })
}

fn check_finite_loss(loss: f32) -> Result<f32> {
    if loss.is_finite() {
        Ok(loss)
    } else {
        Err(Error::NonFinite(format!(
            "the loss is {loss}: the model's logits are not finite (its weights are too \
             large or not finite)"
        )))
    }
}

#[pymethods]
impl PyModel {
    /// A new model from a config (JSON text) with GPT-2 initialisation, on a backend
    /// ("fast" or "reference").
    #[new]
    #[pyo3(signature = (config_json, seed, backend = "fast"))]
    fn new(py: Python<'_>, config_json: &str, seed: u64, backend: &str) -> PyResult<Self> {
        let config = config_from_json(config_json).map_err(to_py_err)?;
        let backend = Backend::from_name(backend).map_err(to_py_err)?;
        let model = run(py, || Model::new_on(config, seed, backend))?;
        Ok(PyModel::wrap(model))
    }

    /// Loads a model file in either format: (model, tokenizer or None, format name).
    #[staticmethod]
    #[pyo3(signature = (path, backend = "fast"))]
    fn load(
        py: Python<'_>,
        path: PathBuf,
        backend: &str,
    ) -> PyResult<(Self, Option<PyTokenizer>, &'static str)> {
        let backend = Backend::from_name(backend).map_err(to_py_err)?;
        let loaded = run(py, || weights::load_on(&path, backend))?;
        Ok((
            PyModel::wrap(loaded.model),
            loaded.tokenizer.map(|inner| PyTokenizer { inner }),
            loaded.format.name(),
        ))
    }

    /// Saves atomically; `format` is "safetensors" or "go-json"; `metadata` (safetensors
    /// only) adds string entries beside tinylm's own.
    #[pyo3(signature = (path, tokenizer, format, metadata = BTreeMap::new()))]
    fn save(
        &self,
        py: Python<'_>,
        path: PathBuf,
        tokenizer: Option<&PyTokenizer>,
        format: &str,
        metadata: BTreeMap<String, String>,
    ) -> PyResult<()> {
        let format = WeightsFormat::from_name(format).map_err(to_py_err)?;
        let tokenizer = tokenizer.map(|t| &t.inner);
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let model = &*model;
            in_pool(|| weights::save_with_metadata(&path, model, tokenizer, format, &metadata))
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
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let opt = optimizer.inner.lock().map_err(lock_err)?;
            let (model, opt) = (&*model, &*opt);
            in_pool(|| checkpoint::save_checkpoint(&path, model, tokenizer, opt, &metadata))
        })
    }

    /// (model, optimizer, tokenizer or None, metadata) from a checkpoint.
    #[staticmethod]
    #[allow(clippy::type_complexity)]
    #[pyo3(signature = (path, backend = "fast"))]
    fn load_checkpoint(
        py: Python<'_>,
        path: PathBuf,
        backend: &str,
    ) -> PyResult<(Self, PyAdamW, Option<PyTokenizer>, BTreeMap<String, String>)> {
        let backend = Backend::from_name(backend).map_err(to_py_err)?;
        let (loaded, opt, meta) = run(py, || checkpoint::load_checkpoint_on(&path, backend))?;
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
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            Ok(serde_json::to_string(&model.config).expect("a config always serialises"))
        })
    }

    /// "fast" or "reference".
    fn backend(&self, py: Python<'_>) -> PyResult<&'static str> {
        detached(py, || {
            Ok(self.model.read().map_err(lock_err)?.backend().name())
        })
    }

    /// "float32" or "bfloat16": how generation stores the weights.
    fn dtype(&self, py: Python<'_>) -> PyResult<&'static str> {
        detached(py, || {
            Ok(self.model.read().map_err(lock_err)?.dtype().name())
        })
    }

    /// Stores the weights for generation in `dtype` ("float32" or "bfloat16"); bfloat16
    /// rounds every parameter to it (see [`Model::set_dtype`]). The dtype the model has
    /// already is no change.
    fn set_dtype(&self, py: Python<'_>, dtype: &str) -> PyResult<()> {
        let dtype = Dtype::from_name(dtype).map_err(to_py_err)?;
        detached(py, || {
            if self.model.read().map_err(lock_err)?.dtype() == dtype {
                return Ok(());
            }
            // Checked before the change, so that a refusal leaves the packed weights.
            let mut model = self.write(|m| m.check_dtype(dtype))?;
            model.set_dtype(dtype)
        })
    }

    /// An error unless the model may be trained (see [`Model::check_trainable`]).
    fn check_trainable(&self, py: Python<'_>) -> PyResult<()> {
        detached(py, || {
            self.model.read().map_err(lock_err)?.check_trainable()
        })
    }

    fn num_parameters(&self, py: Python<'_>) -> PyResult<usize> {
        detached(py, || Ok(self.model.read().map_err(lock_err)?.layout.total))
    }

    /// Logits (B, T, V) for ids (B, T).
    fn logits<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, b, t) = ids_from_array(&ids, "input ids")?;
        let (logits, v) = detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut ws = self.workspace.lock().map_err(lock_err)?;
            let (model, ws) = (&*model, &mut *ws);
            in_pool(|| {
                model.forward(ws, &ids, b, t)?;
                let v = model.config.vocab_size;
                let logits = ws.logits(&model.config);
                check_logits(logits, t, v)?;
                Ok((copy_out(logits, "the logits")?, v))
            })
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
        let (ids, tg, b, t) = batch_pair(&inputs, &targets)?;
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let (model, runner) = (&*model, &mut *runner);
            in_pool(|| check_finite_loss(runner.loss(model, &ids, &tg, b, t)?))
        })
    }

    /// (loss, [(name, gradient array)]) in parameter order.
    fn gradients<'py>(
        &self,
        py: Python<'py>,
        inputs: PyReadonlyArray2<'py, i64>,
        targets: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<(f32, NamedPyArrays<'py>)> {
        let (ids, tg, b, t) = batch_pair(&inputs, &targets)?;
        let (loss, tensors) = detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let (model, runner) = (&*model, &mut *runner);
            in_pool(|| {
                let mut grads = crate::alloc::zeros(model.layout.total, "the gradients")?;
                let loss = runner.loss_and_grads(model, &ids, &tg, b, t, &mut grads)?;
                let loss = check_finite_loss(loss)?;
                let tensors: NamedArrays = model
                    .layout
                    .specs
                    .iter()
                    .map(|s| {
                        let mut grad = grads[s.range()].to_vec();
                        spoil_gradient(&s.name, &mut grad);
                        (s.name.clone(), s.shape.clone(), grad)
                    })
                    .collect();
                Ok((loss, tensors))
            })
        })?;
        Ok((loss, named_arrays(py, tensors)?))
    }

    /// One AdamW step: forward, backward, optional clipping, update. Returns (loss, grad norm
    /// before clipping). A non-finite loss or gradient leaves the parameters untouched.
    /// With `micro_batches` > 1 the batch runs as that many micro-batches whose gradients
    /// are accumulated into the one step.
    /// `dropout_key` (seed, step) turns on the config's dropout with those masks.
    #[pyo3(signature = (optimizer, inputs, targets, lr, grad_clip=None, micro_batches=1, dropout_key=None))]
    #[allow(clippy::too_many_arguments)]
    fn train_step(
        &self,
        py: Python<'_>,
        optimizer: &PyAdamW,
        inputs: PyReadonlyArray2<'_, i64>,
        targets: PyReadonlyArray2<'_, i64>,
        lr: f32,
        grad_clip: Option<f32>,
        micro_batches: usize,
        dropout_key: Option<(u64, u64)>,
    ) -> PyResult<(f32, f32)> {
        let (ids, tg, b, t) = batch_pair(&inputs, &targets)?;
        check_grad_clip(grad_clip)?;
        detached(py, || {
            let mut model = self.write(Model::check_trainable)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let mut opt = optimizer.inner.lock().map_err(lock_err)?;
            let (model, runner, opt) = (&mut *model, &mut *runner, &mut *opt);
            runner.dropout_key = dropout_key;
            let out = in_pool(|| {
                runner.train_step(model, opt, &ids, &tg, b, t, micro_batches, lr, grad_clip)
            });
            runner.dropout_key = None;
            out
        })
    }

    /// Forward and backward pass: returns the mean loss and keeps `scale` times its
    /// gradient as the held gradient (`accumulate`: added to it). `dropout_key` (seed, step)
    /// turns on the config's dropout with those masks.
    #[pyo3(signature = (inputs, targets, scale=1.0, accumulate=false, dropout_key=None))]
    fn backward(
        &self,
        py: Python<'_>,
        inputs: PyReadonlyArray2<'_, i64>,
        targets: PyReadonlyArray2<'_, i64>,
        scale: f32,
        accumulate: bool,
        dropout_key: Option<(u64, u64)>,
    ) -> PyResult<f32> {
        let (ids, tg, b, t) = batch_pair(&inputs, &targets)?;
        if !scale.is_finite() {
            return Err(PyValueError::new_err(format!(
                "scale must be a finite number, got {scale}"
            )));
        }
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let (model, runner) = (&*model, &mut *runner);
            runner.dropout_key = dropout_key;
            let out = in_pool(|| runner.backward(model, &ids, &tg, b, t, scale, accumulate));
            runner.dropout_key = None;
            out
        })
    }

    /// Forgets the held gradient.
    fn zero_grad(&self, py: Python<'_>) -> PyResult<()> {
        detached(py, || {
            self.runner.lock().map_err(lock_err)?.zero_grad();
            Ok(())
        })
    }

    /// Clips the held gradient's global norm to `max_norm` (None: only measures it);
    /// returns the norm before clipping.
    #[pyo3(signature = (max_norm=None))]
    fn clip_grad_norm(&self, py: Python<'_>, max_norm: Option<f32>) -> PyResult<f32> {
        check_grad_clip(max_norm)?;
        detached(py, || {
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let runner = &mut *runner;
            in_pool(|| runner.clip_grad_norm(max_norm))
        })
    }

    /// The held gradient by parameter name, or None when there is none.
    fn held_gradient<'py>(&self, py: Python<'py>) -> PyResult<Option<NamedPyArrays<'py>>> {
        let tensors = detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let runner = self.runner.lock().map_err(lock_err)?;
            Ok(runner.gradient().map(|grads| -> NamedArrays {
                model
                    .layout
                    .specs
                    .iter()
                    .map(|s| (s.name.clone(), s.shape.clone(), grads[s.range()].to_vec()))
                    .collect()
            }))
        })?;
        tensors.map(|t| named_arrays(py, t)).transpose()
    }

    /// One AdamW update from the held gradient; returns the gradient's norm.
    fn adamw_step(&self, py: Python<'_>, optimizer: &PyAdamW, lr: f32) -> PyResult<f32> {
        detached(py, || {
            let mut model = self.write(Model::check_trainable)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let mut opt = optimizer.inner.lock().map_err(lock_err)?;
            let (model, runner, opt) = (&mut *model, &mut *runner, &mut *opt);
            in_pool(|| runner.adamw_step(model, opt, lr))
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
        let (ids, tg, b, t) = batch_pair(&inputs, &targets)?;
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(PyValueError::new_err(format!(
                "learning rate must be >= 0 and finite, got {lr}"
            )));
        }
        detached(py, || {
            let mut model = self.write(Model::check_trainable)?;
            let mut runner = self.runner.lock().map_err(lock_err)?;
            let (model, runner) = (&mut *model, &mut *runner);
            in_pool(|| runner.sgd_step(model, &ids, &tg, b, t, lr))
        })
    }

    /// New ids after `prompt`, in one call that sees one version of the parameters (it
    /// holds the read lock throughout). Between chunks of at most 50 ms it checks for
    /// signals, so Ctrl-C interrupts it (`KeyboardInterrupt`) within a fraction of a second.
    fn generate(
        &self,
        py: Python<'_>,
        prompt: Vec<i64>,
        options: &Bound<'_, PyDict>,
    ) -> PyResult<Vec<u32>> {
        let prompt = ids_from_list(prompt, "prompt")?;
        let opts = generate_options(options)?;
        let outcome = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| -> PyResult<Vec<u32>> {
                let model = self.model.read().map_err(|e| to_py_err(lock_err(e)))?;
                let decoder = self.decoder(&model).map_err(to_py_err)?;
                let mut run = Generation::new(&model, &prompt, opts).map_err(to_py_err)?;
                let mut ids = Vec::new();
                while !run.is_done() {
                    let chunk = in_pool(|| run.next_chunk(&decoder, 1 << 16, Some(SIGNAL_CHECK)))
                        .map_err(to_py_err)?;
                    ids.try_reserve(chunk.len()).map_err(|_| {
                        let bytes = (ids.len() + chunk.len()) as u128 * 4;
                        to_py_err(crate::alloc::out_of_memory(bytes, "the generated ids"))
                    })?;
                    ids.extend(chunk);
                    Python::attach(|py| py.check_signals())?;
                }
                Ok(ids)
            }))
        });
        outcome.unwrap_or_else(|panic| Err(panic_to_py_err(panic)))
    }

    /// A generation after `prompt`, to be run a chunk at a time with
    /// `Generation.next_chunk`.
    fn start_generation(
        slf: &Bound<'_, Self>,
        prompt: Vec<i64>,
        options: &Bound<'_, PyDict>,
    ) -> PyResult<PyGeneration> {
        let prompt = ids_from_list(prompt, "prompt")?;
        let opts = generate_options(options)?;
        let this = slf.get();
        let (run, version) = detached(slf.py(), || {
            let model = this.model.read().map_err(lock_err)?;
            let version = this.version.load(Ordering::Acquire);
            Ok((Generation::new(&model, &prompt, opts)?, version))
        })?;
        Ok(PyGeneration {
            model: slf.clone().unbind(),
            version,
            run: Mutex::new(run),
        })
    }

    /// New ids after each of `num_samples` copies of each prompt, generated side by side
    /// (sequence i with seed + i), in one call that holds the read lock and checks for
    /// signals every 50 ms.
    fn generate_many(
        &self,
        py: Python<'_>,
        prompts: Vec<Vec<i64>>,
        num_samples: usize,
        options: &Bound<'_, PyDict>,
    ) -> PyResult<Vec<Vec<u32>>> {
        let prompts = prompts
            .into_iter()
            .enumerate()
            .map(|(i, p)| ids_from_list(p, &format!("prompt {i}")))
            .collect::<PyResult<Vec<_>>>()?;
        let opts = generate_options(options)?;
        let outcome = py.detach(|| {
            catch_unwind(AssertUnwindSafe(|| -> PyResult<Vec<Vec<u32>>> {
                let model = self.model.read().map_err(|e| to_py_err(lock_err(e)))?;
                let decoder = self.decoder(&model).map_err(to_py_err)?;
                let mut run = BatchGeneration::new(&decoder, &prompts, num_samples, opts)
                    .map_err(to_py_err)?;
                while !run.is_done() {
                    let deadline = std::time::Instant::now() + SIGNAL_CHECK;
                    in_pool(|| run.run_until(&decoder, deadline)).map_err(to_py_err)?;
                    Python::attach(|py| py.check_signals())?;
                }
                Ok(run.into_ids())
            }))
        });
        outcome.unwrap_or_else(|panic| Err(panic_to_py_err(panic)))
    }

    /// The best continuations by beam search: [(new ids, sum of log-probabilities,
    /// score)], best first.
    #[pyo3(signature = (prompt, num_beams, max_new_tokens, length_penalty, early_stopping, no_repeat_ngram_size, num_return_sequences, stop))]
    #[allow(clippy::too_many_arguments)]
    fn beam_search(
        &self,
        py: Python<'_>,
        prompt: Vec<i64>,
        num_beams: usize,
        max_new_tokens: usize,
        length_penalty: f64,
        early_stopping: &str,
        no_repeat_ngram_size: usize,
        num_return_sequences: usize,
        stop: Vec<i64>,
    ) -> PyResult<Vec<(Vec<u32>, f64, f64)>> {
        let prompt = ids_from_list(prompt, "prompt")?;
        let early_stopping = match early_stopping {
            "true" => EarlyStopping::True,
            "false" => EarlyStopping::False,
            "never" => EarlyStopping::Never,
            other => {
                return Err(PyValueError::new_err(format!(
                    "early_stopping must be True, False or \"never\", got {other:?}"
                )))
            }
        };
        let opts = BeamOptions {
            num_beams,
            max_new_tokens,
            length_penalty,
            early_stopping,
            no_repeat_ngram_size,
            num_return_sequences,
            stop: ids_from_list(stop, "stop")?,
        };
        let found = interruptible(py, |stop| {
            let model = self.model.read().map_err(lock_err)?;
            let decoder = self.decoder(&model)?;
            let mut keep_going = || !stop.load(Ordering::Relaxed);
            in_pool(|| beam_search_until(&decoder, &prompt, &opts, &mut keep_going))
        })?;
        Ok(found
            .into_iter()
            .map(|h| (h.tokens, h.logprob, h.score))
            .collect())
    }

    /// log p(ids[i + 1] | ids[..=i]) for every i (nats), windowed past the context.
    fn score<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyAny>> {
        let ids = ids_from_list(ids, "ids")?;
        let scores = interruptible(py, |stop| {
            let model = self.model.read().map_err(lock_err)?;
            let model = &*model;
            let mut keep_going = || !stop.load(Ordering::Relaxed);
            in_pool(|| crate::score::token_logprobs(model, &ids, &mut keep_going))
        })?;
        let n = scores.len();
        float_array(py, scores, &[n])
    }

    /// Every activation of the reference path's forward pass on ids (B, T), whatever the
    /// backend: [(name, array, formula, source file, source function)] in the order the
    /// pass computes them (see `reference/trace.rs`).
    #[allow(clippy::type_complexity)]
    fn trace<'py>(
        &self,
        py: Python<'py>,
        ids: PyReadonlyArray2<'py, i64>,
    ) -> PyResult<
        Vec<(
            String,
            Bound<'py, PyAny>,
            &'static str,
            &'static str,
            &'static str,
        )>,
    > {
        let (ids, b, t) = ids_from_array(&ids, "input ids")?;
        let traced = detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let model = &*model;
            check_ids(&model.config, &ids, b, t, "input ids")?;
            crate::alloc::check_available(
                (crate::reference::model::floats_needed(&model.config, b, t)
                    + trace::extra_floats_needed(&model.config, b, t))
                    * 4,
                "the traced activations",
            )?;
            let traced = in_pool(|| trace::trace(model.weights(), &ids, b, t));
            if let Some(logits) = traced.iter().find(|a| a.name == "logits") {
                check_logits(&logits.data, t, model.config.vocab_size)?;
            }
            Ok(traced)
        })?;
        traced
            .into_iter()
            .map(|a| {
                let array = float_array(py, a.data, &a.shape)?;
                Ok((a.name, array, a.formula, a.source.file, a.source.function))
            })
            .collect()
    }

    /// [(name, L2 norm)] of each tensor of the held gradient (after the last step: the
    /// gradient it applied, clipped), in layout order; empty when there is none.
    fn grad_norms(&self, py: Python<'_>) -> PyResult<Vec<(String, f64)>> {
        detached(py, || {
            let model = self.model.read().map_err(lock_err)?;
            let runner = self.runner.lock().map_err(lock_err)?;
            let Some(grads) = runner.gradient() else {
                return Ok(Vec::new());
            };
            let norm = |g: &[f32]| g.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt();
            Ok(model
                .layout
                .specs
                .iter()
                .map(|s| (s.name.clone(), norm(&grads[s.range()])))
                .collect())
        })
    }

    /// [(name, array)] copies of every parameter, in layout order.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<NamedPyArrays<'py>> {
        let tensors = detached(py, || {
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
    fn load_state_dict(&self, py: Python<'_>, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let state = state.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "load_state_dict needs a dict of name -> float32 array, got {}",
                state
                    .get_type()
                    .name()
                    .map(|n| n.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let mut entries: BTreeMap<String, (Vec<usize>, Vec<f32>)> = BTreeMap::new();
        for (key, value) in state.iter() {
            let name: String = key.extract().map_err(|_| {
                PyTypeError::new_err("load_state_dict: every key must be a parameter name (str)")
            })?;
            let arr: PyReadonlyArrayDyn<'_, f32> = value.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "state_dict[{name:?}] must be a float32 NumPy array, got {}",
                    value
                        .get_type()
                        .name()
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                ))
            })?;
            let data: Vec<f32> = arr.as_array().iter().copied().collect();
            entries.insert(name, (arr.shape().to_vec(), data));
        }
        detached(py, || {
            let layout = self.model.read().map_err(lock_err)?.layout.clone();
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
            let mut model = self.write(|m| match m.dtype() {
                Dtype::F32 => Ok(()),
                Dtype::Bf16 => layout.specs.iter().try_for_each(|spec| {
                    check_fits_bf16(
                        &format!("state_dict[{:?}]", spec.name),
                        &entries[&spec.name].1,
                    )
                }),
            })?;
            for spec in &layout.specs {
                model.params_mut()[spec.range()].copy_from_slice(&entries[&spec.name].1);
            }
            // A bfloat16 model rounds what it was given (every value fits, checked above).
            let dtype = model.dtype();
            model.set_dtype(dtype)
        })
    }
}

/// A generation under way on one model: each `next_chunk` produces the next ids, so a
/// caller can stream them and stop (or be interrupted) between chunks without losing any.
#[pyclass(name = "Generation", module = "tinylm._core", frozen)]
pub struct PyGeneration {
    model: Py<PyModel>,
    /// The model's version when the generation started.
    version: u64,
    run: Mutex<Generation>,
}

#[pymethods]
impl PyGeneration {
    /// The next ids: at most `max_ids`, and no more once `budget_seconds` have passed (at
    /// least one unless the generation is done; an empty list means it is done).
    fn next_chunk(
        &self,
        py: Python<'_>,
        max_ids: usize,
        budget_seconds: f64,
    ) -> PyResult<Vec<u32>> {
        if !(budget_seconds.is_finite() && budget_seconds > 0.0) {
            return Err(PyValueError::new_err(format!(
                "budget_seconds must be positive, got {budget_seconds}"
            )));
        }
        let owner = self.model.get();
        detached(py, || {
            let model = owner.model.read().map_err(lock_err)?;
            if owner.version.load(Ordering::Acquire) != self.version {
                return Err(Error::value(
                    "the model's parameters changed (training, load_state_dict or a dtype \
                     change) since this generation started; start a new one",
                ));
            }
            let mut run = self.run.lock().map_err(lock_err)?;
            if run.is_done() {
                return Ok(Vec::new());
            }
            let decoder = owner.decoder(&model)?;
            let run = &mut *run;
            let budget = Duration::from_secs_f64(budget_seconds.min(3600.0));
            in_pool(|| run.next_chunk(&decoder, max_ids, Some(budget)))
        })
    }

    /// True once every id has been produced.
    #[getter]
    fn done(&self, py: Python<'_>) -> PyResult<bool> {
        detached(py, || Ok(self.run.lock().map_err(lock_err)?.is_done()))
    }
}
