//! One position at a time: the model's forward pass for a single new token, with a
//! key/value cache holding the keys and values of the earlier positions.
//!
//! A token costs one matrix-vector product per weight matrix, and at batch size one these
//! products are bound by how fast the weights stream in from the caches or from memory,
//! so they read weights repacked into panels that stream front to back ([`panels`]). A
//! model in bfloat16 ([`crate::kernels::bf16`]) has its panels and its output head stored
//! in 2 bytes a weight, half the bytes to stream; the arithmetic is the same float32.
//!
//! The work of each block is cut into two *lanes*, one per thread of a [`Team`]: a lane
//! owns half of the key/value heads with the query heads that read them (their queries,
//! keys, values, cache and attention) and half of the feed-forward width, and ends each half-block with a partial sum of the
//! block's output, (C) = its part of the input to W_o or linear2 times the matching rows.
//! The calling thread adds the two partial sums. So per block the threads meet twice and
//! hand each other a few vectors of C values; every other value a lane needs it computed
//! itself (on a virtual machine, a hand-off between cores was measured at 0.1 to 0.4 µs).
//! Without a helper the calling thread runs both lanes, in the same way: the results are
//! the same.
//!
//! With rotary positions the keys are cached rotated, each by its own position, so a
//! cached key never changes; the cache holds K key/value heads (grouped-query attention).

pub mod batched;
pub mod decoder;
pub mod panels;
pub mod team;

pub use decoder::{times_packed, Decoder, PackedCache};
pub use panels::{LaneShape, PackedWeights, TWO_LANES_MIN_D_MODEL};
pub use team::{with_team, Team};

use crate::config::{Activation, Position};
use crate::kernels::activation::{activation_forward_chunk, gated_forward_chunk};
use crate::kernels::bf16::Weight;
use crate::kernels::gelu::gelu_forward_chunk;
use crate::kernels::layernorm::layernorm_row;
use crate::kernels::rmsnorm::rmsnorm_row;
use crate::kernels::rope::{rotate_heads, rotation_at};
use crate::kernels::simd::simd_fn;
use crate::kernels::vecmath::{axpy, dot, softmax_in_place};
use crate::model::Model;
use crate::params::NormParams;
use panels::{LaneWeights, Rows};
use team::both;

/// An output head with fewer multiply-adds than this is not split.
const SPLIT_HEAD: usize = 16 * 1024;

simd_fn! {
    /// out[r] = x . rows[r]: products with a matrix stored [out][in] (the batched output
    /// head, whose rows the batch shares from the cache). Four rows at a time, so that
    /// four chains of multiply-adds are in flight instead of one; each row's sum is
    /// exactly [`dot`]'s.
    fn dot_rows<W: Weight>(out: &mut [f32], x: &[f32], rows: &[W]) {
        let c = x.len();
        let mut outs = out.chunks_exact_mut(4);
        let mut quads = rows.chunks_exact(4 * c);
        for (o, quad) in (&mut outs).zip(&mut quads) {
            let (r01, r23) = quad.split_at(2 * c);
            let rows = [&r01[..c], &r01[c..], &r23[..c], &r23[c..]];
            o.copy_from_slice(&dot4(x, rows));
        }
        for (o, row) in outs.into_remainder().iter_mut().zip(quads.remainder().chunks_exact(c)) {
            *o = dot(x, row);
        }
    }
}

simd_fn! {
    /// out[r] = x . rows[r], a row at a time: one sequence's output head, read once per
    /// token. Each thread's rows are then one long stream, which the hardware prefetchers
    /// follow; [`dot_rows`]' four rows side by side are four short ones, and from main
    /// memory (a head larger than the last-level cache: stories15M's 37 MB on a 32 MiB L3)
    /// generation ran at half the speed (330 against 680 tokens/s). From a cache it is the
    /// other way round, by about a tenth.
    fn dot_each_row<W: Weight>(out: &mut [f32], x: &[f32], rows: &[W]) {
        for (o, row) in out.iter_mut().zip(rows.chunks_exact(x.len().max(1))) {
            *o = dot(x, row);
        }
    }
}

