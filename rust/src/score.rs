//! Scoring a sequence: the log-probability the model gives each token after the first.
//!
//! A sequence longer than the context (P = max_seq_len) is scored in windows of P tokens
//! that advance by S = P / 2 (at least 1): the first window scores all of its targets,
//! each later one only its last S, so every token is predicted from at least P - S tokens
//! before it (all of them while there are fewer), as the sliding evaluation of
//! perplexity usually goes. Windows of the same length run as one batch.

use crate::alloc;
use crate::error::{Error, Result};
use crate::model::{Model, Workspace};
use crate::sample::check_finite_logits;

/// Windows run per forward pass.
const WINDOWS_PER_BATCH: usize = 16;

/// One window: inputs ids[start..end] predict ids[start + 1..end + 1]; the targets from
/// index `first` on (of the sequence's targets) are the ones it scores.
struct Window {
    start: usize,
    end: usize,
    first: usize,
}

/// The windows that score targets 0..n_targets (target i is ids[i + 1]).
fn windows(n_targets: usize, context: usize) -> Vec<Window> {
    let stride = (context / 2).max(1);
    let mut out = Vec::new();
    let mut done = 0;
    while done < n_targets {
        let end = if done == 0 {
            context.min(n_targets)
        } else {
            (done + stride).min(n_targets)
        };
        out.push(Window {
            start: end.saturating_sub(context),
            end,
            first: done,
        });
        done = end;
    }
    out
}

/// log p(ids[i + 1] | ids[..=i]) for every i, in nats (natural logarithms). `keep_going`
/// is asked before each batch of windows: when it says no, scoring stops with an error
/// (a caller stopped by Ctrl-C).
pub fn token_logprobs(
    model: &Model,
    ids: &[u32],
    keep_going: &mut (dyn FnMut() -> bool + Send),
) -> Result<Vec<f32>> {
    if ids.len() < 2 {
        return Err(Error::value(format!(
            "scoring needs at least 2 tokens (the first is only context), got {}",
            ids.len()
        )));
    }
    let (p, v) = (model.config.max_seq_len, model.config.vocab_size);
    if let Some((i, &bad)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(Error::value(format!(
            "ids: token id {bad} at position {i} is out of range for vocab_size {v}"
        )));
    }
    let n_targets = ids.len() - 1;
    let mut out = alloc::zeros(n_targets, "the scores")?;
    let mut ws = Workspace::new();
    let all = windows(n_targets, p);
    let mut batch_ids = Vec::new();
    for group in all.chunk_by(|a, b| a.end - a.start == b.end - b.start) {
        for batch in group.chunks(WINDOWS_PER_BATCH) {
            if !keep_going() {
                return Err(Error::value("scoring was stopped before the end"));
            }
            let t = batch[0].end - batch[0].start;
            batch_ids.clear();
            for w in batch {
                batch_ids.extend_from_slice(&ids[w.start..w.end]);
            }
            model.forward(&mut ws, &batch_ids, batch.len(), t)?;
            let logits = ws.logits(&model.config);
            for (k, w) in batch.iter().enumerate() {
                for i in w.first..w.end {
                    let row = &logits[(k * t + i - w.start) * v..][..v];
                    out[i] = log_softmax_at(row, ids[i + 1] as usize, i)? as f32;
                }
            }
        }
    }
    Ok(out)
}

/// log softmax(row)[target] in f64: row[target] - max - log sum exp(row - max).
fn log_softmax_at(row: &[f32], target: usize, position: usize) -> Result<f64> {
    check_finite_logits(row, |_| format!("the prediction of token {position}"))?;
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
    Ok(row[target] as f64 - max - sum.ln())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_scored_once_with_enough_context() {
        for context in [1usize, 2, 5, 8] {
            for n_targets in 1..40 {
                let ws = windows(n_targets, context);
                let mut scored = vec![0; n_targets];
                for w in &ws {
                    assert!(w.end - w.start <= context);
                    for (i, count) in scored.iter_mut().enumerate().take(w.end).skip(w.first) {
                        *count += 1;
                        // Target i sees ids[w.start..=i].
                        let seen = i + 1 - w.start;
                        assert!(seen >= (i + 1).min(context - (context / 2).max(1) + 1));
                    }
                }
                assert!(scored.iter().all(|&c| c == 1), "{context} {n_targets}");
            }
        }
    }
}
