//! GELU, tanh approximation (GPT-2, and the Go TinyLM):
//! gelu(x) = 0.5 x (1 + tanh(s (x + 0.044715 x^3))), s = sqrt(2 / pi).

use rayon::prelude::*;

use super::simd::simd_fn;
use super::vecmath::tanh;

const GELU_SCALE: f32 = 0.797_884_6; // sqrt(2 / pi)
const GELU_CUBE: f32 = 0.044715;
/// Elements per rayon task.
const CHUNK: usize = 1 << 12;

/// inp and out are (N * F), elementwise.
pub fn gelu_forward(out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| gelu_forward_chunk(o, x));
}

simd_fn! {
    pub fn gelu_forward_chunk(out: &mut [f32], inp: &[f32]) {
        for (o, &x) in out.iter_mut().zip(inp) {
            let u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
            *o = 0.5 * x * (1.0 + tanh(u));
        }
    }
}

/// In the forward pass this was: out = 0.5 x (1 + tanh(u)), u = s (x + 0.044715 x^3); so
/// dout/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2).
pub fn gelu_backward(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
    dinp.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .zip(dout.par_chunks(CHUNK))
        .for_each(|((di, x), d)| gelu_backward_chunk(di, x, d));
}

simd_fn! {
    fn gelu_backward_chunk(dinp: &mut [f32], inp: &[f32], dout: &[f32]) {
        for ((di, &x), &d) in dinp.iter_mut().zip(inp).zip(dout) {
            let u = GELU_SCALE * (x + GELU_CUBE * x * x * x);
            let th = tanh(u);
            let du_dx = GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * x * x);
            let grad = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du_dx;
            *di = grad.mul_add(d, *di);
        }
    }
}