/// out[r] = x . rows[r] by [`dot_each_row`], for rows in either dtype.
fn head_each_row(out: &mut [f32], x: &[f32], rows: Rows) {
    match rows {
        Rows::F32(rows) => dot_each_row(out, x, rows),
        Rows::Bf16(rows) => dot_each_row(out, x, rows),
    }
}

/// [x . rows[0], ..., x . rows[3]], each the same sum as [`dot`] computes. (Written
/// otherwise, with four named accumulators or a loop for the sums at the end, the compiler
/// vectorised it 4 floats wide, and generation at stories15M fell by a fifth.)
#[inline(always)]
fn dot4<W: Weight>(x: &[f32], rows: [&[W]; 4]) -> [f32; 4] {
    let n = x.len() / 8 * 8;
    let mut acc = [[0.0f32; 8]; 4];
    for k in (0..n).step_by(8) {
        let xs = &x[k..k + 8];
        for (a, row) in acc.iter_mut().zip(&rows) {
            for ((a, &xi), &w) in a.iter_mut().zip(xs).zip(&row[k..k + 8]) {
                *a = xi.mul_add(w.to_f32(), *a);
            }
        }
    }
    // Four calls, not `std::array::from_fn`: the compiler left that out of line and
    // compiled it without the caller's AVX and FMA (scalar sums, and a call to a software
    // fmaf for each multiply-add of the tail), which took 6% of a batch step at B.
    let sum = |r: usize| {
        let a = &acc[r];
        let mut tail = 0.0f32;
        for (xi, w) in x[n..].iter().zip(&rows[r][n..]) {
            tail = xi.mul_add(w.to_f32(), tail);
        }
        ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7])) + tail
    };
    [sum(0), sum(1), sum(2), sum(3)]
}

/// Floats of padding after a lane's scratch and partial sum, the buffers its thread
/// writes most: a cache line, so that they do not share one with the other lane's.
const LINE_FLOATS: usize = 16;

simd_fn! {
    /// Causal attention of one query over the cached positions, for a lane's heads.
    /// q and y are (heads * D); keys and values are (S, heads / group * D) rows, key/value
    /// head j in columns j D..(j + 1) D, read by query heads j group..(j + 1) group;
    /// scratch holds at least heads * S + D floats. y = softmax(q k^T / sqrt(D)) v per
    /// head, summed in the scratch and written to y once.
    ///
    /// In three passes over the heads: every head's scores, then each head's softmax, then
    /// each head's weighted sum, so that the heads' chains of dependent instructions (the
    /// softmax's above all: max, exp, sum, divide) are side by side for the CPU to overlap
    /// rather than one after another. Four positions at a time: four scores are four
    /// independent [`dot`]s ([`scaled_dot4`]), and the weighted sum adds four values per
    /// pass over the sum with the multiply-adds in the order one position at a time would
    /// do them, so every output is the same as the loop
    /// `score[s] = dot(q, k[s]); ...; y += p[s] v[s]` gives.
    fn attend(y: &mut [f32], scratch: &mut [f32], q: &[f32], keys: &[f32], values: &[f32], d: usize, group: usize) {
        let scale = 1.0 / (d as f32).sqrt();
        let c = y.len() / group;
        let (heads, positions) = (y.len() / d, keys.len() / c);
        let (scores, acc) = scratch.split_at_mut(heads * positions);
        let acc = &mut acc[..d];
        let quads = positions / 4 * 4;
        let col = |i: usize| i / group * d;
        for (i, (scores, qh)) in scores.chunks_exact_mut(positions).zip(q.chunks_exact(d)).enumerate() {
            let key = |s: usize| &keys[s * c + col(i)..][..d];
            for s in (0..quads).step_by(4) {
                let rows = [key(s), key(s + 1), key(s + 2), key(s + 3)];
                scaled_dot4(&mut scores[s..s + 4], qh, rows, scale);
            }
            for (s, score) in scores.iter_mut().enumerate().skip(quads) {
                *score = dot(qh, key(s)) * scale;
            }
        }
        for scores in scores.chunks_exact_mut(positions) {
            softmax_in_place(scores);
        }
        for (i, (yh, scores)) in y.chunks_exact_mut(d).zip(scores.chunks_exact(positions)).enumerate() {
            let value = |s: usize| &values[s * c + col(i)..][..d];
            acc.fill(0.0);
            for s in (0..quads).step_by(4) {
                let [p0, p1, p2, p3] = [scores[s], scores[s + 1], scores[s + 2], scores[s + 3]];
                let (v0, v1) = (value(s), value(s + 1));
                let (v2, v3) = (value(s + 2), value(s + 3));
                let fours = acc.iter_mut().zip(v0.iter().zip(v1)).zip(v2.iter().zip(v3));
                for ((a, (x0, x1)), (x2, x3)) in fours {
                    *a = p3.mul_add(*x3, p2.mul_add(*x2, p1.mul_add(*x1, p0.mul_add(*x0, *a))));
                }
            }
            for (s, p) in scores.iter().enumerate().skip(quads) {
                axpy(acc, *p, value(s));
            }
            yh.copy_from_slice(acc);
        }
    }
}

