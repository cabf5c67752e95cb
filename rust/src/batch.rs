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
use crate::dropout::Dropout;
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
    /// Whether `grads` holds a usable gradient.
    held: HeldGradient,
    /// The key (seed, step) of the dropout masks of the training passes to come
    /// ([`BatchRunner::loss_and_grads`] and the steps built on it), with the model's
    /// `config.dropout`; None: no dropout. Evaluation ([`BatchRunner::loss`]) never drops.
    pub dropout_key: Option<(u64, u64)>,
    /// Token rows of this step before the current micro-batch (continues the mask's count).
    first_row: u64,
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

    /// One workspace a shard of a (B, T) batch. A batch that does not fit is checked whole
    /// first, so an error names the batch the caller gave, not one shard of it.
    fn ensure(&mut self, model: &Model, ranges: &[std::ops::Range<usize>], t: usize) -> Result<()> {
        while self.workspaces.len() < ranges.len() {
            self.workspaces.push(Workspace::with_pieces(Pieces::Whole));
        }
        let fits = ranges
            .iter()
            .zip(&self.workspaces)
            .all(|(r, ws)| ws.fits(r.len(), t));
        if !fits {
            let b = ranges.last().map_or(0, |r| r.end);
            Workspace::check_room(&model.config, b, t)?;
        }
        Ok(())
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
        self.ensure(model, &ranges, t)?;
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
        self.ensure(model, &ranges, t)?;
        while self.shard_grads.len() + 1 < ranges.len() {
            self.shard_grads.push(Vec::new());
        }
        for g in &mut self.shard_grads {
            alloc::resize_zeroed(g, model.layout.total, "a shard's gradients")?;
        }
        let dloss = 1.0 / (b * t) as f32;
        let dropout = self.dropout_key.and_then(|(seed, step)| {
            Dropout::new(model.config.dropout, seed, step, self.first_row)
        });
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
                let d = dropout.map(|d| d.shifted((r.start * t) as u64));
                let (ids, targets) = (&ids[rows.clone()], &targets[rows]);
                let sum = model.loss_sum_train(ws, ids, targets, r.len(), t, d)?;
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

/// The gradient a runner holds between the backward pass and the optimizer step (as
/// PyTorch keeps `.grad` on each parameter).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum HeldGradient {
    /// None yet, or thrown away by `zero_grad` or by a failed backward pass.
    #[default]
    Empty,
    /// A finite loss's gradient; `norm` once it has been measured (by clipping).
    Ready { norm: Option<f32> },
}

