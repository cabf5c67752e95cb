//! Causal multi-head self-attention (the part after the q, k, v projections).
//!
//! For each sequence b and head h, with D = C / H and Q, K, V the head's (T, D) column
//! slices of qkv:
//!   S = Q K^T / sqrt(D)                       (T, T) scores
//!   P = softmax over each row of S, masked so that position t sees only s <= t
//!   out = P V                                  (T, D), the head's columns of out
//!
//! The products are matrix multiplications, done in blocks of rows: rows r0..r1 of S only
//! need the keys 0..r1 (the rest is masked), which halves the work of a long sequence.
//! As in FlashAttention, P is not kept for the backward pass (it would be B H T T
//! floats): the forward pass saves each row's log-sum-exp, L = log sum_s exp(S[t][s]),
//! and the backward pass rebuilds a block of P as exp(S - L) from Q and K.

use std::cell::RefCell;

use rayon::prelude::*;

use super::matmul::{matmul_serial, MatMut, MatRef};
use super::simd::simd_fn;
use super::vecmath::{dot, exp, max, sum};

/// Rows of S per block.
const ROW_BLOCK: usize = 64;

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

/// The head's (T, D) views of Q, K and V inside a sequence's qkv (T, 3C).
fn head_views(qkv: &[f32], t: usize, c: usize, d: usize, head: usize) -> [MatRef<'_>; 3] {
    [0, 1, 2].map(|i| MatRef::strided(&qkv[i * c + head * d..], t, d, 3 * c, 1))
}

/// qkv is (B, T, 3C) holding q, k and v side by side; out will be (B, T, C) with the heads
/// side by side; lse will be (B, H, T), the log-sum-exp of each row of scaled scores.
pub fn attention_forward(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    out.par_chunks_mut(t * c)
        .zip(lse.par_chunks_mut(h * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .for_each(|((out_b, lse_b), qkv_b)| {
            with_scratch(ROW_BLOCK.min(t) * t, |p| {
                attention_forward_seq(out_b, lse_b, qkv_b, p, t, c, h)
            });
        });
}

/// One sequence: out (T, C), lse (H, T), qkv (T, 3C); p is scratch for a block of P.
#[allow(clippy::too_many_arguments)]
fn attention_forward_seq(
    out: &mut [f32],
    lse: &mut [f32],
    qkv: &[f32],
    p: &mut [f32],
    t: usize,
    c: usize,
    h: usize,
) {
    let d = c / h;
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..h {
        let [q, k, v] = head_views(qkv, t, c, d, head);
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let rows = r1 - r0;
            // S[r0..r1, 0..r1] = Q[r0..r1] K[0..r1]^T
            matmul_serial(
                MatMut::strided(p, rows, r1, r1, 1),
                q.rows(r0, r1),
                k.rows(0, r1).t(),
                false,
            );
            causal_softmax_rows(
                &mut p[..rows * r1],
                &mut lse[head * t + r0..head * t + r1],
                r0,
                scale,
            );
            // out[r0..r1] = P[r0..r1, 0..r1] V[0..r1]
            matmul_serial(
                MatMut::strided(&mut out[r0 * c + head * d..], rows, d, c, 1),
                MatRef::strided(p, rows, r1, r1, 1),
                v.rows(0, r1),
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

/// Backward of [`attention_forward`], accumulating into dqkv (B, T, 3C).
/// In the forward pass this was: out = P V; so dV += P^T dout and dP = dout V^T.
/// Softmax backward gives dS = P * (dP - rowsum(P * dP)), and since S = Q K^T / sqrt(D):
/// dQ += dS K / sqrt(D), dK += dS^T Q / sqrt(D).
pub fn attention_backward(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c).zip(lse.par_chunks(h * t)))
        .for_each(|((dqkv_b, dout_b), (qkv_b, lse_b))| {
            let block = ROW_BLOCK.min(t) * t;
            with_scratch(2 * block, |scratch| {
                let (p, dp) = scratch.split_at_mut(block);
                attention_backward_seq(dqkv_b, dout_b, qkv_b, lse_b, p, dp, t, c, h);
            });
        });
}

/// One sequence: dqkv (T, 3C), dout (T, C), qkv (T, 3C), lse (H, T); p and dp are scratch.
#[allow(clippy::too_many_arguments)]
fn attention_backward_seq(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    lse: &[f32],
    p: &mut [f32],
    dp: &mut [f32],
    t: usize,
    c: usize,
    h: usize,
) {
    let d = c / h;
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..h {
        let [q, k, v] = head_views(qkv, t, c, d, head);
        let dout_h = MatRef::strided(&dout[head * d..], t, d, c, 1);
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let rows = r1 - r0;
            // P[r0..r1, 0..r1] = exp(scale Q[r0..r1] K[0..r1]^T - L)
            matmul_serial(
                MatMut::strided(p, rows, r1, r1, 1),
                q.rows(r0, r1),
                k.rows(0, r1).t(),
                false,
            );
            causal_probs_from_lse(
                &mut p[..rows * r1],
                &lse[head * t + r0..head * t + r1],
                r0,
                scale,
            );
            let p_blk = MatRef::strided(p, rows, r1, r1, 1);
            // dP[r0..r1, 0..r1] = dout[r0..r1] V[0..r1]^T
            matmul_serial(
                MatMut::strided(dp, rows, r1, r1, 1),
                dout_h.rows(r0, r1),
                v.rows(0, r1).t(),
                false,
            );
            // dV[0..r1] += P[r0..r1, 0..r1]^T dout[r0..r1]
            matmul_serial(
                MatMut::strided(&mut dqkv[2 * c + head * d..], r1, d, 3 * c, 1),
                p_blk.t(),
                dout_h.rows(r0, r1),
                true,
            );
            softmax_backward_rows(&mut dp[..rows * r1], &p[..rows * r1], r0, r1, scale);
            let ds = MatRef::strided(dp, rows, r1, r1, 1);
            // dQ[r0..r1] += dS K[0..r1] (dS already holds the 1 / sqrt(D))
            matmul_serial(
                MatMut::strided(&mut dqkv[r0 * 3 * c + head * d..], rows, d, 3 * c, 1),
                ds,
                k.rows(0, r1),
                true,
            );
            // dK[0..r1] += dS^T Q[r0..r1]
            matmul_serial(
                MatMut::strided(&mut dqkv[c + head * d..], r1, d, 3 * c, 1),
                ds.t(),
                q.rows(r0, r1),
                true,
            );
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
