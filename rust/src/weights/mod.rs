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

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};
use crate::model::{Backend, Model};
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
}

/// A model read from a file, with what came with it.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub model: Model,
    pub tokenizer: Option<Tokenizer>,
    pub format: WeightsFormat,
}

/// Largest safetensors header read (the safetensors crate's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Opens a file to read: it must exist and be a regular file, not a folder, nor a FIFO,
/// device or socket (which could block forever or never end, like `/dev/zero`), and be
/// below [`MAX_FILE_BYTES`]. Returns the file and its size.
fn open_regular(path: &Path) -> Result<(File, u64)> {
    if path.as_os_str().is_empty() {
        return Err(Error::value("the path is empty: give the name of a file"));
    }
    let meta = fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    if meta.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory, not a weights file".into(),
        });
    }
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a FIFO, device or socket): tinylm reads weights from regular files only",
        ));
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
    let file = File::open(path).map_err(|e| Error::io(path, &e))?;
    Ok((file, meta.len()))
}

/// How many bytes a file must have, from its first bytes: a safetensors file exactly what
/// its header promises (8-byte length, header, tensor data); a JSON file its whole size.
/// Reads the safetensors header from `file` (positioned after `prefix`) to know.
fn expected_len(path: &Path, file: &mut File, prefix: &[u8], size: u64) -> Result<u64> {
    let invalid =
        |detail: String| Error::format(path, format!("invalid safetensors file: {detail}"));
    match detect_format_of_prefix(prefix, size) {
        WeightsFormat::GoJson => Ok(size),
        WeightsFormat::Safetensors => {
            let header_len = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
            if header_len > MAX_HEADER_BYTES {
                return Err(invalid(format!(
                    "a header of {header_len} bytes is larger than the limit of {MAX_HEADER_BYTES}"
                )));
            }
            let mut header = prefix[8..].to_vec();
            let rest = (header_len as usize).saturating_sub(header.len());
            header.truncate(header_len as usize);
            file.take(rest as u64)
                .read_to_end(&mut header)
                .map_err(|e| Error::io(path, &e))?;
            let parsed: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
                .map_err(|e| invalid(format!("the header is not a JSON object: {e}")))?;
            let data_len = parsed
                .iter()
                .filter(|(name, _)| name.as_str() != "__metadata__")
                .filter_map(|(_, info)| info.get("data_offsets")?.get(1)?.as_u64())
                .max()
                .unwrap_or(0);
            let total = 8 + header_len + data_len;
            if total != size {
                return Err(invalid(format!(
                    "its header describes {total} bytes but the file has {size}"
                )));
            }
            Ok(total)
        }
    }
}

/// Reads a whole weights file, bounded by what its format promises: the first bytes
/// tell the format, a safetensors header says how long the file must be, and nothing
/// past that is read. Missing files, folders, devices and huge files are clear errors.
pub fn read_file(path: &Path) -> Result<Vec<u8>> {
    let (mut file, size) = open_regular(path)?;
    let mut prefix = Vec::new();
    (&mut file)
        .take(4096)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::io(path, &e))?;
    if prefix.is_empty() {
        return Err(Error::format(path, "the file is empty"));
    }
    if detect_format_of_prefix(&prefix, size) == WeightsFormat::Safetensors
        && !(prefix.len() >= 9 && prefix[8] == b'{')
    {
        return Err(Error::format(
            path,
            "invalid safetensors file (and not JSON either): it starts with neither an \
             8-byte header length followed by '{' nor a JSON object",
        ));
    }
    let total = expected_len(path, &mut file, &prefix, size)?;
    let mut bytes = Vec::new();
    bytes.try_reserve_exact(total as usize).map_err(|_| {
        crate::alloc::out_of_memory(total as u128, &format!("the file {}", path.display()))
    })?;
    File::open(path)
        .and_then(|f| f.take(total).read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, &e))?;
    if (bytes.len() as u64) < total {
        return Err(Error::format(
            path,
            "the file shrank while it was being read",
        ));
    }
    Ok(bytes)
}

