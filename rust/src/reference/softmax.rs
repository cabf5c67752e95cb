//! Softmax of one row: `p[j] = exp(x[j] - m) / sum_k exp(x[k] - m)`, m = max x (which
//! changes nothing but keeps exp from overflowing).

/// x is (T), p will be (T). Returns `log sum_k exp(x[k])`, the log-sum-exp.
pub fn softmax_forward(p: &mut [f32], x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for (pj, &xj) in p.iter_mut().zip(x) {
        *pj = (xj - m).exp();
    }
    let sum: f32 = p.iter().sum();
    for pj in p.iter_mut() {
        *pj /= sum;
    }
    m + sum.ln()
}

/// In the forward pass this was: p = softmax(x), so `dp[j]/dx[k] = p[j] (1[j = k] - p[k])`
/// and `dx[k] += p[k] (dp[k] - sum_j dp[j] p[j])`.
pub fn softmax_backward(dx: &mut [f32], dp: &[f32], p: &[f32]) {
    let dp_dot_p: f32 = dp.iter().zip(p).map(|(a, b)| a * b).sum();
    for ((g, &dpk), &pk) in dx.iter_mut().zip(dp).zip(p) {
        *g += pk * (dpk - dp_dot_p);
    }
}