/// Floats of a lane's scratch for [`attend`] with `lane_dims` query columns: each head's P
/// scores and D sums, then a cache line.
fn attend_scratch_len(lane_dims: usize, p: usize, d: usize) -> usize {
    lane_dims / d.max(1) * p + d + LINE_FLOATS
}

/// out[r] = (x . rows[r]) * scale for r < 4, each dot product [`dot4`]'s (and so
/// [`dot`]'s) sum. With AVX2 the four sums are added across in vector registers: the
/// compiler built [`dot4`]'s sums from single floats, and at config B's head size
/// (D = 32) the scores took half of [`attend`]'s time on an Intel Xeon; with this,
/// attend took 0.41 µs a call instead of 0.64 (docs/performance.md).
#[inline(always)]
fn scaled_dot4(out: &mut [f32], x: &[f32], rows: [&[f32]; 4], scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2_fma() {
        // SAFETY: the CPU has the features `scaled_dot4_avx2` was compiled for.
        return unsafe { scaled_dot4_avx2(out, x, rows, scale) };
    }
    for (o, dot) in out[..4].iter_mut().zip(dot4(x, rows)) {
        *o = dot * scale;
    }
}

/// [`scaled_dot4`] with AVX2: acc[r] holds the 8 partial sums of row r; with
/// b[r] = acc[r][0..4] + acc[r][4..8], two rounds of horizontal adds give each row
/// (b[r][0] + b[r][1]) + (b[r][2] + b[r][3]), the order [`dot`] adds them in.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn scaled_dot4_avx2(out: &mut [f32], x: &[f32], rows: [&[f32]; 4], scale: f32) {
    use std::arch::x86_64::*;
    let n = x.len() / 8 * 8;
    let mut acc = [_mm256_setzero_ps(); 4];
    for k in (0..n).step_by(8) {
        let xs = _mm256_loadu_ps(x[k..k + 8].as_ptr());
        for (a, row) in acc.iter_mut().zip(&rows) {
            *a = _mm256_fmadd_ps(xs, _mm256_loadu_ps(row[k..k + 8].as_ptr()), *a);
        }
    }
    let halves = |a: __m256| _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let pairs = [
        _mm_hadd_ps(halves(acc[0]), halves(acc[1])),
        _mm_hadd_ps(halves(acc[2]), halves(acc[3])),
    ];
    let mut tails = [0.0f32; 4];
    for (tail, row) in tails.iter_mut().zip(&rows) {
        for (xi, w) in x[n..].iter().zip(&row[n..]) {
            *tail = xi.mul_add(*w, *tail);
        }
    }
    let sums = _mm_add_ps(
        _mm_hadd_ps(pairs[0], pairs[1]),
        _mm_loadu_ps(tails.as_ptr()),
    );
    _mm_storeu_ps(out[..4].as_mut_ptr(), _mm_mul_ps(sums, _mm_set1_ps(scale)));
}

