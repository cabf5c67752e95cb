//! Pre-splitting: a regex cuts text into pieces (words, numbers, punctuation runs,
//! whitespace) and BPE merges only within a piece, never across two.
//!
//! The three named patterns are OpenAI's, as tiktoken writes them: "gpt2" (r50k_base),
//! "gpt4" (cl100k_base) and "o200k" (o200k_base). The regex ([`Pattern::split_regex`]) is
//! the specification; for the named patterns a hand-written splitter (`super::presplit`)
//! gives the same pieces faster, and tests hold it to the regex.

use fancy_regex::{Regex, RegexInput};

use super::presplit::{self, Named};
use crate::error::{Error, Result};

/// GPT-2's pattern (tiktoken's r50k_base).
pub const GPT2_PATTERN: &str =
    r"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s";

/// GPT-4's pattern (tiktoken's cl100k_base).
pub const GPT4_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

/// GPT-4o's pattern (tiktoken's o200k_base).
pub const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    "|",
    r"\p{N}{1,3}",
    "|",
    r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
    "|",
    r"\s*[\r\n]+",
    "|",
    r"\s+(?!\S)",
    "|",
    r"\s+",
);

/// Longest accepted user regex, in bytes.
pub const MAX_PATTERN_LEN: usize = 64 << 10;

/// A compiled pre-split pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    source: String,
    regex: Regex,
    named: Option<Named>,
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.source == other.source
    }
}

impl Pattern {
    /// "gpt2", "gpt4", "o200k", or any other string as a regex.
    pub fn new(name_or_regex: &str) -> Result<Pattern> {
        let source = match name_or_regex {
            "gpt2" => GPT2_PATTERN,
            "gpt4" => GPT4_PATTERN,
            "o200k" => O200K_PATTERN,
            regex => regex,
        };
        Pattern::from_regex(source)
    }

    /// A regex (fancy-regex syntax, as tiktoken's Rust core); the named patterns'
    /// regexes get their fast splitters.
    pub fn from_regex(source: &str) -> Result<Pattern> {
        if source.is_empty() {
            return Err(Error::tokenizer("the pre-split pattern is empty"));
        }
        if source.len() > MAX_PATTERN_LEN {
            return Err(Error::tokenizer(format!(
                "the pre-split pattern is {} bytes long, more than the limit of {MAX_PATTERN_LEN}",
                source.len()
            )));
        }
        let regex = Regex::new(source)
            .map_err(|e| Error::tokenizer(format!("invalid pre-split regex {source:?}: {e}")))?;
        let named = match source {
            GPT2_PATTERN => Some(Named::Gpt2),
            GPT4_PATTERN => Some(Named::Gpt4),
            O200K_PATTERN => Some(Named::O200k),
            _ => None,
        };
        Ok(Pattern {
            source: source.to_string(),
            regex,
            named,
        })
    }

    /// The regex.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// "gpt2", "gpt4" or "o200k" for the named patterns.
    pub fn name(&self) -> Option<&'static str> {
        self.named.map(Named::name)
    }

    /// Calls `each` on every piece, in order. Text the regex does not match is dropped
    /// (as in tiktoken); the named patterns match all text.
    pub fn split<'t>(&self, text: &'t str, each: impl FnMut(&'t str)) -> Result<()> {
        match self.named {
            Some(named) => {
                presplit::split(named, text, each);
                Ok(())
            }
            None => self.split_regex(text, each),
        }
    }

    /// [`Pattern::split`] of `text[start..]`, where `start` is the end of a piece (or 0)
    /// and `text[..start]` is context before it: a regex's look-behind and `^` see it as
    /// they would in the whole text. (The named patterns look only ahead.)
    pub fn split_from<'t>(
        &self,
        text: &'t str,
        start: usize,
        mut each: impl FnMut(&'t str),
    ) -> Result<()> {
        if let Some(named) = self.named {
            presplit::split(named, &text[start..], each);
            return Ok(());
        }
        for found in self
            .regex
            .find_iter_input(RegexInput::new(text).from_pos(start))
        {
            let piece = found.map_err(|e| {
                Error::tokenizer(format!("the pre-split regex failed on the text: {e}"))
            })?;
            if !piece.as_str().is_empty() {
                each(piece.as_str());
            }
        }
        Ok(())
    }

    /// The reference path: the regex itself.
    pub fn split_regex<'t>(&self, text: &'t str, mut each: impl FnMut(&'t str)) -> Result<()> {
        for found in self.regex.find_iter(text) {
            let piece = found.map_err(|e| {
                Error::tokenizer(format!("the pre-split regex failed on the text: {e}"))
            })?;
            if !piece.as_str().is_empty() {
                each(piece.as_str());
            }
        }
        Ok(())
    }
}
