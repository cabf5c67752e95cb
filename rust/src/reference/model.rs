//! The whole model on the reference path: a forward pass that keeps every activation by
//! name, and the backward pass that walks them in reverse. It reads the same flat parameter
//! buffer as the fast path, through the same [`ParamLayout`].
//!
//! 1. Embedding: x = `token_embed[id]` (+ `pos_embed[t]` with learned positions)  (N, C)
//!    (training passes with dropout: x = drop(x), and drop() around each block's
//!    attention probabilities, y W_o + b_o and hidden W_down + b_down, the masks of
//!    [`crate::dropout`])
//! 2. Each block:
//!    attention: a = norm1(x); q, k, v = a W_q, a W_k, a W_v (+ biases), rotated by RoPE
//!    if asked; y = causal attention of q over k, v; x_mid = x + y W_o (+ b_o)
//!    feed-forward: m = norm2(x_mid); u = m W_up (g = m W_gate if gated);
//!    hidden = act(u) (or act(g) * u); x_out = x_mid + hidden W_down (+ b_down)
//! 3. Output head: logits = norm_f(x) W_head^T                                     (N, V)
//! 4. Loss: mean cross-entropy of softmax(logits) against the next tokens.
//!
//! Letters: B batch, T sequence, N = B T rows, C d_model, H heads, K key/value heads,
//! D head size, F d_ff, V vocab.

use super::activation::{activation_backward, activation_forward};
use super::attention::{attention_backward, attention_forward, dropout_mask, AttentionShape};
use super::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use super::embedding::{embedding_backward, embedding_forward};
use super::layernorm::{layernorm_backward, layernorm_forward};
use super::linear::{head_backward, head_forward, linear_backward, linear_forward};
use super::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::rope::{rope_backward, rope_forward};
use crate::config::{Config, Norm, Position};
use crate::dropout::{site_attn, site_mlp, Dropout, SITE_EMBED};
use crate::params::{BlockParams, NormParams, ParamLayout, Span};

/// A model's configuration, layout and parameters: what the reference path reads.
#[derive(Clone, Copy)]
pub struct Weights<'a> {
    pub config: &'a Config,
    pub layout: &'a ParamLayout,
    pub params: &'a [f32],
}

/// The output of a norm (N, C) and what its backward pass needs: mean (N, layer norm
/// only) and rstd (N).
#[derive(Debug, Clone, Default)]
pub struct Normed {
    pub out: Vec<f32>,
    pub mean: Vec<f32>,
    pub rstd: Vec<f32>,
}

/// Everything one block computed, by name (see the module's list).
#[derive(Debug, Clone, Default)]
pub struct BlockActivations {
    /// (N, C) the block's input.
    pub x: Vec<f32>,
    pub norm1: Normed,
    /// (N, C), (N, K D), (N, K D): the projections, before the rotation.
    pub q_lin: Vec<f32>,
    pub k_lin: Vec<f32>,
    pub v: Vec<f32>,
    /// (N, C), (N, K D): q and k as attention sees them (rotated with RoPE).
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    /// (B, H, T, T) attention probabilities (before the dropout).
    pub att: Vec<f32>,
    /// (B, H, T, T) the dropout mask of the attention probabilities (training passes with
    /// dropout only, else empty).
    pub att_mask: Vec<f32>,
    /// (N, C) attention output, heads side by side, before W_o.
    pub y: Vec<f32>,
    /// (N, C) the residual stream after attention.
    pub x_mid: Vec<f32>,
    pub norm2: Normed,
    /// (N, F) the gate's input (gated activations only, else empty), the up projection
    /// and the activation's output.
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub hidden: Vec<f32>,
}

/// Every activation of a forward pass, and the loss once [`loss`] computed it.
#[derive(Debug, Clone, Default)]
pub struct Activations {
    pub b: usize,
    pub t: usize,
    /// (N) the input ids.
    pub ids: Vec<u32>,
    pub blocks: Vec<BlockActivations>,
    /// (N, C) the last block's output.
    pub x_final: Vec<f32>,
    pub norm_f: Normed,
    /// (N, V)
    pub logits: Vec<f32>,
    /// (N) targets, (N, V) softmax of the logits, (N) per-token losses: set by [`loss`].
    pub targets: Vec<u32>,
    pub probs: Vec<f32>,
    pub losses: Vec<f32>,
    /// The dropout of a training pass (None: no dropout), which the backward replays.
    pub dropout: Option<Dropout>,
}

