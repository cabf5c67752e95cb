//! Rotary position embedding (RoPE): each head's vector is cut into D / 2 pairs of
//! adjacent dimensions (2i, 2i + 1), as in llama2.c, and pair i at position t is rotated by
//! the angle t * theta^(-2i / D):
//!
//! ```text
//!   out[2i]     = x[2i] cos - x[2i + 1] sin
//!   out[2i + 1] = x[2i] sin + x[2i + 1] cos
//! ```
//!
//! Applied to q and k, so the score q_t . k_s depends on the positions only through t - s.

/// The cosine and sine of the angle of pair i at position t (computed in f64).
pub fn rotation(t: usize, i: usize, d: usize, theta: f32) -> (f32, f32) {
    let angle = t as f64 * (theta as f64).powf(-2.0 * i as f64 / d as f64);
    (angle.cos() as f32, angle.sin() as f32)
}

/// inp is (B, T, heads, D), out will be (B, T, heads, D): each head's pairs rotated by
/// their position's angles.
pub fn rope_forward(out: &mut [f32], inp: &[f32], t: usize, heads: usize, d: usize, theta: f32) {
    for (row, (y, x)) in out
        .chunks_exact_mut(heads * d)
        .zip(inp.chunks_exact(heads * d))
        .enumerate()
    {
        let pos = row % t;
        for (pair, (y_pair, x_pair)) in y.chunks_exact_mut(2).zip(x.chunks_exact(2)).enumerate() {
            let (cos, sin) = rotation(pos, pair % (d / 2), d, theta);
            y_pair[0] = x_pair[0] * cos - x_pair[1] * sin;
            y_pair[1] = x_pair[0] * sin + x_pair[1] * cos;
        }
    }
}

/// In the forward pass this was: out = R x per pair, R the rotation by the angle; the
/// transpose of a rotation is the rotation back, so dx += R^T dout:
///
/// ```text
///   dx[2i] += dout[2i] cos + dout[2i + 1] sin, dx[2i + 1] += -dout[2i] sin + dout[2i + 1] cos.
/// ```
pub fn rope_backward(dinp: &mut [f32], dout: &[f32], t: usize, heads: usize, d: usize, theta: f32) {
    for (row, (dx, dy)) in dinp
        .chunks_exact_mut(heads * d)
        .zip(dout.chunks_exact(heads * d))
        .enumerate()
    {
        let pos = row % t;
        for (pair, (dx_pair, dy_pair)) in dx.chunks_exact_mut(2).zip(dy.chunks_exact(2)).enumerate()
        {
            let (cos, sin) = rotation(pos, pair % (d / 2), d, theta);
            dx_pair[0] += dy_pair[0] * cos + dy_pair[1] * sin;
            dx_pair[1] += -dy_pair[0] * sin + dy_pair[1] * cos;
        }
    }
}
