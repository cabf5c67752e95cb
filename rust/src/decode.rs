//! One position at a time: the model's forward pass for a single new token, with a
//! key/value cache holding the keys and values of the earlier positions.
//!
//! A token costs one matrix-vector product per weight matrix. At batch size one these
//! products are bound by how fast the weights stream from memory, so two threads help
//! only if they split every product without ceremony: a [`Team`] is the calling thread
//! plus one helper thread that spins waiting for the other half of each product (a
//! hand-off costs well under a microsecond; waking a sleeping thread costs several).
//! Each output element is computed by exactly one thread in the same order, so results
//! are the same with or without the helper.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::layernorm::layernorm_row;
use crate::kernels::simd::simd_fn;
use crate::kernels::softmax::softmax_in_place;
use crate::kernels::vecmath::{axpy, dot};
use crate::model::Model;

/// Output columns a matrix-vector product keeps in registers at once (8 AVX registers).
const BLOCK: usize = 64;
/// Products with fewer multiply-adds than this are not worth splitting.
const SPLIT_WORK: usize = 16 * 1024;

simd_fn! {
    /// out (j0..j1) = x (IC) @ w (IC, OC) for columns j0..j1 of w, a sum of its rows
    /// weighted by x. Each block of 64 columns is accumulated in registers over all the
    /// rows, so the output is written once instead of once per row.
    fn matvec_columns(out: &mut [f32], x: &[f32], w: &[f32], oc: usize, j0: usize) {
        let j1 = j0 + out.len();
        let mut j = j0;
        while j + BLOCK <= j1 {
            let mut acc = [0.0f32; BLOCK];
            for (&xi, row) in x.iter().zip(w.chunks_exact(oc)) {
                let row: &[f32; BLOCK] = row[j..j + BLOCK].try_into().expect("a block");
                for (a, &wv) in acc.iter_mut().zip(row) {
                    *a = xi.mul_add(wv, *a);
                }
            }
            out[j - j0..j - j0 + BLOCK].copy_from_slice(&acc);
            j += BLOCK;
        }
        let tail = &mut out[j - j0..];
        tail.fill(0.0);
        for (&xi, row) in x.iter().zip(w.chunks_exact(oc)) {
            axpy(tail, xi, &row[j..j1]);
        }
    }
}

simd_fn! {
    /// out[r] = x . rows[r]: products with a matrix stored [out][in] (the output head).
    fn dot_rows(out: &mut [f32], x: &[f32], rows: &[f32]) {
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(x.len())) {
            *o = dot(x, row);
        }
    }
}

/// The helper's share of a product: raw parts, because the calling thread writes the
/// other part of the same output at the same time.
#[derive(Clone, Copy)]
enum Job {
    /// out[0..len] = columns j0..j0+len of x @ w (w is (ic, oc)).
    Matvec {
        out: *mut f32,
        len: usize,
        x: *const f32,
        ic: usize,
        w: *const f32,
        oc: usize,
        j0: usize,
    },
    /// out[0..len] = x . rows[r] for the len rows starting at `rows` (each c long).
    Dots {
        out: *mut f32,
        len: usize,
        x: *const f32,
        c: usize,
        rows: *const f32,
    },
}

impl Job {
    /// # Safety
    /// The pointers must be valid for the lengths, the output not touched by anyone else.
    unsafe fn run(self) {
        match self {
            Job::Matvec {
                out,
                len,
                x,
                ic,
                w,
                oc,
                j0,
            } => unsafe {
                let out = std::slice::from_raw_parts_mut(out, len);
                let x = std::slice::from_raw_parts(x, ic);
                let w = std::slice::from_raw_parts(w, ic * oc);
                matvec_columns(out, x, w, oc, j0);
            },
            Job::Dots {
                out,
                len,
                x,
                c,
                rows,
            } => unsafe {
                let out = std::slice::from_raw_parts_mut(out, len);
                let x = std::slice::from_raw_parts(x, c);
                let rows = std::slice::from_raw_parts(rows, len * c);
                dot_rows(out, x, rows);
            },
        }
    }
}

/// The calling thread plus one spinning helper thread.
pub struct Team {
    /// Number of jobs posted so far.
    posted: AtomicU64,
    /// Number of jobs the helper has finished.
    finished: AtomicU64,
    stop: AtomicBool,
    /// Set when a job panicked on the helper (a bug); the caller then panics too, rather
    /// than wait forever.
    failed: AtomicBool,
    job: UnsafeCell<Option<Job>>,
}

// SAFETY: `job` is written only by the calling thread while the helper is idle (all posted
// jobs finished) and read by the helper only after it sees the new `posted` count, with
// release/acquire ordering on both counters.
unsafe impl Sync for Team {}

