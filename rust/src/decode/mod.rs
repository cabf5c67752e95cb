//! One position at a time: the model's forward pass for a single new token, with a
//! key/value cache holding the keys and values of the earlier positions.
//!
//! A token costs one matrix-vector product per weight matrix, and at batch size one these
//! products are bound by how fast the weights stream in from the caches or from memory.
//! So they read weights repacked into panels that stream front to back ([`panels`]), and
//! a [`Team`] of two threads takes half of the panels of each product, and half of the
//! attention heads, each. Every output is computed whole by one thread, so the results
//! are the same with or without the helper.

pub mod panels;
pub mod team;

pub use panels::{DecodeCache, PackedWeights};
pub use team::{with_team, Team};

use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::layernorm::layernorm_row;
use crate::kernels::simd::simd_fn;
use crate::kernels::softmax::softmax_in_place;
use crate::kernels::vecmath::{axpy, dot};
use crate::model::Model;
use team::both;

/// Attention over fewer (positions x d_model) multiply-adds than this is not split.
const SPLIT_ATTENTION: usize = 4 * 1024;
/// An output head with fewer multiply-adds than this is not split.
const SPLIT_HEAD: usize = 16 * 1024;

simd_fn! {
    /// out[r] = x . rows[r]: products with a matrix stored [out][in] (the output head).
    fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(x.len())) {
            *o = dot(x, row);
        }
    }
}

simd_fn! {
    /// Causal attention of one query over the cached positions, for a run of heads.
    /// q and y are (heads * D), the heads' part of the query and of the output; keys and
    /// values are (S, C) rows, head `head0 + i` in columns (head0 + i) D..; scores (S).
    /// y = softmax(q k^T / sqrt(D)) v per head.
    fn attend(y: &mut [f32], scores: &mut [f32], q: &[f32], keys: &[f32], values: &[f32], c: usize, d: usize, head0: usize) {
        let scale = 1.0 / (d as f32).sqrt();
        for (i, (yh, qh)) in y.chunks_exact_mut(d).zip(q.chunks_exact(d)).enumerate() {
            let col = (head0 + i) * d;
            for (score, key) in scores.iter_mut().zip(keys.chunks_exact(c)) {
                *score = dot(qh, &key[col..col + d]) * scale;
            }
            softmax_in_place(scores);
            yh.fill(0.0);
            for (&p, value) in scores.iter().zip(values.chunks_exact(c)) {
                axpy(yh, p, &value[col..col + d]);
            }
        }
    }
}

fn add_bias(out: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (o, b) in out.iter_mut().zip(bias) {
            *o += b;
        }
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
    /// (3C): q, k, v side by side.
    qkv: Vec<f32>,
    att_y: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    ff_act: Vec<f32>,
    ff_tanh: Vec<f32>,
    /// (P) attention scores of the calling thread's heads, and of the helper's.
    scores: Vec<f32>,
    helper_scores: Vec<f32>,
    /// (V) logits of the last position pushed with `want_logits`.
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
            qkv: vec![0.0; 3 * c],
            att_y: vec![0.0; c],
            proj: vec![0.0; c],
            ff: vec![0.0; f],
            ff_act: vec![0.0; f],
            ff_tanh: vec![0.0; f],
            scores: vec![0.0; p],
            helper_scores: vec![0.0; p],
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
    /// `packed` are the model's packed weights ([`Model::decode_weights`]). The id must be
    /// below V and the cache must not be full.
    pub fn push(
        &mut self,
        model: &Model,
        packed: &PackedWeights,
        team: Option<&Team>,
        token: u32,
        want_logits: bool,
    ) {
        decode_step(self, model, packed, team, token, want_logits);
    }
}

simd_fn! {
    fn decode_step(state: &mut DecodeState, model: &Model, packed: &PackedWeights, team: Option<&Team>, token: u32, want_logits: bool) {
        state.step(model, packed, team, token, want_logits);
    }
}

