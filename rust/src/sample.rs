//! Choosing the next token from a row of logits: the sampler chain, in this order (the
//! order llama.cpp's samplers document, with the temperature before the cut-offs as tinylm
//! has always applied it):
//!
//! 1. **Penalties** over the last `penalty_last_n` ids of the sequence (prompt included):
//!    for each distinct id j seen c_j times there, the repetition penalty r (CTRL's)
//!    divides a positive logit by r and multiplies a negative one by r; then
//!    z_j -= c_j * frequency_penalty + presence_penalty.
//! 2. **Logit bias**: z_j += bias_j (-inf bans an id).
//! 3. **Greedy** if the temperature is 0: the argmax (the first index wins ties).
//! 4. **Temperature**: (z - max z) / T, so a small temperature cannot overflow.
//! 5. **top-k**: the k largest (equal values in index order).
//! 6. **top-p**: of those, sorted most likely first, the smallest prefix whose probability
//!    reaches p.
//! 7. **min-p**: of those, the ids whose probability is at least min_p times the largest.
//! 8. **Draw**: u uniform in [0, 1) from the seeded generator; the first candidate (sorted
//!    most likely first when top-k or top-p is set, else in index order) whose cumulative
//!    weight exceeds u times the total weight.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Refuses logits that hold a NaN or an infinity: the weights are broken, and no token
/// can be chosen (or scored) from them. `at` names the place from the bad value's index.
pub fn check_finite_logits(logits: &[f32], at: impl FnOnce(usize) -> String) -> Result<()> {
    match logits.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::NonFinite(format!(
            "the model's logits hold a non-finite value ({}) at {}: its weights are too \
             large or not finite",
            logits[i],
            at(i)
        ))),
    }
}

/// Largest accepted `penalty_last_n`.
pub const MAX_PENALTY_LAST_N: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax, the first index wins ties).
    pub temperature: f32,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    /// 1 means none; above 1 discourages repeats.
    pub repetition_penalty: f32,
    pub frequency_penalty: f32,
    pub presence_penalty: f32,
    /// How many of the last ids the penalties look at.
    pub penalty_last_n: usize,
    /// (id, bias) pairs added to the logits.
    pub logit_bias: Vec<(u32, f32)>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            min_p: None,
            repetition_penalty: 1.0,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            penalty_last_n: 64,
            logit_bias: Vec::new(),
        }
    }
}

impl SamplingParams {
    /// Plain temperature / top-k / top-p sampling, no penalties.
    pub fn simple(temperature: f32, top_k: Option<usize>, top_p: Option<f32>) -> SamplingParams {
        SamplingParams {
            temperature,
            top_k,
            top_p,
            ..SamplingParams::default()
        }
    }

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
        if let Some(p) = self.min_p {
            if !(0.0..=1.0).contains(&p) {
                return Err(Error::value(format!("min_p must be in [0, 1], got {p}")));
            }
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return Err(Error::value(format!(
                "repetition_penalty must be a finite number > 0, got {}",
                self.repetition_penalty
            )));
        }
        for (name, value) in [
            ("frequency_penalty", self.frequency_penalty),
            ("presence_penalty", self.presence_penalty),
        ] {
            if !value.is_finite() {
                return Err(Error::value(format!(
                    "{name} must be a finite number, got {value}"
                )));
            }
        }
        if self.penalty_last_n > MAX_PENALTY_LAST_N {
            return Err(Error::value(format!(
                "penalty_last_n must be at most {MAX_PENALTY_LAST_N}, got {}",
                self.penalty_last_n
            )));
        }
        if let Some((id, bias)) = self
            .logit_bias
            .iter()
            .find(|(_, b)| b.is_nan() || *b == f32::INFINITY)
        {
            return Err(Error::value(format!(
                "logit_bias for id {id} must be finite or -inf, got {bias}"
            )));
        }
        Ok(())
    }

    /// Checks the ids of the logit bias against the vocabulary size, and that it leaves
    /// some id that may be drawn.
    pub fn check_ids(&self, vocab_size: usize) -> Result<()> {
        if let Some((id, _)) = self
            .logit_bias
            .iter()
            .find(|(id, _)| *id as usize >= vocab_size)
        {
            return Err(Error::value(format!(
                "logit_bias: id {id} is out of range for vocab_size {vocab_size}"
            )));
        }
        let banned: std::collections::HashSet<u32> = self
            .logit_bias
            .iter()
            .filter(|(_, bias)| *bias == f32::NEG_INFINITY)
            .map(|(id, _)| *id)
            .collect();
        if banned.len() == vocab_size {
            return Err(Error::value(format!(
                "logit_bias bans every one of the {vocab_size} ids (-inf): no token could be \
                 drawn"
            )));
        }
        Ok(())
    }

    fn has_penalties(&self) -> bool {
        self.penalty_last_n > 0
            && (self.repetition_penalty != 1.0
                || self.frequency_penalty != 0.0
                || self.presence_penalty != 0.0)
    }
}

