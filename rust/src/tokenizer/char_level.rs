//! Character-level tokenizer: one token per Unicode scalar value.

use std::collections::{BTreeSet, HashMap};

use super::unknown_id;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct CharTokenizer {
    chars: Vec<char>,
    index: HashMap<char, u32>,
}

impl CharTokenizer {
    /// Characters must be unique.
    pub fn new(chars: Vec<char>) -> Result<CharTokenizer> {
        if chars.is_empty() {
            return Err(Error::tokenizer(
                "character tokenizer: the vocabulary is empty",
            ));
        }
        let mut index = HashMap::with_capacity(chars.len());
        for (i, &ch) in chars.iter().enumerate() {
            if let Some(first) = index.insert(ch, i as u32) {
                return Err(Error::tokenizer(format!(
                    "character tokenizer: {ch:?} appears twice in the vocabulary (ids {first} and {i})"
                )));
            }
        }
        Ok(CharTokenizer { chars, index })
    }

    /// The vocabulary of a text: its distinct characters in code-point order (as nanoGPT).
    pub fn from_text(text: &str) -> Result<CharTokenizer> {
        if text.is_empty() {
            return Err(Error::tokenizer(
                "cannot build a character tokenizer from empty text",
            ));
        }
        let set: BTreeSet<char> = text.chars().collect();
        CharTokenizer::new(set.into_iter().collect())
    }

    pub fn vocab(&self) -> &[char] {
        &self.chars
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.is_empty() {
            return Err(Error::tokenizer("cannot encode empty text"));
        }
        text.chars()
            .enumerate()
            .map(|(i, ch)| {
                self.index.get(&ch).copied().ok_or_else(|| {
                    Error::tokenizer(format!(
                        "character {ch:?} (U+{:04X}) at position {i} is not in the vocabulary",
                        ch as u32
                    ))
                })
            })
            .collect()
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| {
                self.chars
                    .get(id as usize)
                    .copied()
                    .ok_or_else(|| unknown_id(id, i, self.chars.len()))
            })
            .collect()
    }
}
