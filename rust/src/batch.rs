//! Running a batch as shards: the batch's sequences are split into `SHARDS` groups, each
//! group runs its forward and backward pass on its own thread with its own workspace, and
//! the shards' gradients are summed at the end.
//!
//! For a small model this beats splitting every operation across threads: one pair of
//! tasks per step instead of dozens of short parallel loops that each wake the threads.
//! So a shard's matrix products run whole ([`Pieces::Whole`]); the short elementwise
//! loops stay parallel, which lets a thread that finished its shard early help with the
//! other's.
//! The number of shards is fixed (not the number of threads), and shard gradients and
//! losses are summed in shard order, so results are bit-identical for any thread count.

use rayon::prelude::*;

use crate::alloc;
use crate::error::{Error, Result};
use crate::kernels::matmul::Pieces;
use crate::model::{Model, Workspace};
use crate::optim::{clip_grad_norm, grad_norm, sgd_step, AdamW};

/// Shards per batch (fewer when the batch has fewer sequences).
pub const SHARDS: usize = 2;

/// Workspaces and gradient buffers for sharded batches, reused between calls.
#[derive(Debug, Default)]
pub struct BatchRunner {
    workspaces: Vec<Workspace>,
    /// Gradients of shards 1.. (shard 0 adds straight into the caller's buffer).
    shard_grads: Vec<Vec<f32>>,
    /// The summed gradient of a training step.
    grads: Vec<f32>,
    /// One micro-batch's gradient, when a step accumulates several.
    micro_grads: Vec<f32>,
}

/// Sequence ranges of the shards of a batch of b sequences.
fn shard_ranges(b: usize) -> Vec<std::ops::Range<usize>> {
    let shards = SHARDS.min(b).max(1);
    (0..shards)
        .map(|s| (s * b / shards)..((s + 1) * b / shards))
        .collect()
}

impl BatchRunner {
    pub fn new() -> BatchRunner {
        BatchRunner::default()
    }

    /// The gradient the last training step applied (after clipping), laid out like the
    /// parameters; empty before the first step.
    pub fn last_step_gradient(&self) -> &[f32] {
        &self.grads
    }

    fn ensure(&mut self, shards: usize) {
        while self.workspaces.len() < shards {
            self.workspaces.push(Workspace::with_pieces(Pieces::Whole));
        }
    }

    /// Mean cross-entropy of a batch (B, T).
    pub fn loss(
        &mut self,
        model: &Model,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
    ) -> Result<f32> {
        check_len(ids, targets, b, t)?;
        let ranges = shard_ranges(b);
        self.ensure(ranges.len());
        let sums: Vec<Result<f64>> = self.workspaces[..ranges.len()]
            .par_iter_mut()
            .zip(ranges.par_iter())
            .map(|(ws, r)| {
                let rows = r.start * t..r.end * t;
                model.loss_sum(ws, &ids[rows.clone()], &targets[rows], r.len(), t)
            })
            .collect();
        let mut total = 0.0f64;
        for s in sums {
            total += s?;
        }
        Ok((total / (b * t) as f64) as f32)
    }

    /// Mean cross-entropy of a batch and its gradient, which overwrites `grads`.
    pub fn loss_and_grads(
        &mut self,
        model: &Model,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        grads: &mut [f32],
    ) -> Result<f32> {
        check_len(ids, targets, b, t)?;
        if grads.len() != model.layout.total {
            return Err(Error::shape(
                "gradient buffer",
                &[model.layout.total],
                &[grads.len()],
            ));
        }
        let ranges = shard_ranges(b);
        self.ensure(ranges.len());
        while self.shard_grads.len() + 1 < ranges.len() {
            self.shard_grads.push(Vec::new());
        }
        for g in &mut self.shard_grads {
            alloc::resize_zeroed(g, model.layout.total, "a shard's gradients")?;
        }
        let dloss = 1.0 / (b * t) as f32;
        let mut grad_bufs: Vec<&mut [f32]> = Vec::with_capacity(ranges.len());
        grad_bufs.push(grads);
        for g in self.shard_grads.iter_mut().take(ranges.len() - 1) {
            grad_bufs.push(g.as_mut_slice());
        }
        let sums: Vec<Result<f64>> = self.workspaces[..ranges.len()]
            .par_iter_mut()
            .zip(ranges.par_iter())
            .zip(grad_bufs.par_iter_mut())
            .map(|((ws, r), g)| {
                let rows = r.start * t..r.end * t;
                let sum = model.loss_sum(ws, &ids[rows.clone()], &targets[rows], r.len(), t)?;
                g.fill(0.0);
                model.backward_scaled(ws, g, dloss)?;
                Ok(sum)
            })
            .collect();
        let mut total = 0.0f64;
        for s in sums {
            total += s?;
        }
        // Sum the shards' gradients into shard 0's, in shard order.
        let (first, rest) = grad_bufs.split_first_mut().expect("at least one shard");
        for other in rest.iter() {
            first
                .par_chunks_mut(1 << 14)
                .zip(other.par_chunks(1 << 14))
                .for_each(|(a, b)| {
                    for (x, y) in a.iter_mut().zip(b) {
                        *x += y;
                    }
                });
        }
        Ok((total / (b * t) as f64) as f32)
    }
}