/// Number of f32 values the activations of a (B, T) pass hold (u128: absurd shapes cannot
/// overflow), so that a caller can refuse a pass that would not fit in memory.
pub fn floats_needed(config: &Config, b: usize, t: usize) -> u128 {
    let (b, t) = (b as u128, t as u128);
    let n = b * t;
    let (c, f, v) = (
        config.d_model as u128,
        config.d_ff as u128,
        config.vocab_size as u128,
    );
    let (h, kd) = (config.n_heads as u128, config.kv_dim() as u128);
    // x, norm1, q_lin, q, y, x_mid, norm2 (N, C); k_lin, k, v (N, K D); gate, up, hidden.
    // att, and att_mask with dropout (B, H, T, T).
    let att_tensors = if config.dropout > 0.0 { 2 } else { 1 };
    let per_block = n * (7 * c + 3 * kd + 3 * f + 4) + att_tensors * b * h * t * t;
    config.n_layers as u128 * per_block + n * (2 * c + 3 * v + 3)
}

/// The position of each of the N rows: 0, 1, ..., T - 1 for each sequence.
pub(super) fn positions(b: usize, t: usize) -> Vec<u32> {
    (0..b * t).map(|i| (i % t) as u32).collect()
}

fn add(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Two disjoint tensors of one gradient buffer: a weight and the bias stored after it.
fn weight_and_bias(
    grads: &mut [f32],
    w: Span,
    b: Option<Span>,
) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        None => (w.of_mut(grads), None),
        Some(b) => {
            assert!(
                w.offset + w.len <= b.offset,
                "a bias is stored after its weight"
            );
            let (lo, hi) = grads.split_at_mut(b.offset);
            (&mut lo[w.range()], Some(&mut hi[..b.len]))
        }
    }
}

fn norm_forward(w: Weights, p: NormParams, x: &[f32]) -> Normed {
    let (c, n) = (w.config.d_model, x.len() / w.config.d_model);
    let mut normed = Normed {
        out: vec![0.0; n * c],
        mean: vec![0.0; n],
        rstd: vec![0.0; n],
    };
    let weight = p.weight.of(w.params);
    match (w.config.norm, p.bias) {
        (Norm::LayerNorm, Some(bias)) => {
            let out = &mut normed.out;
            let (mean, rstd) = (&mut normed.mean, &mut normed.rstd);
            layernorm_forward(
                out,
                mean,
                rstd,
                x,
                weight,
                bias.of(w.params),
                c,
                w.config.eps,
            );
        }
        _ => rmsnorm_forward(
            &mut normed.out,
            &mut normed.rstd,
            x,
            weight,
            c,
            w.config.eps,
        ),
    }
    normed
}

fn norm_backward(
    w: Weights,
    p: NormParams,
    dx: &mut [f32],
    d_out: &[f32],
    x: &[f32],
    normed: &Normed,
    grads: &mut [f32],
) {
    let c = w.config.d_model;
    let weight = p.weight.of(w.params);
    match weight_and_bias(grads, p.weight, p.bias) {
        (dw, Some(db)) => {
            layernorm_backward(dx, dw, db, d_out, x, weight, &normed.mean, &normed.rstd, c)
        }
        (dw, None) => rmsnorm_backward(dx, dw, d_out, x, weight, &normed.rstd, c),
    }
}

pub(super) fn linear(
    w: Weights,
    x: &[f32],
    weight: Span,
    bias: Option<Span>,
    i: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; x.len() / i * (weight.len / i)];
    linear_forward(
        &mut out,
        x,
        weight.of(w.params),
        bias.map(|b| b.of(w.params)),
        i,
    );
    out
}

