//! Loading and saving models.
//!
//! Two formats, told apart by their first bytes rather than by the file name:
//! - the Go TinyLM JSON format ([`go_json`]): what the Go project ships;
//! - tinylm's own format ([`safetensors_file`]): safetensors, with the config and the
//!   tokenizer in its metadata, so one file holds all that generation needs.
//!
//! Every file is written atomically: to a temporary file in the same folder, flushed to
//! disk, then renamed over the target, so an interrupted save leaves the old file intact.

pub mod checkpoint;
pub mod go_json;
pub mod safetensors_file;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::model::Model;
use crate::tokenizer::Tokenizer;

/// Largest file tinylm reads, in bytes (the parameter limit in JSON text, with room).
pub const MAX_FILE_BYTES: u64 = 64 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    GoJson,
    Safetensors,
}

impl WeightsFormat {
    pub fn name(self) -> &'static str {
        match self {
            WeightsFormat::GoJson => "go-json",
            WeightsFormat::Safetensors => "safetensors",
        }
    }

    pub fn from_name(name: &str) -> Result<WeightsFormat> {
        match name {
            "go-json" | "json" | "go" => Ok(WeightsFormat::GoJson),
            "safetensors" => Ok(WeightsFormat::Safetensors),
            other => Err(Error::value(format!(
                "unknown weights format {other:?}: expected \"safetensors\" or \"go-json\""
            ))),
        }
    }

    /// The format a file name asks for when saving: `.json` is the Go format, anything
    /// else tinylm's safetensors format.
    pub fn for_path(path: &Path) -> WeightsFormat {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("json") => WeightsFormat::GoJson,
            _ => WeightsFormat::Safetensors,
        }
    }
}

/// A model read from a file, with what came with it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub format: WeightsFormat,
}

/// Reads a whole file, with clear errors for a missing file, a directory or a huge file.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    if meta.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory, not a weights file".into(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::format(
            path,
            format!(
                "file of {} bytes is larger than the limit of {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, &e))?;
    Ok(bytes)
}

/// Which format these bytes are in: a safetensors file starts with an 8-byte little-endian
/// header length followed by `{`; a JSON document starts with `{` after optional
/// whitespace. Anything else is read as safetensors, whose parser then says what is wrong.
pub fn detect_format(bytes: &[u8]) -> WeightsFormat {
    if bytes.len() >= 9 && bytes[8] == b'{' {
        let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if header_len <= (bytes.len() - 8) as u64 {
            return WeightsFormat::Safetensors;
        }
    }
    let text = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => WeightsFormat::GoJson,
        _ => WeightsFormat::Safetensors,
    }
}

/// Loads a model from a file in either format.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let bytes = read_file(path)?;
    if bytes.is_empty() {
        return Err(Error::format(path, "the file is empty"));
    }
    match detect_format(&bytes) {
        WeightsFormat::GoJson => {
            let (model, tokenizer) = go_json::from_bytes(path, &bytes)?;
            Ok(LoadedModel {
                model,
                tokenizer: Some(tokenizer),
                format: WeightsFormat::GoJson,
            })
        }
        WeightsFormat::Safetensors => {
            let file = safetensors_file::TensorFile::from_bytes(path, &bytes)?;
            let (model, tokenizer) = safetensors_file::model_from_file(path, &file)?;
            Ok(LoadedModel {
                model,
                tokenizer,
                format: WeightsFormat::Safetensors,
            })
        }
    }
}

/// Saves a model in the given format.
pub fn save(
    path: &Path,
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    format: WeightsFormat,
) -> Result<()> {
    check_tokenizer_fits(model, tokenizer)?;
    if let Some(i) = model.params().iter().position(|p| !p.is_finite()) {
        let name = model
            .layout
            .specs
            .iter()
            .find(|s| s.range().contains(&i))
            .map(|s| s.name.as_str())
            .unwrap_or("?");
        return Err(Error::NonFinite(format!(
            "cannot save {}: parameter {name:?} holds a NaN or infinite value",
            path.display()
        )));
    }
    let bytes = match format {
        WeightsFormat::GoJson => go_json::to_string(model, tokenizer)?.into_bytes(),
        WeightsFormat::Safetensors => {
            safetensors_file::TensorFile::for_model(model, tokenizer).to_bytes(path)?
        }
    };
    write_atomic(path, &bytes)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn temp_path_for(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tinylm".into());
    let unique = format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    path.with_file_name(unique)
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one:
/// write a temporary file beside it, flush it to disk, rename it over the target, and
/// flush the folder so the rename itself survives a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory".into(),
        });
    }
    let tmp = temp_path_for(path);
    let result = (|| -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            // Not every platform can open a folder for syncing; the rename has happened.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(path, &e)
    })
}

/// A tokenizer saved with a model must have exactly the model's vocabulary size.
pub fn check_tokenizer_fits(model: &Model, tokenizer: Option<&Tokenizer>) -> Result<()> {
    match tokenizer {
        Some(tok) if tok.vocab_size() != model.config.vocab_size => Err(Error::value(format!(
            "the tokenizer has {} tokens but the model's vocab_size is {}",
            tok.vocab_size(),
            model.config.vocab_size
        ))),
        _ => Ok(()),
    }
}

/// Checks that every value is finite; names the tensor and index of the first that is not.
pub fn check_finite(path: &Path, name: &str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::format(
            path,
            format!(
                "tensor {name:?} holds a non-finite value ({}) at flat index {i}",
                values[i]
            ),
        )),
    }
}