/// A lane's cache capacity per layer (P KD_lane floats) from which [`prefetch_slab`]
/// prefetches: 32 KiB. Below it a step's whole working set stays in the caches between
/// tokens, and prefetching only added instructions (config B, 16 KiB per layer, a batch
/// of 8 with the helper: 120-126K tokens/s with it, 129-133K without, 6 alternating
/// runs each). Above it the weights that stream through evict the keys and values.
const PREFETCH_FLOATS: usize = 8 * 1024;

/// Before [`attend`] reads a layer's `keys` and `values` (its slab of `capacity` floats
/// each), asks the CPU to start loading them into L2 if they come from memory: attend
/// reads a head at a time, four positions at a time, and its loads alone kept too few
/// cache misses in flight (config D, a batch of 4: 1,768-2,090 -> 2,280-2,570 tokens/s).
fn prefetch_slab(keys: &[f32], values: &[f32], capacity: usize) {
    if capacity >= PREFETCH_FLOATS {
        prefetch(keys);
        prefetch(values);
    }
}

/// Asks the CPU to start loading `data` into L2.
#[inline(always)]
fn prefetch(data: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    for line in data.chunks(LINE_FLOATS) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
        // SAFETY: prefetching has no effect on memory; the address is inside a live slice.
        unsafe { _mm_prefetch::<_MM_HINT_T1>(line.as_ptr().cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}

/// Layer norm (which has a bias) or RMSNorm of one row.
fn norm_row(out: &mut [f32], x: &[f32], p: NormParams, prm: &[f32], eps: f32) {
    match p.bias {
        Some(bias) => {
            layernorm_row(out, x, p.weight.of(prm), bias.of(prm), eps);
        }
        None => {
            rmsnorm_row(out, x, p.weight.of(prm), eps);
        }
    }
}

fn add_bias(out: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (o, b) in out.iter_mut().zip(bias) {
            *o += b;
        }
    }
}

/// x += (first + second) + bias: the block's output from the two lanes' partial sums.
fn add_partials(x: &mut [f32], first: &[f32], second: &[f32], bias: Option<&[f32]>) {
    for (i, (xi, (a, b))) in x.iter_mut().zip(first.iter().zip(second)).enumerate() {
        *xi += (a + b) + bias.map_or(0.0, |bias| bias[i]);
    }
}

/// One thread's share of a token: its heads' keys and values for every layer, and its
/// scratch. Every buffer is the lane's own allocation, so the two lanes' threads share
/// a cache line at most at the edge of two allocations.
#[derive(Clone)]
struct Lane {
    /// (L, P, KD_lane) each: the lane's columns of the keys and values.
    keys: Vec<f32>,
    values: Vec<f32>,
    /// (C_lane + 2 KD_lane): q, k, v of the lane's heads.
    qkv: Vec<f32>,
    /// (C_lane): the attention output of the lane's heads.
    att_y: Vec<f32>,
    /// (heads_lane P + D + a cache line): see [`attend`].
    scratch: Vec<f32>,
    /// (F_lane): linear1's output (gated: (2 F_lane), the gate's then linear1's), the
    /// activation of it, and tanh inside the tanh GELU.
    ff: Vec<f32>,
    ff_act: Vec<f32>,
    ff_tanh: Vec<f32>,
    /// (C + a cache line): the lane's partial sum of the block's output.
    partial: Vec<f32>,
}

impl Lane {
    fn new(model: &Model, shape: &LaneShape) -> Lane {
        let cfg = &model.config;
        let (l, p, c, cl) = (cfg.n_layers, cfg.max_seq_len, cfg.d_model, shape.dims.len());
        let (d, kdl) = (cfg.head_dim(), shape.kv_dims.len());
        let ff_in = if cfg.activation.is_gated() { 2 } else { 1 };
        Lane {
            keys: vec![0.0; l * p * kdl],
            values: vec![0.0; l * p * kdl],
            qkv: vec![0.0; cl + 2 * kdl],
            att_y: vec![0.0; cl],
            scratch: vec![0.0; attend_scratch_len(cl, p, d)],
            ff: vec![0.0; ff_in * shape.ff.len()],
            ff_act: vec![0.0; shape.ff.len()],
            ff_tanh: vec![0.0; shape.ff.len()],
            partial: vec![0.0; c + LINE_FLOATS],
        }
    }

    /// The attention half of block `l` for the lane's heads at position `pos`, from
    /// h = LN1(x): q, k, v = h @ W (+ biases), q and k rotated by `rope` (cos, sin) if
    /// given, k and v into the cache, attention over positions 0..=pos,
    /// partial = y @ W_o[the lane's rows].
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &mut self,
        w: &LaneWeights,
        h: &[f32],
        l: usize,
        pos: usize,
        (p, d, group): (usize, usize, usize),
        rope: Option<(&[f32], &[f32])>,
    ) {
        let cl = self.att_y.len();
        let kdl = (self.qkv.len() - cl) / 2;
        let c = h.len();
        w.qkv.matvec(&mut self.qkv, h);
        add_bias(&mut self.qkv, w.qkv_bias.as_deref());
        if let Some((cos, sin)) = rope {
            rotate_heads(&mut self.qkv[..cl + kdl], cos, sin);
        }
        let row = (l * p + pos) * kdl;
        self.keys[row..][..kdl].copy_from_slice(&self.qkv[cl..cl + kdl]);
        self.values[row..][..kdl].copy_from_slice(&self.qkv[cl + kdl..]);
        let keys = &self.keys[l * p * kdl..][..(pos + 1) * kdl];
        let values = &self.values[l * p * kdl..][..(pos + 1) * kdl];
        if cl > 0 {
            prefetch_slab(keys, values, p * kdl);
            attend(
                &mut self.att_y,
                &mut self.scratch,
                &self.qkv[..cl],
                keys,
                values,
                d,
                group,
            );
        }
        w.proj.matvec(&mut self.partial[..c], &self.att_y);
    }

    /// The feed-forward half of a block for the lane's slice, from h = LN2(x):
    /// partial = act(h @ W1[:, slice] + b1[slice]) @ W2[slice, :] (gated:
    /// act(h @ W_gate[:, slice] + b) * (h @ W1[:, slice] + b1[slice])).
    fn feed_forward(&mut self, w: &LaneWeights, h: &[f32], act: Activation) {
        let c = h.len();
        w.ff1.matvec(&mut self.ff, h);
        add_bias(&mut self.ff, w.ff1_bias.as_deref());
        match act {
            Activation::GeluTanh => {
                gelu_forward_chunk(&mut self.ff_act, &mut self.ff_tanh, &self.ff)
            }
            gated if gated.is_gated() => {
                let (gate, up) = self.ff.split_at(self.ff_act.len());
                gated_forward_chunk(gated, &mut self.ff_act, gate, up)
            }
            other => activation_forward_chunk(other, &mut self.ff_act, &self.ff),
        }
        w.ff2.matvec(&mut self.partial[..c], &self.ff_act);
    }
}

