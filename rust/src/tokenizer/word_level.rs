//! Word-level tokenizer with the Go TinyLM's rules.

use std::collections::HashMap;

use super::unknown_id;
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct WordTokenizer {
    vocab: Vec<String>,
    index: HashMap<String, u32>,
}

impl WordTokenizer {
    /// Words must be non-empty, free of whitespace and unique.
    pub fn new(vocab: Vec<String>) -> Result<WordTokenizer> {
        if vocab.is_empty() {
            return Err(Error::tokenizer("word tokenizer: the vocabulary is empty"));
        }
        if vocab.len() > u32::MAX as usize {
            return Err(Error::tokenizer(
                "word tokenizer: the vocabulary is too large",
            ));
        }
        let mut index = HashMap::with_capacity(vocab.len());
        for (i, word) in vocab.iter().enumerate() {
            if word.is_empty() || word.chars().any(char::is_whitespace) {
                return Err(Error::tokenizer(format!(
                    "word tokenizer: vocab entry {i} ({word:?}) is empty or contains whitespace"
                )));
            }
            if let Some(first) = index.insert(word.clone(), i as u32) {
                return Err(Error::tokenizer(format!(
                    "word tokenizer: the word {word:?} appears twice in the vocabulary (ids {first} and {i})"
                )));
            }
        }
        Ok(WordTokenizer { vocab, index })
    }

    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Splits on any whitespace; every word must be in the vocabulary.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let ids = text
            .split_whitespace()
            .map(|word| {
                self.index
                    .get(word)
                    .copied()
                    .ok_or_else(|| Error::tokenizer(format!("word not in vocabulary: {word}")))
            })
            .collect::<Result<Vec<u32>>>()?;
        if ids.is_empty() {
            return Err(Error::tokenizer(
                "cannot encode empty text: it holds no words",
            ));
        }
        Ok(ids)
    }

    /// Joins the words with single spaces.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        let mut words = Vec::with_capacity(ids.len());
        for (i, &id) in ids.iter().enumerate() {
            let word = self
                .vocab
                .get(id as usize)
                .ok_or_else(|| unknown_id(id, i, self.vocab.len()))?;
            words.push(word.as_str());
        }
        Ok(words.join(" "))
    }
}
