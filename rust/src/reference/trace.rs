//! Every activation of one forward pass on the reference path, by name, with its shape,
//! its formula and the function that computed it: what `Transformer.trace` returns and
//! `tinylm explain` prints. This file is the one table of those names and sources.
//!
//! Names (l is the block, shapes for ids (B, T)):
//!
//! | name | shape | formula |
//! |---|---|---|
//! | `embed.token` | (B, T, C) | `token_embed[ids]` |
//! | `embed.position` | (B, T, C) | `pos_embed[t]` (learned positions only) |
//! | `blocks.l.x` | (B, T, C) | the residual stream entering block l |
//! | `blocks.l.norm1` (`.mean`, `.rstd`) | (B, T, C) ((B, T)) | norm1(x) |
//! | `blocks.l.q_lin`, `.k_lin` | (B, T, H, D), (B, T, K, D) | a W_q + b_q, a W_k + b_k (RoPE only) |
//! | `blocks.l.q`, `.k`, `.v` | (B, T, H, D), (B, T, K, D) | the projections (rotated with RoPE) |
//! | `blocks.l.att_scores` | (B, H, T, T) | S = q k^T / sqrt(D), before the causal mask |
//! | `blocks.l.att` | (B, H, T, T) | P = softmax of S over s <= t |
//! | `blocks.l.y` | (B, T, C) | P v, heads side by side |
//! | `blocks.l.attn_out` | (B, T, C) | y W_o + b_o |
//! | `blocks.l.x_mid` | (B, T, C) | x + attn_out |
//! | `blocks.l.norm2` (`.mean`, `.rstd`) | (B, T, C) ((B, T)) | norm2(x_mid) |
//! | `blocks.l.gate` | (B, T, F) | m W_gate + b_gate (gated activations only) |
//! | `blocks.l.up` | (B, T, F) | m W_up + b_up |
//! | `blocks.l.hidden` | (B, T, F) | act(up), or act(gate) * up |
//! | `blocks.l.ff_out` | (B, T, C) | hidden W_down + b_down |
//! | `x_final` | (B, T, C) | x_mid + ff_out of the last block |
//! | `norm_f` (`.mean`, `.rstd`) | (B, T, C) ((B, T)) | norm_f(x_final) |
//! | `logits` | (B, T, V) | norm_f W_head^T |
//! | `probs` | (B, T, V) | softmax(logits): the next token's distribution |
//!
//! `.mean` exists for layer norms only (RMSNorm subtracts no mean).

use super::attention::attention_scores;
use super::embedding::embedding_forward;
use super::model::{forward, linear, positions, Normed, Weights};
use super::softmax::softmax_forward;
use crate::config::{Norm, Position};

/// A function of the reference path: its file (from the repository's root) and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    pub file: &'static str,
    pub function: &'static str,
}

impl Source {
    const fn at(file: &'static str, function: &'static str) -> Source {
        Source { file, function }
    }
}

const EMBEDDING: Source = Source::at("rust/src/reference/embedding.rs", "embedding_forward");
const LAYERNORM: Source = Source::at("rust/src/reference/layernorm.rs", "layernorm_forward");
const RMSNORM: Source = Source::at("rust/src/reference/rmsnorm.rs", "rmsnorm_forward");
const LINEAR: Source = Source::at("rust/src/reference/linear.rs", "linear_forward");
const HEAD: Source = Source::at("rust/src/reference/linear.rs", "head_forward");
const ROPE: Source = Source::at("rust/src/reference/rope.rs", "rope_forward");
const SCORES: Source = Source::at("rust/src/reference/attention.rs", "attention_scores");
const ATTENTION: Source = Source::at("rust/src/reference/attention.rs", "attention_forward");
const ACTIVATION: Source = Source::at("rust/src/reference/activation.rs", "activation_forward");
const SOFTMAX: Source = Source::at("rust/src/reference/softmax.rs", "softmax_forward");
const MODEL: Source = Source::at("rust/src/reference/model.rs", "forward");
const BLOCK: Source = Source::at("rust/src/reference/model.rs", "block_forward");

