//! Vocabulary files, both ways:
//! - [`tiktoken_file`]: tiktoken's `.tiktoken` ranks (`base64-token rank` per line);
//! - [`gpt2_files`]: GPT-2's `encoder.json` + `vocab.bpe` (HF: `vocab.json` + `merges.txt`);
//! - [`hf_json`]: a Hugging Face `tokenizer.json` holding a byte-level BPE model.
//!
//! Every reader names the file and the problem (line, token, id) in its errors.

pub mod base64;
pub mod gpt2_files;
pub mod hf_json;
pub mod tiktoken_file;

use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// Largest accepted vocabulary file (o200k_base.tiktoken is 3.6 MB).
pub const MAX_VOCAB_FILE_BYTES: u64 = 256 << 20;

/// Reads a whole UTF-8 text file, refusing directories and huge files.
pub fn read_text(path: &Path) -> Result<String> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    if meta.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory, not a tokenizer or vocabulary file".into(),
        });
    }
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a FIFO, device or socket): tokenizer and vocabulary files \
             are read from regular files only",
        ));
    }
    if meta.len() > MAX_VOCAB_FILE_BYTES {
        return Err(Error::format(
            path,
            format!(
                "file of {} bytes is larger than the limit of {MAX_VOCAB_FILE_BYTES} for a vocabulary file",
                meta.len()
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, &e))?;
    String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}
