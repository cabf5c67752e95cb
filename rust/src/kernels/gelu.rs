//! GELU, tanh approximation (GPT-2, and the Go TinyLM):
//! gelu(x) = 0.5 x (1 + tanh(u)), u = s (x + 0.044715 x^3), s = sqrt(2 / pi).
//!
//! The forward pass saves tanh(u) beside x, so the backward pass needs no transcendental
//! function, and the activation itself can be rebuilt from the two with one multiply-add.

use rayon::prelude::*;

use super::simd::simd_fn;
use super::vecmath::tanh;

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_CUBE: f32 = 0.044715;
/// Elements per rayon task.
const CHUNK: usize = 1 << 12;

/// inp, out and th are (N * F), elementwise: out = gelu(inp), th = tanh(u) for the backward pass.
pub fn gelu_forward(out: &mut [f32], th: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(th.par_chunks_mut(CHUNK))
        .zip(inp.par_chunks(CHUNK))
        .for_each(|((o, t), x)| gelu_forward_chunk(o, t, x));
}

simd_fn! {
    pub fn gelu_forward_chunk(out: &mut [f32], th: &mut [f32], inp: &[f32]) {
        for ((o, t), &x) in out.iter_mut().zip(th.iter_mut()).zip(inp) {
            let u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
            *t = tanh(u);
            *o = 0.5 * x * (1.0 + *t);
        }
    }
}

/// out = gelu(inp) again, from inp and the saved th = tanh(u).
pub fn gelu_from_tanh(out: &mut [f32], inp: &[f32], th: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(th.par_chunks(CHUNK))
        .for_each(|((o, x), t)| gelu_from_tanh_chunk(o, x, t));
}

simd_fn! {
    fn gelu_from_tanh_chunk(out: &mut [f32], inp: &[f32], th: &[f32]) {
        for ((o, &x), &t) in out.iter_mut().zip(inp).zip(th) {
            *o = 0.5 * x * (1.0 + t);
        }
    }
}

/// In the forward pass this was: out = 0.5 x (1 + tanh(u)), u = s (x + 0.044715 x^3); so
/// dout/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2).
/// `grad` holds dout on entry and dinp on return (GELU's input feeds nothing else, so the
/// gradient need not be accumulated).
pub fn gelu_backward(grad: &mut [f32], inp: &[f32], th: &[f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(th.par_chunks(CHUNK))
        .for_each(|((g, x), t)| gelu_backward_chunk(g, x, t));
}

simd_fn! {
    fn gelu_backward_chunk(grad: &mut [f32], inp: &[f32], th: &[f32]) {
        for ((g, &x), &t) in grad.iter_mut().zip(inp).zip(th) {
            let du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * x * x);
            *g *= 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx;
        }
    }
}
