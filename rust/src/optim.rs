//! Optimizers and gradient clipping, over the flat parameter and gradient buffers.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::kernels::simd::simd_fn;
use crate::params::ParamLayout;

/// Elements per parallel task in the optimizer loops. Fixed, so that the sums of squares
/// are added in the same order for any number of threads.
const CHUNK: usize = 1 << 14;

/// Scales the gradients so that their global L2 norm is at most `max_norm`.
/// Returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    if norm.is_finite() && norm > max_norm as f64 {
        let scale = (max_norm as f64 / (norm + 1e-6)) as f32;
        grads.par_chunks_mut(CHUNK).for_each(|chunk| {
            for g in chunk {
                *g *= scale;
            }
        });
    }
    norm as f32
}

/// Global L2 norm of a gradient buffer: squares summed in f64 per fixed chunk, then the
/// chunk sums in order.
pub fn grad_norm(grads: &[f32]) -> f64 {
    let partial: Vec<f64> = grads.par_chunks(CHUNK).map(sum_of_squares).collect();
    partial.iter().sum::<f64>().sqrt()
}

simd_fn! {
    fn sum_of_squares(x: &[f32]) -> f64 {
        let mut acc = [0.0f64; 4];
        let mut chunks = x.chunks_exact(4);
        for c in &mut chunks {
            for i in 0..4 {
                acc[i] += (c[i] as f64) * (c[i] as f64);
            }
        }
        let tail: f64 = chunks.remainder().iter().map(|&g| (g as f64) * (g as f64)).sum();
        (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
    }
}

/// Plain stochastic gradient descent: p -= lr * g (the Go TinyLM's optimizer).
pub fn sgd_step(params: &mut [f32], grads: &[f32], lr: f32) {
    for (p, g) in params.iter_mut().zip(grads) {
        *p -= lr * g;
    }
}

/// AdamW hyper-parameters (PyTorch's names and defaults, except weight decay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

impl AdamWConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::value(format!(
                    "AdamW {name} must be in [0, 1), got {beta}"
                )));
            }
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::value(format!(
                "AdamW eps must be positive, got {}",
                self.eps
            )));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(Error::value(format!(
                "AdamW weight_decay must be >= 0, got {}",
                self.weight_decay
            )));
        }
        Ok(())
    }
}

/// AdamW (Loshchilov and Hutter), as PyTorch computes it:
/// p -= lr * wd * p (matrices only); m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
/// p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
#[derive(Debug, Clone)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub m: Vec<f32>,
    pub v: Vec<f32>,
    /// Number of steps taken.
    pub step: u64,
    /// (start, end) of each parameter range that gets weight decay.
    decay_ranges: Vec<(usize, usize)>,
}

impl AdamW {
    pub fn new(config: AdamWConfig, layout: &ParamLayout) -> Result<AdamW> {
        config.validate()?;
        let decay_ranges = layout
            .specs
            .iter()
            .filter(|s| s.is_matrix())
            .map(|s| (s.offset, s.offset + s.len()))
            .collect();
        Ok(AdamW {
            config,
            m: crate::alloc::zeros(layout.total, "AdamW's first moments")?,
            v: crate::alloc::zeros(layout.total, "AdamW's second moments")?,
            step: 0,
            decay_ranges,
        })
    }

    /// Restores moments and step count (from a checkpoint).
    pub fn set_state(&mut self, m: Vec<f32>, v: Vec<f32>, step: u64) -> Result<()> {
        if m.len() != self.m.len() || v.len() != self.v.len() {
            return Err(Error::shape(
                "optimizer moments",
                &[self.m.len()],
                &[m.len()],
            ));
        }
        self.m = m;
        self.v = v;
        self.step = step;
        Ok(())
    }

    pub fn step(&mut self, params: &mut [f32], grads: &[f32], lr: f32) -> Result<()> {
        if params.len() != self.m.len() || grads.len() != self.m.len() {
            return Err(Error::shape(
                "AdamW parameters",
                &[self.m.len()],
                &[params.len()],
            ));
        }
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::value(format!(
                "learning rate must be >= 0 and finite, got {lr}"
            )));
        }
        self.step += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        let bias1 = 1.0 - (beta1 as f64).powi(self.step.min(i32::MAX as u64) as i32);
        let bias2 = 1.0 - (beta2 as f64).powi(self.step.min(i32::MAX as u64) as i32);
        let hp = AdamWStep {
            beta1,
            beta2,
            eps,
            step_size: (lr as f64 / bias1) as f32,
            inv_sqrt_bias2: (1.0 / bias2.sqrt()) as f32,
        };
        let decay = 1.0 - lr * weight_decay;
        // Walk the buffer as alternating runs with and without weight decay.
        let mut start = 0;
        let mut ranges = self.decay_ranges.iter().copied().peekable();
        while start < params.len() {
            let (end, decayed) = match ranges.peek() {
                Some(&(s, e)) if s == start => {
                    ranges.next();
                    (e, true)
                }
                Some(&(s, _)) => (s, false),
                None => (params.len(), false),
            };
            let factor = if decayed { decay } else { 1.0 };
            params[start..end]
                .par_chunks_mut(CHUNK)
                .zip(grads[start..end].par_chunks(CHUNK))
                .zip(self.m[start..end].par_chunks_mut(CHUNK))
                .zip(self.v[start..end].par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| adamw_chunk(p, g, m, v, hp, factor));
            start = end;
        }
        Ok(())
    }
}

/// The constants of one AdamW step.
#[derive(Clone, Copy)]
struct AdamWStep {
    beta1: f32,
    beta2: f32,
    eps: f32,
    /// lr / (1 - beta1^t)
    step_size: f32,
    /// 1 / sqrt(1 - beta2^t)
    inv_sqrt_bias2: f32,
}

simd_fn! {
    /// p *= decay; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    /// p -= step_size * m / (sqrt(v) / sqrt(1 - b2^t) + eps).
    fn adamw_chunk(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], hp: AdamWStep, decay: f32) {
        for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
            *p *= decay;
            *m = hp.beta1 * *m + (1.0 - hp.beta1) * g;
            *v = hp.beta2 * *v + (1.0 - hp.beta2) * g * g;
            let denom = v.sqrt() * hp.inv_sqrt_bias2 + hp.eps;
            *p -= hp.step_size * *m / denom;
        }
    }
}
