//! Choosing the next token from a row of logits: greedy, or sampling with a temperature,
//! optionally restricted to the k most likely tokens (top-k) and/or to the smallest set of
//! tokens whose probabilities add up to at least p (top-p, "nucleus").

use crate::error::{Error, Result};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax, the first index wins ties).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::value(format!(
                "temperature must be a finite number >= 0, got {}",
                self.temperature
            )));
        }
        if self.top_k == Some(0) {
            return Err(Error::value("top_k must be at least 1, got 0"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(Error::value(format!("top_p must be in (0, 1], got {p}")));
            }
        }
        Ok(())
    }
}

/// Index of the largest value; the first one wins ties; NaN never wins.
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in values.iter().enumerate() {
        if x > values[best] || values[best].is_nan() {
            best = i;
        }
    }
    best
}

/// A sampler with its own random stream: the same seed gives the same choices.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(f32, u32)>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: Rng::new(seed),
            candidates: Vec::new(),
        })
    }

    /// Picks the next token id from one row of logits (V).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let p = self.params;
        if p.temperature == 0.0 {
            return argmax(logits) as u32;
        }
        let inv_t = 1.0 / p.temperature;
        if !inv_t.is_finite() {
            return argmax(logits) as u32;
        }
        // Scaled logits with the maximum subtracted first, so a small temperature cannot
        // overflow: the largest becomes 0, the others negative.
        let max_logit = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let cands = &mut self.candidates;
        cands.clear();
        cands.extend(
            logits
                .iter()
                .enumerate()
                .map(|(i, &z)| ((z - max_logit) * inv_t, i as u32)),
        );
        if p.top_k.is_some() || p.top_p.is_some() {
            // Most likely first; equal logits keep their index order, so top_k = 1 is argmax.
            cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            if let Some(k) = p.top_k {
                cands.truncate(k.max(1));
            }
        }
        // Softmax over the candidates, in place of the scaled logits.
        let mut total = 0.0f64;
        for c in cands.iter_mut() {
            c.0 = c.0.exp();
            total += c.0 as f64;
        }
        if let Some(top_p) = p.top_p {
            // Keep the smallest prefix (of the sorted list) whose mass reaches top_p.
            let mut mass = 0.0f64;
            let mut keep = cands.len();
            for (i, c) in cands.iter().enumerate() {
                mass += c.0 as f64 / total;
                if mass >= top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
            total = cands.iter().map(|c| c.0 as f64).sum();
        }
        let target = self.rng.next_f64() * total;
        let mut cumulative = 0.0f64;
        for c in cands.iter() {
            cumulative += c.0 as f64;
            if target < cumulative {
                return c.1;
            }
        }
        cands.last().map(|c| c.1).unwrap_or(0)
    }
}
