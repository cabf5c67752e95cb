//! Causal self-attention over heads of size D, with grouped-query heads: H query heads,
//! K key/value heads, query head h reading key/value head h / (H / K) (K = H is ordinary
//! multi-head attention). For each sequence and query head, with Q (T, D), K, V (T, D):
//!   S = Q K^T / sqrt(D)                            (T, T) scores
//!   P = softmax of each row t of S over s <= t     (the causal mask: no peeking ahead)
//!   out = P V                                      (T, D)
//! Training passes with dropout use P' = P * M instead of P in out = P' V, M (T, T) being
//! the mask of [`crate::dropout`] (0 or 1 / (1 - p) at each element), as nanoGPT's
//! `attn_dropout` does.

use super::softmax::{softmax_backward, softmax_forward};
use crate::dropout::AttentionDropout;

/// Sizes of one attention call: B sequences of T positions, H query heads, K key/value
/// heads, D head size.
#[derive(Debug, Clone, Copy)]
pub struct AttentionShape {
    pub b: usize,
    pub t: usize,
    pub h: usize,
    pub k: usize,
    pub d: usize,
}

impl AttentionShape {
    /// Offset of (sequence b, position t, query head h) in a (B, T, H, D) buffer.
    fn q_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.t + t) * self.h + h) * self.d
    }

    /// Offset of (b, t, the key/value head that query head h reads) in a (B, T, K, D) buffer.
    fn kv_at(&self, b: usize, t: usize, h: usize) -> usize {
        ((b * self.t + t) * self.k + h / (self.h / self.k)) * self.d
    }

    /// Offset of row t of the (T, T) probabilities of sequence b and head h.
    fn att_at(&self, b: usize, h: usize, t: usize) -> usize {
        ((b * self.h + h) * self.t + t) * self.t
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The dropout mask M (B, H, T, T) of the attention probabilities: 0 or 1 / (1 - p).
pub fn dropout_mask(dropout: &AttentionDropout, s: AttentionShape) -> Vec<f32> {
    let mut mask = vec![0.0; s.b * s.h * s.t * s.t];
    for b in 0..s.b {
        for h in 0..s.h {
            for t in 0..s.t {
                dropout.mask_row(&mut mask[s.att_at(b, h, t)..][..s.t], b, t, h);
            }
        }
    }
    mask
}

/// q is (B, T, H, D), k and v are (B, T, K, D), mask (B, H, T, T) is the dropout mask M or
/// None, out will be (B, T, H, D) and att (B, H, T, T): the probabilities P (before the
/// dropout), zero above the diagonal, saved for the backward pass.
pub fn attention_forward(
    out: &mut [f32],
    att: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[f32]>,
    s: AttentionShape,
) {
    let (d, scale) = (s.d, 1.0 / (s.d as f32).sqrt());
    for b in 0..s.b {
        for h in 0..s.h {
            for t in 0..s.t {
                let q_t = &q[s.q_at(b, t, h)..][..d];
                // S[t][j] = q_t . k_j / sqrt(D) for j <= t.
                let scores: Vec<f32> = (0..=t)
                    .map(|j| dot(q_t, &k[s.kv_at(b, j, h)..][..d]) * scale)
                    .collect();
                let p = &mut att[s.att_at(b, h, t)..][..s.t];
                p.fill(0.0);
                softmax_forward(&mut p[..=t], &scores);
                // out_t = sum_j P'[t][j] v_j, P' = P * M (P itself without dropout)
                let p_drop = dropped(p, mask, s.att_at(b, h, t), t);
                let out_t = &mut out[s.q_at(b, t, h)..][..d];
                out_t.fill(0.0);
                for (j, &p_tj) in p_drop.iter().enumerate() {
                    for (o, &vj) in out_t.iter_mut().zip(&v[s.kv_at(b, j, h)..][..d]) {
                        *o += p_tj * vj;
                    }
                }
            }
        }
    }
}

/// q is (B, T, H, D), k is (B, T, K, D), scores will be (B, H, T, T): the whole matrix
/// `S[t][j] = q_t . k_j / sqrt(D)`, above the diagonal too, before the causal mask. What
/// [`attention_forward`] computes row by row for j <= t, kept for a learner to look at.
pub fn attention_scores(scores: &mut [f32], q: &[f32], k: &[f32], s: AttentionShape) {
    let (d, scale) = (s.d, 1.0 / (s.d as f32).sqrt());
    for b in 0..s.b {
        for h in 0..s.h {
            for t in 0..s.t {
                let q_t = &q[s.q_at(b, t, h)..][..d];
                for (j, out) in scores[s.att_at(b, h, t)..][..s.t].iter_mut().enumerate() {
                    *out = dot(q_t, &k[s.kv_at(b, j, h)..][..d]) * scale;
                }
            }
        }
    }
}

/// Row t (columns 0..=t) of P' = P * M, from the row p of P starting at `at` in (B, H, T,
/// T) buffers; P's row itself without a mask.
fn dropped(p: &[f32], mask: Option<&[f32]>, at: usize, t: usize) -> Vec<f32> {
    match mask {
        Some(m) => p[..=t].iter().zip(&m[at..]).map(|(x, y)| x * y).collect(),
        None => p[..=t].to_vec(),
    }
}

/// In the forward pass this was: `out_t = sum_j P'[t][j] v_j`, `P' = P * M` (or P),
/// `P[t] = softmax(S[t][..=t])`, `S[t][j] = q_t . k_j / sqrt(D)`; so
/// `dP'[t][j] = dout_t . v_j` and `dv_j += P'[t][j] dout_t`, `dP[t][j] = dP'[t][j] M[t][j]`,
/// `dS[t]` = softmax backward of `dP[t]`, and `dq_t += sum_j dS[t][j] k_j / sqrt(D)`,
/// `dk_j += dS[t][j] q_t / sqrt(D)`. A key/value head's gradient sums over its query heads.
#[allow(clippy::too_many_arguments)]
pub fn attention_backward(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    att: &[f32],
    mask: Option<&[f32]>,
    s: AttentionShape,
) {
    let (d, scale) = (s.d, 1.0 / (s.d as f32).sqrt());
    for b in 0..s.b {
        for h in 0..s.h {
            for t in 0..s.t {
                let p = &att[s.att_at(b, h, t)..][..=t];
                let p_drop = dropped(p, mask, s.att_at(b, h, t), t);
                let dout_t = &dout[s.q_at(b, t, h)..][..d];
                let mut dp = vec![0.0f32; t + 1];
                for (j, (dp_j, &p_tj)) in dp.iter_mut().zip(&p_drop).enumerate() {
                    let at = s.kv_at(b, j, h);
                    *dp_j = dot(dout_t, &v[at..][..d]);
                    for (g, &dy) in dv[at..][..d].iter_mut().zip(dout_t) {
                        *g += p_tj * dy;
                    }
                }
                if let Some(m) = mask {
                    for (dp_j, &m_j) in dp.iter_mut().zip(&m[s.att_at(b, h, t)..]) {
                        *dp_j *= m_j;
                    }
                }
                let mut ds = vec![0.0f32; t + 1];
                softmax_backward(&mut ds, &dp, p);
                let q_at = s.q_at(b, t, h);
                for (j, &ds_j) in ds.iter().enumerate() {
                    let at = s.kv_at(b, j, h);
                    for i in 0..d {
                        dq[q_at + i] += ds_j * k[at + i] * scale;
                        dk[at + i] += ds_j * q[q_at + i] * scale;
                    }
                }
            }
        }
    }
}