/// Index of the largest value; the first one wins ties; NaN never wins (if every value is
/// NaN, the last index; 0 for none).
///
/// In two passes that vectorise, which matters at a large vocabulary (a greedy token over
/// 32,000 logits took about 70 µs as one loop with a branch per value): the largest value,
/// then the first index holding it.
pub fn argmax(values: &[f32]) -> usize {
    const LANES: usize = 16;
    // f32::max returns the other operand when one is NaN.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = m.max(x);
        }
    }
    let largest = chunks
        .remainder()
        .iter()
        .chain(&lanes)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let holds = |chunk: &[f32]| chunk.iter().fold(false, |found, &x| found | (x == largest));
    match values.chunks(LANES).position(holds) {
        Some(c) => {
            c * LANES
                + values[c * LANES..]
                    .iter()
                    .position(|&x| x == largest)
                    .unwrap_or(0)
        }
        // Every value is NaN.
        None => values.len().saturating_sub(1),
    }
}

/// A sampler with its own random stream: the same seed gives the same choices.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    /// The logits after penalties and bias.
    adjusted: Vec<f32>,
    candidates: Vec<(f32, u32)>,
    /// Counts of the ids the penalties look at.
    counts: std::collections::HashMap<u32, u32>,
}

impl Sampler {
    pub fn new(params: SamplingParams, seed: u64) -> Result<Sampler> {
        params.validate()?;
        Ok(Sampler {
            params,
            rng: Rng::new(seed),
            adjusted: Vec::new(),
            candidates: Vec::new(),
            counts: std::collections::HashMap::new(),
        })
    }

    /// How many of the last ids [`Sampler::sample`] needs to see.
    pub fn history_len(&self) -> usize {
        if self.params.has_penalties() {
            self.params.penalty_last_n
        } else {
            0
        }
    }

    /// Picks the next token id from one row of logits (V); `recent` holds the last ids of
    /// the sequence (at least [`Sampler::history_len`] of them when there are that many).
    pub fn sample(&mut self, logits: &[f32], recent: &[u32]) -> u32 {
        let logits = adjust(
            &self.params,
            &mut self.adjusted,
            &mut self.counts,
            logits,
            recent,
        );
        let p = &self.params;
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
        if let Some(min_p) = p.min_p {
            // Relative to the most likely candidate; it always stays.
            let largest = cands.iter().map(|c| c.0).fold(0.0f32, f32::max);
            let floor = min_p * largest;
            cands.retain(|c| c.0 >= floor);
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

/// The logits after the penalties and the logit bias (the input itself when neither
/// applies), in `adjusted`.
fn adjust<'a>(
    p: &SamplingParams,
    adjusted: &'a mut Vec<f32>,
    counts: &mut std::collections::HashMap<u32, u32>,
    logits: &'a [f32],
    recent: &[u32],
) -> &'a [f32] {
    let penalise = p.has_penalties() && !recent.is_empty();
    if !penalise && p.logit_bias.is_empty() {
        return logits;
    }
    adjusted.clear();
    adjusted.extend_from_slice(logits);
    if penalise {
        counts.clear();
        let window = &recent[recent.len().saturating_sub(p.penalty_last_n)..];
        for &id in window {
            *counts.entry(id).or_insert(0) += 1;
        }
        for (&id, &count) in counts.iter() {
            let z = &mut adjusted[id as usize];
            *z = if *z > 0.0 {
                *z / p.repetition_penalty
            } else {
                *z * p.repetition_penalty
            };
            *z -= count as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
    for &(id, bias) in &p.logit_bias {
        adjusted[id as usize] += bias;
    }
    adjusted
}

#[cfg(test)]
mod tests {
    use super::argmax;

    /// The definition, one value at a time.
    fn argmax_plain(values: &[f32]) -> usize {
        let mut best = 0;
        for (i, &x) in values.iter().enumerate() {
            if x > values[best] || values[best].is_nan() {
                best = i;
            }
        }
        best
    }

    #[test]
    fn argmax_equals_the_one_value_at_a_time_loop() {
        let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1.0];
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for len in [0, 1, 2, 15, 16, 17, 31, 33, 100, 32000] {
            for _ in 0..50 {
                // Few distinct values, so ties are common; specials sprinkled in.
                let mut values: Vec<f32> = (0..len).map(|_| (next() % 7) as f32 - 3.0).collect();
                for _ in 0..next() % 4 {
                    if len > 0 {
                        let at = next() % len;
                        values[at] = specials[next() % specials.len()];
                    }
                }
                assert_eq!(argmax(&values), argmax_plain(&values), "{values:?}");
            }
        }
        for len in [1, 5, 16, 40] {
            let nans = vec![f32::NAN; len];
            assert_eq!(argmax(&nans), argmax_plain(&nans));
            let mut one = nans.clone();
            one[len / 2] = -1.0;
            assert_eq!(argmax(&one), len / 2);
        }
    }
}
