//! Autoregressive generation for one sequence with a key/value cache (see
//! [`crate::decode`]): a new token costs one matrix-vector product per weight matrix
//! instead of a forward pass over the whole sequence, and only the last position's logits
//! are computed.
//!
//! Past the context (P = max_seq_len) the model sees the last P tokens, as in nanoGPT:
//! positions are learned per index, so the cache is rebuilt for the shifted window.

use crate::decode::{with_team, DecodeState, Team};
use crate::error::{Error, Result};
use crate::model::Model;
use crate::sample::{Sampler, SamplingParams};

/// Models at least this wide split their products with a helper thread when generating.
const TEAM_MIN_D_MODEL: usize = 128;

/// What to generate and how to choose each token.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Generation ends right after one of these ids is emitted.
    pub stop: Vec<u32>,
}

/// Generates up to `max_new_tokens` ids after `prompt`; returns only the new ids.
pub fn generate(model: &Model, prompt: &[u32], opts: &GenerateOptions) -> Result<Vec<u32>> {
    generate_with(model, prompt, opts, |_| true)
}

/// Like [`generate`], calling `on_token` with each new id; generation stops early when it
/// returns false (a caller uses this to check for interruption).
pub fn generate_with(
    model: &Model,
    prompt: &[u32],
    opts: &GenerateOptions,
    on_token: impl FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    let cfg = &model.config;
    if prompt.is_empty() {
        return Err(Error::value(
            "the prompt is empty: generation needs at least one token",
        ));
    }
    let context = cfg.max_seq_len;
    // Only the last `context` tokens of a long prompt can be seen.
    let window_start = prompt.len().saturating_sub(context);
    if let Some((i, &bad)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= cfg.vocab_size)
    {
        return Err(Error::value(format!(
            "prompt: token id {bad} at position {i} is out of range for vocab_size {}",
            cfg.vocab_size
        )));
    }
    if let Some(&bad) = opts.stop.iter().find(|&&id| id as usize >= cfg.vocab_size) {
        return Err(Error::value(format!(
            "stop token id {bad} is out of range for vocab_size {}",
            cfg.vocab_size
        )));
    }
    let mut sampler = Sampler::new(opts.sampling, opts.seed)?;
    if opts.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let tokens = prompt[window_start..].to_vec();
    let use_team = cfg.d_model >= TEAM_MIN_D_MODEL && rayon::current_num_threads() > 1;
    if !use_team {
        return Ok(decode_loop(
            model,
            None,
            tokens,
            opts,
            &mut sampler,
            on_token,
        ));
    }
    // The helper thread takes half of each product (when no other call is using it).
    Ok(with_team(|team| {
        decode_loop(model, team, tokens, opts, &mut sampler, on_token)
    }))
}

/// The generation loop proper: feed the prompt, then sample, feed back, repeat.
fn decode_loop(
    model: &Model,
    team: Option<&Team>,
    mut tokens: Vec<u32>,
    opts: &GenerateOptions,
    sampler: &mut Sampler,
    mut on_token: impl FnMut(u32) -> bool,
) -> Vec<u32> {
    let context = model.config.max_seq_len;
    let packed = model.decode_weights();
    let mut state = DecodeState::new(model);
    let mut new_tokens = Vec::with_capacity(opts.max_new_tokens.min(1 << 16));
    for (i, &tok) in tokens.iter().enumerate() {
        state.push(model, packed, team, tok, i + 1 == tokens.len());
    }
    loop {
        let next = sampler.sample(&state.logits);
        new_tokens.push(next);
        if new_tokens.len() == opts.max_new_tokens || opts.stop.contains(&next) || !on_token(next) {
            break;
        }
        tokens.push(next);
        if state.len() < context {
            state.push(model, packed, team, next, true);
        } else {
            // The window slides by one: positions change, so the cache is rebuilt.
            let window = &tokens[tokens.len() - context..];
            state.clear();
            for (i, &tok) in window.iter().enumerate() {
                state.push(model, packed, team, tok, i + 1 == window.len());
            }
        }
        if tokens.len() > 2 * context {
            tokens.drain(..tokens.len() - context);
        }
    }
    new_tokens
}
