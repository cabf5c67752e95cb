//! Autoregressive generation for one sequence with a key/value cache.
//!
//! Each new token runs the model on that single position: its keys and values are appended
//! to the cache, and attention reads the cached ones of the earlier positions, so a token
//! costs one matrix-vector product per weight matrix instead of a forward pass over the
//! whole sequence. Only the last position's logits are computed.
//!
//! Past the context (P = max_seq_len) the model sees the last P tokens, as in nanoGPT:
//! positions are learned per index, so the cache is rebuilt for the shifted window.

use crate::error::{Error, Result};
use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::layernorm::layernorm_row;
use crate::kernels::simd::simd_fn;
use crate::kernels::softmax::softmax_in_place;
use crate::kernels::vecmath::{axpy, dot};
use crate::model::Model;
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

/// out (OC) = x (IC) @ w (IC, OC) [+ bias]: a sum of the rows of w weighted by x.
#[inline(always)]
fn matvec(out: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>) {
    match bias {
        Some(b) => out.copy_from_slice(b),
        None => out.fill(0.0),
    }
    let oc = out.len();
    for (&xi, row) in x.iter().zip(w.chunks_exact(oc)) {
        axpy(out, xi, row);
    }
}

/// Keys and values of every layer for the positions seen so far, plus per-token scratch.
pub struct DecodeState {
    /// (L, P, C) each.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Number of cached positions.
    len: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    att_y: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    ff_act: Vec<f32>,
    scores: Vec<f32>,
    pub logits: Vec<f32>,
}

impl DecodeState {
    pub fn new(model: &Model) -> DecodeState {
        let cfg = &model.config;
        let (l, p, c, f, v) = (
            cfg.n_layers,
            cfg.max_seq_len,
            cfg.d_model,
            cfg.d_ff,
            cfg.vocab_size,
        );
        DecodeState {
            keys: vec![0.0; l * p * c],
            values: vec![0.0; l * p * c],
            len: 0,
            x: vec![0.0; c],
            h: vec![0.0; c],
            q: vec![0.0; c],
            att_y: vec![0.0; c],
            proj: vec![0.0; c],
            ff: vec![0.0; f],
            ff_act: vec![0.0; f],
            scores: vec![0.0; p],
            logits: vec![0.0; v],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds one token at the next position; computes the logits only if `want_logits`.
    /// The id must be below V and the cache must not be full.
    pub fn push(&mut self, model: &Model, token: u32, want_logits: bool) {
        decode_step(self, model, token, want_logits);
    }
}

simd_fn! {
    fn decode_step(state: &mut DecodeState, model: &Model, token: u32, want_logits: bool) {
        state.step(model, token, want_logits);
    }
}

impl DecodeState {
    #[inline(always)]
    fn step(&mut self, model: &Model, token: u32, want_logits: bool) {
        let cfg = &model.config;
        let lay = &model.layout;
        let prm = &model.params;
        let (c, f, v, h, p) = (
            cfg.d_model,
            cfg.d_ff,
            cfg.vocab_size,
            cfg.n_heads,
            cfg.max_seq_len,
        );
        let d = c / h;
        let pos = self.len;
        assert!(pos < p, "decode cache is full");
        let scale = 1.0 / (d as f32).sqrt();
        let tok = &prm[lay.token_embed + token as usize * c..][..c];
        let pe = &prm[lay.pos_embed + pos * c..][..c];
        for ((x, a), b) in self.x.iter_mut().zip(tok).zip(pe) {
            *x = a + b;
        }
        for (l, blk) in lay.blocks.iter().enumerate() {
            layernorm_row(
                &mut self.h,
                &self.x,
                &prm[blk.norm1_weight..][..c],
                &prm[blk.norm1_bias..][..c],
                cfg.eps,
            );
            let bias = |i: usize| blk.attn_bias.as_ref().map(|b| &prm[b[i]..][..c]);
            let cache_row = (l * p + pos) * c;
            matvec(
                &mut self.q,
                &self.h,
                &prm[blk.attn_weight[0]..][..c * c],
                bias(0),
            );
            matvec(
                &mut self.keys[cache_row..][..c],
                &self.h,
                &prm[blk.attn_weight[1]..][..c * c],
                bias(1),
            );
            matvec(
                &mut self.values[cache_row..][..c],
                &self.h,
                &prm[blk.attn_weight[2]..][..c * c],
                bias(2),
            );
            let keys = &self.keys[l * p * c..][..(pos + 1) * c];
            let values = &self.values[l * p * c..][..(pos + 1) * c];
            for head in 0..h {
                let q = &self.q[head * d..][..d];
                let scores = &mut self.scores[..=pos];
                for (s, score) in scores.iter_mut().enumerate() {
                    *score = dot(q, &keys[s * c + head * d..][..d]) * scale;
                }
                softmax_in_place(scores);
                let y = &mut self.att_y[head * d..][..d];
                y.fill(0.0);
                for (s, &ps) in scores.iter().enumerate() {
                    axpy(y, ps, &values[s * c + head * d..][..d]);
                }
            }
            matvec(
                &mut self.proj,
                &self.att_y,
                &prm[blk.attn_weight[3]..][..c * c],
                bias(3),
            );
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
            layernorm_row(
                &mut self.h,
                &self.x,
                &prm[blk.norm2_weight..][..c],
                &prm[blk.norm2_bias..][..c],
                cfg.eps,
            );
            matvec(
                &mut self.ff,
                &self.h,
                &prm[blk.ff1_weight..][..c * f],
                Some(&prm[blk.ff1_bias..][..f]),
            );
            gelu_forward_chunk(&mut self.ff_act, &self.ff);
            matvec(
                &mut self.proj,
                &self.ff_act,
                &prm[blk.ff2_weight..][..f * c],
                Some(&prm[blk.ff2_bias..][..c]),
            );
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
        }
        self.len += 1;
        if want_logits {
            layernorm_row(
                &mut self.h,
                &self.x,
                &prm[lay.ln_f_weight..][..c],
                &prm[lay.ln_f_bias..][..c],
                cfg.eps,
            );
            let head = &prm[lay.lm_head..][..v * c];
            for (logit, row) in self.logits.iter_mut().zip(head.chunks_exact(c)) {
                *logit = dot(&self.h, row);
            }
        }
    }
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
    mut on_token: impl FnMut(u32) -> bool,
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
    let mut state = DecodeState::new(model);
    let mut tokens: Vec<u32> = prompt[window_start..].to_vec();
    let mut new_tokens = Vec::with_capacity(opts.max_new_tokens.min(1 << 16));
    if opts.max_new_tokens == 0 {
        return Ok(new_tokens);
    }
    for (i, &tok) in tokens.iter().enumerate() {
        state.push(model, tok, i + 1 == tokens.len());
    }
    loop {
        let next = sampler.sample(&state.logits);
        new_tokens.push(next);
        if new_tokens.len() == opts.max_new_tokens || opts.stop.contains(&next) || !on_token(next) {
            break;
        }
        tokens.push(next);
        if state.len() < context {
            state.push(model, next, true);
        } else {
            // The window slides by one: positions change, so the cache is rebuilt.
            let window = &tokens[tokens.len() - context..];
            state.clear();
            for (i, &tok) in window.iter().enumerate() {
                state.push(model, tok, i + 1 == window.len());
            }
        }
        if tokens.len() > 2 * context {
            tokens.drain(..tokens.len() - context);
        }
    }
    Ok(new_tokens)
}
