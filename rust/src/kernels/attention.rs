//! Causal multi-head self-attention (the part after the q, k, v projections), with
//! grouped-query heads: H query heads share K key/value heads, query head h reading
//! key/value head h / (H / K) (K = H is ordinary multi-head attention).
//!
//! Each row of qkv holds q (H D), k (K D) and v (K D) side by side. For each sequence b and
//! query head h, with D the head size and Q, K, V the (T, D) column slices of its heads:
//!
//! ```text
//!   S = Q K^T / sqrt(D)                       (T, T) scores
//!   P = softmax over each row of S, masked so that position t sees only s <= t
//!   out = P V                                  (T, D), the head's columns of out
//! ```
//!
//! The products run in blocks of rows, in kernels::tiled: rows r0..r1 of S only need the
//! keys 0..r1, and within a block each tile of 4 rows stops at the diagonal (the rest is
//! masked), so about half of the full T x T work is done.
//! As in FlashAttention, P is not kept for the backward pass (it would be B H T T
//! floats): the forward pass saves each row's log-sum-exp, `L = log sum_s exp(S[t][s])`,
//! and the backward pass rebuilds a block of P as exp(S - L) from Q and K.
//! The query heads of a group run one after the other on the same transposed K^T (and
//! V^T), and their gradients of k and v add up in the group's columns: grouped heads cost
//! no copy of k or v.
//!
//! Training passes with dropout use P' = P * M in out = P' V, M being the mask of
//! [`crate::dropout`] (0 or 1 / (1 - p)): a hash of (layer, sequence, head, t, s), so the
//! backward pass regenerates it for each block of P it rebuilds. The log-sum-exps are those
//! of P itself. In the backward pass dV += P'^T dout, dP' = dout V^T, dP = dP' * M, and the
//! softmax backward dS = P * (dP - rowsum(P * dP)) keeps its form: rowsum(P * dP) =
//! rowsum(P' * dP') = dout_t . out_t.

use std::cell::RefCell;

use rayon::prelude::*;

use super::simd::simd_fn;
use super::tiled::{tiled_matmul, Causal, Operand};
use super::vecmath::{dot, exp, max, sum};
use crate::dropout::AttentionDropout;

/// Rows of S per block (with the tiled products, 32 and 64 measured the same).
const ROW_BLOCK: usize = 32;

thread_local! {
    /// Per-thread scratch for a block of P (and of dP), reused between calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` with a scratch slice of `len` floats.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// The heads of one attention call: H query heads and K key/value heads of size D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heads {
    pub h: usize,
    pub kv: usize,
    pub d: usize,
}

impl Heads {
    /// Width of a row of qkv: (H + 2K) D.
    pub fn width(self) -> usize {
        (self.h + 2 * self.kv) * self.d
    }

    /// Query heads per key/value head.
    fn group(self) -> usize {
        self.h / self.kv
    }

    /// First column of query head `head`, of key head `g`, of value head `g` in a row.
    fn q_col(self, head: usize) -> usize {
        head * self.d
    }

    fn k_col(self, g: usize) -> usize {
        (self.h + g) * self.d
    }

    fn v_col(self, g: usize) -> usize {
        (self.h + self.kv + g) * self.d
    }
}

/// kt (D, T) = the transpose of the (T, D) columns col0.. of qkv (rows `width` wide): the
/// tiled products read their b operand by rows, and S = Q K^T, dP = dout V^T need K^T, V^T.
fn transpose_head(kt: &mut [f32], qkv: &[f32], col0: usize, width: usize, t: usize, d: usize) {
    for (i, kt_row) in kt.chunks_exact_mut(t).take(d).enumerate() {
        for (x, row) in kt_row.iter_mut().zip(qkv.chunks_exact(width)) {
            *x = row[col0 + i];
        }
    }
}

/// The (T, D) columns col0.. of qkv (rows `width` wide), as an operand.
fn head_operand(qkv: &[f32], col0: usize, width: usize) -> Operand<'_> {
    Operand {
        data: &qkv[col0..],
        row_stride: width,
        col_stride: 1,
    }
}

