//! Cross-entropy of the softmax of the logits against target ids:
//! `loss[i] = -log p[i][target[i]] = logsumexp(logits[i]) - logits[i][target[i]]`.

use rayon::prelude::*;

use super::simd::simd_fn;
use super::vecmath::max;
use super::vecmath::softmax_in_place;

/// logits is (N, V), targets (N); probs will be (N, V), losses (N).
/// Targets must already be checked against V.
pub fn cross_entropy_forward(
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    v: usize,
) {
    probs
        .par_chunks_mut(v)
        .zip(logits.par_chunks(v))
        .zip(losses.par_iter_mut().zip(targets.par_iter()))
        .with_min_len(8)
        .for_each(|((p, z), (loss, &target))| *loss = cross_entropy_row(p, z, target));
}

simd_fn! {
    fn cross_entropy_row(p: &mut [f32], z: &[f32], target: u32) -> f32 {
        p.copy_from_slice(z);
        let m = max(z);
        let log_norm = softmax_in_place(p);
        // -log p[target] from the logits, not from the rounded probability.
        log_norm + m - z[target as usize]
    }
}

/// In the forward pass this was: `loss = -log softmax(logits)[target]`; so
/// `dlogits += dloss * (probs - onehot(target))`. `dloss` is the same for every row
/// (1 / N for a mean).
pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    probs: &[f32],
    targets: &[u32],
    dloss: f32,
    v: usize,
) {
    dlogits
        .par_chunks_mut(v)
        .zip(probs.par_chunks(v))
        .zip(targets.par_iter())
        .with_min_len(8)
        .for_each(|((d, p), &target)| {
            for (di, &pi) in d.iter_mut().zip(p) {
                *di += dloss * pi;
            }
            d[target as usize] -= dloss;
        });
}
