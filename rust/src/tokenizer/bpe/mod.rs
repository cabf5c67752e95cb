//! Byte-level BPE, the tokenizer of GPT-2 and GPT-4, with tiktoken's algorithm.
//!
//! A vocabulary is a list of byte strings; a token's id is its rank, its position in the
//! list, and every single byte is a token. To encode:
//! 1. special tokens (`<|endoftext|>`) are cut out of the text, each one id, if allowed
//!    (tiktoken's rule: text holding a special token that is not allowed is an error);
//! 2. a regex pre-splits the rest into pieces ([`pattern`]);
//! 3. a piece that is a token is one id; any other is merged from single bytes, the
//!    lowest-ranked adjacent pair first ([`merge`]).
//!
//! Decoding concatenates the tokens' bytes, which may not be valid UTF-8 (an id sequence
//! can cut a character): [`BpeTokenizer::decode`] replaces invalid bytes with U+FFFD or
//! refuses them, and [`Utf8Stream`] decodes a stream of ids as it comes.
//!
//! [`train`] learns a vocabulary from text (minbpe's algorithm); [`formats`] reads and
//! writes tiktoken, GPT-2 and Hugging Face files.

pub mod byte_unicode;
pub mod formats;
pub mod merge;
pub mod pattern;
mod presplit;
mod stream;
mod train;

use std::collections::{BTreeMap, HashSet};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

pub use merge::Rank;
pub use pattern::{Pattern, GPT2_PATTERN, GPT4_PATTERN, O200K_PATTERN};
pub use stream::Utf8Stream;
pub use train::{train, train_sources, Progress, ReadOptions, Source, Trained, MARGIN};

use crate::error::{Error, Result};

/// Largest accepted vocabulary (ids), against absurd sizes in files.
pub const MAX_VOCAB: usize = 1 << 22;
/// Longest accepted token or special token, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1 << 16;

/// Which special tokens `encode` turns into their ids.
#[derive(Debug, Clone, Copy)]
pub enum Allowed<'a> {
    /// None: text holding a special token's string is an error.
    None,
    /// All of them.
    All,
    /// These; text holding any other special token's string is an error.
    Only(&'a HashSet<String>),
}

/// A byte-level BPE tokenizer: mergeable tokens (id = rank), special tokens, a pattern.
#[derive(Debug, Clone)]
pub struct BpeTokenizer {
    pattern: Pattern,
    tokens: Vec<Vec<u8>>,
    ranks: FxHashMap<Vec<u8>, Rank>,
    specials: BTreeMap<String, u32>,
    special_names: BTreeMap<u32, String>,
    special_regex: Option<fancy_regex::Regex>,
}

impl PartialEq for BpeTokenizer {
    fn eq(&self, other: &BpeTokenizer) -> bool {
        self.pattern == other.pattern
            && self.tokens == other.tokens
            && self.specials == other.specials
    }
}