/// The dropout of one sequence's attention probabilities: the layer's mask and the
/// sequence's index b in the batch.
#[derive(Clone, Copy)]
struct SeqDropout {
    mask: AttentionDropout,
    b: usize,
}

impl SeqDropout {
    /// Rows of a block of P (each `width` wide, row i being position r0 + i) of query head
    /// `head` times their masks on the visible columns 0..=r0+i.
    fn apply_rows(&self, rows: &mut [f32], width: usize, r0: usize, head: usize) {
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            self.mask
                .apply_row(&mut row[..=r0 + i], self.b, r0 + i, head);
        }
    }

    /// The masks themselves of those rows (zero after the visible columns).
    fn mask_rows(&self, rows: &mut [f32], width: usize, r0: usize, head: usize) {
        for (i, row) in rows.chunks_exact_mut(width).enumerate() {
            let (live, masked) = row.split_at_mut(r0 + i + 1);
            self.mask.mask_row(live, self.b, r0 + i, head);
            masked.fill(0.0);
        }
    }
}

/// qkv is (B, T, (H + 2K) D) holding q, k and v side by side; out will be (B, T, H D) with
/// the heads side by side; lse will be (B, H, T), the log-sum-exp of each row of scaled
/// scores. With `dropout` (training passes), out = P' V with P' = P * M.
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    t: usize,
    heads: Heads,
    dropout: Option<AttentionDropout>,
) {
    let (c, h, d) = (heads.h * heads.d, heads.h, heads.d);
    out.par_chunks_mut(t * c)
        .zip(lse.par_chunks_mut(h * t))
        .zip(qkv.par_chunks(t * heads.width()))
        .enumerate()
        .for_each(|(b, ((out_b, lse_b), qkv_b))| {
            let block = ROW_BLOCK.min(t) * t;
            let drop = dropout.map(|mask| SeqDropout { mask, b });
            with_scratch(block + d * t, |scratch| {
                let (p, kt) = scratch.split_at_mut(block);
                attention_forward_seq(out_b, lse_b, qkv_b, p, kt, t, heads, drop)
            });
        });
}

/// One sequence: out (T, H D), lse (H, T), qkv (T, (H + 2K) D); p is scratch for a block
/// of P, kt for a key head's K^T (D, T).
#[allow(clippy::too_many_arguments)]
fn attention_forward_seq(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    p: &mut [f32],
    kt: &mut [f32],
    t: usize,
    heads: Heads,
    dropout: Option<SeqDropout>,
) {
    let (d, w, c) = (heads.d, heads.width(), heads.h * heads.d);
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..heads.h {
        let g = head / heads.group();
        if head % heads.group() == 0 {
            transpose_head(kt, qkv, heads.k_col(g), w, t, d);
        }
        let q = head_operand(qkv, heads.q_col(head), w);
        let v = &qkv[heads.v_col(g)..];
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let rows = r1 - r0;
            // S[r0..r1, 0..r1] = Q[r0..r1] K[0..r1]^T, on and below the diagonal.
            tiled_matmul(
                p,
                r1,
                q.rows_from(r0),
                kt,
                t,
                (rows, d, r1),
                Causal::ColsThrough(r0),
                false,
            );
            causal_softmax_rows(
                &mut p[..rows * r1],
                &mut lse[head * t + r0..head * t + r1],
                r0,
                scale,
            );
            // P' = P * M
            if let Some(drop) = dropout {
                drop.apply_rows(&mut p[..rows * r1], r1, r0, head);
            }
            // out[r0..r1] = P'[r0..r1, 0..r1] V[0..r1]
            let p_blk = Operand {
                data: p,
                row_stride: r1,
                col_stride: 1,
            };
            tiled_matmul(
                &mut out[r0 * c + head * d..],
                c,
                p_blk,
                v,
                w,
                (rows, r1, d),
                Causal::TermsThrough(r0),
                false,
            );
        }
    }
}

