//! Causal multi-head self-attention (the part after the q, k, v projections).
//!
//! For each sequence b, head h and position t, with D = C / H and q, k, v the head's
//! D-wide column slices:
//!   score[t][s] = q_t . k_s / sqrt(D)          for s <= t (a position sees itself and earlier ones)
//!   p[t][s]     = softmax_s(score[t][s])        (row maximum subtracted)
//!   out_t       = sum_{s <= t} p[t][s] v_s

use rayon::prelude::*;

use super::simd::simd_fn;
use super::softmax::{softmax_backward_in_place, softmax_in_place};
use super::vecmath::{axpy, dot};

/// qkv is (B, T, 3C) holding q, k and v side by side; att will be (B, T, H, T) holding the
/// probabilities p (zero above the diagonal); out will be (B, T, C) with the heads side by side.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    qkv: &[f32],
    t: usize,
    c: usize,
    h: usize,
) {
    out.par_chunks_mut(c)
        .zip(att.par_chunks_mut(h * t))
        .enumerate()
        .with_min_len(4)
        .for_each(|(row, (out_row, att_row))| {
            let (bi, ti) = (row / t, row % t);
            let seq = &qkv[bi * t * 3 * c..][..t * 3 * c];
            attention_row(out_row, att_row, seq, ti, c, h);
        });
}

simd_fn! {
    /// One position `ti` of one sequence `seq` (T, 3C), all heads.
    fn attention_row(out_row: &mut [f32], att_row: &mut [f32], seq: &[f32], ti: usize, c: usize, h: usize) {
        let d = c / h;
        let t = att_row.len() / h;
        let scale = 1.0 / (d as f32).sqrt();
        for head in 0..h {
            let q = &seq[ti * 3 * c + head * d..][..d];
            let p = &mut att_row[head * t..][..t];
            for (s, score) in p[..=ti].iter_mut().enumerate() {
                *score = dot(q, &seq[s * 3 * c + c + head * d..][..d]) * scale;
            }
            softmax_in_place(&mut p[..=ti]);
            p[ti + 1..].fill(0.0);
            let o = &mut out_row[head * d..][..d];
            o.fill(0.0);
            for (s, &ps) in p[..=ti].iter().enumerate() {
                axpy(o, ps, &seq[s * 3 * c + 2 * c + head * d..][..d]);
            }
        }
    }
}

/// Backward of [`attention_forward`], accumulating into dqkv (B, T, 3C).
/// In the forward pass this was: out_t = sum_s p[t][s] v_s; so dv_s += p[t][s] dout_t and
/// dp[t][s] = dout_t . v_s. Then softmax backward gives dscore, and since
/// score[t][s] = q_t . k_s / sqrt(D): dq_t += dscore[t][s] k_s / sqrt(D), dk_s += dscore[t][s] q_t / sqrt(D).
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
        .enumerate()
        .for_each(|(bi, dseq)| {
            let seq = &qkv[bi * t * 3 * c..][..t * 3 * c];
            let dout_seq = &dout[bi * t * c..][..t * c];
            let att_seq = &att[bi * t * h * t..][..t * h * t];
            let mut dscore = vec![0.0f32; t];
            attention_backward_seq(dseq, dout_seq, seq, att_seq, &mut dscore, c, h);
        });
}

simd_fn! {
    /// One sequence: dseq and seq are (T, 3C), dout_seq (T, C), att_seq (T, H, T).
    fn attention_backward_seq(
        dseq: &mut [f32],
        dout_seq: &[f32],
        seq: &[f32],
        att_seq: &[f32],
        dscore: &mut [f32],
        c: usize,
        h: usize,
    ) {
        let d = c / h;
        let t = dscore.len();
        let scale = 1.0 / (d as f32).sqrt();
        for ti in 0..t {
            for head in 0..h {
                let p = &att_seq[(ti * h + head) * t..][..=ti];
                let dout_h = &dout_seq[ti * c + head * d..][..d];
                let ds = &mut dscore[..=ti];
                for (s, dps) in ds.iter_mut().enumerate() {
                    let col = s * 3 * c + 2 * c + head * d;
                    *dps = dot(dout_h, &seq[col..][..d]);
                    axpy(&mut dseq[col..][..d], p[s], dout_h);
                }
                softmax_backward_in_place(ds, p);
                let q_col = ti * 3 * c + head * d;
                for (s, &dss) in ds.iter().enumerate() {
                    let k_col = s * 3 * c + c + head * d;
                    axpy(&mut dseq[q_col..][..d], dss * scale, &seq[k_col..][..d]);
                    axpy(&mut dseq[k_col..][..d], dss * scale, &seq[q_col..][..d]);
                }
            }
        }
    }
}
