//! Training a byte-level BPE vocabulary: minbpe's algorithm, with incremental counts.
//!
//! 1. Pre-split the text with the pattern; count each distinct piece ("word").
//! 2. Start from the 256 single bytes (id = byte value).
//! 3. Repeat: take the adjacent pair of ids that occurs most often, counting each
//!    word's pairs times the word's count; ties go to the smallest pair (a, b), compared
//!    as numbers. Give it the next id and replace it in every word, left to right,
//!    without overlaps.
//!
//! One rule beyond minbpe keeps the vocabulary free of duplicates: a pair whose bytes
//! already are a token (possible when two different pairs spell the same bytes) is
//! replaced by that token and adds no id.
//!
//! Instead of recounting all pairs per merge, the counts are kept in a map and updated
//! only for the words that hold the merged pair (found through a pair -> words index);
//! a max-heap with lazy deletion finds the most frequent pair.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{BpeTokenizer, Pattern, MAX_VOCAB};
use crate::error::{Error, Result};

/// A trained tokenizer and how training went.
#[derive(Debug, Clone)]
pub struct Trained {
    pub tokenizer: BpeTokenizer,
    /// The merges in order: (left id, right id) -> id 256 + k.
    pub merges: Vec<(u32, u32)>,
    /// True when the text ran out of pairs before `vocab_size` was reached.
    pub exhausted: bool,
}

type Pair = (u32, u32);

/// Learns `vocab_size` tokens (256 bytes + merges + `specials`, which take the last ids).
pub fn train<S: AsRef<str> + Sync>(
    texts: &[S],
    vocab_size: usize,
    pattern: Pattern,
    specials: &[String],
) -> Result<Trained> {
    let floor = 256 + specials.len();
    if vocab_size < floor || vocab_size > MAX_VOCAB {
        return Err(Error::tokenizer(format!(
            "BPE training: vocab_size {vocab_size} must be between 256 bytes + {} special tokens = {floor} and {MAX_VOCAB}",
            specials.len()
        )));
    }
    let target = vocab_size - specials.len();
    let (mut words, counts) = count_words(texts, &pattern)?;

    let mut tokens: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut index: FxHashMap<Vec<u8>, u32> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let mut pair_counts: FxHashMap<Pair, i64> = FxHashMap::default();
    let mut where_found: FxHashMap<Pair, Vec<u32>> = FxHashMap::default();
    for (w, word) in words.iter().enumerate() {
        for p in word.windows(2) {
            let pair = (p[0], p[1]);
            *pair_counts.entry(pair).or_default() += counts[w];
            where_found.entry(pair).or_default().push(w as u32);
        }
    }
    let mut heap: BinaryHeap<(i64, Reverse<Pair>)> =
        pair_counts.iter().map(|(&p, &c)| (c, Reverse(p))).collect();

    let mut merges = Vec::new();
    let mut last_seen = vec![u32::MAX; words.len()];
    let mut delta: FxHashMap<Pair, i64> = FxHashMap::default();
    let mut step = 0u32;
    while tokens.len() < target {
        // The most frequent pair, skipping heap entries whose count is out of date.
        let Some((count, Reverse(pair))) = heap.pop() else {
            break;
        };
        if pair_counts.get(&pair) != Some(&count) {
            continue;
        }
        let mut bytes = tokens[pair.0 as usize].clone();
        bytes.extend_from_slice(&tokens[pair.1 as usize]);
        let id = match index.get(&bytes) {
            Some(&existing) => existing,
            None => {
                let id = tokens.len() as u32;
                index.insert(bytes.clone(), id);
                tokens.push(bytes);
                merges.push(pair);
                id
            }
        };
        step += 1;
        delta.clear();
        for w in where_found.remove(&pair).unwrap_or_default() {
            let w = w as usize;
            if last_seen[w] == step {
                continue;
            }
            last_seen[w] = step;
            let word = &mut words[w];
            if !word.windows(2).any(|p| (p[0], p[1]) == pair) {
                continue; // a stale entry: merged away before
            }
            let c = counts[w];
            for p in word.windows(2) {
                *delta.entry((p[0], p[1])).or_default() -= c;
            }
            replace_pair(word, pair, id);
            for p in word.windows(2) {
                let q = (p[0], p[1]);
                *delta.entry(q).or_default() += c;
                if q.0 == id || q.1 == id {
                    where_found.entry(q).or_default().push(w as u32);
                }
            }
        }
        for (&q, &d) in &delta {
            if d == 0 {
                continue;
            }
            let entry = pair_counts.entry(q).or_default();
            *entry += d;
            if *entry <= 0 {
                pair_counts.remove(&q);
            } else {
                heap.push((*entry, Reverse(q)));
            }
        }
    }
    let exhausted = tokens.len() < target;
    let n = tokens.len() as u32;
    let special_ids: BTreeMap<String, u32> = specials
        .iter()
        .enumerate()
        .map(|(k, name)| (name.clone(), n + k as u32))
        .collect();
    if special_ids.len() != specials.len() {
        return Err(Error::tokenizer(
            "BPE training: a special token is listed twice",
        ));
    }
    let tokenizer = BpeTokenizer::new(tokens, special_ids, pattern)?;
    Ok(Trained {
        tokenizer,
        merges,
        exhausted,
    })
}

/// Replaces each non-overlapping occurrence of `pair`, left to right, with `id`.
fn replace_pair(word: &mut Vec<u32>, pair: Pair, id: u32) {
    let mut out = 0;
    let mut i = 0;
    while i < word.len() {
        if i + 1 < word.len() && (word[i], word[i + 1]) == pair {
            word[out] = id;
            i += 2;
        } else {
            word[out] = word[i];
            i += 1;
        }
        out += 1;
    }
    word.truncate(out);
}

/// The distinct pieces of the texts as byte ids, and how often each occurs; sorted so
/// that training does not depend on hash order or the number of threads.
fn count_words<S: AsRef<str> + Sync>(
    texts: &[S],
    pattern: &Pattern,
) -> Result<(Vec<Vec<u32>>, Vec<i64>)> {
    let counted: FxHashMap<&str, i64> = crate::threads::install(|| {
        texts
            .par_iter()
            .map(|text| {
                let mut counts: FxHashMap<&str, i64> = FxHashMap::default();
                pattern.split(text.as_ref(), |piece| {
                    *counts.entry(piece).or_default() += 1
                })?;
                Ok(counts)
            })
            .try_reduce(FxHashMap::default, |mut a, b| {
                for (piece, c) in b {
                    *a.entry(piece).or_default() += c;
                }
                Ok(a)
            })
    })?;
    let mut pieces: Vec<(&str, i64)> = counted.into_iter().collect();
    pieces.sort_unstable();
    let words = pieces
        .iter()
        .map(|(p, _)| p.bytes().map(u32::from).collect())
        .collect();
    let counts = pieces.iter().map(|&(_, c)| c).collect();
    Ok((words, counts))
}
