//! Beam search: keep the `num_beams` most likely continuations so far, by the sum of their
//! tokens' log-probabilities, instead of one sampled or greedy choice per step.
//!
//! The rules are Hugging Face's `generate(num_beams=...)`:
//! - Each step, every beam's log-softmax is added to its sum, and the 2 * num_beams best
//!   (beam, token) candidates are taken in order (ties: the lower beam, then the lower id).
//!   A candidate ending in a stop id becomes a finished hypothesis if it ranks among the
//!   first num_beams; the others go on as the new beams, until there are num_beams.
//! - A hypothesis's score is its sum of log-probabilities divided by (its number of new
//!   tokens, the stop id included) ^ length_penalty.
//! - The search ends after max_new_tokens steps, or once num_beams hypotheses are finished
//!   and `early_stopping` says no running beam can do better: `True` stops at once;
//!   `False` when the best running sum divided by the current length ^ length_penalty is no
//!   better than the worst finished score; `Never` the same with the longest possible
//!   length when length_penalty > 0 (an exact bound).
//! - At the end the running beams count as hypotheses too, and the best are returned.
//! - `no_repeat_ngram_size` n bans any token that would repeat an n-gram of the sequence
//!   (prompt included).
//!
//! Beams share the prompt's key/value cache: it is computed once, and a beam with two
//! children is forked by copying its cache into a free slot, all but the positions that
//! slot already holds (those of the beams' common start). Past the context a beam's
//! cache shifts like a generation's (see [`crate::generate`]): it keeps its last P/2
//! tokens.

use std::collections::HashSet;

use crate::decode::batched::BatchState;
use crate::decode::{with_team, DecodeState, Decoder, Team, TWO_LANES_MIN_D_MODEL};
use crate::error::{Error, Result};
use crate::generate::check_prompt_and_stop;
use crate::sample::check_finite_logits;

/// When to stop once num_beams hypotheses are finished (Hugging Face's `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyStopping {
    True,
    False,
    Never,
}

#[derive(Debug, Clone)]
pub struct BeamOptions {
    pub num_beams: usize,
    pub max_new_tokens: usize,
    pub length_penalty: f64,
    pub early_stopping: EarlyStopping,
    /// 0 means no constraint.
    pub no_repeat_ngram_size: usize,
    pub num_return_sequences: usize,
    /// A beam ends right after one of these ids.
    pub stop: Vec<u32>,
}

/// One finished (or, at the end, running) continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// The new ids (a final stop id included).
    pub tokens: Vec<u32>,
    /// Sum of the log-probabilities of `tokens`.
    pub logprob: f64,
    /// `logprob / len(tokens) ^ length_penalty`.
    pub score: f64,
}

/// Largest accepted beam width.
pub const MAX_BEAMS: usize = 1024;

impl BeamOptions {
    pub fn validate(&self) -> Result<()> {
        if !(1..=MAX_BEAMS).contains(&self.num_beams) {
            return Err(Error::value(format!(
                "num_beams must be between 1 and {MAX_BEAMS}, got {}",
                self.num_beams
            )));
        }
        if !(1..=self.num_beams).contains(&self.num_return_sequences) {
            return Err(Error::value(format!(
                "num_return_sequences must be between 1 and num_beams = {}, got {}",
                self.num_beams, self.num_return_sequences
            )));
        }
        if !self.length_penalty.is_finite() {
            return Err(Error::value(format!(
                "length_penalty must be finite, got {}",
                self.length_penalty
            )));
        }
        Ok(())
    }
}

/// A running beam: its sequence's slot in the batch of caches, the tokens in that cache
/// (plus, after a step, the one to feed next), every id of the sequence (for the n-gram
/// rule), its new ids and the logits after its last token.
struct Beam {
    slot: usize,
    window: Vec<u32>,
    sequence: Vec<u32>,
    new: Vec<u32>,
    logprob: f64,
    logits: Vec<f32>,
}

/// The best `num_return_sequences` hypotheses after `prompt`, best first.
pub fn beam_search(
    decoder: &Decoder,
    prompt: &[u32],
    opts: &BeamOptions,
) -> Result<Vec<Hypothesis>> {
    beam_search_until(decoder, prompt, opts, &mut || true)
}

/// [`beam_search`], asking `keep_going` before each step: when it says no, the search ends
/// there, as if `max_new_tokens` had been reached (a caller stopped by Ctrl-C).
pub fn beam_search_until(
    decoder: &Decoder,
    prompt: &[u32],
    opts: &BeamOptions,
    keep_going: &mut (dyn FnMut() -> bool + Send),
) -> Result<Vec<Hypothesis>> {
    opts.validate()?;
    let cfg = &decoder.model().config;
    check_prompt_and_stop(cfg.vocab_size, prompt, &opts.stop)?;
    decoder.prepare()?;
    crate::alloc::check_available(
        DecodeState::cache_bytes(cfg) * opts.num_beams as u128,
        "the key/value caches of the beams",
    )?;
    let use_team = cfg.d_model >= TWO_LANES_MIN_D_MODEL && rayon::current_num_threads() > 1;
    if use_team {
        with_team(|team| search(decoder, team, prompt, opts, keep_going))
    } else {
        search(decoder, None, prompt, opts, keep_going)
    }
}

