//! Optimizers and gradient clipping, over the flat parameter and gradient buffers.

use crate::error::{Error, Result};
use crate::params::ParamLayout;

/// Scales the gradients so that their global L2 norm is at most `max_norm`.
/// Returns the norm before clipping. The sum of squares is taken in f64, in buffer order.
pub fn clip_grad_norm(grads: &mut [f32], max_norm: f32) -> f32 {
    let norm = grad_norm(grads);
    if norm.is_finite() && norm > max_norm as f64 {
        let scale = (max_norm as f64 / (norm + 1e-6)) as f32;
        for g in grads.iter_mut() {
            *g *= scale;
        }
    }
    norm as f32
}

/// Global L2 norm of a gradient buffer.
pub fn grad_norm(grads: &[f32]) -> f64 {
    grads
        .iter()
        .map(|&g| (g as f64) * (g as f64))
        .sum::<f64>()
        .sqrt()
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
            m: vec![0.0; layout.total],
            v: vec![0.0; layout.total],
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
        let step_size = (lr as f64 / bias1) as f32;
        let inv_sqrt_bias2 = (1.0 / bias2.sqrt()) as f32;
        let update = |p: &mut f32, g: f32, m: &mut f32, v: &mut f32| {
            *m = beta1 * *m + (1.0 - beta1) * g;
            *v = beta2 * *v + (1.0 - beta2) * g * g;
            let denom = v.sqrt() * inv_sqrt_bias2 + eps;
            *p -= step_size * *m / denom;
        };
        let decay = 1.0 - lr * weight_decay;
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
            let range = start..end;
            for (((p, &g), m), v) in params[range.clone()]
                .iter_mut()
                .zip(&grads[range.clone()])
                .zip(&mut self.m[range.clone()])
                .zip(&mut self.v[range])
            {
                if decayed {
                    *p *= decay;
                }
                update(p, g, m, v);
            }
            start = end;
        }
        Ok(())
    }
}
