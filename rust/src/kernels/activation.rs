//! The feed-forward activations other than GPT-2's tanh GELU (which has its own kernel,
//! [`super::gelu`], saving tanh for the backward pass), elementwise on u:
//!
//! ```text
//!   gelu(u)  = u Phi(u) = 0.5 u (1 + erf(u / sqrt 2)),   gelu'(u) = Phi(u) + u phi(u)
//!   relu(u)  = max(0, u),                                 relu'(u) = [u > 0]
//!   relu2(u) = max(0, u)^2,                               relu2'(u) = 2 max(0, u)
//!   silu(u)  = u s(u), s the sigmoid,                     silu'(u) = s (1 + u (1 - s))
//! ```
//!
//! and the gated ones, on the gate g and the up projection u:
//!
//! ```text
//!   swiglu: h = silu(g) u,   geglu: h = gelu(g) u
//! ```
//!
//! SiLU (alone or as SwiGLU's gate, Llama's activation) runs vectorised, with the
//! polynomial exp of [`super::vecmath`].

use rayon::prelude::*;

use super::simd::simd_fn;
use super::vecmath::exp;
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
#[inline(always)]
fn value_and_slope(act: Activation, u: f32) -> (f32, f32) {
    match act {
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
            let pdf = (-0.5 * u * u).exp() * 0.398_942_3; // 1 / sqrt(2 pi)
            (u * cdf, cdf + u * pdf)
        }
        Activation::Relu => (u.max(0.0), if u > 0.0 { 1.0 } else { 0.0 }),
        Activation::Relu2 => (u.max(0.0) * u.max(0.0), 2.0 * u.max(0.0)),
        Activation::Silu | Activation::SwiGlu => silu(u),
        Activation::GeGlu => value_and_slope(Activation::Gelu, u),
        other => {
            unreachable!("the fast path has no kernel for {other} (checked at model creation)")
        }
    }
}

/// silu(u) and silu'(u), with the vectorised exp.
#[inline(always)]
fn silu(u: f32) -> (f32, f32) {
    let s = 1.0 / (1.0 + exp(-u));
    (u * s, s * (1.0 + u * (1.0 - s)))
}

/// inp and out are (N * F), elementwise: out = f(inp).
pub fn activation_forward(act: Activation, out: &mut [f32], inp: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(o, x)| activation_forward_chunk(act, o, x));
}

simd_fn! {
    /// [`activation_forward`] on one thread.
    pub fn activation_forward_chunk(act: Activation, out: &mut [f32], inp: &[f32]) {
        for (o, &u) in out.iter_mut().zip(inp) {
            *o = value_and_slope(act, u).0;
        }
    }
}

/// In the forward pass this was: out = f(inp); so dinp = f'(inp) dout. `grad` holds dout
/// on entry and dinp on return (the activation's input feeds nothing else).
pub fn activation_backward(act: Activation, grad: &mut [f32], inp: &[f32]) {
    grad.par_chunks_mut(CHUNK)
        .zip(inp.par_chunks(CHUNK))
        .for_each(|(g, x)| activation_backward_chunk(act, g, x));
}

simd_fn! {
    fn activation_backward_chunk(act: Activation, grad: &mut [f32], inp: &[f32]) {
        for (gi, &u) in grad.iter_mut().zip(inp) {
            *gi *= value_and_slope(act, u).1;
        }
    }
}

/// gate, up and out are (N * F), elementwise: out = f(gate) * up (f = silu for swiglu,
/// gelu for geglu).
pub fn gated_forward(act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]) {
    out.par_chunks_mut(CHUNK)
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|(o, (g, u))| gated_forward_chunk(act, o, g, u));
}

simd_fn! {
    /// [`gated_forward`] on one thread.
    pub fn gated_forward_chunk(act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]) {
        // One loop per function, so that SwiGLU's vectorises.
        if act == Activation::SwiGlu {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = silu(g).0 * u;
            }
        } else {
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = value_and_slope(act, g).0 * u;
            }
        }
    }
}

/// In the forward pass this was: out = f(gate) * up; so dup = f(gate) dout and
/// dgate = f'(gate) up dout. `grad` holds dout on entry and dgate on return; dup is
/// overwritten (neither input feeds anything else).
pub fn gated_backward(
    act: Activation,
    grad: &mut [f32],
    dup: &mut [f32],
    gate: &[f32],
    up: &[f32],
) {
    grad.par_chunks_mut(CHUNK)
        .zip(dup.par_chunks_mut(CHUNK))
        .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
        .for_each(|((dg, du), (g, u))| gated_backward_chunk(act, dg, du, g, u));
}

simd_fn! {
    fn gated_backward_chunk(act: Activation, grad: &mut [f32], dup: &mut [f32], gate: &[f32], up: &[f32]) {
        // One loop per function and no closure (a closure does not inherit the target
        // features), so that SwiGLU's vectorises.
        let rows = grad.iter_mut().zip(dup.iter_mut()).zip(gate).zip(up);
        if act == Activation::SwiGlu {
            for (((dg, du), &g), &u) in rows {
                let (f, slope) = silu(g);
                *du = f * *dg;
                *dg *= slope * u;
            }
        } else {
            for (((dg, du), &g), &u) in rows {
                let (f, slope) = value_and_slope(act, g);
                *du = f * *dg;
                *dg *= slope * u;
            }
        }
    }
}
