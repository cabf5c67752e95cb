//! Many sequences at once: each step feeds one token to each of M sequences and reads
//! every weight matrix once for all of them, as (M, C) @ W products over the same packed
//! panels and the same two lanes as one sequence's step (see [`crate::decode`]), where
//! one sequence alone makes M = 1 matrix-vector products that stream the weights for one
//! token. Row by row, a step computes the same numbers as [`super::DecodeState::push`].
//!
//! Each sequence keeps its own key/value cache and position, so sequences of different
//! lengths step together. Per step, for the M rows being fed (B sequences in all, S = the
//! positions a row's sequence has cached):
//!
//! ```text
//!   x = token_embed[token] (+ pos_embed[pos])                        (M, C)
//!   per block: q, k, v = norm1(x) @ W_q, W_k, W_v (+ b), q and k rotated at the row's
//!              position with RoPE; k, v (K heads) into the row's cache;
//!              y = softmax(q k^T / sqrt(D)) v over the row's S + 1 positions, per head;
//!              x += y @ W_o (+ b_o); x += act(norm2(x) @ W_up (+ b)) @ W_down (+ b)
//!              (gated: act(norm2(x) @ W_gate (+ b)) * (norm2(x) @ W_up (+ b)))
//!   logits = norm_f(x) @ lm_head^T                                      (M, V)
//! ```

use crate::alloc;
use crate::config::{Activation, Position};
use crate::error::{Error, Result};
use crate::kernels::activation::{activation_forward_chunk, gated_forward_chunk};
use crate::kernels::bf16::Weight;
use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::rope::{rotate_heads, RopeTable};
use crate::kernels::simd::simd_fn;
use crate::model::Model;

use super::decoder::Decoder;
use super::panels::{LaneShape, LaneWeights, Rows};
use super::team::{both, Team};
use super::{add_bias, attend, attend_scratch_len, dot_rows, norm_row, prefetch_slab, SPLIT_HEAD};

/// Rows of the output head computed for every sequence before the next rows: they stay in
/// the cache while the M rows read them.
const HEAD_ROWS: usize = 32;

/// One lane's share of a batch step (its heads and its slice of the feed-forward width),
/// for B sequences and the M rows fed in a step.
struct BatchLane {
    /// (B, L, P, KD_lane) each: the lane's columns of every sequence's keys and values.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// Lane widths: C_lane (query columns), KD_lane, F_lane, and 1 or 2 ff inputs.
    cl: usize,
    kdl: usize,
    fl: usize,
    ff_in: usize,
    /// (M, C_lane + 2 KD_lane): q, k, v of the lane's heads, row by row.
    qkv: Vec<f32>,
    /// (M, C_lane): the attention output of the lane's heads.
    att_y: Vec<f32>,
    /// (heads_lane P + D + a cache line): see [`attend`].
    scratch: Vec<f32>,
    /// (M, ff_in F_lane), (M, F_lane), (M, F_lane): see [`super::Lane`].
    ff: Vec<f32>,
    ff_act: Vec<f32>,
    ff_tanh: Vec<f32>,
    /// (M, C): the lane's partial sums of the block's output.
    partial: Vec<f32>,
}

impl BatchLane {
    fn new(model: &Model, shape: &LaneShape, b: usize) -> Result<BatchLane> {
        let cfg = &model.config;
        let (l, p, kdl) = (cfg.n_layers, cfg.max_seq_len, shape.kv_dims.len());
        let cache = b
            .checked_mul(l * p * kdl)
            .ok_or_else(|| Error::value(format!("a batch of {b} sequences is too large")))?;
        Ok(BatchLane {
            keys: alloc::zeros(cache, "the batch's key cache")?,
            values: alloc::zeros(cache, "the batch's value cache")?,
            cl: shape.dims.len(),
            kdl,
            fl: shape.ff.len(),
            ff_in: if cfg.activation.is_gated() { 2 } else { 1 },
            qkv: Vec::new(),
            att_y: Vec::new(),
            scratch: vec![0.0; attend_scratch_len(shape.dims.len(), p, cfg.head_dim())],
            ff: Vec::new(),
            ff_act: Vec::new(),
            ff_tanh: Vec::new(),
            partial: Vec::new(),
        })
    }

