//! Hugging Face `tokenizer.json` for byte-level BPE (GPT-2, Llama 3 and the like).
//!
//! Read: `model` is BPE with `vocab` and `merges` (as `"a b"` strings or `["a", "b"]`
//! pairs, in the byte-to-unicode spelling), `added_tokens` are the special tokens, and
//! the pre-tokenizer gives the pattern: `ByteLevel` with its own regex (GPT-2's), or a
//! `Split` regex followed by `ByteLevel` without one. Written: the same, with the pattern
//! as a `Split` regex, in a form the Oniguruma engine of HF reads as fancy-regex does.

use std::collections::HashMap;
use std::path::Path;

use serde_json::{json, Value};

use super::gpt2_files::vocabulary;
use super::read_text;
use crate::error::{Error, Result};
use crate::tokenizer::bpe::{
    byte_unicode, BpeTokenizer, Pattern, GPT2_PATTERN, GPT4_PATTERN, O200K_PATTERN,
};
use crate::weights::write_atomic;

/// The named patterns as HF files write them (no possessive quantifiers: Oniguruma reads
/// `{1,3}+` as a repetition of `{1,3}`); they split text as tiktoken's forms do.
const HF_FORMS: [(&str, &str); 3] = [
    (
        GPT2_PATTERN,
        r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+",
    ),
    (
        GPT4_PATTERN,
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    ),
    (O200K_PATTERN, O200K_PATTERN),
];

/// Reads a tokenizer.json.
pub fn load(path: &Path) -> Result<BpeTokenizer> {
    let text = read_text(path)?;
    let (tokens, specials, pattern) = parse(&text).map_err(|d| Error::format(path, d))?;
    let pattern = Pattern::from_regex(&pattern).map_err(|e| e.in_file(path))?;
    BpeTokenizer::new(tokens, specials, pattern).map_err(|e| e.in_file(path))
}

/// Mergeable tokens, special tokens and the pre-split regex.
pub type Parsed = (
    Vec<Vec<u8>>,
    std::collections::BTreeMap<String, u32>,
    String,
);

/// Parses the text of a tokenizer.json.
pub fn parse(text: &str) -> std::result::Result<Parsed, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let model = root.get("model").ok_or("no \"model\" entry")?;
    match model.get("type").and_then(Value::as_str) {
        Some("BPE") | None => {}
        Some(other) => return Err(format!("model type {other:?} is not \"BPE\"")),
    }
    for (key, ok) in [
        ("dropout", model.get("dropout").is_none_or(Value::is_null)),
        (
            "continuing_subword_prefix",
            model
                .get("continuing_subword_prefix")
                .is_none_or(|v| v.is_null() || v == ""),
        ),
        (
            "end_of_word_suffix",
            model
                .get("end_of_word_suffix")
                .is_none_or(|v| v.is_null() || v == ""),
        ),
        (
            "byte_fallback",
            model.get("byte_fallback").is_none_or(|v| v == false),
        ),
    ] {
        if !ok {
            return Err(format!(
                "model.{key} is set: only plain byte-level BPE is supported"
            ));
        }
    }
    if root.get("normalizer").is_some_and(|v| !v.is_null()) {
        return Err("a normalizer is set: only byte-level BPE without one is supported".into());
    }
    let vocab: HashMap<String, u32> = serde_json::from_value(
        model
            .get("vocab")
            .cloned()
            .ok_or("model has no \"vocab\"")?,
    )
    .map_err(|e| format!("model.vocab is not an object of token -> id: {e}"))?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or("model has no \"merges\" list")?
        .iter()
        .enumerate()
        .map(|(k, m)| {
            merge_pair(m)
                .ok_or_else(|| format!("merge {k} is neither \"a b\" nor [\"a\", \"b\"]: {m}"))
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let mut added: HashMap<String, u32> = HashMap::new();
    if let Some(list) = root.get("added_tokens").and_then(Value::as_array) {
        for (k, t) in list.iter().enumerate() {
            let content = t.get("content").and_then(Value::as_str);
            let id = t
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|v| u32::try_from(v).ok());
            match (content, id) {
                (Some(c), Some(id)) => {
                    if vocab.get(c) != Some(&id) {
                        added.insert(c.to_string(), id);
                    }
                }
                _ => {
                    return Err(format!(
                        "added_tokens[{k}] has no \"content\" string and \"id\" number"
                    ))
                }
            }
        }
    }
    let (tokens, mut specials) = vocabulary(&vocab, &merges, "model.vocab")?;
    specials.extend(added);
    let pattern = pattern_of(root.get("pre_tokenizer").unwrap_or(&Value::Null))?;
    Ok((tokens, specials, pattern))
}

