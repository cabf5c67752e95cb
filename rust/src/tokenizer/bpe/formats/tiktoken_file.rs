//! tiktoken's `.tiktoken` rank files: one `base64-token rank` line per mergeable token.
//! Special tokens are not in the file; they are given beside it.

use std::path::Path;

use super::{base64, read_text};
use crate::error::{Error, Result};
use crate::tokenizer::bpe::{BpeTokenizer, MAX_VOCAB};
use crate::weights::write_atomic;

/// The tokens in rank order. Ranks must be 0, 1, ... without gaps or repeats.
pub fn read(path: &Path) -> Result<Vec<Vec<u8>>> {
    parse(&read_text(path)?).map_err(|detail| Error::format(path, detail))
}

/// Parses the text of a rank file; errors name the line.
pub fn parse(text: &str) -> std::result::Result<Vec<Vec<u8>>, String> {
    let mut by_rank: Vec<Option<Vec<u8>>> = Vec::new();
    let mut seen = rustc_hash::FxHashMap::default();
    for (n, line) in text.lines().enumerate() {
        let line_no = n + 1;
        if line.is_empty() {
            continue;
        }
        let (token, rank) = line.split_once(' ').ok_or_else(|| {
            format!("line {line_no}: expected \"<base64 token> <rank>\", found {line:?}")
        })?;
        let bytes = base64::decode(token).map_err(|e| format!("line {line_no}: {e}"))?;
        let rank: usize = rank.parse().map_err(|_| {
            format!("line {line_no}: the rank {rank:?} is not a non-negative integer")
        })?;
        if rank >= MAX_VOCAB {
            return Err(format!(
                "line {line_no}: rank {rank} is above the limit of {MAX_VOCAB}"
            ));
        }
        if let Some(first) = seen.insert(bytes.clone(), line_no) {
            return Err(format!(
                "line {line_no}: the token {token:?} is already on line {first}"
            ));
        }
        if by_rank.len() <= rank {
            by_rank.resize(rank + 1, None);
        }
        if by_rank[rank].is_some() {
            return Err(format!("line {line_no}: rank {rank} appears twice"));
        }
        by_rank[rank] = Some(bytes);
    }
    if by_rank.is_empty() {
        return Err("the file holds no tokens".into());
    }
    let total = by_rank.len();
    by_rank
        .into_iter()
        .enumerate()
        .map(|(rank, t)| {
            t.ok_or_else(|| {
                format!(
                    "rank {rank} is missing (ranks must run from 0 to {} without gaps)",
                    total - 1
                )
            })
        })
        .collect()
}

/// The file's text for a tokenizer's mergeable tokens.
pub fn to_string(tokenizer: &BpeTokenizer) -> String {
    let mut out = String::new();
    for (rank, token) in tokenizer.tokens().iter().enumerate() {
        out.push_str(&base64::encode(token));
        out.push(' ');
        out.push_str(&rank.to_string());
        out.push('\n');
    }
    out
}

/// Writes the mergeable tokens (atomically).
pub fn write(path: &Path, tokenizer: &BpeTokenizer) -> Result<()> {
    write_atomic(path, to_string(tokenizer).as_bytes())
}