simd_fn! {
    /// Rows of raw scores S (each `width` wide, row i of the block being position r0 + i)
    /// become rows of P: p = exp(scale s - L) on columns 0..=r0+i, zero after them, where
    /// L = log sum exp(scale s) is written to lse[i].
    fn causal_softmax_rows(rows: &mut [f32], lse: &mut [f32], r0: usize, scale: f32) {
        let width = rows.len() / lse.len();
        for (i, (row, l)) in rows.chunks_exact_mut(width).zip(lse.iter_mut()).enumerate() {
            let (live, masked) = row.split_at_mut(r0 + i + 1);
            let m = max(live);
            for x in live.iter_mut() {
                *x = exp((*x - m) * scale);
            }
            let total = sum(live);
            let inv = 1.0 / total;
            for x in live.iter_mut() {
                *x *= inv;
            }
            masked.fill(0.0);
            *l = m * scale + total.ln();
        }
    }
}

simd_fn! {
    /// Rebuilds rows of P from raw scores S and the saved log-sum-exps: p = exp(scale s - L)
    /// on the visible columns, zero after them.
    fn causal_probs_from_lse(rows: &mut [f32], lse: &[f32], r0: usize, scale: f32) {
        let width = rows.len() / lse.len();
        for (i, (row, &l)) in rows.chunks_exact_mut(width).zip(lse).enumerate() {
            let (live, masked) = row.split_at_mut(r0 + i + 1);
            for x in live.iter_mut() {
                *x = exp(x.mul_add(scale, -l));
            }
            masked.fill(0.0);
        }
    }
}

/// Backward of [`attention_forward`], accumulating into dqkv (B, T, (H + 2K) D), with the
/// forward's `dropout`.
/// In the forward pass this was: out = P' V, P' = P * M (P' = P without dropout); so
/// dV += P'^T dout, dP' = dout V^T and dP = dP' * M. Softmax backward gives
/// dS = P * (dP - rowsum(P * dP)), and since S = Q K^T / sqrt(D): dQ += dS K / sqrt(D),
/// dK += dS^T Q / sqrt(D). A key/value head's gradients sum over the query heads of its
/// group.
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    t: usize,
    heads: Heads,
    dropout: Option<AttentionDropout>,
) {
    let (c, h, w) = (heads.h * heads.d, heads.h, heads.width());
    dqkv.par_chunks_mut(t * w)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * w).zip(lse.par_chunks(h * t)))
        .enumerate()
        .for_each(|(b, ((dqkv_b, dout_b), (qkv_b, lse_b)))| {
            let block = ROW_BLOCK.min(t) * t;
            let head_t = heads.d * t;
            let drop = dropout.map(|mask| SeqDropout { mask, b });
            let mask_len = if drop.is_some() { block } else { 0 };
            with_scratch(2 * block + mask_len + 2 * head_t, |scratch| {
                let (p, rest) = scratch.split_at_mut(block);
                let (dp, rest) = rest.split_at_mut(block);
                let (mask, rest) = rest.split_at_mut(mask_len);
                let (kt, vt) = rest.split_at_mut(head_t);
                let scratch = Scratch {
                    p,
                    dp,
                    mask,
                    kt,
                    vt,
                };
                attention_backward_seq(dqkv_b, dout_b, qkv_b, lse_b, scratch, t, heads, drop);
            });
        });
}

/// Per-thread scratch of the backward pass: a block of P, of dP and (with dropout) of M, a
/// head's K^T and V^T.
struct Scratch<'a> {
    p: &'a mut [f32],
    dp: &'a mut [f32],
    mask: &'a mut [f32],
    kt: &'a mut [f32],
    vt: &'a mut [f32],
}