impl DecodeState {
    /// x = token_embed[token] + pos_embed[pos]; each block: x += attn(LN1(x)),
    /// x += ffn(LN2(x)), with this position's key and value appended to the cache;
    /// logits = LN_f(x) lm_head^T.
    #[inline(always)]
    fn step(
        &mut self,
        model: &Model,
        packed: &PackedWeights,
        team: Option<&Team>,
        token: u32,
        want_logits: bool,
    ) {
        let cfg = &model.config;
        let lay = &model.layout;
        let prm = model.params();
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
        let tok = &prm[lay.token_embed + token as usize * c..][..c];
        let pe = &prm[lay.pos_embed + pos * c..][..c];
        for ((x, a), b) in self.x.iter_mut().zip(tok).zip(pe) {
            *x = a + b;
        }
        for (l, (blk, mats)) in lay.blocks.iter().zip(&packed.blocks).enumerate() {
            let norm1 = (&prm[blk.norm1_weight..][..c], &prm[blk.norm1_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm1.0, norm1.1, cfg.eps);
            // [q | k | v] = h @ [W_q | W_k | W_v] (+ biases); k and v go into the cache.
            mats.qkv.matvec(team, &mut self.qkv, &self.h);
            if let Some(bias) = &blk.attn_bias {
                for (i, part) in self.qkv.chunks_exact_mut(c).enumerate() {
                    add_bias(part, Some(&prm[bias[i]..][..c]));
                }
            }
            let cache_row = (l * p + pos) * c;
            self.keys[cache_row..][..c].copy_from_slice(&self.qkv[c..2 * c]);
            self.values[cache_row..][..c].copy_from_slice(&self.qkv[2 * c..]);
            // Attention over positions 0..=pos; the helper takes the second half of the heads.
            let keys = &self.keys[l * p * c..][..(pos + 1) * c];
            let values = &self.values[l * p * c..][..(pos + 1) * c];
            let scores = &mut self.scores[..=pos];
            let helper_scores = &mut self.helper_scores[..=pos];
            let heads_first = if h >= 2 && (pos + 1) * c >= SPLIT_ATTENTION {
                h / 2
            } else {
                h
            };
            let (y_first, y_second) = self.att_y.split_at_mut(heads_first * d);
            let (q_first, q_second) = self.qkv[..c].split_at(heads_first * d);
            both(
                team,
                || {
                    attend(
                        y_second,
                        helper_scores,
                        q_second,
                        keys,
                        values,
                        c,
                        d,
                        heads_first,
                    )
                },
                || attend(y_first, scores, q_first, keys, values, c, d, 0),
            );
            let bias_o = blk.attn_bias.as_ref().map(|b| &prm[b[3]..][..c]);
            mats.proj.matvec(team, &mut self.proj, &self.att_y);
            add_bias(&mut self.proj, bias_o);
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
            let norm2 = (&prm[blk.norm2_weight..][..c], &prm[blk.norm2_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm2.0, norm2.1, cfg.eps);
            mats.ff1.matvec(team, &mut self.ff, &self.h);
            add_bias(&mut self.ff, Some(&prm[blk.ff1_bias..][..f]));
            gelu_forward_chunk(&mut self.ff_act, &mut self.ff_tanh, &self.ff);
            mats.ff2.matvec(team, &mut self.proj, &self.ff_act);
            add_bias(&mut self.proj, Some(&prm[blk.ff2_bias..][..c]));
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
        }
        self.len += 1;
        if want_logits {
            let norm_f = (&prm[lay.ln_f_weight..][..c], &prm[lay.ln_f_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm_f.0, norm_f.1, cfg.eps);
            // logits = h @ lm_head^T, lm_head (V, C) stored [out][in]: one dot product per
            // row, each computed by one thread, so any cut gives the same numbers.
            let head = &prm[lay.lm_head..][..v * c];
            let cut = if v >= 16 && v * c >= SPLIT_HEAD {
                v / 2
            } else {
                v
            };
            let (first, second) = self.logits.split_at_mut(cut);
            let x = &self.h;
            both(
                team,
                || dot_rows(second, x, &head[cut * c..]),
                || dot_rows(first, x, &head[..cut * c]),
            );
        }
    }
}