    /// Sizes the row buffers for m rows of width c.
    fn resize(&mut self, m: usize, c: usize) {
        self.qkv.resize(m * (self.cl + 2 * self.kdl), 0.0);
        self.att_y.resize(m * self.cl, 0.0);
        self.ff.resize(m * self.ff_in * self.fl, 0.0);
        self.ff_act.resize(m * self.fl, 0.0);
        self.ff_tanh.resize(m * self.fl, 0.0);
        self.partial.resize(m * c, 0.0);
    }

    /// Copies cached positions `start..len` of sequence `from` to sequence `to`, in every
    /// layer.
    fn copy_sequence(
        &mut self,
        (layers, p, len): (usize, usize, usize),
        (from, to): (usize, usize),
        start: usize,
    ) {
        let kdl = self.kdl;
        for l in 0..layers {
            let (src, dst) = ((from * layers + l) * p, (to * layers + l) * p);
            let rows = (src + start) * kdl..(src + len) * kdl;
            self.keys.copy_within(rows.clone(), (dst + start) * kdl);
            self.values.copy_within(rows, (dst + start) * kdl);
        }
    }

    /// The attention half of block `l` for the lane's heads, row i being sequence
    /// `rows[i]` at position `lens[rows[i]]`, from h = norm1(x) (M, C).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        w: &LaneWeights,
        h: &[f32],
        l: usize,
        (rows, lens): (&[usize], &[usize]),
        (n_layers, p, d, group): (usize, usize, usize, usize),
        rope: Option<&RopeTable>,
    ) {
        let (cl, kdl) = (self.cl, self.kdl);
        let width = cl + 2 * kdl;
        w.qkv.matmat(&mut self.qkv, h);
        for (i, &s) in rows.iter().enumerate() {
            let pos = lens[s];
            let qkv = &mut self.qkv[i * width..][..width];
            add_bias(qkv, w.qkv_bias.as_deref());
            if let Some(table) = rope {
                let (cos, sin) = table.at(pos);
                rotate_heads(&mut qkv[..cl + kdl], cos, sin);
            }
            let base = (s * n_layers + l) * p * kdl;
            self.keys[base + pos * kdl..][..kdl].copy_from_slice(&qkv[cl..cl + kdl]);
            self.values[base + pos * kdl..][..kdl].copy_from_slice(&qkv[cl + kdl..]);
            if cl > 0 {
                let keys = &self.keys[base..][..(pos + 1) * kdl];
                let values = &self.values[base..][..(pos + 1) * kdl];
                prefetch_slab(keys, values, p * kdl);
                attend(
                    &mut self.att_y[i * cl..][..cl],
                    &mut self.scratch,
                    &qkv[..cl],
                    keys,
                    values,
                    d,
                    group,
                );
            }
        }
        w.proj.matmat(&mut self.partial, &self.att_y);
    }

    /// The feed-forward half of a block for the lane's slice, from h = norm2(x) (M, C).
    fn feed_forward(&mut self, w: &LaneWeights, h: &[f32], act: Activation) {
        let (fl, ff_width) = (self.fl, self.ff_in * self.fl);
        w.ff1.matmat(&mut self.ff, h);
        let rows = self
            .ff
            .chunks_exact_mut(ff_width.max(1))
            .zip(self.ff_act.chunks_exact_mut(fl.max(1)))
            .zip(self.ff_tanh.chunks_exact_mut(fl.max(1)));
        for ((ff, ff_act), ff_tanh) in rows {
            add_bias(ff, w.ff1_bias.as_deref());
            match act {
                Activation::GeluTanh => gelu_forward_chunk(ff_act, ff_tanh, ff),
                gated if gated.is_gated() => {
                    let (gate, up) = ff.split_at(fl);
                    gated_forward_chunk(gated, ff_act, gate, up)
                }
                other => activation_forward_chunk(other, ff_act, ff),
            }
        }
        w.ff2.matmat(&mut self.partial, &self.ff_act);
    }
}

/// The caches of B sequences and the scratch of a step.
pub struct BatchState {
    /// Cached positions per sequence.
    lens: Vec<usize>,
    /// Lane 0 runs on the calling thread, lane 1 on the team's helper when there is one.
    first: BatchLane,
    second: BatchLane,
    /// (M, C): the residual stream and its norm.
    x: Vec<f32>,
    h: Vec<f32>,
    /// The rotary angles of positions 0..P (with RoPE).
    rope: RopeTable,
    /// (M, V / 2) and (M, V - V / 2), or (M, V) and nothing: the two halves of the head.
    head_first: Vec<f32>,
    head_second: Vec<f32>,
    /// (M, V): the logits of the last step, row i for the i-th sequence fed.
    pub logits: Vec<f32>,
}