/// The training step in its parts, as nanoGPT's loop writes them: [`BatchRunner::backward`]
/// (forward and backward, once per micro-batch), [`BatchRunner::clip_grad_norm`],
/// [`BatchRunner::adamw_step`]; [`BatchRunner::train_step`] is the three in one call.
impl BatchRunner {
    /// Forward and backward of a batch (B, T): returns its mean loss and stores `scale`
    /// times the gradient of that mean as the held gradient, or adds it there with
    /// `accumulate` (micro-batches of one step: scale 1 / micro-batches each). A
    /// non-finite loss is an error and empties the held gradient.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &mut self,
        model: &Model,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        scale: f32,
        accumulate: bool,
    ) -> Result<f32> {
        let fresh = !accumulate || self.held == HeldGradient::Empty;
        self.held = HeldGradient::Empty;
        let mut grads = std::mem::take(&mut self.grads);
        let result = alloc::resize_zeroed(&mut grads, model.layout.total, "the gradients")
            .and_then(|()| {
                if fresh && scale == 1.0 {
                    return self.loss_and_grads(model, ids, targets, b, t, &mut grads);
                }
                let mut part = std::mem::take(&mut self.micro_grads);
                let result =
                    alloc::resize_zeroed(&mut part, grads.len(), "a micro-batch's gradients")
                        .and_then(|()| self.loss_and_grads(model, ids, targets, b, t, &mut part));
                if result.is_ok() {
                    for (g, p) in grads.iter_mut().zip(&part) {
                        *g = if fresh { p * scale } else { *g + p * scale };
                    }
                }
                self.micro_grads = part;
                result
            });
        self.grads = grads;
        let loss = result?;
        if !loss.is_finite() {
            return Err(Error::NonFinite(format!(
                "the loss is {loss}; no gradient is kept and the parameters were not updated"
            )));
        }
        self.held = HeldGradient::Ready { norm: None };
        Ok(loss)
    }

    /// Forgets the held gradient.
    pub fn zero_grad(&mut self) {
        self.held = HeldGradient::Empty;
    }

    /// The held gradient (the flat buffer, laid out as the parameters), if there is one.
    pub fn gradient(&self) -> Option<&[f32]> {
        match self.held {
            HeldGradient::Empty => None,
            HeldGradient::Ready { .. } => Some(&self.grads),
        }
    }

    /// Scales the held gradient so that its global L2 norm is at most `max_norm` (`None`:
    /// only measures it). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f32>) -> Result<f32> {
        let HeldGradient::Ready { .. } = self.held else {
            return Err(no_gradient("clip it"));
        };
        let norm = match max_norm {
            Some(c) => clip_grad_norm(&mut self.grads, c),
            None => grad_norm(&self.grads) as f32,
        };
        self.held = HeldGradient::Ready { norm: Some(norm) };
        Ok(norm)
    }

    /// One AdamW update of `model` from the held gradient (which is kept, as PyTorch
    /// keeps `.grad`, until the next backward pass or `zero_grad`). Returns the gradient's
    /// norm. Without a gradient, or with a non-finite one, nothing changes.
    pub fn adamw_step(&mut self, model: &mut Model, optimizer: &mut AdamW, lr: f32) -> Result<f32> {
        model.check_trainable()?;
        if optimizer.m.len() != model.layout.total {
            return Err(Error::value(
                "this optimizer belongs to a model of another size",
            ));
        }
        let norm = match self.held {
            HeldGradient::Empty => return Err(no_gradient("take a step")),
            HeldGradient::Ready { norm: Some(n) } => n,
            HeldGradient::Ready { norm: None } => grad_norm(&self.grads) as f32,
        };
        if !norm.is_finite() {
            return Err(Error::NonFinite(format!(
                "the gradient norm is {norm}; the parameters were not updated"
            )));
        }
        optimizer.step(model.params_mut(), &self.grads, lr)?;
        Ok(norm)
    }

    /// One AdamW step in one call: the b sequences run as `micro_batches` equal
    /// micro-batches, one after the other (so the workspaces hold one micro-batch's
    /// activations), whose mean gradient, clipped to a global norm of `grad_clip`, makes
    /// one update. That is the gradient of the whole batch's mean loss, as one big batch
    /// computes it; only the order of the sums differs. Returns (loss, gradient norm
    /// before clipping). When the loss or the gradient is not finite, the parameters are
    /// left as they were.
    #[allow(clippy::too_many_arguments)]
    pub fn train_step(
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
        model.check_trainable()?;
        check_len(ids, targets, b, t)?;
        if micro_batches == 0 || !b.is_multiple_of(micro_batches) {
            return Err(Error::value(format!(
                "a batch of {b} sequences does not split into {micro_batches} equal micro-batches"
            )));
        }
        let (bm, scale) = (b / micro_batches, 1.0 / micro_batches as f32);
        let mut loss_sum = 0.0f64;
        for k in 0..micro_batches {
            let rows = k * bm * t..(k + 1) * bm * t;
            self.first_row = rows.start as u64;
            let (ids, targets) = (&ids[rows.clone()], &targets[rows]);
            let loss = self.backward(model, ids, targets, bm, t, scale, k > 0);
            self.first_row = 0;
            loss_sum += loss? as f64;
        }
        let norm = self.clip_grad_norm(grad_clip)?;
        self.adamw_step(model, optimizer, lr)?;
        Ok(((loss_sum / micro_batches as f64) as f32, norm))
    }
}

impl BatchRunner {
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
        model.check_trainable()?;
        self.held = HeldGradient::Empty;
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

fn no_gradient(to: &str) -> Error {
    Error::value(format!(
        "there is no gradient to {to}: run a backward pass first (it is cleared by \
         zero_grad and by a backward pass that failed)"
    ))
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