/// One sequence: dqkv (T, (H + 2K) D), dout (T, H D), qkv (T, (H + 2K) D), lse (H, T).
#[allow(clippy::too_many_arguments)]
fn attention_backward_seq(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    scratch: Scratch,
    t: usize,
    heads: Heads,
    dropout: Option<SeqDropout>,
) {
    let Scratch {
        p,
        dp,
        mask,
        kt,
        vt,
    } = scratch;
    let (d, w, c) = (heads.d, heads.width(), heads.h * heads.d);
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..heads.h {
        let g = head / heads.group();
        let (qc, kc, vc) = (heads.q_col(head), heads.k_col(g), heads.v_col(g));
        if head % heads.group() == 0 {
            transpose_head(kt, qkv, kc, w, t, d);
            transpose_head(vt, qkv, vc, w, t, d);
        }
        let q = head_operand(qkv, qc, w);
        let k = &qkv[kc..];
        let dout_h = Operand {
            data: &dout[head * d..],
            row_stride: c,
            col_stride: 1,
        };
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let rows = r1 - r0;
            let needed_cols = Causal::ColsThrough(r0);
            // P[r0..r1, 0..r1] = exp(scale Q[r0..r1] K[0..r1]^T - L)
            tiled_matmul(
                p,
                r1,
                q.rows_from(r0),
                kt,
                t,
                (rows, d, r1),
                needed_cols,
                false,
            );
            causal_probs_from_lse(
                &mut p[..rows * r1],
                &lse[head * t + r0..head * t + r1],
                r0,
                scale,
            );
            // dP'[r0..r1, 0..r1] = dout[r0..r1] V[0..r1]^T
            let dout_blk = dout_h.rows_from(r0);
            tiled_matmul(dp, r1, dout_blk, vt, t, (rows, d, r1), needed_cols, false);
            // With dropout: dP = dP' * M, dS from P and dP, then P' = P * M for dV below.
            let block = rows * r1;
            if let Some(drop) = dropout {
                drop.mask_rows(&mut mask[..block], r1, r0, head);
                times(&mut dp[..block], &mask[..block]);
            }
            softmax_backward_rows(&mut dp[..block], &p[..block], r0, r1, scale);
            if dropout.is_some() {
                times(&mut p[..block], &mask[..block]);
            }
            // dV[0..r1] += P'[r0..r1, 0..r1]^T dout[r0..r1]
            let p_t = Operand {
                data: p,
                row_stride: 1,
                col_stride: r1,
            };
            tiled_matmul(
                &mut dqkv[vc..],
                w,
                p_t,
                &dout[r0 * c + head * d..],
                c,
                (r1, rows, d),
                Causal::TermsFrom(r0),
                true,
            );
            // dQ[r0..r1] += dS K[0..r1] (dS already holds the 1 / sqrt(D))
            let ds = Operand {
                data: dp,
                row_stride: r1,
                col_stride: 1,
            };
            tiled_matmul(
                &mut dqkv[r0 * w + qc..],
                w,
                ds,
                k,
                w,
                (rows, r1, d),
                Causal::TermsThrough(r0),
                true,
            );
            // dK[0..r1] += dS^T Q[r0..r1]
            let ds_t = Operand {
                data: dp,
                row_stride: 1,
                col_stride: r1,
            };
            tiled_matmul(
                &mut dqkv[kc..],
                w,
                ds_t,
                &qkv[r0 * w + qc..],
                w,
                (r1, rows, d),
                Causal::TermsFrom(r0),
                true,
            );
        }
    }
}

simd_fn! {
    /// x *= m, element by element.
    fn times(x: &mut [f32], m: &[f32]) {
        for (a, &b) in x.iter_mut().zip(m) {
            *a *= b;
        }
    }
}

simd_fn! {
    /// dp becomes dS = scale * P * (dP - rowsum(P * dP)) on each row's visible columns
    /// 0..=r0+i and zero after them; p holds the same rows of P; rows are `width` wide.
    fn softmax_backward_rows(dp: &mut [f32], p: &[f32], r0: usize, width: usize, scale: f32) {
        for (i, (drow, prow)) in dp.chunks_exact_mut(width).zip(p.chunks_exact(width)).enumerate() {
            let seen = r0 + i + 1;
            let (live, masked) = drow.split_at_mut(seen);
            let prow = &prow[..seen];
            let inner = dot(prow, live);
            for (g, &pi) in live.iter_mut().zip(prow) {
                *g = scale * pi * (*g - inner);
            }
            masked.fill(0.0);
        }
    }
}