#[allow(clippy::too_many_arguments)]
fn linear_grad(
    w: Weights,
    dx: &mut [f32],
    d_out: &[f32],
    x: &[f32],
    weight: Span,
    bias: Option<Span>,
    i: usize,
    grads: &mut [f32],
) {
    let (dw, db) = weight_and_bias(grads, weight, bias);
    linear_backward(dx, dw, db, d_out, x, weight.of(w.params), i);
}

impl Weights<'_> {
    fn attention_shape(&self, b: usize, t: usize) -> AttentionShape {
        let c = self.config;
        AttentionShape {
            b,
            t,
            h: c.n_heads,
            k: c.kv_heads(),
            d: c.head_dim(),
        }
    }

    /// RoPE's rotation of q (heads H) or k (heads K), or nothing with learned positions.
    fn rotate(&self, x: &[f32], t: usize, heads: usize) -> Vec<f32> {
        let c = self.config;
        if c.position != Position::Rope {
            return x.to_vec();
        }
        let mut out = vec![0.0; x.len()];
        rope_forward(&mut out, x, t, heads, c.head_dim(), c.rope_theta);
        out
    }
}

/// One block's forward pass on x (N, C); returns its activations and its output x_out.
fn block_forward(
    w: Weights,
    p: &BlockParams,
    x: Vec<f32>,
    b: usize,
    t: usize,
    layer: usize,
    dropout: Option<Dropout>,
) -> (BlockActivations, Vec<f32>) {
    let cfg = w.config;
    let (c, f) = (cfg.d_model, cfg.d_ff);
    let shape = w.attention_shape(b, t);
    // Attention half: x_mid = x + attention(norm1(x)) W_o + b_o.
    let norm1 = norm_forward(w, p.ln1, &x);
    let q_lin = linear(w, &norm1.out, p.w_q, p.b_q, c);
    let k_lin = linear(w, &norm1.out, p.w_k, p.b_k, c);
    let v = linear(w, &norm1.out, p.w_v, p.b_v, c);
    let q = w.rotate(&q_lin, t, shape.h);
    let k = w.rotate(&k_lin, t, shape.k);
    let mut y = vec![0.0; b * t * c];
    let mut att = vec![0.0; b * shape.h * t * t];
    let att_mask = match dropout {
        Some(d) => dropout_mask(&d.attention(layer, t, shape.h), shape),
        None => Vec::new(),
    };
    let mask = dropout.map(|_| &att_mask[..]);
    attention_forward(&mut y, &mut att, &q, &k, &v, mask, shape);
    let mut x_mid = linear(w, &y, p.w_o, p.b_o, c);
    if let Some(d) = dropout {
        d.apply(&mut x_mid, site_attn(layer), c);
    }
    add(&mut x_mid, &x);
    // Feed-forward half: x_out = x_mid + act(norm2(x_mid) W_up (, W_gate)) W_down + b_down.
    let norm2 = norm_forward(w, p.ln2, &x_mid);
    let up = linear(w, &norm2.out, p.w_up, p.b_up, c);
    let gate = match p.w_gate {
        Some(w_gate) => linear(w, &norm2.out, w_gate, p.b_gate, c),
        None => Vec::new(),
    };
    let mut hidden = vec![0.0; up.len()];
    activation_forward(cfg.activation, &mut hidden, &gate, &up);
    let mut x_out = linear(w, &hidden, p.w_down, p.b_down, f);
    if let Some(d) = dropout {
        d.apply(&mut x_out, site_mlp(layer), c);
    }
    add(&mut x_out, &x_mid);
    let acts = BlockActivations {
        x,
        norm1,
        q_lin,
        k_lin,
        v,
        q,
        k,
        att,
        att_mask,
        y,
        x_mid,
        norm2,
        gate,
        up,
        hidden,
    };
    (acts, x_out)
}

/// The forward pass on ids (B, T), every id below V and T at most P with learned positions.
pub fn forward(w: Weights, ids: &[u32], b: usize, t: usize) -> Activations {
    forward_train(w, ids, b, t, None)
}

