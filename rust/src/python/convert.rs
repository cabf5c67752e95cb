//! Arrays in and out. The Python layer (`python/tinylm`) checks the types and ranges of
//! what users pass; these conversions only turn checked values into core types.

use numpy::{PyArray1, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use crate::alloc;
use crate::error::Result;

/// Token ids from a 2-D int64 array: (ids, B, T).
pub fn ids_from_array(
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

/// Token ids from a list of ints.
pub fn ids_from_list(ids: Vec<i64>, what: &str) -> PyResult<Vec<u32>> {
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

/// A float32 NumPy array of `shape` that takes over `data`.
pub fn float_array<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    Ok(PyArray1::from_vec(py, data)
        .reshape(shape.to_vec())?
        .into_any())
}

/// A copy of `values` in a buffer of its own, allocated fallibly.
pub fn copy_out(values: &[f32], what: &str) -> Result<Vec<f32>> {
    let mut out = alloc::zeros(values.len(), what)?;
    out.copy_from_slice(values);
    Ok(out)
}

/// Named tensors as (name, array) pairs.
pub type NamedArrays = Vec<(String, Vec<usize>, Vec<f32>)>;
pub type NamedPyArrays<'py> = Vec<(String, Bound<'py, PyAny>)>;

pub fn named_arrays<'py>(py: Python<'py>, tensors: NamedArrays) -> PyResult<NamedPyArrays<'py>> {
    tensors
        .into_iter()
        .map(|(name, shape, data)| Ok((name, float_array(py, data, &shape)?)))
        .collect()
}