/// Keys and values of every layer for the positions seen so far, plus per-token scratch.
/// Cloning one forks the sequence (beam search): both copies go on from the same cache.
#[derive(Clone)]
pub struct DecodeState {
    /// Number of cached positions.
    len: usize,
    /// (C): the residual stream, and the layer norm of it at hand.
    x: Vec<f32>,
    h: Vec<f32>,
    /// Lane 0 runs on the calling thread, lane 1 on the helper when there is one.
    first: Lane,
    second: Lane,
    /// (D / 2) each: the rotary angles' cos and sin at the position being fed (RoPE).
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// (V) logits of the last position pushed with `want_logits`.
    pub logits: Vec<f32>,
}

impl DecodeState {
    pub fn new(model: &Model) -> DecodeState {
        let cfg = &model.config;
        let [first, second] = LaneShape::both(cfg);
        DecodeState {
            len: 0,
            x: vec![0.0; cfg.d_model],
            h: vec![0.0; cfg.d_model],
            first: Lane::new(model, &first),
            second: Lane::new(model, &second),
            cos: vec![0.0; cfg.head_dim() / 2],
            sin: vec![0.0; cfg.head_dim() / 2],
            logits: vec![0.0; cfg.vocab_size],
        }
    }

    /// Bytes of the key/value cache of a new state, (2, L, P, K D) floats: the rest is small.
    pub fn cache_bytes(config: &crate::config::Config) -> u128 {
        2 * 4 * (config.n_layers as u128) * (config.max_seq_len as u128) * (config.kv_dim() as u128)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every cached position (the buffers are kept for the next ones).
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Feeds one token at the next position; computes the logits only if `want_logits`.
    /// The id must be below V and the cache must not be full.
    pub fn push(&mut self, decoder: &Decoder, team: Option<&Team>, token: u32, want_logits: bool) {
        decode_step(self, decoder, team, token, want_logits);
    }
}

simd_fn! {
    fn decode_step(state: &mut DecodeState, decoder: &Decoder, team: Option<&Team>, token: u32, want_logits: bool) {
        state.step(decoder, team, token, want_logits);
    }
}

impl DecodeState {
    /// x = token_embed[token] (+ pos_embed[pos]); each block: x += attn(LN1(x)),
    /// x += ffn(LN2(x)), each as the sum of the two lanes' partial sums; then
    /// logits = LN_f(x) lm_head^T.
    #[inline(always)]
    fn step(&mut self, decoder: &Decoder, team: Option<&Team>, token: u32, want_logits: bool) {
        let (model, packed) = (decoder.model(), decoder.packed());
        let cfg = &model.config;
        let lay = &model.layout;
        let prm = model.params();
        let (c, v, p) = (cfg.d_model, cfg.vocab_size, cfg.max_seq_len);
        let (d, group) = (cfg.head_dim(), cfg.n_heads / cfg.kv_heads());
        let pos = self.len;
        assert!(pos < p, "decode cache is full");
        let tok = &lay.token_embed.of(prm)[token as usize * c..][..c];
        self.x.copy_from_slice(tok);
        if let Some(pe) = lay.pos_embed {
            for (x, b) in self.x.iter_mut().zip(&pe.of(prm)[pos * c..][..c]) {
                *x += b;
            }
        }
        let rope = if cfg.position == Position::Rope {
            rotation_at(&mut self.cos, &mut self.sin, pos, d, cfg.rope_theta);
            Some((&self.cos[..], &self.sin[..]))
        } else {
            None
        };
        let (first, second) = (&mut self.first, &mut self.second);
        for (l, (blk, [w_first, w_second])) in lay.blocks.iter().zip(&packed.blocks).enumerate() {
            norm_row(&mut self.h, &self.x, blk.ln1, prm, cfg.eps);
            let h = &self.h;
            both(
                team,
                || second.attention(w_second, h, l, pos, (p, d, group), rope),
                || first.attention(w_first, h, l, pos, (p, d, group), rope),
            );
            let bias_o = blk.b_o.map(|b| b.of(prm));
            add_partials(&mut self.x, &first.partial, &second.partial, bias_o);
            norm_row(&mut self.h, &self.x, blk.ln2, prm, cfg.eps);
            let h = &self.h;
            both(
                team,
                || second.feed_forward(w_second, h, cfg.activation),
                || first.feed_forward(w_first, h, cfg.activation),
            );
            let bias2 = blk.b_down.map(|b| b.of(prm));
            add_partials(&mut self.x, &first.partial, &second.partial, bias2);
        }
        self.len += 1;
        if want_logits {
            norm_row(&mut self.h, &self.x, lay.ln_f, prm, cfg.eps);
            // logits = h @ lm_head^T, lm_head (V, C) stored [out][in]: one dot product per
            // row, each computed by one thread, so any cut gives the same numbers.
            let head = packed.head(model);
            let cut = if v >= 16 && v * c >= SPLIT_HEAD {
                v / 2
            } else {
                v
            };
            let (first, second) = self.logits.split_at_mut(cut);
            let x = &self.h;
            both(
                team,
                || head_each_row(second, x, head.rows(cut..v, c)),
                || head_each_row(first, x, head.rows(0..cut, c)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_rows_gives_each_row_exactly_dots_sum() {
        for c in [1, 7, 8, 13, 64, 288] {
            for v in [1, 3, 4, 5, 8, 11] {
                let x: Vec<f32> = (0..c).map(|i| ((i * 7 % 19) as f32 - 9.0) / 7.0).collect();
                let rows: Vec<f32> = (0..v * c)
                    .map(|i| ((i * 5 % 23) as f32 - 11.0) / 3.0)
                    .collect();
                let mut out = vec![f32::NAN; v];
                dot_rows(&mut out, &x, &rows);
                for (r, got) in out.iter().enumerate() {
                    let want = dot(&x, &rows[r * c..][..c]);
                    assert_eq!(got.to_bits(), want.to_bits(), "C {c}, V {v}, row {r}");
                }
            }
        }
    }

    #[test]
    fn attend_equals_the_one_position_at_a_time_loop() {
        // D = 12: each score's dot product also has a tail of 4 past its 8-wide sums.
        for (d, heads, group) in [8, 12]
            .into_iter()
            .flat_map(|d| [(d, 1, 1), (d, 2, 1), (d, 4, 2)])
        {
            let c = heads / group * d;
            for positions in 1..=10 {
                let value = |i: usize, m: usize| ((i * m % 29) as f32 - 14.0) / 9.0;
                let q: Vec<f32> = (0..heads * d).map(|i| value(i, 7)).collect();
                let keys: Vec<f32> = (0..positions * c).map(|i| value(i, 5)).collect();
                let values: Vec<f32> = (0..positions * c).map(|i| value(i, 11)).collect();
                let mut y = vec![f32::NAN; heads * d];
                let mut scratch = vec![f32::NAN; heads * positions + d];
                attend(&mut y, &mut scratch, &q, &keys, &values, d, group);
                for h in 0..heads {
                    let col = h / group * d;
                    let qh = &q[h * d..][..d];
                    let scale = 1.0 / (d as f32).sqrt();
                    let mut scores: Vec<f32> = (0..positions)
                        .map(|s| dot(qh, &keys[s * c + col..][..d]) * scale)
                        .collect();
                    softmax_in_place(&mut scores);
                    let mut want = vec![0.0f32; d];
                    for (s, &p) in scores.iter().enumerate() {
                        axpy(&mut want, p, &values[s * c + col..][..d]);
                    }
                    for (j, (got, want)) in y[h * d..][..d].iter().zip(&want).enumerate() {
                        let at = format!("heads {heads}, S {positions}, head {h}, column {j}");
                        assert_eq!(got.to_bits(), want.to_bits(), "{at}");
                    }
                }
            }
        }
    }
}
