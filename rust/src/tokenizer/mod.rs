//! Tokenizers: text to token ids and back.
//!
//! - word level, with the Go TinyLM's rules: split on any whitespace, case-sensitive,
//!   no unknown token; decode joins with single spaces;
//! - character level: one token per Unicode scalar value seen in a training text;
//! - byte-level BPE ([`bpe`]), GPT-2's and GPT-4's, exact with tiktoken.
//!
//! A tokenizer serialises to a small JSON object (`{"type": "word", "vocab": [...]}`), which
//! tinylm stores next to the weights so that one file holds all that generation needs.

pub mod bpe;
mod char_level;
mod word_level;

pub use bpe::BpeTokenizer;
pub use char_level::CharTokenizer;
pub use word_level::WordTokenizer;

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest accepted encoded tokenizer (its JSON), in bytes.
pub const MAX_TOKENIZER_JSON: usize = 64 << 20;

#[derive(Debug, Clone, PartialEq)]
pub enum Tokenizer {
    Word(WordTokenizer),
    Char(CharTokenizer),
    Bpe(Box<BpeTokenizer>),
}

/// The serialised form.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum TokenizerJson {
    Word {
        vocab: Vec<String>,
    },
    Char {
        vocab: Vec<String>,
    },
    /// `tokens` in GPT-2's byte-to-unicode spelling, index = rank; `pattern` the regex.
    Bpe {
        pattern: String,
        tokens: Vec<String>,
        special_tokens: BTreeMap<String, u32>,
    },
}

impl Tokenizer {
    /// BPE: special tokens' strings are an error here (tiktoken's default); see
    /// [`BpeTokenizer::encode`] to allow them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Word(t) => t.encode(text),
            Tokenizer::Char(t) => t.encode(text),
            Tokenizer::Bpe(t) => t.encode(text, bpe::Allowed::None),
        }
    }

    /// BPE: invalid UTF-8 from cut characters becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Word(t) => t.decode(ids),
            Tokenizer::Char(t) => t.decode(ids),
            Tokenizer::Bpe(t) => t.decode(ids, false),
        }
    }

    pub fn vocab_size(&self) -> usize {
        match self {
            Tokenizer::Bpe(t) => t.vocab_size(),
            _ => self.vocab().len(),
        }
    }

    /// The token strings, index = id.
    pub fn vocab(&self) -> Vec<String> {
        match self {
            Tokenizer::Word(t) => t.vocab().to_vec(),
            Tokenizer::Char(t) => t.vocab().iter().map(|c| c.to_string()).collect(),
            Tokenizer::Bpe(t) => (0..t.vocab_size() as u32)
                .map(|id| t.token_display(id))
                .collect(),
        }
    }

    /// "word", "char" or "bpe".
    pub fn kind(&self) -> &'static str {
        match self {
            Tokenizer::Word(_) => "word",
            Tokenizer::Char(_) => "char",
            Tokenizer::Bpe(_) => "bpe",
        }
    }

    pub fn to_json(&self) -> String {
        let repr = match self {
            Tokenizer::Word(t) => TokenizerJson::Word {
                vocab: t.vocab().to_vec(),
            },
            Tokenizer::Char(t) => TokenizerJson::Char {
                vocab: t.vocab().iter().map(|c| c.to_string()).collect(),
            },
            Tokenizer::Bpe(t) => TokenizerJson::Bpe {
                pattern: t.pattern().source().to_string(),
                tokens: t
                    .tokens()
                    .iter()
                    .map(|b| bpe::byte_unicode::encode(b))
                    .collect(),
                special_tokens: t.specials().clone(),
            },
        };
        serde_json::to_string(&repr).expect("a tokenizer always serialises")
    }

    /// Reads a tokenizer file [`Tokenizer::to_json`] wrote, refusing what is not one (a
    /// FIFO or device, text that is not UTF-8, JSON that is not a tokenizer's) with an
    /// error naming the file.
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let text = bpe::formats::read_text(path)?;
        Tokenizer::from_json(&text).map_err(|e| match e {
            Error::Tokenizer(msg) => Error::tokenizer(format!("{}: {msg}", path.display())),
            other => other,
        })
    }

    pub fn from_json(text: &str) -> Result<Tokenizer> {
        if text.len() > MAX_TOKENIZER_JSON {
            return Err(Error::tokenizer(format!(
                "tokenizer JSON of {} bytes is larger than the limit of {MAX_TOKENIZER_JSON}",
                text.len()
            )));
        }
        let repr: TokenizerJson = serde_json::from_str(text)
            .map_err(|e| Error::tokenizer(format!("invalid tokenizer JSON: {e}")))?;
        match repr {
            TokenizerJson::Word { vocab } => Ok(Tokenizer::Word(WordTokenizer::new(vocab)?)),
            TokenizerJson::Char { vocab } => {
                let mut chars = Vec::with_capacity(vocab.len());
                for (i, s) in vocab.iter().enumerate() {
                    let mut it = s.chars();
                    match (it.next(), it.next()) {
                        (Some(ch), None) => chars.push(ch),
                        _ => {
                            return Err(Error::tokenizer(format!(
                                "character tokenizer: vocab entry {i} ({s:?}) is not exactly one character"
                            )))
                        }
                    }
                }
                Ok(Tokenizer::Char(CharTokenizer::new(chars)?))
            }
            TokenizerJson::Bpe {
                pattern,
                tokens,
                special_tokens,
            } => {
                let tokens = tokens
                    .iter()
                    .enumerate()
                    .map(|(i, t)| {
                        bpe::byte_unicode::decode(t).ok_or_else(|| {
                            Error::tokenizer(format!(
                                "BPE tokenizer: token {i} ({t:?}) is not in the byte-to-unicode spelling"
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let pattern = bpe::Pattern::from_regex(&pattern)?;
                let tok = BpeTokenizer::new(tokens, special_tokens, pattern)?;
                Ok(Tokenizer::Bpe(Box::new(tok)))
            }
        }
    }
}

/// The message for an id outside the vocabulary.
fn unknown_id(id: u32, position: usize, vocab_size: usize) -> Error {
    Error::tokenizer(format!(
        "token id {id} at position {position} is outside the vocabulary (size {vocab_size})"
    ))
}