impl BatchState {
    /// Empty caches for `b` sequences (fallibly allocated: B L P K D floats twice).
    pub fn new(model: &Model, b: usize) -> Result<BatchState> {
        let [first, second] = LaneShape::both(&model.config);
        Ok(BatchState {
            lens: vec![0; b],
            first: BatchLane::new(model, &first, b)?,
            second: BatchLane::new(model, &second, b)?,
            x: Vec::new(),
            h: Vec::new(),
            rope: RopeTable::default(),
            head_first: Vec::new(),
            head_second: Vec::new(),
            logits: Vec::new(),
        })
    }

    /// The number of sequences B.
    pub fn sequences(&self) -> usize {
        self.lens.len()
    }

    /// Cached positions of sequence `s`.
    pub fn len(&self, s: usize) -> usize {
        self.lens[s]
    }

    /// Forgets sequence `s`'s cache.
    pub fn clear(&mut self, s: usize) {
        self.lens[s] = 0;
    }

    /// Copies sequence `from`'s cache to sequence `to` (the same prompt for many samples, a
    /// beam's fork): only its cached positions, each lane's on its own thread with a team.
    /// The first `kept` positions of `to` already hold what `from`'s do (the same ids fed
    /// from position 0: a beam forked into the slot of one that shared its start) and are
    /// not copied again.
    pub fn copy_sequence(
        &mut self,
        model: &Model,
        team: Option<&Team>,
        (from, to): (usize, usize),
        kept: usize,
    ) {
        let cfg = &model.config;
        let (layers, p, len) = (cfg.n_layers, cfg.max_seq_len, self.lens[from]);
        let start = kept.min(len);
        let (first, second) = (&mut self.first, &mut self.second);
        both(
            team,
            || second.copy_sequence((layers, p, len), (from, to), start),
            || first.copy_sequence((layers, p, len), (from, to), start),
        );
        self.lens[to] = self.lens[from];
    }

    /// Feeds `tokens[i]` to sequence `rows[i]` at its next position, for every i; the
    /// logits (M, V) are then in `self.logits`. Each sequence's cache must have room and
    /// each token must be below V (the caller checks both). With a team, the two lanes
    /// run side by side.
    pub fn step(&mut self, decoder: &Decoder, team: Option<&Team>, rows: &[usize], tokens: &[u32]) {
        batch_step(self, decoder, team, rows, tokens);
    }
}

simd_fn! {
    fn batch_step(state: &mut BatchState, decoder: &Decoder, team: Option<&Team>, rows: &[usize], tokens: &[u32]) {
        state.step_rows(decoder, team, rows, tokens);
    }
}

