//! Autoregressive generation for one sequence.
//!
//! While the sequence fits in the context (P = max_seq_len), a key/value cache (see
//! [`crate::decode`]) makes a new token cost one matrix-vector product per weight matrix
//! instead of a forward pass over the whole sequence, and only the last position's logits
//! are computed. Past the context the model sees the last P tokens, as in nanoGPT: their
//! learned positions all shift with each new token, so every cached key and value would
//! change, and each token costs one batched forward pass over the window instead.

use crate::decode::{with_team, DecodeState, Team, TWO_LANES_MIN_D_MODEL};
use crate::error::{Error, Result};
use crate::model::{Model, Workspace};
use crate::sample::{Sampler, SamplingParams};

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
    let sampler = Sampler::new(opts.sampling, opts.seed)?;
    if opts.max_new_tokens == 0 {
        return Ok(Vec::new());
    }
    let mut run = Generation {
        opts,
        sampler,
        on_token,
        tokens: prompt[window_start..].to_vec(),
        new_tokens: Vec::with_capacity(opts.max_new_tokens.min(1 << 16)),
    };
    let use_team = cfg.d_model >= TWO_LANES_MIN_D_MODEL && rayon::current_num_threads() > 1;
    let past_context = if use_team {
        // The helper thread takes half of each product (when no other call is using it).
        with_team(|team| decode_in_context(model, team, &mut run))
    } else {
        decode_in_context(model, None, &mut run)
    };
    if past_context {
        slide_past_context(model, &mut run)?;
    }
    Ok(run.new_tokens)
}

/// A generation under way: the sequence so far (at least its last P tokens), the new ids,
/// and how to choose and when to stop.
struct Generation<'a, F> {
    opts: &'a GenerateOptions,
    sampler: Sampler,
    on_token: F,
    tokens: Vec<u32>,
    new_tokens: Vec<u32>,
}

impl<F: FnMut(u32) -> bool> Generation<'_, F> {
    /// Chooses the next id from the logits of the last position and appends it; returns
    /// whether generation goes on.
    fn emit(&mut self, logits: &[f32]) -> bool {
        let next = self.sampler.sample(logits);
        self.new_tokens.push(next);
        self.tokens.push(next);
        self.new_tokens.len() < self.opts.max_new_tokens
            && !self.opts.stop.contains(&next)
            && (self.on_token)(next)
    }
}

/// Feeds the prompt, then one decode step per new token while the sequence fits in the
/// context. Returns true if generation must go on past the context.
fn decode_in_context<F: FnMut(u32) -> bool>(
    model: &Model,
    team: Option<&Team>,
    run: &mut Generation<'_, F>,
) -> bool {
    let context = model.config.max_seq_len;
    let mut state = DecodeState::new(model);
    let prompt_len = run.tokens.len();
    for (i, &tok) in run.tokens.iter().enumerate() {
        state.push(model, team, tok, i + 1 == prompt_len);
    }
    loop {
        if !run.emit(&state.logits) {
            return false;
        }
        if state.len() == context {
            return true;
        }
        let next = *run.tokens.last().expect("emit appended a token");
        state.push(model, team, next, true);
    }
}

/// Past the context: each new token from a forward pass over the last P tokens.
fn slide_past_context<F: FnMut(u32) -> bool>(
    model: &Model,
    run: &mut Generation<'_, F>,
) -> Result<()> {
    let (p, v) = (model.config.max_seq_len, model.config.vocab_size);
    let mut ws = Workspace::new();
    loop {
        model.forward(&mut ws, &run.tokens[run.tokens.len() - p..], 1, p)?;
        if !run.emit(&ws.logits(&model.config)[(p - 1) * v..]) {
            return Ok(());
        }
        if run.tokens.len() > 2 * p {
            run.tokens.drain(..run.tokens.len() - p);
        }
    }
}
