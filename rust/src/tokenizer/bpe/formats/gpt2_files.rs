//! GPT-2's `encoder.json` (token text -> id, in the byte-to-unicode spelling) and
//! `vocab.bpe` (the merges, one `left right` pair per line, after a `#version` line).
//! Hugging Face calls the same files `vocab.json` and `merges.txt`.
//!
//! The mergeable tokens are the 256 bytes and the results of the merges; any other entry
//! of `encoder.json` (GPT-2's `<|endoftext|>`) is a special token. Ids are kept as
//! `encoder.json` gives them, which for GPT-2 are tiktoken's r50k ranks.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use super::read_text;
use crate::error::{Error, Result};
use crate::tokenizer::bpe::{byte_unicode, BpeTokenizer, Pattern, MAX_VOCAB};
use crate::weights::write_atomic;

/// Mergeable tokens by id, and special tokens.
pub type Vocabulary = (Vec<Vec<u8>>, BTreeMap<String, u32>);

/// Reads the two files.
pub fn read(encoder_json: &Path, vocab_bpe: &Path) -> Result<Vocabulary> {
    let encoder_text = read_text(encoder_json)?;
    let encoder = parse_encoder(&encoder_text).map_err(|d| Error::format(encoder_json, d))?;
    let merges_text = read_text(vocab_bpe)?;
    let merges = parse_merges(&merges_text).map_err(|d| Error::format(vocab_bpe, d))?;
    vocabulary(&encoder, &merges, "encoder.json").map_err(|d| {
        Error::format(
            encoder_json,
            format!("{d} (with the merges of {})", vocab_bpe.display()),
        )
    })
}

/// The vocabulary of the two files' texts (what [`read`] does after reading them).
pub fn parse(encoder_text: &str, merges_text: &str) -> std::result::Result<Vocabulary, String> {
    let encoder = parse_encoder(encoder_text)?;
    vocabulary(&encoder, &parse_merges(merges_text)?, "encoder.json")
}

fn parse_encoder(text: &str) -> std::result::Result<HashMap<String, u32>, String> {
    serde_json::from_str(text).map_err(|e| format!("not a JSON object of token -> id: {e}"))
}

/// The merge lines of `vocab.bpe` as (left, right) strings.
pub fn parse_merges(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut merges = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.is_empty() || (n == 0 && line.starts_with("#version")) {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(format!(
                    "line {}: expected two tokens separated by one space, found {line:?}",
                    n + 1
                ))
            }
        }
    }
    Ok(merges)
}

/// Mergeable tokens and specials from a token -> id map and merges (byte-to-unicode
/// spelling); shared with the Hugging Face reader. Merge results must be tokens whose
/// ids grow with the merge's position, so that ids are merge priorities (ranks).
pub fn vocabulary(
    vocab: &HashMap<String, u32>,
    merges: &[(String, String)],
    vocab_name: &str,
) -> std::result::Result<Vocabulary, String> {
    if vocab.len() > MAX_VOCAB {
        return Err(format!(
            "{} tokens, more than the limit of {MAX_VOCAB}",
            vocab.len()
        ));
    }
    let mut mergeable: HashMap<&str, u32> = HashMap::new();
    for b in 0..=255u8 {
        let text = byte_unicode::encode(&[b]);
        let (key, &id) = vocab
            .get_key_value(text.as_str())
            .ok_or_else(|| format!("the byte 0x{b:02x} ({text:?}) is not in {vocab_name}"))?;
        mergeable.insert(key.as_str(), id);
    }
    let mut last: Option<(usize, u32)> = None;
    for (k, (a, b)) in merges.iter().enumerate() {
        for part in [a, b] {
            if !vocab.contains_key(part) {
                return Err(format!(
                    "merge {k} ({a:?} {b:?}) names {part:?}, which is not in {vocab_name}"
                ));
            }
        }
        let joined = format!("{a}{b}");
        let (key, &id) = vocab.get_key_value(joined.as_str()).ok_or_else(|| {
            format!("merge {k} ({a:?} {b:?}) makes {joined:?}, which is not in {vocab_name}")
        })?;
        if let Some((k0, id0)) = last {
            if id <= id0 {
                return Err(format!(
                    "merge {k} makes id {id} but the earlier merge {k0} made id {id0}: merge results must have growing ids to be ranks"
                ));
            }
        }
        last = Some((k, id));
        mergeable.insert(key.as_str(), id);
    }
    let n = mergeable.len();
    let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n];
    for (&text, &id) in &mergeable {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            format!("the mergeable token {text:?} has id {id}, but the {n} mergeable tokens must have ids 0 to {}", n - 1)
        })?;
        if slot.is_some() {
            return Err(format!("id {id} is given to two tokens"));
        }
        let bytes = byte_unicode::decode(text)
            .ok_or_else(|| format!("the token {text:?} is not in the byte-to-unicode spelling"))?;
        *slot = Some(bytes);
    }
    let tokens: Vec<Vec<u8>> = tokens
        .into_iter()
        .enumerate()
        .map(|(id, t)| t.ok_or_else(|| format!("no mergeable token has id {id}")))
        .collect::<std::result::Result<_, _>>()?;
    let specials: BTreeMap<String, u32> = vocab
        .iter()
        .filter(|(text, _)| !mergeable.contains_key(text.as_str()))
        .map(|(text, &id)| (text.clone(), id))
        .collect();
    Ok((tokens, specials))
}

/// Writes `encoder.json` and `vocab.bpe` (atomically, each).
pub fn write(encoder_json: &Path, vocab_bpe: &Path, tokenizer: &BpeTokenizer) -> Result<()> {
    let (encoder, merges) = to_strings(tokenizer)?;
    write_atomic(encoder_json, encoder.as_bytes())?;
    write_atomic(vocab_bpe, merges.as_bytes())
}

/// The two files' texts.
pub fn to_strings(tokenizer: &BpeTokenizer) -> Result<(String, String)> {
    let merges = tokenizer.merges()?;
    let mut encoder = String::from("{");
    let mut first = true;
    let mut entry = |text: &str, id: u32| {
        if !first {
            encoder.push_str(", ");
        }
        first = false;
        encoder.push_str(&serde_json::to_string(text).expect("a string serialises"));
        encoder.push_str(": ");
        encoder.push_str(&id.to_string());
    };
    for (id, token) in tokenizer.tokens().iter().enumerate() {
        entry(&byte_unicode::encode(token), id as u32);
    }
    for (name, &id) in tokenizer.specials() {
        entry(name, id);
    }
    encoder.push('}');
    let mut vocab_bpe = String::from("#version: 0.2\n");
    let spell = |id: u32| byte_unicode::encode(&tokenizer.tokens()[id as usize]);
    for (a, b) in merges {
        vocab_bpe.push_str(&spell(a));
        vocab_bpe.push(' ');
        vocab_bpe.push_str(&spell(b));
        vocab_bpe.push('\n');
    }
    Ok((encoder, vocab_bpe))
}

/// A tokenizer from GPT-2 files, with GPT-2's pattern unless told otherwise.
pub fn load(encoder_json: &Path, vocab_bpe: &Path, pattern: Pattern) -> Result<BpeTokenizer> {
    let (tokens, specials) = read(encoder_json, vocab_bpe)?;
    BpeTokenizer::new(tokens, specials, pattern).map_err(|e| e.in_file(encoder_json))
}
