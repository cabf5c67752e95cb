//! Rotary positions (RoPE) on the fast path, with the reference's convention
//! ([`crate::reference::rope`]): each head's pairs of adjacent dimensions (2i, 2i + 1) at
//! position t are rotated by the angle t * theta^(-2i / D),
//!
//! ```text
//!   out[2i] = x[2i] cos - x[2i + 1] sin,   out[2i + 1] = x[2i] sin + x[2i + 1] cos.
//! ```
//!
//! The angles come from the reference's own function, so both paths rotate by the same
//! cos and sin. Here the rotation runs in place on the q and k columns of the projections'
//! rows (N, (H + 2K) D), which hold q (H D) then k (K D) side by side, so no copy is made;
//! the backward pass rotates the gradients back in place (a rotation's transpose is its
//! inverse).

use rayon::prelude::*;

use super::simd::simd_fn;
use crate::reference::rope::rotation;

/// cos and sin of every (position, pair) angle for positions 0..T: (T, D / 2) each.
#[derive(Debug, Clone, Default)]
pub struct RopeTable {
    d: usize,
    theta: f32,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Makes the table hold positions 0..t for head size d and base theta.
    pub fn ensure(&mut self, t: usize, d: usize, theta: f32) {
        let half = d / 2;
        if self.d == d && self.theta == theta && self.cos.len() >= t * half {
            return;
        }
        self.d = d;
        self.theta = theta;
        self.cos.clear();
        self.sin.clear();
        for pos in 0..t {
            for i in 0..half {
                let (cos, sin) = rotation(pos, i, d, theta);
                self.cos.push(cos);
                self.sin.push(sin);
            }
        }
    }

    /// The cos and sin (D / 2 each) of position `pos`.
    pub fn at(&self, pos: usize) -> (&[f32], &[f32]) {
        let half = self.d / 2;
        (
            &self.cos[pos * half..][..half],
            &self.sin[pos * half..][..half],
        )
    }
}

/// The cos and sin (D / 2 each) of position `pos`, written into `cos` and `sin` (for
/// decoding, one position at a time).
pub fn rotation_at(cos: &mut [f32], sin: &mut [f32], pos: usize, d: usize, theta: f32) {
    for (i, (c, s)) in cos.iter_mut().zip(sin.iter_mut()).enumerate() {
        (*c, *s) = rotation(pos, i, d, theta);
    }
}

simd_fn! {
    /// Rotates every head of x (whole heads of D, side by side) by the angles cos, sin (D / 2).
    pub fn rotate_heads(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        for head in x.chunks_exact_mut(2 * cos.len()) {
            for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c - b * s;
                pair[1] = a * s + b * c;
            }
        }
    }
}

simd_fn! {
    /// In the forward pass this was: x = R x per pair; so dx = R^T dx, the rotation back:
    /// `dx[2i] = d[2i] cos + d[2i + 1] sin`, `dx[2i + 1] = -d[2i] sin + d[2i + 1] cos`.
    pub fn rotate_heads_back(dx: &mut [f32], cos: &[f32], sin: &[f32]) {
        for head in dx.chunks_exact_mut(2 * cos.len()) {
            for ((pair, &c), &s) in head.chunks_exact_mut(2).zip(cos).zip(sin) {
                let (a, b) = (pair[0], pair[1]);
                pair[0] = a * c + b * s;
                pair[1] = -a * s + b * c;
            }
        }
    }
}

/// Rows (B, T, width), row n at position n % T: rotates columns 0..cols (q and k, whole
/// heads) of each row in place.
pub fn rope_forward(rows: &mut [f32], width: usize, cols: usize, t: usize, table: &RopeTable) {
    rows.par_chunks_mut(width)
        .enumerate()
        .with_min_len(32)
        .for_each(|(n, row)| {
            let (cos, sin) = table.at(n % t);
            rotate_heads(&mut row[..cols], cos, sin);
        });
}

/// Backward of [`rope_forward`]: the gradients of the rotated columns become, in place,
/// the gradients of the columns before the rotation.
pub fn rope_backward(drows: &mut [f32], width: usize, cols: usize, t: usize, table: &RopeTable) {
    drows
        .par_chunks_mut(width)
        .enumerate()
        .with_min_len(32)
        .for_each(|(n, row)| {
            let (cos, sin) = table.at(n % t);
            rotate_heads_back(&mut row[..cols], cos, sin);
        });
}
