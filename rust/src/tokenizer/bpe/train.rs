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
//!
//! Text comes as strings or as files ([`Source`]). A file is read a chunk at a time and
//! its pieces are counted as they come, so memory grows with the number of distinct
//! pieces, not with the size of the corpus. Training on a file gives the merges of
//! training on its text as one string: of each chunk, only the pieces ending at least
//! [`MARGIN`] bytes before its end are counted, and the next chunk goes on from the end
//! of the last of them, with up to [`MARGIN`] bytes of the text before it as context.
//! That is exact for every pattern whose pieces depend on at most [`MARGIN`] bytes of
//! text around them: the named patterns look at most three characters ahead.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;

use rayon::prelude::*;
use rustc_hash::FxHashMap;

use super::{BpeTokenizer, Pattern, MAX_VOCAB};
use crate::alloc::out_of_memory;
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

/// Bytes of text around a piece that its pre-split may depend on, when text is cut
/// into chunks (see the module's documentation).
pub const MARGIN: usize = 4096;

/// Where training text comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A text in memory.
    Text(&'a str),
    /// A UTF-8 text file, read a chunk at a time.
    File(&'a Path),
}

/// How training reads files.
#[derive(Debug, Clone, Copy)]
pub struct ReadOptions {
    /// Bytes read at a time; more when a single piece is longer (default 1 MiB).
    pub chunk_bytes: usize,
    /// Reads at most this many bytes of each file, cut back to a whole character
    /// (default: all of it).
    pub max_bytes: Option<u64>,
}

impl Default for ReadOptions {
    fn default() -> ReadOptions {
        ReadOptions {
            chunk_bytes: 1 << 20,
            max_bytes: None,
        }
    }
}

/// How far training has come, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Bytes of text pre-split and counted, of `total`.
    Counting { done: u64, total: u64 },
    /// Merges made, of `total`; when the text runs out of pairs, the last report has
    /// `total` lowered to `done`.
    Merging { done: usize, total: usize },
}

/// Learns `vocab_size` tokens (256 bytes + merges + `specials`, which take the last ids).
pub fn train<S: AsRef<str> + Sync>(
    texts: &[S],
    vocab_size: usize,
    pattern: Pattern,
    specials: &[String],
) -> Result<Trained> {
    let sources: Vec<Source<'_>> = texts.iter().map(|t| Source::Text(t.as_ref())).collect();
    train_sources(
        &sources,
        vocab_size,
        pattern,
        specials,
        ReadOptions::default(),
        &mut |_| Ok(()),
    )
}

