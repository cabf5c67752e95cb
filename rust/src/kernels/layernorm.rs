//! Layer normalisation over the last dimension, per row:
//! mean = sum x / C, var = sum (x - mean)^2 / C (biased, as the Go TinyLM and PyTorch),
//! rstd = 1 / sqrt(var + eps), norm = (x - mean) * rstd, out = norm * weight + bias.

use rayon::prelude::*;

use super::simd::simd_fn;
use super::vecmath::sum;

/// Rows per rayon task: below this, threading costs more than it saves.
const ROWS_PER_TASK: usize = 16;
/// Columns per rayon task when summing the parameter gradients over rows.
const COLS_PER_TASK: usize = 32;

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

/// The output of [`layernorm_forward`] again, from its input and the saved mean and rstd:
/// the backward pass rebuilds it where it needs it instead of keeping it per layer.
#[allow(clippy::too_many_arguments)]
pub fn layernorm_recompute(
    out: &mut [f32],
    inp: &[f32],
    mean: &[f32],
    rstd: &[f32],
    weight: &[f32],
    bias: &[f32],
    c: usize,
) {
    out.par_chunks_mut(c)
        .zip(inp.par_chunks(c))
        .zip(mean.par_iter().zip(rstd.par_iter()))
        .with_min_len(ROWS_PER_TASK)
        .for_each(|((o, x), (&m, &s))| layernorm_apply_row(o, x, m, s, weight, bias));
}

simd_fn! {
    /// out = (x - mean) * rstd * weight + bias for one row.
    fn layernorm_apply_row(out: &mut [f32], x: &[f32], m: f32, s: f32, weight: &[f32], bias: &[f32]) {
        for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
            *o = ((v - m) * s).mul_add(w, b);
        }
    }
}

simd_fn! {
    /// One row of [`layernorm_forward`]; returns (mean, rstd).
    pub fn layernorm_row(out: &mut [f32], x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> (f32, f32) {
        let n = x.len() as f32;
        let m = sum(x) / n;
        let mut sq = [0.0f32; 8];
        let mut chunks = x.chunks_exact(8);
        for ch in &mut chunks {
            for i in 0..8 {
                let d = ch[i] - m;
                sq[i] = d.mul_add(d, sq[i]);
            }
        }
        let tail: f32 = chunks.remainder().iter().map(|v| (v - m) * (v - m)).sum();
        let var = (sum(&sq) + tail) / n;
        let s = 1.0 / (var + eps).sqrt();
        for (((o, v), w), b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
            *o = ((v - m) * s).mul_add(*w, *b);
        }
        (m, s)
    }
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
        .for_each(|(((di, d), x), (&m, &s))| layernorm_backward_row(di, d, x, weight, m, s));
    // Parameter gradients sum over rows. Threads split the columns, and each column sums
    // its rows in order, so the result is the same for any number of threads.
    dweight
        .par_chunks_mut(COLS_PER_TASK)
        .zip(dbias.par_chunks_mut(COLS_PER_TASK))
        .enumerate()
        .for_each(|(block, (dw, db))| {
            layernorm_param_grads(dw, db, block * COLS_PER_TASK, dout, inp, mean, rstd, c);
        });
}

simd_fn! {
    fn layernorm_backward_row(di: &mut [f32], d: &[f32], x: &[f32], weight: &[f32], m: f32, s: f32) {
        let c = x.len() as f32;
        let mut dnorm_mean = 0.0f32;
        let mut dnorm_norm_mean = 0.0f32;
        for ((&dv, &xv), &w) in d.iter().zip(x).zip(weight) {
            let norm = (xv - m) * s;
            let dnorm = dv * w;
            dnorm_mean += dnorm;
            dnorm_norm_mean = dnorm.mul_add(norm, dnorm_norm_mean);
        }
        dnorm_mean /= c;
        dnorm_norm_mean /= c;
        for (((g, &dv), &xv), &w) in di.iter_mut().zip(d).zip(x).zip(weight) {
            let norm = (xv - m) * s;
            let dnorm = dv * w;
            *g += s * (dnorm - dnorm_mean - norm * dnorm_norm_mean);
        }
    }
}

simd_fn! {
    /// dweight and dbias for columns col0 .. col0 + dw.len(), summed over all rows in order.
    fn layernorm_param_grads(
        dw: &mut [f32],
        db: &mut [f32],
        col0: usize,
        dout: &[f32],
        inp: &[f32],
        mean: &[f32],
        rstd: &[f32],
        c: usize,
    ) {
        let width = dw.len();
        for ((d, x), (&m, &s)) in dout.chunks_exact(c).zip(inp.chunks_exact(c)).zip(mean.iter().zip(rstd)) {
            let d = &d[col0..col0 + width];
            let x = &x[col0..col0 + width];
            for (((gw, gb), &dv), &xv) in dw.iter_mut().zip(db.iter_mut()).zip(d).zip(x) {
                *gw = ((xv - m) * s).mul_add(dv, *gw);
                *gb += dv;
            }
        }
    }
}