fn merge_pair(m: &Value) -> Option<(String, String)> {
    match m {
        Value::String(s) => {
            let (a, b) = s.split_once(' ')?;
            (!a.is_empty() && !b.is_empty() && !b.contains(' ')).then(|| (a.into(), b.into()))
        }
        Value::Array(pair) => match pair.as_slice() {
            [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
            _ => None,
        },
        _ => None,
    }
}

/// The pre-split regex (tiktoken's form for the named patterns).
fn pattern_of(pre: &Value) -> std::result::Result<String, String> {
    let kind = pre.get("type").and_then(Value::as_str);
    let byte_level_regex = |v: &Value| v.get("use_regex").is_none_or(|u| u == true);
    let add_prefix_space = |v: &Value| v.get("add_prefix_space").is_some_and(|u| u == true);
    let regex = match kind {
        Some("ByteLevel") if !add_prefix_space(pre) && byte_level_regex(pre) => GPT2_PATTERN.to_string(),
        Some("Sequence") => {
            let steps = pre.get("pretokenizers").and_then(Value::as_array).ok_or("pre_tokenizer.pretokenizers is missing")?;
            match steps.as_slice() {
                [split, byte_level]
                    if split.get("type").and_then(Value::as_str) == Some("Split")
                        && byte_level.get("type").and_then(Value::as_str) == Some("ByteLevel")
                        && !byte_level_regex(byte_level)
                        && !add_prefix_space(byte_level)
                        && split.get("invert").is_none_or(|v| v == false)
                        && split.get("behavior").and_then(Value::as_str) == Some("Isolated") =>
                {
                    split
                        .get("pattern")
                        .and_then(|p| p.get("Regex"))
                        .and_then(Value::as_str)
                        .ok_or("the Split pre-tokenizer has no {\"Regex\": ...} pattern")?
                        .to_string()
                }
                _ => return Err("pre_tokenizer: only [Split (Isolated regex), ByteLevel (no regex, no prefix space)] is supported".into()),
            }
        }
        _ => return Err("pre_tokenizer: only ByteLevel (no prefix space) or Sequence [Split, ByteLevel] is supported".into()),
    };
    Ok(HF_FORMS
        .iter()
        .find(|(_, hf)| *hf == regex)
        .map_or(regex, |(ours, _)| ours.to_string()))
}

/// The tokenizer.json text.
pub fn to_string(tokenizer: &BpeTokenizer) -> Result<String> {
    let merges = tokenizer.merges()?;
    let spell = |id: u32| byte_unicode::encode(&tokenizer.tokens()[id as usize]);
    let vocab: serde_json::Map<String, Value> = tokenizer
        .tokens()
        .iter()
        .enumerate()
        .map(|(id, t)| (byte_unicode::encode(t), json!(id)))
        .collect();
    let merges: Vec<Value> = merges
        .iter()
        .map(|&(a, b)| json!(format!("{} {}", spell(a), spell(b))))
        .collect();
    let added: Vec<Value> = tokenizer
        .specials()
        .iter()
        .map(|(name, &id)| {
            json!({"id": id, "content": name, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let source = tokenizer.pattern().source();
    let regex = HF_FORMS
        .iter()
        .find(|(ours, _)| *ours == source)
        .map_or(source, |(_, hf)| hf);
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": true, "vocab": vocab, "merges": merges}
    });
    Ok(serde_json::to_string(&doc).expect("JSON values serialise"))
}

/// Writes a tokenizer.json (atomically).
pub fn write(path: &Path, tokenizer: &BpeTokenizer) -> Result<()> {
    write_atomic(path, to_string(tokenizer)?.as_bytes())
}
