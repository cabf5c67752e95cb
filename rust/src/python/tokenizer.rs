//! `tinylm._core.Tokenizer`: the word, character and (later) BPE tokenizers.

use pyo3::prelude::*;

use crate::tokenizer::{CharTokenizer, Tokenizer, WordTokenizer};

use super::convert::ids_from_list;
use super::errors::to_py_err;
use super::run;

/// A tokenizer (word or character level).
#[pyclass(name = "Tokenizer", module = "tinylm._core", frozen)]
pub struct PyTokenizer {
    pub inner: Tokenizer,
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
