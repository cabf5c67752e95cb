//! Layer normalisation over the last dimension, per row:
//! mean = sum x / C, var = sum (x - mean)^2 / C (biased, as the Go TinyLM and PyTorch),
//! rstd = 1 / sqrt(var + eps), norm = (x - mean) * rstd, out = norm * weight + bias.

use rayon::prelude::*;

/// Rows per rayon task: below this, threading costs more than it saves.
const ROWS_PER_TASK: usize = 16;

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
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(mean.par_iter_mut().zip(rstd.par_iter_mut()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, x), (m_out, s_out))| {
            let (m, s) = layernorm_row(o, x, weight, bias, eps);
            *m_out = m;
            *s_out = s;
        });
}

/// One row of [`layernorm_forward`]; returns (mean, rstd).
pub fn layernorm_row(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let m = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - m) * (v - m)).sum::<f32>() / n;
    let s = 1.0 / (var + eps).sqrt();
    for (((o, v), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - m) * s * w + b;
    }
    (m, s)
}

/// In the forward pass this was: out = norm * weight + bias, norm = (x - mean) * rstd; so
/// dbias += dout, dweight += norm * dout, and with dnorm = dout * weight,
/// dinp += rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)).
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
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((di, d), x), (&m, &s))| {
            let mut dnorm_mean = 0.0f32;
            let mut dnorm_norm_mean = 0.0f32;
            for ((&dv, &xv), &w) in d.iter().zip(x).zip(weight) {
                let norm = (xv - m) * s;
                let dnorm = dv * w;
                dnorm_mean += dnorm;
                dnorm_norm_mean += dnorm * norm;
            }
            dnorm_mean /= c as f32;
            dnorm_norm_mean /= c as f32;
            for (((g, &dv), &xv), &w) in di.iter_mut().zip(d).zip(x).zip(weight) {
                let norm = (xv - m) * s;
                let dnorm = dv * w;
                *g += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
            }
        });
    // Parameter gradients sum over rows: done in row order so the result is the same for
    // any number of threads.
    for ((d, x), (&m, &s)) in dout.chunks_exact(c).zip(inp.chunks_exact(c)).zip(mean.iter().zip(rstd)) {
        for (((gw, gb), &dv), &xv) in dweight.iter_mut().zip(dbias.iter_mut()).zip(d).zip(x) {
            *gw += (xv - m) * s * dv;
            *gb += dv;
        }
    }
}