/// The forward pass of training, with `dropout`'s masks (None: the same as [`forward`]).
pub fn forward_train(
    w: Weights,
    ids: &[u32],
    b: usize,
    t: usize,
    dropout: Option<Dropout>,
) -> Activations {
    let (n, c) = (b * t, w.config.d_model);
    let lay = w.layout;
    let mut x = vec![0.0; n * c];
    embedding_forward(&mut x, ids, lay.token_embed.of(w.params), c);
    if let Some(pos_embed) = lay.pos_embed {
        let mut pos = vec![0.0; n * c];
        embedding_forward(&mut pos, &positions(b, t), pos_embed.of(w.params), c);
        add(&mut x, &pos);
    }
    if let Some(d) = dropout {
        d.apply(&mut x, SITE_EMBED, c);
    }
    let mut blocks = Vec::with_capacity(lay.blocks.len());
    for (layer, p) in lay.blocks.iter().enumerate() {
        let (acts, x_out) = block_forward(w, p, x, b, t, layer, dropout);
        blocks.push(acts);
        x = x_out;
    }
    let norm_f = norm_forward(w, lay.ln_f, &x);
    let mut logits = vec![0.0; n * w.config.vocab_size];
    head_forward(&mut logits, &norm_f.out, lay.lm_head.of(w.params), c);
    Activations {
        b,
        t,
        ids: ids.to_vec(),
        blocks,
        x_final: x,
        norm_f,
        logits,
        dropout,
        ..Default::default()
    }
}

/// The cross-entropy of the logits against targets (N): saves the softmax and the
/// per-token losses, returns their sum (in f64).
pub fn loss(acts: &mut Activations, targets: &[u32]) -> f64 {
    let n = acts.b * acts.t;
    let v = acts.logits.len() / n;
    acts.targets = targets.to_vec();
    acts.probs = vec![0.0; n * v];
    acts.losses = vec![0.0; n];
    cross_entropy_forward(&mut acts.losses, &mut acts.probs, &acts.logits, targets, v);
    acts.losses.iter().map(|&l| l as f64).sum()
}