/// Every [`Source`] a trace can name, for tests that check each function exists.
pub const SOURCES: [Source; 12] = [
    EMBEDDING, LAYERNORM, RMSNORM, LINEAR, HEAD, ROPE, SCORES, ATTENTION, ACTIVATION, SOFTMAX,
    MODEL, BLOCK,
];

/// One activation: its name, shape, values (row-major), formula and source.
#[derive(Debug, Clone)]
pub struct Traced {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
    pub formula: &'static str,
    pub source: Source,
}

/// Number of f32 values a trace of a (B, T) pass holds beyond [`super::model::forward`]'s
/// own activations (token and position rows, scores, two projections, probabilities).
pub fn extra_floats_needed(config: &crate::config::Config, b: usize, t: usize) -> u128 {
    let (b, t) = (b as u128, t as u128);
    let (c, h, v) = (
        config.d_model as u128,
        config.n_heads as u128,
        config.vocab_size as u128,
    );
    let per_block = b * h * t * t + 2 * b * t * c;
    config.n_layers as u128 * per_block + b * t * (2 * c + v)
}

struct Tracer {
    out: Vec<Traced>,
}

impl Tracer {
    fn push(
        &mut self,
        name: String,
        shape: &[usize],
        data: Vec<f32>,
        formula: &'static str,
        source: Source,
    ) {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        self.out.push(Traced {
            name,
            shape: shape.to_vec(),
            data,
            formula,
            source,
        });
    }

    /// A norm's output, and its saved mean (layer norm only) and rstd.
    fn norm(&mut self, name: &str, normed: Normed, norm: Norm, bt: [usize; 2], c: usize) {
        let (source, formula) = match norm {
            Norm::LayerNorm => (LAYERNORM, "(x - mean) * rstd * weight + bias"),
            Norm::RmsNorm => (RMSNORM, "x * rstd * weight"),
        };
        self.push(
            name.to_string(),
            &[bt[0], bt[1], c],
            normed.out,
            formula,
            source,
        );
        if norm == Norm::LayerNorm {
            let formula = "mean of each row of x";
            self.push(format!("{name}.mean"), &bt, normed.mean, formula, source);
        }
        let formula = match norm {
            Norm::LayerNorm => "1 / sqrt(var + eps) of each row of x",
            Norm::RmsNorm => "1 / sqrt(mean(x^2) + eps) of each row of x",
        };
        self.push(format!("{name}.rstd"), &bt, normed.rstd, formula, source);
    }
}

