//! `tinylm._core.AdamW`: the optimizer's state for one model.

use std::sync::Mutex;

use pyo3::prelude::*;

use crate::optim::{AdamW, AdamWConfig};

use super::errors::lock_err;
use super::model::PyModel;
use super::{detached, in_pool};

/// AdamW's state (moments and step count) for one model.
#[pyclass(name = "AdamW", module = "tinylm._core", frozen)]
pub struct PyAdamW {
    pub inner: Mutex<AdamW>,
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
        let inner = detached(py, || {
            let model = model.model.read().map_err(lock_err)?;
            let layout = &model.layout;
            in_pool(|| AdamW::new(config, layout))
        })?;
        Ok(PyAdamW {
            inner: Mutex::new(inner),
        })
    }

    #[getter]
    fn step(&self, py: Python<'_>) -> PyResult<u64> {
        detached(py, || Ok(self.inner.lock().map_err(lock_err)?.step))
    }

    #[getter]
    fn hyperparameters(&self, py: Python<'_>) -> PyResult<(f32, f32, f32, f32)> {
        detached(py, || {
            let c = self.inner.lock().map_err(lock_err)?.config;
            Ok((c.beta1, c.beta2, c.eps, c.weight_decay))
        })
    }
}
