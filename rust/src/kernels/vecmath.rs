//! Small vector helpers, written so that the compiler vectorizes them: eight independent
//! accumulators break the serial dependency of a float sum, and `exp` and `tanh` are
//! branch-free polynomials instead of calls into libm. They are `#[inline(always)]`, so
//! inside a `simd_fn!` function they compile with AVX2 and FMA.

use super::bf16::Weight;

/// `sum_i a[i] * b[i]`, with b stored in float32 or bfloat16 ([`Weight`]).
#[inline(always)]
pub fn dot<W: Weight>(a: &[f32], b: &[W]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; 8];
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] = x[i].mul_add(y[i].to_f32(), acc[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
        tail = x.mul_add(y.to_f32(), tail);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `y[i] += alpha * x[i]`, with x stored in float32 or bfloat16 ([`Weight`]).
#[inline(always)]
pub fn axpy<W: Weight>(y: &mut [f32], alpha: f32, x: &[W]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi = alpha.mul_add(xi.to_f32(), *yi);
    }
}

/// `sum_i x[i]`, with eight accumulators.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    let tail: f32 = chunks.remainder().iter().sum();
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// `max_i x[i]` (negative infinity for an empty slice).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    let tail = chunks
        .remainder()
        .iter()
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    acc.iter().copied().fold(tail, f32::max)
}

/// e^x to about 2 ulp (Cephes' expf polynomial): x = n ln2 + r, |r| <= ln2 / 2,
/// e^x = 2^n e^r. Inputs are clamped to the range where the result is a normal float,
/// so very negative inputs give ~1e-38 rather than 0.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding 1.5 * 2^23 rounds x log2(e) to the nearest integer (ties to even) and leaves
    // that integer in the low bits of the sum, from where 2^n is built with integer
    // arithmetic: all of it vectorizes (`n as i32` would not: it saturates lane by lane).
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p.mul_add(r, 1.398_199_9e-3);
    p = p.mul_add(r, 8.333_452e-3);
    p = p.mul_add(r, 4.166_579_6e-2);
    p = p.mul_add(r, 1.666_666_5e-1);
    p = p.mul_add(r, 0.5);
    let er = (p * r).mul_add(r, r) + 1.0;
    // shifted's bits are those of ROUND (0x4B40_0000) plus n; 2^n has exponent bits n + 127.
    let n_bits = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n_bits.wrapping_add(127) << 23);
    er * scale
}

/// tanh(x) = 1 - 2 / (e^(2x) + 1). Accurate to ~1e-7 in absolute terms (what GELU needs,
/// since it adds tanh to 1), not in relative terms near 0.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Replaces `row` by its softmax and returns log(sum exp(x - max)).
#[inline(always)]
pub fn softmax_in_place(row: &mut [f32]) -> f32 {
    let m = max(row);
    for x in row.iter_mut() {
        *x = exp(*x - m);
    }
    let total = sum(row);
    let inv = 1.0 / total;
    for x in row.iter_mut() {
        *x *= inv;
    }
    total.ln()
}