/// The forward pass on ids (B, T) (checked by the caller: ids below V, T at most P with
/// learned positions), every activation named, in the order the pass computes them.
pub fn trace(w: Weights, ids: &[u32], b: usize, t: usize) -> Vec<Traced> {
    let cfg = w.config;
    let lay = w.layout;
    let (c, f, v) = (cfg.d_model, cfg.d_ff, cfg.vocab_size);
    let (h, k, d) = (cfg.n_heads, cfg.kv_heads(), cfg.head_dim());
    let n = b * t;
    let acts = forward(w, ids, b, t);
    let mut tr = Tracer { out: Vec::new() };

    let mut tokens = vec![0.0; n * c];
    embedding_forward(&mut tokens, ids, lay.token_embed.of(w.params), c);
    tr.push(
        "embed.token".into(),
        &[b, t, c],
        tokens,
        "token_embed[ids]: one row per token",
        EMBEDDING,
    );
    if let Some(pos_embed) = lay.pos_embed {
        let mut rows = vec![0.0; n * c];
        embedding_forward(&mut rows, &positions(b, t), pos_embed.of(w.params), c);
        tr.push(
            "embed.position".into(),
            &[b, t, c],
            rows,
            "pos_embed[t]: one row per position",
            EMBEDDING,
        );
    }
    let rope = cfg.position == Position::Rope;
    let shape = super::attention::AttentionShape { b, t, h, k, d };
    for (l, (a, p)) in acts.blocks.into_iter().zip(&lay.blocks).enumerate() {
        let name = |field: &str| format!("blocks.{l}.{field}");
        let (x_source, x_formula) = if l == 0 {
            (MODEL, "token rows + position rows: the residual stream")
        } else {
            (BLOCK, "the previous block's output: the residual stream")
        };
        let attn_out = linear(w, &a.y, p.w_o, p.b_o, c);
        let ff_out = linear(w, &a.hidden, p.w_down, p.b_down, f);
        let mut scores = vec![0.0; b * h * t * t];
        attention_scores(&mut scores, &a.q, &a.k, shape);
        tr.push(name("x"), &[b, t, c], a.x, x_formula, x_source);
        tr.norm(&name("norm1"), a.norm1, cfg.norm, [b, t], c);
        if rope {
            tr.push(name("q_lin"), &[b, t, h, d], a.q_lin, "a W_q + b_q", LINEAR);
            tr.push(name("k_lin"), &[b, t, k, d], a.k_lin, "a W_k + b_k", LINEAR);
            let formula = "q_lin rotated by its position (RoPE)";
            tr.push(name("q"), &[b, t, h, d], a.q, formula, ROPE);
            let formula = "k_lin rotated by its position (RoPE)";
            tr.push(name("k"), &[b, t, k, d], a.k, formula, ROPE);
        } else {
            tr.push(name("q"), &[b, t, h, d], a.q, "a W_q + b_q", LINEAR);
            tr.push(name("k"), &[b, t, k, d], a.k, "a W_k + b_k", LINEAR);
        }
        tr.push(name("v"), &[b, t, k, d], a.v, "a W_v + b_v", LINEAR);
        let formula = "S = q k^T / sqrt(D), before the causal mask";
        tr.push(name("att_scores"), &[b, h, t, t], scores, formula, SCORES);
        let formula = "P = softmax of S[t] over s <= t (zero above the diagonal)";
        tr.push(name("att"), &[b, h, t, t], a.att, formula, ATTENTION);
        let formula = "P v, the heads side by side";
        tr.push(name("y"), &[b, t, c], a.y, formula, ATTENTION);
        tr.push(
            name("attn_out"),
            &[b, t, c],
            attn_out,
            "y W_o + b_o",
            LINEAR,
        );
        tr.push(name("x_mid"), &[b, t, c], a.x_mid, "x + attn_out", BLOCK);
        tr.norm(&name("norm2"), a.norm2, cfg.norm, [b, t], c);
        if !a.gate.is_empty() {
            tr.push(
                name("gate"),
                &[b, t, f],
                a.gate,
                "m W_gate + b_gate",
                LINEAR,
            );
        }
        tr.push(name("up"), &[b, t, f], a.up, "m W_up + b_up", LINEAR);
        let formula = if cfg.activation.is_gated() {
            "act(gate) * up"
        } else {
            "act(up)"
        };
        tr.push(name("hidden"), &[b, t, f], a.hidden, formula, ACTIVATION);
        tr.push(
            name("ff_out"),
            &[b, t, c],
            ff_out,
            "hidden W_down + b_down",
            LINEAR,
        );
    }
    let formula = "x_mid + ff_out of the last block";
    tr.push("x_final".into(), &[b, t, c], acts.x_final, formula, BLOCK);
    tr.norm("norm_f", acts.norm_f, cfg.norm, [b, t], c);
    let mut probs = vec![0.0; n * v];
    for (p, z) in probs.chunks_exact_mut(v).zip(acts.logits.chunks_exact(v)) {
        softmax_forward(p, z);
    }
    let formula = "norm_f W_head^T: a score per vocabulary entry";
    tr.push("logits".into(), &[b, t, v], acts.logits, formula, HEAD);
    let formula = "softmax(logits): the next token's probabilities";
    tr.push("probs".into(), &[b, t, v], probs, formula, SOFTMAX);
    tr.out
}
