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

use rayon::prelude::*;

use super::matmul::{matmul_serial, MatMut, MatRef};
use super::simd::simd_fn;
use super::vecmath::{dot, exp, max, sum};

/// Rows of S per block.
const ROW_BLOCK: usize = 64;

/// qkv is (B, T, 3C) holding q, k and v side by side; att will be (B, H, T, T) holding the
/// probabilities P (zero above the diagonal); out will be (B, T, C) with the heads side by side.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    out.par_chunks_mut(t * c)
        .zip(att.par_chunks_mut(h * t * t))
        .zip(qkv.par_chunks(t * 3 * c))
        .for_each(|((out_b, att_b), qkv_b)| attention_forward_seq(out_b, att_b, qkv_b, t, c, h));
}

/// One sequence: out (T, C), att (H, T, T), qkv (T, 3C).
fn attention_forward_seq(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    let d = c / h;
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..h {
        let p = &mut att[head * t * t..][..t * t];
        let q = MatRef::strided(&qkv[head * d..], t, d, 3 * c, 1);
        let k = MatRef::strided(&qkv[c + head * d..], t, d, 3 * c, 1);
        let v = MatRef::strided(&qkv[2 * c + head * d..], t, d, 3 * c, 1);
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            // S[r0..r1, 0..r1] = Q[r0..r1] K[0..r1]^T
            matmul_serial(
                MatMut::strided(&mut p[r0 * t..], r1 - r0, r1, t, 1),
                q.rows(r0, r1),
                k.rows(0, r1).t(),
                false,
            );
            causal_softmax_rows(&mut p[r0 * t..r1 * t], r0, t, scale);
            // out[r0..r1] = P[r0..r1, 0..r1] V[0..r1]
            matmul_serial(
                MatMut::strided(&mut out[r0 * c + head * d..], r1 - r0, d, c, 1),
                MatRef::strided(&p[r0 * t..], r1 - r0, r1, t, 1),
                v.rows(0, r1),
                false,
            );
        }
    }
}

simd_fn! {
    /// Rows r0.. of S (each t wide) become rows of P: row i sees columns 0..=i, the rest
    /// is set to zero. p = exp(scale (s - max)) / sum.
    fn causal_softmax_rows(rows: &mut [f32], r0: usize, t: usize, scale: f32) {
        for (i, row) in rows.chunks_exact_mut(t).enumerate() {
            let seen = r0 + i + 1;
            let (live, masked) = row.split_at_mut(seen);
            let m = max(live);
            for x in live.iter_mut() {
                *x = exp((*x - m) * scale);
            }
            let inv = 1.0 / sum(live);
            for x in live.iter_mut() {
                *x *= inv;
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
    att: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    dqkv.par_chunks_mut(t * 3 * c)
        .zip(dout.par_chunks(t * c))
        .zip(qkv.par_chunks(t * 3 * c).zip(att.par_chunks(h * t * t)))
        .for_each(|((dqkv_b, dout_b), (qkv_b, att_b))| {
            let mut dp = vec![0.0f32; ROW_BLOCK.min(t) * t];
            attention_backward_seq(dqkv_b, dout_b, qkv_b, att_b, &mut dp, t, c, h);
        });
}

/// One sequence: dqkv (T, 3C), dout (T, C), qkv (T, 3C), att (H, T, T); dp is scratch.
#[allow(clippy::too_many_arguments)]
fn attention_backward_seq(
    dqkv: &mut [f32],
    dout: &[f32],
    qkv: &[f32],
    att: &[f32],
    dp: &mut [f32],
    t: usize,
    c: usize,
    h: usize,
) {
    let d = c / h;
    let scale = 1.0 / (d as f32).sqrt();
    for head in 0..h {
        let p = &att[head * t * t..][..t * t];
        let q = MatRef::strided(&qkv[head * d..], t, d, 3 * c, 1);
        let k = MatRef::strided(&qkv[c + head * d..], t, d, 3 * c, 1);
        let v = MatRef::strided(&qkv[2 * c + head * d..], t, d, 3 * c, 1);
        let dout_h = MatRef::strided(&dout[head * d..], t, d, c, 1);
        for r0 in (0..t).step_by(ROW_BLOCK) {
            let r1 = (r0 + ROW_BLOCK).min(t);
            let rows = r1 - r0;
            let p_blk = MatRef::strided(&p[r0 * t..], rows, r1, t, 1);
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
            softmax_backward_rows(&mut dp[..rows * r1], &p[r0 * t..r1 * t], r0, r1, t, scale);
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
    /// dp (rows, width) becomes dS = scale * P * (dP - rowsum(P * dP)) on each row's
    /// visible columns 0..=r0+i and zero after them; p holds the same rows of P, t wide.
    fn softmax_backward_rows(dp: &mut [f32], p: &[f32], r0: usize, width: usize, t: usize, scale: f32) {
        for (i, (drow, prow)) in dp.chunks_exact_mut(width).zip(p.chunks_exact(t)).enumerate() {
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
