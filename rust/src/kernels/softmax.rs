//! Softmax over a row: p[i] = exp(x[i] - max) / sum_j exp(x[j] - max).
//! Subtracting the row maximum keeps exp from overflowing and does not change the result.

/// Replaces `row` by its softmax. Returns the log of the normaliser, log(sum exp(x - max)),
/// which cross-entropy needs.
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) -> f32 {
    super::vecmath::softmax_in_place(row)
}

/// In the forward pass this was: p = softmax(x); so with dp the gradient of p,
/// dx[i] = p[i] (dp[i] - sum_j p[j] dp[j]). Overwrites `dp` with dx.
#[inline(always)]
pub fn softmax_backward_in_place(dp: &mut [f32], p: &[f32]) {
    let inner = super::vecmath::dot(p, dp);
    for (d, &pi) in dp.iter_mut().zip(p) {
        *d = pi * (*d - inner);
    }
}
