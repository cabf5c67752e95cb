//! `tinylm._core.Tokenizer`: the word, character and byte-level BPE tokenizers, and
//! `tinylm._core.BpeDecoder`, the incremental decoder for streaming.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::tokenizer::bpe::formats::{gpt2_files, hf_json, tiktoken_file};
use crate::tokenizer::bpe::{
    self, Allowed, BpeTokenizer, Pattern, Progress, ReadOptions, Source, Utf8Stream,
};
use crate::tokenizer::{CharTokenizer, Tokenizer, WordTokenizer};

use super::convert::ids_from_list;
use super::errors::to_py_err;
use super::{detached, run};

/// How often BPE training reports its progress and checks for Ctrl-C.
const PROGRESS_EVERY: Duration = Duration::from_millis(50);

/// A tokenizer (word, character or byte-level BPE).
#[pyclass(name = "Tokenizer", module = "tinylm._core", frozen)]
pub struct PyTokenizer {
    pub inner: Tokenizer,
}

impl PyTokenizer {
    fn bpe(&self, what: &str) -> PyResult<&BpeTokenizer> {
        match &self.inner {
            Tokenizer::Bpe(t) => Ok(t),
            other => Err(PyValueError::new_err(format!(
                "{what} needs a BPE tokenizer, this one is {}-level",
                other.kind()
            ))),
        }
    }

    fn from_bpe(tok: BpeTokenizer) -> PyTokenizer {
        PyTokenizer {
            inner: Tokenizer::Bpe(Box::new(tok)),
        }
    }
}

