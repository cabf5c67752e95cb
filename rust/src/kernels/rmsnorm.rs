//! RMSNorm over the last dimension, per row (Llama): no mean, no bias:
//! rstd = 1 / sqrt(sum x^2 / C + eps), norm = x * rstd, out = norm * weight.

use rayon::prelude::*;

use super::simd::simd_fn;

/// Rows per rayon task: below this, threading costs more than it saves.
const ROWS_PER_TASK: usize = 16;
/// Columns per rayon task when summing the weight's gradient over rows.
const COLS_PER_TASK: usize = 32;

/// inp is (N, C), weight is (C), out will be (N, C); rstd (N) is saved for the backward pass.
pub fn rmsnorm_forward(
    out: &mut [f32],
    rstd: &mut [f32],
    inp: &[f32],
    weight: &[f32],
    c: usize,
    eps: f32,
) {
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter_mut())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, x), s)| *s = rmsnorm_row(o, x, weight, eps));
}

/// The output of [`rmsnorm_forward`] again, from its input and the saved rstd.
pub fn rmsnorm_recompute(out: &mut [f32], inp: &[f32], rstd: &[f32], weight: &[f32], c: usize) {
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, x), &s)| {
            for ((y, &v), &w) in o.iter_mut().zip(x).zip(weight) {
                *y = v * s * w;
            }
        });
}

simd_fn! {
    /// One row of [`rmsnorm_forward`]; returns rstd.
    pub fn rmsnorm_row(out: &mut [f32], x: &[f32], weight: &[f32], eps: f32) -> f32 {
        let mean_square = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let s = 1.0 / (mean_square + eps).sqrt();
        for ((y, &v), &w) in out.iter_mut().zip(x).zip(weight) {
            *y = v * s * w;
        }
        s
    }
}

/// In the forward pass this was: out = norm * weight, norm = x * rstd; so
/// dweight += norm * dout, and with dnorm = dout * weight,
/// dinp += rstd * (dnorm - norm * mean(dnorm * norm)).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward(
    dinp: &mut [f32],
    dweight: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    weight: &[f32],
    rstd: &[f32],
    c: usize,
) {
    dinp.par_chunks_mut(c)
        .zip(dout.par_chunks(c))
        .zip(inp.par_chunks(c))
        .zip(rstd.par_iter())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|(((di, d), x), &s)| {
            let dnorm_norm_mean = d
                .iter()
                .zip(x)
                .zip(weight)
                .map(|((&dv, &xv), &w)| dv * w * xv * s)
                .sum::<f32>()
                / c as f32;
            for (((g, &dv), &xv), &w) in di.iter_mut().zip(d).zip(x).zip(weight) {
                *g += s * (dv * w - xv * s * dnorm_norm_mean);
            }
        });
    // Threads split the columns; each column sums its rows in order (any thread count
    // gives the same result).
    dweight
        .par_chunks_mut(COLS_PER_TASK)
        .enumerate()
        .for_each(|(block, dw)| {
            let col0 = block * COLS_PER_TASK;
            for ((d, x), &s) in dout.chunks_exact(c).zip(inp.chunks_exact(c)).zip(rstd) {
                let (d, x) = (&d[col0..col0 + dw.len()], &x[col0..col0 + dw.len()]);
                for ((g, &dv), &xv) in dw.iter_mut().zip(d).zip(x) {
                    *g += xv * s * dv;
                }
            }
        });
}
