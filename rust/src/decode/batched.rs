//! Many sequences at once: each step feeds one token to each of M sequences and reads
//! every weight matrix once for all of them, as (M, C) @ W products, where one sequence
//! alone makes M = 1 matrix-vector products that stream the weights for one token.
//!
//! Each sequence keeps its own key/value cache and position, so sequences of different
//! lengths step together. Per step, for the M rows being fed (B sequences in all, S = the
//! positions a row's sequence has cached):
//!   x = token_embed[token] + pos_embed[pos]                          (M, C)
//!   per block: q, k, v = LN1(x) @ W_q, W_k, W_v (+ b); k, v into the row's cache;
//!              y = softmax(q k^T / sqrt(D)) v over the row's S + 1 positions, per head;
//!              x += y @ W_o (+ b_o); x += act(LN2(x) @ W_up (+ b)) @ W_down (+ b)
//!   logits = LN_f(x) @ lm_head^T                                      (M, V)

use crate::alloc;
use crate::config::Activation;
use crate::error::{Error, Result};
use crate::kernels::activation::activation_forward_chunk;
use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::layernorm::layernorm_row;
use crate::kernels::matmul::{matmul, MatMut, MatRef};
use crate::kernels::rmsnorm::rmsnorm_row;
use crate::model::{fast, Model};
use crate::params::Span;

use super::attend;

/// The caches of B sequences and the scratch of a step.
pub struct BatchState {
    /// Cached positions per sequence.
    lens: Vec<usize>,
    /// (B, L, P, C) each.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Scratch for M rows: (M, C) x, h, q, k, v, y; (M, F) ff, act, tanh; (P + D + 16).
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
    /// (M, V): the logits of the last step, row i for the i-th sequence fed.
    pub logits: Vec<f32>,
}

impl BatchState {
    /// Empty caches for `b` sequences (fallibly allocated: B L P C floats twice).
    pub fn new(model: &Model, b: usize) -> Result<BatchState> {
        let cfg = &model.config;
        let (l, p, c) = (cfg.n_layers, cfg.max_seq_len, cfg.d_model);
        let cache = b
            .checked_mul(l * p * c)
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
            scratch: vec![0.0; p + c / cfg.n_heads + 16],
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
        let per = cfg.n_layers * cfg.max_seq_len * cfg.d_model;
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
        let (f, d, m) = (cfg.d_ff, c / cfg.n_heads, rows.len());
        let lay = &model.layout;
        let prm = model.params();
        for buf in [
            &mut self.x,
            &mut self.h,
            &mut self.q,
            &mut self.k,
            &mut self.v,
            &mut self.y,
        ] {
            buf.resize(m * c, 0.0);
        }
        for buf in [&mut self.ff, &mut self.act, &mut self.tanh] {
            buf.resize(m * f, 0.0);
        }
        self.logits.resize(m * v, 0.0);
        let tok_embed = lay.token_embed.of(prm);
        let pos_embed = fast(lay.pos_embed).of(prm);
        for (i, (&s, &tok)) in rows.iter().zip(tokens).enumerate() {
            let pos = self.lens[s];
            assert!(pos < p, "a batch sequence's cache is full");
            let (te, pe) = (
                &tok_embed[tok as usize * c..][..c],
                &pos_embed[pos * c..][..c],
            );
            for ((x, a), b) in self.x[i * c..][..c].iter_mut().zip(te).zip(pe) {
                *x = a + b;
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
            self.norm_rows(blk.ln1.weight, blk.ln1.bias, prm, cfg.eps, c);
            product(&mut self.q, &self.h, blk.w_q, blk.b_q, c, c);
            product(&mut self.k, &self.h, blk.w_k, blk.b_k, c, c);
            product(&mut self.v, &self.h, blk.w_v, blk.b_v, c, c);
            for (i, &s) in rows.iter().enumerate() {
                let pos = self.lens[s];
                let base = ((s * l_count + l) * p) * c;
                self.keys[base + pos * c..][..c].copy_from_slice(&self.k[i * c..][..c]);
                self.values[base + pos * c..][..c].copy_from_slice(&self.v[i * c..][..c]);
                let keys = &self.keys[base..][..(pos + 1) * c];
                let values = &self.values[base..][..(pos + 1) * c];
                attend(
                    &mut self.y[i * c..][..c],
                    &mut self.scratch,
                    &self.q[i * c..][..c],
                    keys,
                    values,
                    d,
                );
            }
            // x += y @ W_o (+ b_o), through h as scratch.
            product(&mut self.h, &self.y, blk.w_o, blk.b_o, c, c);
            add_into(&mut self.x, &self.h);
            self.norm_rows(blk.ln2.weight, blk.ln2.bias, prm, cfg.eps, c);
            product(&mut self.ff, &self.h, blk.w_up, blk.b_up, c, f);
            match cfg.activation {
                Activation::GeluTanh => gelu_forward_chunk(&mut self.act, &mut self.tanh, &self.ff),
                other => activation_forward_chunk(other, &mut self.act, &self.ff),
            }
            product(&mut self.h, &self.act, blk.w_down, blk.b_down, f, c);
            add_into(&mut self.x, &self.h);
        }
        for &s in rows {
            self.lens[s] += 1;
        }
        self.norm_rows(lay.ln_f.weight, lay.ln_f.bias, prm, cfg.eps, c);
        // logits = h @ lm_head^T, lm_head being (V, C).
        matmul(
            MatMut::new(&mut self.logits, m, v),
            MatRef::new(&self.h, m, c),
            MatRef::new(lay.lm_head.of(prm), v, c).t(),
            false,
        );
    }

    /// h = layer norm (which has a bias) or RMSNorm of each row of x.
    fn norm_rows(&mut self, weight: Span, bias: Option<Span>, prm: &[f32], eps: f32, c: usize) {
        let w = weight.of(prm);
        for (h, x) in self.h.chunks_exact_mut(c).zip(self.x.chunks_exact(c)) {
            match bias {
                Some(b) => {
                    layernorm_row(h, x, w, b.of(prm), eps);
                }
                None => {
                    rmsnorm_row(h, x, w, eps);
                }
            }
        }
    }
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
