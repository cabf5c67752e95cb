//! Functions for tests and benchmarks: tinylm's matrix product on its own, a panic on
//! purpose, a deliberately wrong gradient, and a count of the packings for generation.

use std::sync::Mutex;

use numpy::{PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::matmul::{matmul as matmul_kernel, MatMut, MatRef};

use super::convert::float_array;
use super::errors::to_py_err;
use super::run;

/// a (M, K) @ b (K, N) with tinylm's matrix multiplication, in float32.
#[pyfunction]
pub fn matmul<'py>(
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
        let mut out = crate::alloc::zeros(m * n, "the matmul result")?;
        matmul_kernel(
            MatMut::new(&mut out, m, n),
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, n),
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
pub fn time_matmul(
    py: Python<'_>,
    m: usize,
    k: usize,
    n: usize,
    iters: usize,
    transpose_a: bool,
) -> PyResult<f64> {
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
            matmul_kernel(
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
pub fn _panic_for_tests(py: Python<'_>, message: String) -> PyResult<()> {
    run(py, move || -> Result<()> { panic!("{message}") })
}

/// The tensor whose gradient `Model.gradients` scales, and by what: a bug put in on
/// purpose, for tests that check that `tinylm.gradcheck` finds it. None: no bug.
static WRONG_GRADIENT: Mutex<Option<(String, f32)>> = Mutex::new(None);

/// Makes `Model.gradients` return the gradient of the tensor `name` times `factor` (for
/// tests only); `None` puts things right again.
#[pyfunction]
#[pyo3(signature = (name, factor = 1.0))]
pub fn _scale_gradient_for_tests(name: Option<String>, factor: f32) {
    let mut wrong = WRONG_GRADIENT.lock().unwrap_or_else(|e| e.into_inner());
    *wrong = name.map(|n| (n, factor));
}

/// How many times this process has packed a model's weights for generation (see
/// `rust/src/decode/decoder.rs`), for tests that check a model packs once per version of
/// its parameters, not once per generation.
#[pyfunction]
pub fn _times_packed_for_tests() -> u64 {
    crate::decode::times_packed()
}

/// Applies the test's deliberate error, if any, to the gradient of the tensor `name`.
pub fn spoil_gradient(name: &str, grad: &mut [f32]) {
    let wrong = WRONG_GRADIENT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((target, factor)) = wrong.as_ref() {
        if target == name {
            grad.iter_mut().for_each(|g| *g *= factor);
        }
    }
}