impl Default for Team {
    fn default() -> Self {
        Team::new()
    }
}

impl Team {
    pub fn new() -> Team {
        Team {
            posted: AtomicU64::new(0),
            finished: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            job: UnsafeCell::new(None),
        }
    }

    /// The helper's loop: run each posted job, until [`Team::stop`].
    pub fn serve(&self) {
        let mut done = 0u64;
        let mut idle_spins = 0u32;
        loop {
            let posted = self.posted.load(Ordering::Acquire);
            if posted != done {
                // SAFETY: the caller posted this job and waits for `finished` before
                // touching its output or posting another.
                if let Some(job) = unsafe { *self.job.get() } {
                    let ran = std::panic::catch_unwind(|| unsafe { job.run() });
                    if ran.is_err() {
                        self.failed.store(true, Ordering::Release);
                    }
                }
                done = posted;
                self.finished.store(done, Ordering::Release);
                idle_spins = 0;
                continue;
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            idle_spins = idle_spins.saturating_add(1);
            if idle_spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                // Long idle (the caller is sampling, or waiting on Python): stop burning.
                std::thread::yield_now();
            }
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Runs `job` on the helper and `mine` here, returning when both are done.
    fn split(&self, job: Job, mine: impl FnOnce()) {
        // SAFETY: every earlier job has finished (we waited for it), so the helper is not
        // reading `job`.
        unsafe { *self.job.get() = Some(job) };
        let ticket = self.posted.fetch_add(1, Ordering::Release) + 1;
        mine();
        let mut spins = 0u32;
        while self.finished.load(Ordering::Acquire) != ticket {
            spins = spins.saturating_add(1);
            if spins < 1 << 12 {
                std::hint::spin_loop();
            } else {
                // The helper is not running (more threads than cores): let it.
                std::thread::yield_now();
            }
        }
        assert!(
            !self.failed.load(Ordering::Acquire),
            "a decode helper job panicked"
        );
    }
}

/// out (OC) = x (IC) @ w (IC, OC) [+ bias], split with the team's helper when worth it.
fn matvec(team: Option<&Team>, out: &mut [f32], x: &[f32], w: &[f32], bias: Option<&[f32]>) {
    let oc = out.len();
    match team {
        Some(team) if oc >= 2 * BLOCK && x.len() * oc >= SPLIT_WORK => {
            let split = (oc / 2).div_ceil(BLOCK) * BLOCK;
            let (mine, theirs) = out.split_at_mut(split);
            let job = Job::Matvec {
                out: theirs.as_mut_ptr(),
                len: theirs.len(),
                x: x.as_ptr(),
                ic: x.len(),
                w: w.as_ptr(),
                oc,
                j0: split,
            };
            team.split(job, || matvec_columns(mine, x, w, oc, 0));
        }
        _ => matvec_columns(out, x, w, oc, 0),
    }
    if let Some(b) = bias {
        for (o, bv) in out.iter_mut().zip(b) {
            *o += bv;
        }
    }
}

/// out[r] = x . rows[r] for a matrix stored [out][in], split with the helper when worth it.
fn dots(team: Option<&Team>, out: &mut [f32], x: &[f32], rows: &[f32]) {
    let c = x.len();
    match team {
        Some(team) if out.len() >= 16 && out.len() * c >= SPLIT_WORK => {
            let split = out.len() / 2;
            let (mine, theirs) = out.split_at_mut(split);
            let job = Job::Dots {
                out: theirs.as_mut_ptr(),
                len: theirs.len(),
                x: x.as_ptr(),
                c,
                rows: rows[split * c..].as_ptr(),
            };
            team.split(job, || dot_rows(mine, x, &rows[..split * c]));
        }
        _ => dot_rows(out, x, rows),
    }
}

/// Keys and values of every layer for the positions seen so far, plus per-token scratch.
pub struct DecodeState {
    /// (L, P, C) each.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Number of cached positions.
    len: usize,
    x: Vec<f32>,
    h: Vec<f32>,
    q: Vec<f32>,
    att_y: Vec<f32>,
    proj: Vec<f32>,
    ff: Vec<f32>,
    ff_act: Vec<f32>,
    ff_tanh: Vec<f32>,
    scores: Vec<f32>,
    /// (V) logits of the last position pushed with `want_logits`.
    pub logits: Vec<f32>,
}

impl DecodeState {
    pub fn new(model: &Model) -> DecodeState {
        let cfg = &model.config;
        let (l, p, c, f, v) = (
            cfg.n_layers,
            cfg.max_seq_len,
            cfg.d_model,
            cfg.d_ff,
            cfg.vocab_size,
        );
        DecodeState {
            keys: vec![0.0; l * p * c],
            values: vec![0.0; l * p * c],
            len: 0,
            x: vec![0.0; c],
            h: vec![0.0; c],
            q: vec![0.0; c],
            att_y: vec![0.0; c],
            proj: vec![0.0; c],
            ff: vec![0.0; f],
            ff_act: vec![0.0; f],
            ff_tanh: vec![0.0; f],
            scores: vec![0.0; p],
            logits: vec![0.0; v],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds one token at the next position; computes the logits only if `want_logits`.
    /// The id must be below V and the cache must not be full.
    pub fn push(&mut self, model: &Model, team: Option<&Team>, token: u32, want_logits: bool) {
        decode_step(self, model, team, token, want_logits);
    }
}

simd_fn! {
    fn decode_step(state: &mut DecodeState, model: &Model, team: Option<&Team>, token: u32, want_logits: bool) {
        state.step(model, team, token, want_logits);
    }
}

impl DecodeState {
    /// x = token_embed[token] + pos_embed[pos]; each block: x += attn(LN1(x)),
    /// x += ffn(LN2(x)), with this position's key and value appended to the cache;
    /// logits = LN_f(x) lm_head^T.
    #[inline(always)]
    fn step(&mut self, model: &Model, team: Option<&Team>, token: u32, want_logits: bool) {
        let cfg = &model.config;
        let lay = &model.layout;
        let prm = &model.params;
        let (c, f, v, h, p) = (
            cfg.d_model,
            cfg.d_ff,
            cfg.vocab_size,
            cfg.n_heads,
            cfg.max_seq_len,
        );
        let d = c / h;
        let pos = self.len;
        assert!(pos < p, "decode cache is full");
        let scale = 1.0 / (d as f32).sqrt();
        let tok = &prm[lay.token_embed + token as usize * c..][..c];
        let pe = &prm[lay.pos_embed + pos * c..][..c];
        for ((x, a), b) in self.x.iter_mut().zip(tok).zip(pe) {
            *x = a + b;
        }
        for (l, blk) in lay.blocks.iter().enumerate() {
            let norm1 = (&prm[blk.norm1_weight..][..c], &prm[blk.norm1_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm1.0, norm1.1, cfg.eps);
            let bias = |i: usize| blk.attn_bias.as_ref().map(|b| &prm[b[i]..][..c]);
            let weight = |i: usize| &prm[blk.attn_weight[i]..][..c * c];
            let cache_row = (l * p + pos) * c;
            matvec(team, &mut self.q, &self.h, weight(0), bias(0));
            matvec(
                team,
                &mut self.keys[cache_row..][..c],
                &self.h,
                weight(1),
                bias(1),
            );
            matvec(
                team,
                &mut self.values[cache_row..][..c],
                &self.h,
                weight(2),
                bias(2),
            );
            let keys = &self.keys[l * p * c..][..(pos + 1) * c];
            let values = &self.values[l * p * c..][..(pos + 1) * c];
            for head in 0..h {
                let q = &self.q[head * d..][..d];
                let scores = &mut self.scores[..=pos];
                for (s, score) in scores.iter_mut().enumerate() {
                    *score = dot(q, &keys[s * c + head * d..][..d]) * scale;
                }
                softmax_in_place(scores);
                let y = &mut self.att_y[head * d..][..d];
                y.fill(0.0);
                for (s, &ps) in scores.iter().enumerate() {
                    axpy(y, ps, &values[s * c + head * d..][..d]);
                }
            }
            matvec(team, &mut self.proj, &self.att_y, weight(3), bias(3));
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
            let norm2 = (&prm[blk.norm2_weight..][..c], &prm[blk.norm2_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm2.0, norm2.1, cfg.eps);
            let ff1 = (&prm[blk.ff1_weight..][..c * f], &prm[blk.ff1_bias..][..f]);
            matvec(team, &mut self.ff, &self.h, ff1.0, Some(ff1.1));
            gelu_forward_chunk(&mut self.ff_act, &mut self.ff_tanh, &self.ff);
            let ff2 = (&prm[blk.ff2_weight..][..f * c], &prm[blk.ff2_bias..][..c]);
            matvec(team, &mut self.proj, &self.ff_act, ff2.0, Some(ff2.1));
            for (x, y) in self.x.iter_mut().zip(&self.proj) {
                *x += y;
            }
        }
        self.len += 1;
        if want_logits {
            let norm_f = (&prm[lay.ln_f_weight..][..c], &prm[lay.ln_f_bias..][..c]);
            layernorm_row(&mut self.h, &self.x, norm_f.0, norm_f.1, cfg.eps);
            dots(
                team,
                &mut self.logits,
                &self.h,
                &prm[lay.lm_head..][..v * c],
            );
        }
    }
}