/// [`train`] on texts and files. `on_progress` is called after each chunk of text and
/// each merge (throttle it if drawing is slow); an error it returns stops training and
/// is returned.
pub fn train_sources(
    sources: &[Source<'_>],
    vocab_size: usize,
    pattern: Pattern,
    specials: &[String],
    read: ReadOptions,
    on_progress: &mut dyn FnMut(Progress) -> Result<()>,
) -> Result<Trained> {
    let floor = 256 + specials.len();
    if vocab_size < floor || vocab_size > MAX_VOCAB {
        return Err(Error::tokenizer(format!(
            "BPE training: vocab_size {vocab_size} must be between 256 bytes + {} special tokens = {floor} and {MAX_VOCAB}",
            specials.len()
        )));
    }
    if specials.iter().collect::<HashSet<_>>().len() != specials.len() {
        return Err(Error::tokenizer(
            "BPE training: a special token is listed twice",
        ));
    }
    let target = vocab_size - specials.len();
    let mut counted = PieceCounts::new(&pattern);
    counted.count(sources, read, on_progress)?;
    let (mut words, counts) = counted.into_words();

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
                on_progress(Progress::Merging {
                    done: merges.len(),
                    total: target - 256,
                })?;
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
    if exhausted {
        on_progress(Progress::Merging {
            done: merges.len(),
            total: merges.len(),
        })?;
    }
    let n = tokens.len() as u32;
    let special_ids: BTreeMap<String, u32> = specials
        .iter()
        .enumerate()
        .map(|(k, name)| (name.clone(), n + k as u32))
        .collect();
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

/// The distinct pre-split pieces of the text seen so far, and how often each occurs.
struct PieceCounts<'p> {
    pattern: &'p Pattern,
    counts: FxHashMap<Box<str>, i64>,
}

fn add(counts: &mut FxHashMap<Box<str>, i64>, piece: &str, n: i64) {
    match counts.get_mut(piece) {
        Some(c) => *c += n,
        None => {
            counts.insert(piece.into(), n);
        }
    }
}

impl<'p> PieceCounts<'p> {
    fn new(pattern: &'p Pattern) -> PieceCounts<'p> {
        PieceCounts {
            pattern,
            counts: FxHashMap::default(),
        }
    }

    /// Counts the pieces of every source: the texts in parallel, then the files one
    /// after the other, a chunk at a time. Every file is looked at before any is read,
    /// so that a wrong path is an error at once.
    fn count(
        &mut self,
        sources: &[Source<'_>],
        read: ReadOptions,
        on_progress: &mut dyn FnMut(Progress) -> Result<()>,
    ) -> Result<()> {
        let mut texts = Vec::new();
        let mut files = Vec::new();
        for source in sources {
            match *source {
                Source::Text(text) => texts.push(text),
                Source::File(path) => {
                    let size = text_file_size(path)?;
                    files.push((path, size, read.max_bytes.map_or(size, |m| m.min(size))));
                }
            }
        }
        let text_bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
        let total = text_bytes + files.iter().map(|f| f.2).sum::<u64>();
        self.count_texts(&texts)?;
        on_progress(Progress::Counting {
            done: text_bytes,
            total,
        })?;
        let mut done = text_bytes;
        for (path, size, limit) in files {
            self.count_file(path, size, limit, read.chunk_bytes, &mut |bytes| {
                on_progress(Progress::Counting {
                    done: done + bytes,
                    total,
                })
            })?;
            done += limit;
        }
        Ok(())
    }

    fn count_texts(&mut self, texts: &[&str]) -> Result<()> {
        let pattern = self.pattern;
        let counted: FxHashMap<&str, i64> = crate::threads::install(|| {
            texts
                .par_iter()
                .map(|text| {
                    let mut counts: FxHashMap<&str, i64> = FxHashMap::default();
                    pattern.split(text, |piece| *counts.entry(piece).or_default() += 1)?;
                    Ok(counts)
                })
                .try_reduce(FxHashMap::default, |mut a, b| {
                    for (piece, c) in b {
                        *a.entry(piece).or_default() += c;
                    }
                    Ok(a)
                })
        })?;
        for (piece, c) in counted {
            add(&mut self.counts, piece, c);
        }
        Ok(())
    }

    /// Counts the pieces of the first `limit` bytes of the file at `path` (`size` bytes
    /// long), a chunk at a time; `on_read` gets the number of bytes read so far.
    fn count_file(
        &mut self,
        path: &Path,
        size: u64,
        limit: u64,
        chunk_bytes: usize,
        on_read: &mut dyn FnMut(u64) -> Result<()>,
    ) -> Result<()> {
        let mut file = File::open(path).map_err(|e| Error::io(path, &e))?;
        // buf[..start] is context already counted; the next piece starts at `start`.
        let mut buf: Vec<u8> = Vec::new();
        let mut start = 0;
        let mut offset = 0u64; // of buf[0] in the file
        let mut read_so_far = 0u64;
        loop {
            // At least as much as is waiting, so that a long piece costs linear time.
            let want = (chunk_bytes.max(buf.len() - start).max(1) as u64).min(limit - read_so_far)
                as usize;
            let old = buf.len();
            buf.try_reserve(want)
                .map_err(|_| out_of_memory((old + want) as u128, "a chunk of training text"))?;
            buf.resize(old + want, 0);
            let got = read_up_to(&mut file, &mut buf[old..]).map_err(|e| Error::io(path, &e))?;
            buf.truncate(old + got);
            read_so_far += got as u64;
            let file_ended = got < want || read_so_far >= size;
            let last = file_ended || read_so_far >= limit;
            let whole = match std::str::from_utf8(&buf) {
                Ok(_) => buf.len(),
                Err(e) => {
                    let at = offset + e.valid_up_to() as u64;
                    if e.error_len().is_some() {
                        return Err(Error::format(
                            path,
                            format!(
                                "not UTF-8 text (invalid byte 0x{:02x} at offset {at})",
                                buf[e.valid_up_to()]
                            ),
                        ));
                    }
                    if file_ended {
                        return Err(Error::format(
                            path,
                            format!("not UTF-8 text (it ends inside a character, at offset {at})"),
                        ));
                    }
                    e.valid_up_to() // the rest of the character comes with the next chunk
                }
            };
            let text = std::str::from_utf8(&buf[..whole])
                .map_err(|_| Error::format(path, "not UTF-8 text"))?;
            let cut = if last {
                text.len()
            } else {
                text.len().saturating_sub(MARGIN)
            };
            let origin = text.as_ptr() as usize;
            let mut resume = start;
            let counts = &mut self.counts;
            self.pattern.split_from(text, start, |piece| {
                let end = piece.as_ptr() as usize - origin + piece.len();
                if end <= cut {
                    add(counts, piece, 1);
                    resume = end;
                }
            })?;
            on_read(read_so_far)?;
            if last {
                return Ok(());
            }
            let mut keep = resume.saturating_sub(MARGIN);
            while !text.is_char_boundary(keep) {
                keep -= 1;
            }
            buf.drain(..keep);
            offset += keep as u64;
            start = resume - keep;
        }
    }

    /// The distinct pieces as byte ids, and how often each occurs; sorted so that
    /// training does not depend on hash order or the number of threads.
    fn into_words(self) -> (Vec<Vec<u32>>, Vec<i64>) {
        let mut pieces: Vec<(Box<str>, i64)> = self.counts.into_iter().collect();
        pieces.sort_unstable();
        let words = pieces
            .iter()
            .map(|(p, _)| p.bytes().map(u32::from).collect())
            .collect();
        let counts = pieces.iter().map(|&(_, c)| c).collect();
        (words, counts)
    }
}

/// The size of a text file to train on: regular files only, so that a FIFO or a device
/// (`/dev/zero`) is an error rather than a read that never ends.
fn text_file_size(path: &Path) -> Result<u64> {
    if path.as_os_str().is_empty() {
        return Err(Error::value(
            "the path of a training file is empty: give the name of a file",
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, &e))?;
    if meta.is_dir() {
        return Err(Error::Io {
            path: path.display().to_string(),
            detail: "is a directory, not a text file".into(),
        });
    }
    if !meta.is_file() {
        return Err(Error::format(
            path,
            "not a regular file (a FIFO, device or socket): BPE training reads regular files only",
        ));
    }
    Ok(meta.len())
}

/// Reads until `buf` is full or the file ends; the number of bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