/// Which specials to encode: all, or the listed ones.
fn allowed<'a>(all: bool, listed: &'a HashSet<String>) -> Allowed<'a> {
    if all {
        Allowed::All
    } else if listed.is_empty() {
        Allowed::None
    } else {
        Allowed::Only(listed)
    }
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

    /// Trains a BPE tokenizer on texts and files: (tokenizer, True if the text ran out of
    /// pairs). With the GIL released; at most every 50 ms (and at the end of each stage)
    /// it checks for signals and calls `on_progress(stage, done, total)`, stage being
    /// "counting" (bytes) or "merging" (merges).
    #[staticmethod]
    #[pyo3(signature = (texts, files, vocab_size, pattern, special_tokens, max_bytes=None, on_progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn bpe_train(
        py: Python<'_>,
        texts: Vec<String>,
        files: Vec<PathBuf>,
        vocab_size: usize,
        pattern: String,
        special_tokens: Vec<String>,
        max_bytes: Option<u64>,
        on_progress: Option<Py<PyAny>>,
    ) -> PyResult<(Self, bool)> {
        let mut stopped: Option<PyErr> = None;
        let outcome = detached(py, || {
            let pattern = Pattern::new(&pattern)?;
            let sources: Vec<Source<'_>> = texts
                .iter()
                .map(|t| Source::Text(t))
                .chain(files.iter().map(|f| Source::File(f)))
                .collect();
            let read = ReadOptions {
                max_bytes,
                ..ReadOptions::default()
            };
            let mut last = Instant::now();
            let mut report = |p: Progress| -> crate::error::Result<()> {
                let (stage, done, total) = match p {
                    Progress::Counting { done, total } => ("counting", done, total),
                    Progress::Merging { done, total } => ("merging", done as u64, total as u64),
                };
                if done < total && last.elapsed() < PROGRESS_EVERY {
                    return Ok(());
                }
                last = Instant::now();
                Python::attach(|py| {
                    py.check_signals()?;
                    if let Some(callback) = &on_progress {
                        callback.call1(py, (stage, done, total))?;
                    }
                    Ok(())
                })
                .map_err(|e: PyErr| {
                    stopped = Some(e);
                    crate::error::Error::value("BPE training was stopped")
                })
            };
            bpe::train_sources(
                &sources,
                vocab_size,
                pattern,
                &special_tokens,
                read,
                &mut report,
            )
        });
        if let Some(err) = stopped {
            return Err(err);
        }
        let trained = outcome?;
        Ok((PyTokenizer::from_bpe(trained.tokenizer), trained.exhausted))
    }

    #[staticmethod]
    fn from_tiktoken(
        py: Python<'_>,
        path: PathBuf,
        pattern: String,
        special_tokens: BTreeMap<String, u32>,
    ) -> PyResult<Self> {
        let tok = run(py, || {
            let tokens = tiktoken_file::read(&path)?;
            BpeTokenizer::new(tokens, special_tokens, Pattern::new(&pattern)?)
                .map_err(|e| e.in_file(&path))
        })?;
        Ok(PyTokenizer::from_bpe(tok))
    }

    #[staticmethod]
    fn from_gpt2_files(
        py: Python<'_>,
        encoder_json: PathBuf,
        vocab_bpe: PathBuf,
        pattern: String,
    ) -> PyResult<Self> {
        let tok = run(py, || {
            gpt2_files::load(&encoder_json, &vocab_bpe, Pattern::new(&pattern)?)
        })?;
        Ok(PyTokenizer::from_bpe(tok))
    }

    #[staticmethod]
    fn from_hf_json(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        Ok(PyTokenizer::from_bpe(run(py, || hf_json::load(&path))?))
    }

    fn save_tiktoken(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let tok = self.bpe("save_tiktoken")?;
        run(py, || tiktoken_file::write(&path, tok))
    }

    fn save_gpt2_files(
        &self,
        py: Python<'_>,
        encoder_json: PathBuf,
        vocab_bpe: PathBuf,
    ) -> PyResult<()> {
        let tok = self.bpe("save_gpt2_files")?;
        run(py, || gpt2_files::write(&encoder_json, &vocab_bpe, tok))
    }

    fn save_hf_json(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let tok = self.bpe("save_hf_json")?;
        run(py, || hf_json::write(&path, tok))
    }

    /// A tokenizer file `to_json` wrote (see [`Tokenizer::load`]).
    #[staticmethod]
    fn load(py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        let inner = run(py, || Tokenizer::load(&path))?;
        Ok(PyTokenizer { inner })
    }

    #[staticmethod]
    fn from_json(json: &str) -> PyResult<Self> {
        let inner = Tokenizer::from_json(json).map_err(to_py_err)?;
        Ok(PyTokenizer { inner })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    /// BPE: `allowed_all` or the `allowed` special tokens become their ids.
    #[pyo3(signature = (text, allowed_all=false, allowed=HashSet::new()))]
    fn encode(
        &self,
        py: Python<'_>,
        text: String,
        allowed_all: bool,
        allowed: HashSet<String>,
    ) -> PyResult<Vec<u32>> {
        match &self.inner {
            Tokenizer::Bpe(t) => {
                let rule = self::allowed(allowed_all, &allowed);
                run(py, || t.encode(&text, rule))
            }
            other if allowed_all || !allowed.is_empty() => Err(PyValueError::new_err(format!(
                "allowed_special is for BPE tokenizers; this one is {}-level",
                other.kind()
            ))),
            other => run(py, || other.encode(&text)),
        }
    }

    fn encode_ordinary(&self, py: Python<'_>, text: String) -> PyResult<Vec<u32>> {
        let tok = self.bpe("encode_ordinary")?;
        run(py, || tok.encode_ordinary(&text))
    }

    /// Encodes the texts in parallel, with the GIL released.
    #[pyo3(signature = (texts, allowed_all=false, allowed=HashSet::new()))]
    fn encode_batch(
        &self,
        py: Python<'_>,
        texts: Vec<String>,
        allowed_all: bool,
        allowed: HashSet<String>,
    ) -> PyResult<Vec<Vec<u32>>> {
        match &self.inner {
            Tokenizer::Bpe(t) => {
                let rule = self::allowed(allowed_all, &allowed);
                run(py, || t.encode_batch(&texts, rule))
            }
            other => run(py, || texts.iter().map(|t| other.encode(t)).collect()),
        }
    }

    /// `strict`: invalid UTF-8 (BPE ids that cut a character) is an error, not U+FFFD.
    #[pyo3(signature = (ids, strict=false))]
    fn decode(&self, py: Python<'_>, ids: Vec<i64>, strict: bool) -> PyResult<String> {
        let ids = ids_from_list(ids, "decode")?;
        match &self.inner {
            Tokenizer::Bpe(t) => run(py, || t.decode(&ids, strict)),
            other => run(py, || other.decode(&ids)),
        }
    }

    fn decode_bytes<'py>(&self, py: Python<'py>, ids: Vec<i64>) -> PyResult<Bound<'py, PyBytes>> {
        let ids = ids_from_list(ids, "decode_bytes")?;
        let tok = self.bpe("decode_bytes")?;
        let bytes = run(py, || tok.decode_bytes(&ids))?;
        Ok(PyBytes::new(py, &bytes))
    }

    fn token_bytes<'py>(&self, py: Python<'py>, id: u32) -> PyResult<Bound<'py, PyBytes>> {
        let tok = self.bpe("token_bytes")?;
        let bytes = tok.token_bytes(id).map_err(to_py_err)?;
        Ok(PyBytes::new(py, bytes))
    }

    #[getter]
    fn special_tokens(&self) -> BTreeMap<String, u32> {
        match &self.inner {
            Tokenizer::Bpe(t) => t.specials().clone(),
            _ => BTreeMap::new(),
        }
    }

    /// The pre-split regex of a BPE tokenizer.
    #[getter]
    fn pattern(&self) -> Option<String> {
        match &self.inner {
            Tokenizer::Bpe(t) => Some(t.pattern().source().to_string()),
            _ => None,
        }
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

/// Decodes BPE ids one at a time, giving back only complete characters.
#[pyclass(name = "BpeDecoder", module = "tinylm._core")]
pub struct PyBpeDecoder {
    tokenizer: Py<PyTokenizer>,
    stream: Utf8Stream,
}

#[pymethods]
impl PyBpeDecoder {
    #[new]
    fn new(tokenizer: Py<PyTokenizer>) -> PyResult<Self> {
        tokenizer.get().bpe("BpeDecoder")?;
        Ok(PyBpeDecoder {
            tokenizer,
            stream: Utf8Stream::new(),
        })
    }

    /// The text completed by token `id` (maybe empty).
    fn push(&mut self, id: u32) -> PyResult<String> {
        let tok = self.tokenizer.get().bpe("BpeDecoder")?;
        let bytes = tok.token_bytes(id).map_err(to_py_err)?;
        Ok(self.stream.push(bytes))
    }

    /// The end: bytes of an unfinished character come out as U+FFFD.
    fn finish(&mut self) -> String {
        self.stream.finish()
    }

    /// Bytes held back, waiting for the rest of a character.
    #[getter]
    fn pending<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, self.stream.pending())
    }
}
