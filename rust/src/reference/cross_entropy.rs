//! Cross-entropy of the softmax of the logits against the target ids:
//! `loss[n] = -log p[n][target[n]] = logsumexp(logits[n]) - logits[n][target[n]]`.

use super::softmax::softmax_forward;

/// logits is (N, V), targets (N) with every id below V; probs will be (N, V), losses (N).
pub fn cross_entropy_forward(
    losses: &mut [f32],
    probs: &mut [f32],
    logits: &[f32],
    targets: &[u32],
    v: usize,
) {
    for (((loss, p), z), &target) in losses
        .iter_mut()
        .zip(probs.chunks_exact_mut(v))
        .zip(logits.chunks_exact(v))
        .zip(targets)
    {
        let log_sum_exp = softmax_forward(p, z);
        *loss = log_sum_exp - z[target as usize];
    }
}

/// In the forward pass this was: `loss[n] = logsumexp(logits[n]) - logits[n][target[n]]`; so
/// with dloss the gradient of each row's loss (1 / N for a mean):
/// `dlogits[n] += dloss * (probs[n] - onehot(target[n]))`.
pub fn cross_entropy_backward(
    dlogits: &mut [f32],
    probs: &[f32],
    targets: &[u32],
    dloss: f32,
    v: usize,
) {
    for ((d, p), &target) in dlogits
        .chunks_exact_mut(v)
        .zip(probs.chunks_exact(v))
        .zip(targets)
    {
        for (di, &pi) in d.iter_mut().zip(p) {
            *di += dloss * pi;
        }
        d[target as usize] -= dloss;
    }
}