/// The format of a file, from its first bytes only.
pub fn detect_file_format(path: &Path) -> Result<WeightsFormat> {
    let (file, size) = open_regular(path)?;
    let mut prefix = Vec::new();
    file.take(4096)
        .read_to_end(&mut prefix)
        .map_err(|e| Error::io(path, &e))?;
    Ok(detect_format_of_prefix(&prefix, size))
}

/// [`detect_format`] on the first bytes of a file of `size` bytes.
fn detect_format_of_prefix(prefix: &[u8], size: u64) -> WeightsFormat {
    if prefix.len() >= 9 && prefix[8] == b'{' {
        let header_len = u64::from_le_bytes(prefix[..8].try_into().expect("8 bytes"));
        if header_len <= size - 8 {
            return WeightsFormat::Safetensors;
        }
    }
    let text = prefix.strip_prefix(b"\xef\xbb\xbf").unwrap_or(prefix);
    match text.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => WeightsFormat::GoJson,
        _ => WeightsFormat::Safetensors,
    }
}

/// Which format these bytes are in: a safetensors file starts with an 8-byte little-endian
/// header length followed by `{`; a JSON document starts with `{` after optional
/// whitespace. Anything else is read as safetensors, whose parser then says what is wrong.
pub fn detect_format(bytes: &[u8]) -> WeightsFormat {
    detect_format_of_prefix(bytes, bytes.len() as u64)
}

/// Loads a model from a file in either format, on the fast backend.
pub fn load(path: &Path) -> Result<LoadedModel> {
    load_on(path, Backend::Fast)
}

/// Loads a model from a file in either format, on the given backend: an error (naming the
/// file and the field) if the backend cannot run the stored config.
pub fn load_on(path: &Path, backend: Backend) -> Result<LoadedModel> {
    let mut loaded = load_stored(path)?;
    loaded.model = onto_backend(loaded.model, backend, path)?;
    Ok(loaded)
}

/// A loaded model on `backend`; a backend that cannot run the file's config is a
/// ConfigError (the file itself is fine) that names the file and the field.
pub fn onto_backend(model: Model, backend: Backend, path: &Path) -> Result<Model> {
    model.on_backend(backend).map_err(|e| match e {
        Error::Config(msg) => Error::config(format!("{}: {msg}", path.display())),
        other => other.in_file(path),
    })
}

fn load_stored(path: &Path) -> Result<LoadedModel> {
    let bytes = read_file(path)?;
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
    save_with_metadata(path, model, tokenizer, format, &BTreeMap::new())
}

/// Saves a model in the given format with extra string metadata (safetensors only, e.g.
/// the ids that end generation); a key tinylm itself writes, or any extra metadata in
/// the Go format, is refused.
pub fn save_with_metadata(
    path: &Path,
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    format: WeightsFormat,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    if format == WeightsFormat::GoJson && !extra.is_empty() {
        return Err(Error::config(format!(
            "cannot save {}: the Go JSON format holds no metadata (got {:?})",
            path.display(),
            extra.keys().collect::<Vec<_>>()
        )));
    }
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
            let mut file = safetensors_file::TensorFile::for_model(model, tokenizer);
            for (key, value) in extra {
                if file.metadata.contains_key(key) {
                    return Err(Error::config(format!(
                        "cannot save {}: metadata key {key:?} is tinylm's own",
                        path.display()
                    )));
                }
                file.metadata.insert(key.clone(), value.clone());
            }
            file.to_bytes(path)?
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
/// flush the folder so the rename itself survives a crash. A symbolic link is followed (the
/// file it names is replaced and the link stays); a FIFO, device or socket is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    if path.as_os_str().is_empty() {
        return Err(Error::value("the path is empty: give the name of a file"));
    }
    if path.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory".into(),
        });
    }
    let followed;
    let path = match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            followed = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
            followed.as_path()
        }
        _ => path,
    };
    if fs::metadata(path).is_ok_and(|meta| !meta.is_file()) {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "not a regular file (a FIFO, device or socket): tinylm writes regular \
                     files only"
                .into(),
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
