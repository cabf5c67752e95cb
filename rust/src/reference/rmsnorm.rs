//! RMSNorm over the last dimension of each row (Llama): no mean, no bias:
//! rstd = 1 / sqrt(sum x^2 / C + eps), norm = x * rstd, out = norm * weight.

/// inp is (N, C), weight is (C), out will be (N, C); rstd (N) is saved for the backward pass.
pub fn rmsnorm_forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    c: usize,
    eps: f32,
) {
    for ((y, x), s) in out
        .chunks_exact_mut(c)
        .zip(inp.chunks_exact(c))
        .zip(rstd.iter_mut())
    {
        let mean_square = x.iter().map(|xi| xi * xi).sum::<f32>() / c as f32;
        *s = 1.0 / (mean_square + eps).sqrt();
        for ((yi, xi), w) in y.iter_mut().zip(x).zip(weight) {
            *yi = xi * *s * w;
        }
    }
}

/// In the forward pass this was: out = norm * weight, norm = x * rstd; so
/// dweight += dout * norm, and with dnorm = dout * weight (rstd depends on x too):
/// dx += rstd * (dnorm - norm * mean(dnorm * norm)).
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    c: usize,
) {
    for (((dx, dy), x), &s) in dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c))
        .zip(rstd)
    {
        let norm: Vec<f32> = x.iter().map(|xi| xi * s).collect();
        let dnorm: Vec<f32> = dy.iter().zip(weight).map(|(d, w)| d * w).collect();
        let dnorm_norm_mean = dnorm.iter().zip(&norm).map(|(a, b)| a * b).sum::<f32>() / c as f32;
        for i in 0..c {
            dweight[i] += dy[i] * norm[i];
            dx[i] += s * (dnorm[i] - norm[i] * dnorm_norm_mean);
        }
    }
}