fn search(
    decoder: &Decoder,
    team: Option<&Team>,
    prompt: &[u32],
    opts: &BeamOptions,
    keep_going: &mut (dyn FnMut() -> bool + Send),
) -> Result<Vec<Hypothesis>> {
    let model = decoder.model();
    let (p, v) = (model.config.max_seq_len, model.config.vocab_size);
    let window = prompt[prompt.len().saturating_sub(p)..].to_vec();
    // One slot of caches per beam: every beam steps in one batch, reading the weights
    // once for all of them, and a fork copies its parent's cached positions.
    let mut state = BatchState::new(model, opts.num_beams)?;
    for &tok in &window {
        state.step(decoder, team, &[0], &[tok]);
    }
    let mut beams = vec![Beam {
        slot: 0,
        window,
        sequence: prompt.to_vec(),
        new: Vec::new(),
        logprob: 0.0,
        logits: state.logits[..v].to_vec(),
    }];
    let mut finished: Vec<Hypothesis> = Vec::new();
    let score_of = |logprob: f64, len: usize| logprob / (len as f64).powf(opts.length_penalty);
    for step in 0..opts.max_new_tokens {
        if !keep_going() {
            break;
        }
        // Every (beam, token) candidate with its new sum of log-probabilities.
        let mut candidates: Vec<(f64, usize, u32)> = Vec::with_capacity(beams.len() * v);
        for (b, beam) in beams.iter().enumerate() {
            check_finite(&beam.logits, step)?;
            let banned = banned_tokens(&beam.sequence, opts.no_repeat_ngram_size);
            for (t, lp) in log_softmax(&beam.logits).into_iter().enumerate() {
                if !banned.contains(&(t as u32)) && lp > f64::NEG_INFINITY {
                    candidates.push((beam.logprob + lp, b, t as u32));
                }
            }
        }
        candidates.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        candidates.truncate(2 * opts.num_beams);
        let len = step + 1;
        let mut chosen: Vec<(f64, usize, u32)> = Vec::new();
        for (rank, &(logprob, b, t)) in candidates.iter().enumerate() {
            if opts.stop.contains(&t) {
                if rank < opts.num_beams {
                    let mut tokens = beams[b].new.clone();
                    tokens.push(t);
                    add_hypothesis(
                        &mut finished,
                        opts.num_beams,
                        Hypothesis {
                            tokens,
                            logprob,
                            score: score_of(logprob, len),
                        },
                    );
                }
            } else {
                chosen.push((logprob, b, t));
            }
            if chosen.len() == opts.num_beams {
                break;
            }
        }
        if chosen.is_empty() {
            // No token may follow any beam (no_repeat_ngram_size bans them all): each beam
            // ends as it is.
            break;
        }
        if is_done(&finished, chosen[0].0, len, opts) {
            beams.clear();
            break;
        }
        beams = advance(decoder, team, &mut state, beams, &chosen);
    }
    for beam in beams {
        let score = score_of(beam.logprob, beam.new.len().max(1));
        add_hypothesis(
            &mut finished,
            opts.num_beams,
            Hypothesis {
                tokens: beam.new,
                logprob: beam.logprob,
                score,
            },
        );
    }
    finished.truncate(opts.num_return_sequences);
    Ok(finished)
}

