//! The feed-forward activations other than GPT-2's tanh GELU (which has its own kernel,
//! [`super::gelu`], saving tanh for the backward pass), elementwise on u:
//!   gelu(u)  = u Phi(u) = 0.5 u (1 + erf(u / sqrt 2)),   gelu'(u) = Phi(u) + u phi(u)
//!   relu(u)  = max(0, u),                                 relu'(u) = [u > 0]
//!   relu2(u) = max(0, u)^2,                               relu2'(u) = 2 max(0, u)
//!   silu(u)  = u s(u), s the sigmoid,                     silu'(u) = s (1 + u (1 - s))
//! The gated activations are not here yet: the fast path refuses them.

use rayon::prelude::*;

use crate::config::Activation;

/// Elements per rayon task.
const CHUNK: usize = 1 << 12;

/// erf for f32 work: Abramowitz and Stegun 7.1.26 (absolute error below 1.5e-7), in f64.
fn erf(x: f32) -> f32 {
    let z = (x as f64).abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * z);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    ((1.0 - poly * (-z * z).exp()) as f32).copysign(x)
}

/// f(u) and f'(u).
#[inline]
fn value_and_slope(act: Activation, u: f32) -> (f32, f32) {
    match act {
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * u * u).exp() * 0.398_942_3; // 1 / sqrt(2 pi)
            (u * cdf, cdf + u * pdf)
        }
        Activation::Relu => (u.max(0.0), if u > 0.0 { 1.0 } else { 0.0 }),
        Activation::Relu2 => (u.max(0.0) * u.max(0.0), 2.0 * u.max(0.0)),
        Activation::Silu => {
            let s = 1.0 / (1.0 + (-u).exp());
            (u * s, s * (1.0 + u * (1.0 - s)))
        }
        other => {
            unreachable!("the fast path has no kernel for {other} (checked at model creation)")
        }
    }
}

/// inp and out are (N * F), elementwise: out = f(inp).
pub fn activation_forward(act: Activation, out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| activation_forward_chunk(act, o, x));
}

/// [`activation_forward`] on one thread.
pub fn activation_forward_chunk(act: Activation, out: &mut [f32], inp: &[f32]) {
    for (o, &u) in out.iter_mut().zip(inp) {
        *o = value_and_slope(act, u).0;
    }
}

/// In the forward pass this was: out = f(inp); so dinp = f'(inp) dout. `grad` holds dout
/// on entry and dinp on return (the activation's input feeds nothing else).
pub fn activation_backward(act: Activation, grad: &mut [f32], inp: &[f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(g, x)| {
            for (gi, &u) in g.iter_mut().zip(x) {
                *gi *= value_and_slope(act, u).1;
            }
        });
}