impl BatchState {
    #[inline(always)]
    fn step_rows(
        &mut self,
        decoder: &Decoder,
        team: Option<&Team>,
        rows: &[usize],
        tokens: &[u32],
    ) {
        let (model, packed) = (decoder.model(), decoder.packed());
        let cfg = &model.config;
        let lay = &model.layout;
        let prm = model.params();
        let (c, v, p, m) = (cfg.d_model, cfg.vocab_size, cfg.max_seq_len, rows.len());
        let shape = (
            cfg.n_layers,
            p,
            cfg.head_dim(),
            cfg.n_heads / cfg.kv_heads(),
        );
        self.x.resize(m * c, 0.0);
        self.h.resize(m * c, 0.0);
        self.first.resize(m, c);
        self.second.resize(m, c);
        self.logits.resize(m * v, 0.0);
        let rope = (cfg.position == Position::Rope).then(|| {
            self.rope.ensure(p, shape.2, cfg.rope_theta);
            &self.rope
        });
        let tok_embed = lay.token_embed.of(prm);
        for (x, (&s, &tok)) in self.x.chunks_exact_mut(c).zip(rows.iter().zip(tokens)) {
            let pos = self.lens[s];
            assert!(pos < p, "a batch sequence's cache is full");
            x.copy_from_slice(&tok_embed[tok as usize * c..][..c]);
            if let Some(pe) = lay.pos_embed {
                for (x, b) in x.iter_mut().zip(&pe.of(prm)[pos * c..][..c]) {
                    *x += b;
                }
            }
        }
        let (first, second) = (&mut self.first, &mut self.second);
        let lens = &self.lens;
        for (l, (blk, [w_first, w_second])) in lay.blocks.iter().zip(&packed.blocks).enumerate() {
            norm_rows(
                &mut self.h,
                &self.x,
                |h, x| norm_row(h, x, blk.ln1, prm, cfg.eps),
                c,
            );
            let h = &self.h;
            both(
                team,
                || second.attention(w_second, h, l, (rows, lens), shape, rope),
                || first.attention(w_first, h, l, (rows, lens), shape, rope),
            );
            add_partials_rows(&mut self.x, first, second, blk.b_o.map(|b| b.of(prm)), c);
            norm_rows(
                &mut self.h,
                &self.x,
                |h, x| norm_row(h, x, blk.ln2, prm, cfg.eps),
                c,
            );
            let h = &self.h;
            both(
                team,
                || second.feed_forward(w_second, h, cfg.activation),
                || first.feed_forward(w_first, h, cfg.activation),
            );
            add_partials_rows(&mut self.x, first, second, blk.b_down.map(|b| b.of(prm)), c);
        }
        for &s in rows {
            self.lens[s] += 1;
        }
        norm_rows(
            &mut self.h,
            &self.x,
            |h, x| norm_row(h, x, lay.ln_f, prm, cfg.eps),
            c,
        );
        // logits = h @ lm_head^T, lm_head (V, C): the same dot products as one sequence's
        // step; the two lanes take the two halves of the vocabulary once the M rows'
        // multiply-adds are worth a hand-off (at fewer rows than one sequence's step).
        let head = packed.head(model);
        let cut = if v >= 16 && m * v * c >= SPLIT_HEAD {
            v / 2
        } else {
            v
        };
        self.head_first.resize(m * cut, 0.0);
        self.head_second.resize(m * (v - cut), 0.0);
        let (h, head_first, head_second) = (&self.h, head.rows(0..cut, c), head.rows(cut..v, c));
        let (first, second) = (&mut self.head_first, &mut self.head_second);
        both(
            team,
            || head_rows(second, h, head_second, c),
            || head_rows(first, h, head_first, c),
        );
        if cut == v {
            self.logits.copy_from_slice(&self.head_first);
        } else {
            let halves = self
                .head_first
                .chunks_exact(cut)
                .zip(self.head_second.chunks(v - cut));
            for (row, (a, b)) in self.logits.chunks_exact_mut(v).zip(halves) {
                row[..cut].copy_from_slice(a);
                row[cut..].copy_from_slice(b);
            }
        }
    }
}

/// out (M, R) = h (M, C) @ rows^T for the output head's rows (R, C): HEAD_ROWS of them
/// at a time for all M rows of h, each output the dot product one sequence's step takes.
fn head_rows(out: &mut [f32], h: &[f32], rows: Rows, c: usize) {
    match rows {
        Rows::F32(rows) => head_rows_of(out, h, rows, c),
        Rows::Bf16(rows) => head_rows_of(out, h, rows, c),
    }
}

fn head_rows_of<W: Weight>(out: &mut [f32], h: &[f32], rows: &[W], c: usize) {
    let r = rows.len() / c;
    for r0 in (0..r).step_by(HEAD_ROWS) {
        let r1 = (r0 + HEAD_ROWS).min(r);
        for (i, x) in h.chunks_exact(c).enumerate() {
            dot_rows(&mut out[i * r + r0..i * r + r1], x, &rows[r0 * c..r1 * c]);
        }
    }
}

/// out row = norm(x row) for every row of width c.
fn norm_rows(out: &mut [f32], x: &[f32], norm: impl Fn(&mut [f32], &[f32]), c: usize) {
    for (o, x) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
        norm(o, x);
    }
}

/// x += (first + second) + bias, row by row: the block's output from the lanes' partials.
fn add_partials_rows(
    x: &mut [f32],
    first: &BatchLane,
    second: &BatchLane,
    bias: Option<&[f32]>,
    c: usize,
) {
    let partials = first
        .partial
        .chunks_exact(c)
        .zip(second.partial.chunks_exact(c));
    for (x, (a, b)) in x.chunks_exact_mut(c).zip(partials) {
        super::add_partials(x, a, b, bias);
    }
}