/// The new beams: each chosen (sum, parent, token) as its parent's cache fed the token,
/// all of them in one batch step. A parent chosen more than once is forked: its last
/// child keeps the parent's slot, the others take the slots of beams no one chose, with
/// a copy of the parent's cache.
fn advance(
    decoder: &Decoder,
    team: Option<&Team>,
    state: &mut BatchState,
    beams: Vec<Beam>,
    chosen: &[(f64, usize, u32)],
) -> Vec<Beam> {
    let model = decoder.model();
    let v = model.config.vocab_size;
    let mut uses = vec![0usize; beams.len()];
    for &(_, b, _) in chosen {
        uses[b] += 1;
    }
    // The slots of beams no one chose, and those no beam holds yet, each with the ids its
    // cache holds (a beam's cache holds its window).
    let held: HashSet<usize> = beams.iter().map(|beam| beam.slot).collect();
    let mut spare: Vec<(usize, Vec<u32>)> = (0..state.sequences())
        .filter(|slot| !held.contains(slot))
        .map(|slot| (slot, Vec::new()))
        .collect();
    spare.extend(
        beams
            .iter()
            .zip(&uses)
            .filter(|(_, &n)| n == 0)
            .map(|(beam, _)| (beam.slot, beam.window.clone())),
    );
    let mut parents: Vec<Option<Beam>> = beams.into_iter().map(Some).collect();
    let mut next = Vec::with_capacity(chosen.len());
    for &(logprob, b, t) in chosen {
        uses[b] -= 1;
        let mut beam = if uses[b] == 0 {
            parents[b]
                .take()
                .expect("a parent is taken by its last child")
        } else {
            let parent = parents[b]
                .as_ref()
                .expect("a parent stays until its last child");
            // The spare slot whose ids start as the parent's do the longest: those
            // positions already hold the parent's keys and values, bit for bit (the same
            // ids from position 0 give the same bits, in any row of a batch step) and are
            // not copied.
            let (at, kept) = spare
                .iter()
                .map(|(_, ids)| common_prefix(ids, &parent.window))
                .enumerate()
                .max_by_key(|&(_, kept)| kept)
                .expect("a free slot for every fork");
            let (slot, _) = spare.swap_remove(at);
            state.copy_sequence(model, team, (parent.slot, slot), kept);
            Beam {
                slot,
                window: parent.window.clone(),
                sequence: parent.sequence.clone(),
                new: parent.new.clone(),
                logprob: parent.logprob,
                logits: Vec::new(),
            }
        };
        beam.logprob = logprob;
        beam.new.push(t);
        beam.sequence.push(t);
        beam.window.push(t);
        next.push(beam);
    }
    // A full cache shifts first: the last P/2 ids (the newest included) are kept and the
    // older of them fed again at positions 0.., as in a single generation.
    let context = model.config.max_seq_len;
    let keep = (context / 2).max(1);
    for beam in &mut next {
        if state.len(beam.slot) < context {
            continue;
        }
        beam.window.drain(..beam.window.len() - keep);
        state.clear(beam.slot);
        for &tok in &beam.window[..keep - 1] {
            state.step(decoder, team, &[beam.slot], &[tok]);
        }
    }
    let slots: Vec<usize> = next.iter().map(|beam| beam.slot).collect();
    let tokens: Vec<u32> = next
        .iter()
        .map(|beam| beam.new[beam.new.len() - 1])
        .collect();
    state.step(decoder, team, &slots, &tokens);
    for (beam, logits) in next.iter_mut().zip(state.logits.chunks_exact(v)) {
        beam.logits = logits.to_vec();
    }
    next
}

/// How many ids `a` and `b` share from the start.
fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Keeps the best `n` hypotheses, best first (ties: the earlier one first).
fn add_hypothesis(finished: &mut Vec<Hypothesis>, n: usize, hyp: Hypothesis) {
    let at = finished
        .iter()
        .position(|h| h.score < hyp.score)
        .unwrap_or(finished.len());
    finished.insert(at, hyp);
    finished.truncate(n);
}

/// Whether no running beam can beat the finished hypotheses (see the module's rules).
fn is_done(finished: &[Hypothesis], best_running: f64, len: usize, opts: &BeamOptions) -> bool {
    if finished.len() < opts.num_beams {
        return false;
    }
    let worst = finished.last().expect("num_beams >= 1").score;
    let len = match opts.early_stopping {
        EarlyStopping::True => return true,
        EarlyStopping::Never if opts.length_penalty > 0.0 => opts.max_new_tokens,
        _ => len,
    };
    worst >= best_running / (len as f64).powf(opts.length_penalty)
}

/// Tokens that would repeat an n-gram of `sequence` (none for n = 0).
fn banned_tokens(sequence: &[u32], n: usize) -> HashSet<u32> {
    let mut banned = HashSet::new();
    if n == 0 || sequence.len() + 1 < n {
        return banned;
    }
    let prefix = &sequence[sequence.len() + 1 - n..];
    for gram in sequence.windows(n) {
        if gram[..n - 1] == *prefix {
            banned.insert(gram[n - 1]);
        }
    }
    banned
}

/// log softmax in f64.
fn log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let log_sum = logits
        .iter()
        .map(|&z| (z as f64 - max).exp())
        .sum::<f64>()
        .ln();
    logits.iter().map(|&z| z as f64 - max - log_sum).collect()
}

fn check_finite(logits: &[f32], step: usize) -> Result<()> {
    check_finite_logits(logits, |_| format!("generated token {step}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ngram_rule_bans_what_would_repeat() {
        // "1 2 3 1 2": a 3-gram rule bans 3 (it would repeat "1 2 3").
        assert_eq!(banned_tokens(&[1, 2, 3, 1, 2], 3), HashSet::from([3]));
        // A 1-gram rule bans every id seen.
        assert_eq!(banned_tokens(&[4, 5, 4], 1), HashSet::from([4, 5]));
        assert!(banned_tokens(&[1, 2], 0).is_empty());
    }
}
