//! Softmax over a row: p[i] = exp(x[i] - max) / sum_j exp(x[j] - max).
//! Subtracting the row maximum keeps exp from overflowing and does not change the result.

/// Replaces `row` by its softmax. Returns the log of the normaliser, log(sum exp(x - max)),
/// which cross-entropy needs.
pub fn softmax_in_place(row: &mut [f32]) -> f32 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for x in row.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    let inv = 1.0 / sum;
    for x in row.iter_mut() {
        *x *= inv;
    }
    sum.ln()
}

/// The backward of softmax for one row: with p = softmax(x) and dp the gradient of p,
/// dx[i] = p[i] (dp[i] - sum_j p[j] dp[j]). Overwrites `dp` with dx.
pub fn softmax_backward_in_place(dp: &mut [f32], p: &[f32]) {
    let inner: f32 = p.iter().zip(dp.iter()).map(|(a, b)| a * b).sum();
    for (d, &pi) in dp.iter_mut().zip(p) {
        *d = pi * (*d - inner);
    }
}