impl BatchRunner {
    /// One AdamW step: loss and gradient, clipping of the gradient's global norm to
    /// `grad_clip`, update. Returns (loss, gradient norm before clipping). When the loss or
    /// the gradient is not finite, the parameters are left as they were.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
        &mut self,
        model: &mut Model,
        optimizer: &mut AdamW,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        lr: f32,
        grad_clip: Option<f32>,
    ) -> Result<(f32, f32)> {
        self.train_step_accumulated(model, optimizer, ids, targets, b, t, 1, lr, grad_clip)
    }

    /// [`Self::train_step`] with gradient accumulation: the b sequences run as
    /// `micro_batches` equal micro-batches, one after the other (so the workspaces hold one
    /// micro-batch's activations), and their mean gradient makes one AdamW step. That is
    /// the gradient of the whole batch's mean loss, as one big batch computes it; only the
    /// order of the sums differs. One micro-batch is exactly [`Self::train_step`].
    #[allow(clippy::too_many_arguments)]
    pub fn train_step_accumulated(
        &mut self,
        model: &mut Model,
        optimizer: &mut AdamW,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        micro_batches: usize,
        lr: f32,
        grad_clip: Option<f32>,
    ) -> Result<(f32, f32)> {
        if micro_batches == 0 || !b.is_multiple_of(micro_batches) {
            return Err(Error::value(format!(
                "a batch of {b} sequences does not split into {micro_batches} equal micro-batches"
            )));
        }
        if optimizer.m.len() != model.layout.total {
            return Err(Error::value(
                "this optimizer belongs to a model of another size",
            ));
        }
        let mut grads = std::mem::take(&mut self.grads);
        alloc::resize_zeroed(&mut grads, model.layout.total, "the gradients")?;
        let result = if micro_batches == 1 {
            self.loss_and_grads(model, ids, targets, b, t, &mut grads)
        } else {
            self.accumulate(model, ids, targets, b, t, micro_batches, &mut grads)
        };
        let outcome = result.and_then(|loss| {
            let norm = match grad_clip {
                Some(c) => clip_grad_norm(&mut grads, c),
                None => grad_norm(&grads) as f32,
            };
            check_finite_step(loss, norm)?;
            optimizer.step(model.params_mut(), &grads, lr)?;
            Ok((loss, norm))
        });
        self.grads = grads;
        outcome
    }

    /// Mean loss and mean gradient (overwriting `grads`) of `micro_batches` equal
    /// micro-batches of the batch (B, T), run one after the other.
    #[allow(clippy::too_many_arguments)]
    pub fn accumulate(
        &mut self,
        model: &Model,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        micro_batches: usize,
        grads: &mut [f32],
    ) -> Result<f32> {
        check_len(ids, targets, b, t)?;
        let mut part = std::mem::take(&mut self.micro_grads);
        let outcome = alloc::resize_zeroed(&mut part, grads.len(), "a micro-batch's gradients")
            .and_then(|()| {
                let (bm, scale) = (b / micro_batches, 1.0 / micro_batches as f32);
                let mut loss_sum = 0.0f64;
                for k in 0..micro_batches {
                    let rows = k * bm * t..(k + 1) * bm * t;
                    let (ids, targets) = (&ids[rows.clone()], &targets[rows]);
                    loss_sum += self.loss_and_grads(model, ids, targets, bm, t, &mut part)? as f64;
                    for (g, p) in grads.iter_mut().zip(&part) {
                        *g = if k == 0 { p * scale } else { *g + p * scale };
                    }
                }
                Ok((loss_sum / micro_batches as f64) as f32)
            });
        self.micro_grads = part;
        outcome
    }

    /// One plain SGD step (the Go TinyLM's training). Returns the loss before the step.
    pub fn sgd_step(
        &mut self,
        model: &mut Model,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        lr: f32,
    ) -> Result<f32> {
        let mut grads = std::mem::take(&mut self.grads);
        alloc::resize_zeroed(&mut grads, model.layout.total, "the gradients")?;
        let outcome = self
            .loss_and_grads(model, ids, targets, b, t, &mut grads)
            .and_then(|loss| {
                check_finite_step(loss, grad_norm(&grads) as f32)?;
                sgd_step(model.params_mut(), &grads, lr);
                Ok(loss)
            });
        self.grads = grads;
        outcome
    }
}

fn check_finite_step(loss: f32, norm: f32) -> Result<()> {
    if loss.is_finite() && norm.is_finite() {
        Ok(())
    } else {
        Err(Error::NonFinite(format!(
            "the loss ({loss}) or the gradient norm ({norm}) is not finite; the parameters were not updated"
        )))
    }
}

fn check_len(ids: &[u32], targets: &[u32], b: usize, t: usize) -> Result<()> {
    if ids.len() != b * t {
        return Err(Error::shape("input ids", &[b, t], &[ids.len()]));
    }
    if targets.len() != b * t {
        return Err(Error::shape("targets", &[b, t], &[targets.len()]));
    }
    Ok(())
}