/// One block's backward pass: d_x holds the gradient of the block's output and becomes
/// (the output feeds the residual stream unchanged) the gradient of its input.
#[allow(clippy::too_many_arguments)]
fn block_backward(
    w: Weights,
    p: &BlockParams,
    a: &BlockActivations,
    d_x: &mut Vec<f32>,
    b: usize,
    t: usize,
    layer: usize,
    dropout: Option<Dropout>,
    grads: &mut [f32],
) {
    let cfg = w.config;
    let (c, f, kd) = (cfg.d_model, cfg.d_ff, cfg.kv_dim());
    let (n, shape) = (b * t, w.attention_shape(b, t));
    // x_out = x_mid + drop(hidden W_down + b_down): d_x_mid = d_x_out + (that term's
    // gradient); the dropped branch's gradient is d_x_out times the mask.
    let mut d_x_mid = d_x.clone();
    let mut d_branch = d_x.clone();
    if let Some(d) = dropout {
        d.apply(&mut d_branch, site_mlp(layer), c);
    }
    let mut d_hidden = vec![0.0; n * f];
    linear_grad(
        w,
        &mut d_hidden,
        &d_branch,
        &a.hidden,
        p.w_down,
        p.b_down,
        f,
        grads,
    );
    // hidden = act(up) or act(gate) * up.
    let (mut d_up, mut d_gate) = (vec![0.0; n * f], vec![0.0; a.gate.len()]);
    activation_backward(
        cfg.activation,
        &mut d_gate,
        &mut d_up,
        &d_hidden,
        &a.gate,
        &a.up,
    );
    // up = norm2 W_up + b_up, gate = norm2 W_gate + b_gate.
    let mut d_norm2 = vec![0.0; n * c];
    linear_grad(
        w,
        &mut d_norm2,
        &d_up,
        &a.norm2.out,
        p.w_up,
        p.b_up,
        c,
        grads,
    );
    if let Some(w_gate) = p.w_gate {
        linear_grad(
            w,
            &mut d_norm2,
            &d_gate,
            &a.norm2.out,
            w_gate,
            p.b_gate,
            c,
            grads,
        );
    }
    norm_backward(w, p.ln2, &mut d_x_mid, &d_norm2, &a.x_mid, &a.norm2, grads);
    // x_mid = x + drop(y W_o + b_o).
    let mut d_x_in = d_x_mid.clone();
    if let Some(d) = dropout {
        d.apply(&mut d_x_mid, site_attn(layer), c);
    }
    let mut d_y = vec![0.0; n * c];
    linear_grad(w, &mut d_y, &d_x_mid, &a.y, p.w_o, p.b_o, c, grads);
    // y = attention(q, k, v), with the dropout of its probabilities.
    let (mut d_q, mut d_k, mut d_v) = (vec![0.0; n * c], vec![0.0; n * kd], vec![0.0; n * kd]);
    let mask = dropout.map(|_| &a.att_mask[..]);
    attention_backward(
        &mut d_q, &mut d_k, &mut d_v, &d_y, &a.q, &a.k, &a.v, &a.att, mask, shape,
    );
    // q = rope(q_lin), k = rope(k_lin).
    if cfg.position == Position::Rope {
        let (mut d_q_lin, mut d_k_lin) = (vec![0.0; n * c], vec![0.0; n * kd]);
        rope_backward(&mut d_q_lin, &d_q, t, shape.h, shape.d, cfg.rope_theta);
        rope_backward(&mut d_k_lin, &d_k, t, shape.k, shape.d, cfg.rope_theta);
        (d_q, d_k) = (d_q_lin, d_k_lin);
    }
    // q_lin = norm1 W_q + b_q, likewise k and v.
    let mut d_norm1 = vec![0.0; n * c];
    linear_grad(w, &mut d_norm1, &d_q, &a.norm1.out, p.w_q, p.b_q, c, grads);
    linear_grad(w, &mut d_norm1, &d_k, &a.norm1.out, p.w_k, p.b_k, c, grads);
    linear_grad(w, &mut d_norm1, &d_v, &a.norm1.out, p.w_v, p.b_v, c, grads);
    norm_backward(w, p.ln1, &mut d_x_in, &d_norm1, &a.x, &a.norm1, grads);
    *d_x = d_x_in;
}

/// The gradient of dloss times the summed loss of the last [`loss`] call, added into
/// `grads` (laid out like the parameters). dloss = 1 / N gives the gradient of the mean.
pub fn backward(w: Weights, acts: &Activations, dloss: f32, grads: &mut [f32]) {
    let (b, t) = (acts.b, acts.t);
    let (n, c, v) = (b * t, w.config.d_model, w.config.vocab_size);
    let lay = w.layout;
    // loss = cross-entropy(logits, targets).
    let mut d_logits = vec![0.0; n * v];
    cross_entropy_backward(&mut d_logits, &acts.probs, &acts.targets, dloss, v);
    // logits = norm_f W_head^T.
    let mut d_norm_f = vec![0.0; n * c];
    let head = lay.lm_head.of(w.params);
    head_backward(
        &mut d_norm_f,
        lay.lm_head.of_mut(grads),
        &d_logits,
        &acts.norm_f.out,
        head,
        c,
    );
    let mut d_x = vec![0.0; n * c];
    norm_backward(
        w,
        lay.ln_f,
        &mut d_x,
        &d_norm_f,
        &acts.x_final,
        &acts.norm_f,
        grads,
    );
    for (layer, (p, a)) in lay.blocks.iter().zip(&acts.blocks).enumerate().rev() {
        block_backward(w, p, a, &mut d_x, b, t, layer, acts.dropout, grads);
    }
    // x = drop(token_embed[id] + pos_embed[t]).
    if let Some(d) = acts.dropout {
        d.apply(&mut d_x, SITE_EMBED, c);
    }
    embedding_backward(lay.token_embed.of_mut(grads), &d_x, &acts.ids, c);
    if let Some(pos_embed) = lay.pos_embed {
        embedding_backward(pos_embed.of_mut(grads), &d_x, &positions(b, t), c);
    }
}
