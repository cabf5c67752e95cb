//! Many sequences at once: each step feeds one token to each of M sequences and reads
//! every weight matrix once for all of them, as (M, C) @ W products, where one sequence
//! alone makes M = 1 matrix-vector products that stream the weights for one token.
//!
//! Each sequence keeps its own key/value cache and position, so sequences of different
//! lengths step together. Per step, for the M rows being fed (B sequences in all, S = the
//! positions a row's sequence has cached):
//!   x = token_embed[token] (+ pos_embed[pos])                        (M, C)
//!   per block: q, k, v = norm1(x) @ W_q, W_k, W_v (+ b), q and k rotated at the row's
//!              position with RoPE; k, v (K heads) into the row's cache;
//!              y = softmax(q k^T / sqrt(D)) v over the row's S + 1 positions, per head;
//!              x += y @ W_o (+ b_o); x += act(norm2(x) @ W_up (+ b)) @ W_down (+ b)
//!              (gated: act(norm2(x) @ W_gate (+ b)) * (norm2(x) @ W_up (+ b)))
//!   logits = norm_f(x) @ lm_head^T                                      (M, V)

use crate::alloc;
use crate::config::{Activation, Position};
use crate::error::{Error, Result};
use crate::kernels::activation::{activation_forward_chunk, gated_forward_chunk};
use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::matmul::{matmul, MatMut, MatRef};
use crate::kernels::rope::{rotate_heads, RopeTable};
use crate::model::Model;
use crate::params::{NormParams, Span};

use super::{attend, norm_row};

/// The caches of B sequences and the scratch of a step.
pub struct BatchState {
    /// Cached positions per sequence.
    lens: Vec<usize>,
    /// (B, L, P, K D) each.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Scratch for M rows: (M, C) x, h, q, y; (M, K D) k, v; (M, F) ff, act, and tanh
    /// (tanh GELU) or up (gated); (P + D + 16).
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    y: Vec<f32>,
    ff: Vec<f32>,
    act: Vec<f32>,
    tanh: Vec<f32>,
    scratch: Vec<f32>,
    /// The rotary angles of positions 0..P (with RoPE).
    rope: RopeTable,
    /// (M, V): the logits of the last step, row i for the i-th sequence fed.
    pub logits: Vec<f32>,
}

impl BatchState {
    /// Empty caches for `b` sequences (fallibly allocated: B L P C floats twice).
    pub fn new(model: &Model, b: usize) -> Result<BatchState> {
        let cfg = &model.config;
        let (l, p, kd) = (cfg.n_layers, cfg.max_seq_len, cfg.kv_dim());
        let cache = b
            .checked_mul(l * p * kd)
            .ok_or_else(|| Error::value(format!("a batch of {b} sequences is too large")))?;
        Ok(BatchState {
            lens: vec![0; b],
            keys: alloc::zeros(cache, "the batch's key cache")?,
            values: alloc::zeros(cache, "the batch's value cache")?,
            x: Vec::new(),
            h: Vec::new(),
            q: Vec::new(),
            k: Vec::new(),
            v: Vec::new(),
            y: Vec::new(),
            ff: Vec::new(),
            act: Vec::new(),
            tanh: Vec::new(),
            scratch: vec![0.0; p + cfg.head_dim() + 16],
            rope: RopeTable::default(),
            logits: Vec::new(),
        })
    }

    /// Cached positions of sequence `s`.
    pub fn len(&self, s: usize) -> usize {
        self.lens[s]
    }

    /// Forgets sequence `s`'s cache.
    pub fn clear(&mut self, s: usize) {
        self.lens[s] = 0;
    }

    /// Copies sequence `from`'s cache to sequence `to` (the same prompt for many samples).
    pub fn copy_sequence(&mut self, model: &Model, from: usize, to: usize) {
        let cfg = &model.config;
        let per = cfg.n_layers * cfg.max_seq_len * cfg.kv_dim();
        self.keys
            .copy_within(from * per..(from + 1) * per, to * per);
        self.values
            .copy_within(from * per..(from + 1) * per, to * per);
        self.lens[to] = self.lens[from];
    }

