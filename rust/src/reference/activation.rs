//! The feed-forward non-linearities. Elementwise, on u = x W_up + b_up:
//!   gelu_tanh(u) = 0.5 u (1 + tanh(s (u + 0.044715 u^3))), s = sqrt(2 / pi)   (GPT-2)
//!   gelu(u)      = u Phi(u) = 0.5 u (1 + erf(u / sqrt 2))                      (exact)
//!   relu(u)      = max(0, u),   relu2(u) = max(0, u)^2
//!   silu(u)      = u sigmoid(u)
//! Gated (GLU), with a second input g = x W_gate + b_gate:
//!   swiglu: h = silu(g) u,   geglu: h = gelu(g) u
//! Values and slopes are computed in f64 and rounded once.

use std::f64::consts::PI;

use crate::config::Activation;

/// The elementwise function applied to u, or to the gate g of a gated activation.
fn elementwise(act: Activation) -> Activation {
    match act {
        Activation::SwiGlu => Activation::Silu,
        Activation::GeGlu => Activation::Gelu,
        other => other,
    }
}

/// f(x) and f'(x) of an elementwise activation.
fn value_and_slope(act: Activation, x: f64) -> (f64, f64) {
    match elementwise(act) {
        Activation::GeluTanh => {
            let s = (2.0 / PI).sqrt();
            let th = (s * (x + 0.044715 * x * x * x)).tanh();
            let du_dx = s * (1.0 + 3.0 * 0.044715 * x * x);
            (
                0.5 * x * (1.0 + th),
                0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du_dx,
            )
        }
        Activation::Gelu => {
            let cdf = 0.5 * (1.0 + erf(x / 2f64.sqrt()));
            let pdf = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
            (x * cdf, cdf + x * pdf)
        }
        Activation::Relu => (x.max(0.0), if x > 0.0 { 1.0 } else { 0.0 }),
        Activation::Relu2 => (x.max(0.0).powi(2), 2.0 * x.max(0.0)),
        Activation::Silu | Activation::SwiGlu | Activation::GeGlu => {
            let sig = 1.0 / (1.0 + (-x).exp());
            (x * sig, sig * (1.0 + x * (1.0 - sig)))
        }
    }
}

/// gate, up and out are (N, F); gate is empty for an activation without a gate.
/// out = f(up), or out = f(gate) * up for a gated one.
pub fn activation_forward(act: Activation, out: &mut [f32], gate: &[f32], up: &[f32]) {
    for (i, (h, &u)) in out.iter_mut().zip(up).enumerate() {
        *h = if act.is_gated() {
            (value_and_slope(act, gate[i] as f64).0 * u as f64) as f32
        } else {
            value_and_slope(act, u as f64).0 as f32
        };
    }
}

/// In the forward pass this was: out = f(up), or out = f(gate) * up; so
/// dup += f'(up) dout, or dup += f(gate) dout and dgate += f'(gate) up dout.
pub fn activation_backward(
    act: Activation,
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
) {
    for (i, (&dh, &u)) in dout.iter().zip(up).enumerate() {
        if act.is_gated() {
            let (f, slope) = value_and_slope(act, gate[i] as f64);
            dup[i] += (f * dh as f64) as f32;
            dgate[i] += (slope * u as f64 * dh as f64) as f32;
        } else {
            dup[i] += (value_and_slope(act, u as f64).1 * dh as f64) as f32;
        }
    }
}

/// The error function (Rust's `f64::erf` is not stable yet): its Taylor series
/// erf(x) = 2 / sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1)) for |x| < 3, else
/// 1 - erfc(x) with erfc's continued fraction
/// erfc(x) = exp(-x^2) / sqrt(pi) / (x + (1/2) / (x + 1 / (x + (3/2) / (x + ...)))).
/// Both agree with the true value to about 1e-13, far below f32's resolution.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let value = if z < 3.0 {
        let (mut term, mut sum, mut n) = (z, z, 0.0);
        while term.abs() > 1e-17 * sum.abs() {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        2.0 / PI.sqrt() * sum
    } else {
        let mut fraction = z;
        for n in (1..60).rev() {
            fraction = z + (n as f64 / 2.0) / fraction;
        }
        1.0 - (-z * z).exp() / PI.sqrt() / fraction
    };
    value.copysign(x)
}