impl BpeTokenizer {
    /// `tokens[rank]` are the mergeable tokens: distinct, non-empty, every single byte
    /// among them; `specials` map names to ids at or past `tokens.len()`.
    pub fn new(
        tokens: Vec<Vec<u8>>,
        specials: BTreeMap<String, u32>,
        pattern: Pattern,
    ) -> Result<BpeTokenizer> {
        if tokens.len() > MAX_VOCAB {
            return Err(Error::tokenizer(format!(
                "BPE tokenizer: {} tokens, more than the limit of {MAX_VOCAB}",
                tokens.len()
            )));
        }
        let mut ranks = FxHashMap::default();
        ranks.reserve(tokens.len());
        for (rank, token) in tokens.iter().enumerate() {
            if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
                return Err(Error::tokenizer(format!(
                    "BPE tokenizer: token {rank} is {} bytes long (allowed: 1 to {MAX_TOKEN_BYTES})",
                    token.len()
                )));
            }
            if let Some(first) = ranks.insert(token.clone(), rank as Rank) {
                return Err(Error::tokenizer(format!(
                    "BPE tokenizer: tokens {first} and {rank} are the same bytes {}",
                    show_bytes(token)
                )));
            }
        }
        if let Some(b) = (0..=255u8).find(|&b| !ranks.contains_key(&[b][..])) {
            return Err(Error::tokenizer(format!(
                "BPE tokenizer: the byte 0x{b:02x} is not a token, so some text could not be encoded"
            )));
        }
        let mut special_names = BTreeMap::new();
        for (name, &id) in &specials {
            if name.is_empty() || name.len() > MAX_TOKEN_BYTES {
                return Err(Error::tokenizer(format!(
                    "BPE tokenizer: special token {name:?} must be 1 to {MAX_TOKEN_BYTES} bytes long"
                )));
            }
            if (id as usize) < tokens.len() || id as usize >= MAX_VOCAB {
                return Err(Error::tokenizer(format!(
                    "BPE tokenizer: special token {name:?} has id {id}, which must be at least the number of mergeable tokens ({}) and below {MAX_VOCAB}",
                    tokens.len()
                )));
            }
            if let Some(other) = special_names.insert(id, name.clone()) {
                return Err(Error::tokenizer(format!(
                    "BPE tokenizer: special tokens {other:?} and {name:?} have the same id {id}"
                )));
            }
        }
        let special_regex = if specials.is_empty() {
            None
        } else {
            // Longest first, so that of two specials starting at the same place the longer wins.
            let mut names: Vec<&String> = specials.keys().collect();
            names.sort_by_key(|n| std::cmp::Reverse(n.len()));
            let alternation: Vec<String> = names.iter().map(|n| regex_syntax::escape(n)).collect();
            Some(
                fancy_regex::Regex::new(&alternation.join("|")).map_err(|e| {
                    Error::tokenizer(format!(
                        "BPE tokenizer: the special tokens do not form a regex: {e}"
                    ))
                })?,
            )
        };
        Ok(BpeTokenizer {
            pattern,
            tokens,
            ranks,
            specials,
            special_names,
            special_regex,
        })
    }

    pub fn pattern(&self) -> &Pattern {
        &self.pattern
    }

    /// The mergeable tokens, index = rank = id.
    pub fn tokens(&self) -> &[Vec<u8>] {
        &self.tokens
    }

    /// Special token names and their ids.
    pub fn specials(&self) -> &BTreeMap<String, u32> {
        &self.specials
    }

    /// One more than the largest id.
    pub fn vocab_size(&self) -> usize {
        let top = self
            .special_names
            .keys()
            .next_back()
            .map_or(0, |&id| id as usize + 1);
        top.max(self.tokens.len())
    }

    /// The rank of a byte string that is a mergeable token.
    pub fn rank(&self, bytes: &[u8]) -> Option<Rank> {
        self.ranks.get(bytes).copied()
    }

    fn encode_piece(&self, piece: &[u8], out: &mut Vec<u32>) {
        if let Some(&rank) = self.ranks.get(piece) {
            out.push(rank);
            return;
        }
        let bounds = merge::merge(piece, |s| self.ranks.get(s).copied());
        for w in bounds.windows(2) {
            // Every part is a token: single bytes are, and merges only make tokens.
            out.push(self.ranks[&piece[w[0]..w[1]]]);
        }
    }

    /// Encodes text with no special tokens: their strings are ordinary text.
    pub fn encode_ordinary(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        self.encode_ordinary_into(text, &mut out)?;
        Ok(out)
    }

    fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        self.pattern
            .split(text, |piece| self.encode_piece(piece.as_bytes(), out))
    }

    /// Encodes text; special tokens that are `allowed` are one id each, and text holding
    /// any other special token's string is an error (tiktoken's rule).
    pub fn encode(&self, text: &str, allowed: Allowed<'_>) -> Result<Vec<u32>> {
        if let Allowed::Only(names) = allowed {
            if let Some(name) = names.iter().find(|n| !self.specials.contains_key(*n)) {
                return Err(Error::tokenizer(format!(
                    "allowed_special names {name:?}, which is not a special token of this tokenizer"
                )));
            }
        }
        let Some(regex) = &self.special_regex else {
            return self.encode_ordinary(text);
        };
        let mut out = Vec::with_capacity(text.len() / 4 + 1);
        let mut start = 0;
        for found in regex.find_iter(text) {
            let found =
                found.map_err(|e| Error::tokenizer(format!("special token search failed: {e}")))?;
            let name = found.as_str();
            let is_allowed = match allowed {
                Allowed::None => false,
                Allowed::All => true,
                Allowed::Only(names) => names.contains(name),
            };
            if !is_allowed {
                return Err(Error::tokenizer(format!(
                    "the text holds the special token {name:?} (at byte {}); allow it with allowed_special, or encode it as ordinary text with encode_ordinary",
                    found.start()
                )));
            }
            self.encode_ordinary_into(&text[start..found.start()], &mut out)?;
            out.push(self.specials[name]);
            start = found.end();
        }
        self.encode_ordinary_into(&text[start..], &mut out)?;
        Ok(out)
    }

    /// Encodes many texts in parallel on the thread pool.
    pub fn encode_batch<S: AsRef<str> + Sync>(
        &self,
        texts: &[S],
        allowed: Allowed<'_>,
    ) -> Result<Vec<Vec<u32>>> {
        crate::threads::install(|| {
            texts
                .par_iter()
                .map(|t| self.encode(t.as_ref(), allowed))
                .collect()
        })
    }

    /// The bytes of one token (a special token's are its UTF-8 string).
    pub fn token_bytes(&self, id: u32) -> Result<&[u8]> {
        if let Some(token) = self.tokens.get(id as usize) {
            return Ok(token);
        }
        match self.special_names.get(&id) {
            Some(name) => Ok(name.as_bytes()),
            None => Err(Error::tokenizer(format!(
                "token id {id} is not in the vocabulary (size {}{})",
                self.vocab_size(),
                if (id as usize) < self.vocab_size() {
                    ", and this id between the mergeable and special tokens is unused"
                } else {
                    ""
                }
            ))),
        }
    }

    /// The concatenated bytes of the tokens.
    pub fn decode_bytes(&self, ids: &[u32]) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        for (i, &id) in ids.iter().enumerate() {
            let bytes = self
                .token_bytes(id)
                .map_err(|e| Error::tokenizer(format!("at position {i}: {e}")))?;
            out.extend_from_slice(bytes);
        }
        Ok(out)
    }

    /// The text of the tokens; bytes that are not valid UTF-8 become U+FFFD, or are an
    /// error if `strict`.
    pub fn decode(&self, ids: &[u32], strict: bool) -> Result<String> {
        let bytes = self.decode_bytes(ids)?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(text),
            Err(e) if strict => Err(Error::tokenizer(format!(
                "the tokens do not decode to valid UTF-8: {}",
                e.utf8_error()
            ))),
            Err(e) => Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()),
        }
    }

    /// A readable form of token `id`: its text if valid UTF-8, else with `\xNN` escapes;
    /// unused ids show as `<unused id>`.
    pub fn token_display(&self, id: u32) -> String {
        match self.token_bytes(id) {
            Ok(bytes) => show_bytes(bytes),
            Err(_) => format!("<unused {id}>"),
        }
    }

    /// The merges that make each token of two or more bytes, in rank order, as pairs of
    /// ids, recovered as tiktoken's converters do: merging the token's bytes with the
    /// lower ranks only must leave exactly two parts.
    pub fn merges(&self) -> Result<Vec<(u32, u32)>> {
        let mut merges = Vec::with_capacity(self.tokens.len().saturating_sub(256));
        for (rank, token) in self.tokens.iter().enumerate() {
            if token.len() < 2 {
                continue;
            }
            let rank = rank as Rank;
            let bounds = merge::merge(token, |s| self.rank(s).filter(|&r| r < rank));
            if bounds.len() != 3 {
                return Err(Error::tokenizer(format!(
                    "token {rank} ({}) is not the merge of two lower-ranked tokens, so the vocabulary has no merge list",
                    show_bytes(token)
                )));
            }
            let left = self.ranks[&token[..bounds[1]]];
            let right = self.ranks[&token[bounds[1]..]];
            merges.push((left, right));
        }
        Ok(merges)
    }
}

/// Bytes as text, invalid UTF-8 as `\xNN`.
pub fn show_bytes(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.utf8_chunks() {
        out.push_str(chunk.valid());
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