    /// Feeds `tokens[i]` to sequence `rows[i]` at its next position, for every i; the
    /// logits (M, V) are then in `self.logits`. Each sequence's cache must have room and
    /// each token must be below V (the caller checks both).
    pub fn step(&mut self, model: &Model, rows: &[usize], tokens: &[u32]) {
        let cfg = &model.config;
        let (c, v, p, l_count) = (cfg.d_model, cfg.vocab_size, cfg.max_seq_len, cfg.n_layers);
        let (f, d, m) = (cfg.d_ff, cfg.head_dim(), rows.len());
        let (kd, group) = (cfg.kv_dim(), cfg.n_heads / cfg.kv_heads());
        let lay = &model.layout;
        let prm = model.params();
        for buf in [&mut self.x, &mut self.h, &mut self.q, &mut self.y] {
            buf.resize(m * c, 0.0);
        }
        for buf in [&mut self.k, &mut self.v] {
            buf.resize(m * kd, 0.0);
        }
        let rope = cfg.position == Position::Rope;
        if rope {
            self.rope.ensure(p, d, cfg.rope_theta);
        }
        for buf in [&mut self.ff, &mut self.act, &mut self.tanh] {
            buf.resize(m * f, 0.0);
        }
        self.logits.resize(m * v, 0.0);
        let tok_embed = lay.token_embed.of(prm);
        for (i, (&s, &tok)) in rows.iter().zip(tokens).enumerate() {
            let pos = self.lens[s];
            assert!(pos < p, "a batch sequence's cache is full");
            let x = &mut self.x[i * c..][..c];
            x.copy_from_slice(&tok_embed[tok as usize * c..][..c]);
            if let Some(pe) = lay.pos_embed {
                for (x, b) in x.iter_mut().zip(&pe.of(prm)[pos * c..][..c]) {
                    *x += b;
                }
            }
        }
        let product =
            |out: &mut [f32], inp: &[f32], w: Span, b: Option<Span>, k: usize, n: usize| {
                matmul(
                    MatMut::new(out, m, n),
                    MatRef::new(inp, m, k),
                    MatRef::new(w.of(prm), k, n),
                    false,
                );
                if let Some(b) = b {
                    let b = b.of(prm);
                    for row in out.chunks_exact_mut(n) {
                        for (o, x) in row.iter_mut().zip(b) {
                            *o += x;
                        }
                    }
                }
            };
        for (l, blk) in lay.blocks.iter().enumerate() {
            self.norm_rows(blk.ln1, prm, cfg.eps, c);
            product(&mut self.q, &self.h, blk.w_q, blk.b_q, c, c);
            product(&mut self.k, &self.h, blk.w_k, blk.b_k, c, kd);
            product(&mut self.v, &self.h, blk.w_v, blk.b_v, c, kd);
            for (i, &s) in rows.iter().enumerate() {
                let pos = self.lens[s];
                if rope {
                    let (cos, sin) = self.rope.at(pos);
                    rotate_heads(&mut self.q[i * c..][..c], cos, sin);
                    rotate_heads(&mut self.k[i * kd..][..kd], cos, sin);
                }
                let base = ((s * l_count + l) * p) * kd;
                self.keys[base + pos * kd..][..kd].copy_from_slice(&self.k[i * kd..][..kd]);
                self.values[base + pos * kd..][..kd].copy_from_slice(&self.v[i * kd..][..kd]);
                let keys = &self.keys[base..][..(pos + 1) * kd];
                let values = &self.values[base..][..(pos + 1) * kd];
                attend(
                    &mut self.y[i * c..][..c],
                    &mut self.scratch,
                    &self.q[i * c..][..c],
                    keys,
                    values,
                    d,
                    group,
                );
            }
            // x += y @ W_o (+ b_o), through h as scratch.
            product(&mut self.h, &self.y, blk.w_o, blk.b_o, c, c);
            add_into(&mut self.x, &self.h);
            self.norm_rows(blk.ln2, prm, cfg.eps, c);
            match blk.w_gate {
                // ff = the gate's input, tanh = the up projection.
                Some(w_gate) => {
                    product(&mut self.ff, &self.h, w_gate, blk.b_gate, c, f);
                    product(&mut self.tanh, &self.h, blk.w_up, blk.b_up, c, f);
                }
                None => product(&mut self.ff, &self.h, blk.w_up, blk.b_up, c, f),
            }
            match cfg.activation {
                Activation::GeluTanh => gelu_forward_chunk(&mut self.act, &mut self.tanh, &self.ff),
                gated if gated.is_gated() => {
                    gated_forward_chunk(gated, &mut self.act, &self.ff, &self.tanh)
                }
                other => activation_forward_chunk(other, &mut self.act, &self.ff),
            }
            product(&mut self.h, &self.act, blk.w_down, blk.b_down, f, c);
            add_into(&mut self.x, &self.h);
        }
        for &s in rows {
            self.lens[s] += 1;
        }
        self.norm_rows(lay.ln_f, prm, cfg.eps, c);
        // logits = h @ lm_head^T, lm_head being (V, C).
        matmul(
            MatMut::new(&mut self.logits, m, v),
            MatRef::new(&self.h, m, c),
            MatRef::new(lay.lm_head.of(prm), v, c).t(),
            false,
        );
    }

    /// h = the norm (layer norm or RMSNorm) of each row of x.
    fn norm_rows(&mut self, norm: NormParams, prm: &[f32], eps: f32, c: usize) {
        for (h, x) in self.h.chunks_exact_mut(c).zip(self.x.chunks_exact(c)) {
            norm_row(h, x, norm, prm, eps);
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
