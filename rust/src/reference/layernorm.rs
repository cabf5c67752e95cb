//! Layer norm over the last dimension of each row (biased variance, as PyTorch):
//! mean = sum x / C, var = sum (x - mean)^2 / C, rstd = 1 / sqrt(var + eps),
//! norm = (x - mean) * rstd, out = norm * weight + bias.

/// inp is (N, C), weight and bias are (C), out will be (N, C); mean and rstd (N) are saved
/// for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_forward(
    out: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
    eps: f32,
) {
    for (((y, x), m), s) in out
        .chunks_exact_mut(c)
        .zip(inp.chunks_exact(c))
        .zip(mean.iter_mut())
        .zip(rstd.iter_mut())
    {
        *m = x.iter().sum::<f32>() / c as f32;
        let var = x.iter().map(|xi| (xi - *m) * (xi - *m)).sum::<f32>() / c as f32;
        *s = 1.0 / (var + eps).sqrt();
        for (((yi, xi), w), b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
            *yi = (xi - *m) * *s * w + b;
        }
    }
}

/// In the forward pass this was: out = norm * weight + bias, norm = (x - mean) * rstd; so
/// dweight += dout * norm, dbias += dout, and with dnorm = dout * weight (mean and rstd
/// depend on x too): dx += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
#[allow(clippy::too_many_arguments)]
pub fn layernorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dbias: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    c: usize,
) {
    for ((((dx, dy), x), &m), &s) in dinp
        .chunks_exact_mut(c)
        .zip(dout.chunks_exact(c))
        .zip(inp.chunks_exact(c))
        .zip(mean)
        .zip(rstd)
    {
        let norm: Vec<f32> = x.iter().map(|xi| (xi - m) * s).collect();
        let dnorm: Vec<f32> = dy.iter().zip(weight).map(|(d, w)| d * w).collect();
        let dnorm_mean = dnorm.iter().sum::<f32>() / c as f32;
        let dnorm_norm_mean = dnorm.iter().zip(&norm).map(|(a, b)| a * b).sum::<f32>() / c as f32;
        for i in 0..c {
            dweight[i] += dy[i] * norm[i];
            dbias[i] += dy[i];
            dx[i] += s * (dnorm[i] - dnorm_mean - norm[i] * dnorm_norm_mean);
        }
    }
}
