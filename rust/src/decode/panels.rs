//! Weight matrices repacked for matrix-vector products, and the product itself.
//!
//! A matrix W (IC, OC) stored `[in][out]` is cut into panels of 64 columns (the last one
//! may be narrower); each panel (IC, 64) is stored row-major and contiguous. Then
//! out = x @ W reads every panel front to back, one sequential stream, while the 64
//! outputs of the panel stay in registers:
//!
//! ```text
//! out[j] = sum_i x[i] W[i][j], one chain of fused multiply-adds over i in order.
//! ```
//!
//! The panels hold the model's dtype ([`Values`]): float32, or bfloat16 (2 bytes a weight),
//! which the product widens to float32 as it loads it ([`Weight::to_f32`]), so the chain of
//! multiply-adds, and its result, is the float32 one on the rounded weights.
//!
//! Each block's weights are packed per lane (see [`crate::decode`]): the columns of
//! W_q, W_k, W_v and linear1 (and the gate) that a lane computes, and the rows of W_o and
//! linear2 that multiply what it computed.

use std::ops::Range;

use crate::config::Config;
use crate::kernels::bf16::{Bf16, Dtype, Weight};
use crate::kernels::simd::simd_fn;
use crate::kernels::vecmath::axpy;
use crate::model::Model;

/// Columns per panel: 8 AVX registers of accumulators.
pub const PANEL: usize = 64;

/// Columns col0..col0 + width of a row-major matrix with `stride` columns, from the row
/// where `data` starts.
#[derive(Clone, Copy)]
pub struct Columns<'a> {
    pub data: &'a [f32],
    pub stride: usize,
    pub col0: usize,
    pub width: usize,
}

impl<'a> Columns<'a> {
    /// Every column of a row-major matrix with `cols` columns.
    pub fn all(data: &'a [f32], cols: usize) -> Self {
        Columns {
            data,
            stride: cols,
            col0: 0,
            width: cols,
        }
    }

    /// Columns `range` of a row-major matrix with `cols` columns.
    pub fn range(data: &'a [f32], cols: usize, range: Range<usize>) -> Self {
        Columns {
            data,
            stride: cols,
            col0: range.start,
            width: range.len(),
        }
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.stride + self.col0..][..self.width]
    }
}

/// Weights stored in float32 or in bfloat16 (see [`Dtype`]).
#[derive(Clone)]
pub enum Values {
    F32(Vec<f32>),
    Bf16(Vec<Bf16>),
}

impl Values {
    /// `values` in `dtype`, rounded to it if need be.
    pub fn new(values: Vec<f32>, dtype: Dtype) -> Values {
        match dtype {
            Dtype::F32 => Values::F32(values),
            Dtype::Bf16 => Values::Bf16(values.into_iter().map(Bf16::round).collect()),
        }
    }

    /// Bytes the values take.
    pub fn bytes(&self) -> usize {
        match self {
            Values::F32(values) => values.len() * 4,
            Values::Bf16(values) => values.len() * 2,
        }
    }
}

/// A matrix (IC, OC) in panels of [`PANEL`] columns.
#[derive(Clone)]
pub struct Panels {
    data: Values,
    ic: usize,
    oc: usize,
}

impl Panels {
    /// Packs `ic` rows of the matrix whose columns are those of `blocks` side by side
    /// ([W_q | W_k | W_v] is three blocks), stored in `dtype`.
    pub fn pack(ic: usize, blocks: &[Columns], dtype: Dtype) -> Panels {
        let oc: usize = blocks.iter().map(|b| b.width).sum();
        let mut data = vec![0.0f32; ic * oc];
        let mut row = Vec::with_capacity(oc);
        for i in 0..ic {
            row.clear();
            for block in blocks {
                row.extend_from_slice(block.row(i));
            }
            // Panels before column j0 hold ic * j0 values.
            for j0 in (0..oc).step_by(PANEL) {
                let w = PANEL.min(oc - j0);
                data[j0 * ic + i * w..][..w].copy_from_slice(&row[j0..j0 + w]);
            }
        }
        Panels {
            data: Values::new(data, dtype),
            ic,
            oc,
        }
    }

    /// Bytes the weights take.
    pub fn bytes(&self) -> usize {
        self.data.bytes()
    }

    /// out (OC) = x (IC) @ W.
    pub fn matvec(&self, out: &mut [f32], x: &[f32]) {
        match &self.data {
            Values::F32(data) => self.matvec_of(out, x, data),
            Values::Bf16(data) => self.matvec_of(out, x, data),
        }
    }

    fn matvec_of<W: Weight>(&self, out: &mut [f32], x: &[f32], data: &[W]) {
        debug_assert_eq!((x.len(), out.len()), (self.ic, self.oc));
        if self.ic == 0 {
            out.fill(0.0);
            return;
        }
        for (out, panel) in out.chunks_mut(PANEL).zip(data.chunks(PANEL * self.ic)) {
            panel_matvec(out, x, panel);
        }
    }

    /// out (M, OC) = x (M, IC) @ W, row by row the same numbers as [`Panels::matvec`]
    /// (each output is the same chain of multiply-adds), but every panel is read once for
    /// all M rows: four rows at a time share each load of a weight.
    pub fn matmat(&self, out: &mut [f32], x: &[f32]) {
        match &self.data {
            Values::F32(data) => self.matmat_of(out, x, data),
            Values::Bf16(data) => self.matmat_of(out, x, data),
        }
    }

    fn matmat_of<W: Weight>(&self, out: &mut [f32], x: &[f32], data: &[W]) {
        if self.ic == 0 {
            out.fill(0.0);
            return;
        }
        let m = x.len() / self.ic;
        debug_assert_eq!((x.len(), out.len()), (m * self.ic, m * self.oc));
        for (j0, panel) in (0..self.oc)
            .step_by(PANEL)
            .zip(data.chunks(PANEL * self.ic))
        {
            panel_matmat(out, self.oc, j0, x, m, panel);
        }
    }
}

/// Columns j0..j0 + W of out (M, OC) = x (M, IC) @ panel (IC, W), W <= 64: four rows by
/// 16 columns of accumulators stay in registers (AVX2's 16 registers hold 8 of them), or
/// with AVX-512 (16 of its 32 registers) eight rows by half the panel, then four rows by
/// the whole panel, which reads the panel once, front to back. Each output is the same
/// chain over i in order every way, so the tile changes no result.
fn panel_matmat<W: Weight>(
    out: &mut [f32],
    oc: usize,
    j0: usize,
    x: &[f32],
    m: usize,
    panel: &[W],
) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512() {
        // SAFETY: the CPU has the features `panel_matmat_avx512` was compiled for.
        return unsafe { panel_matmat_avx512(out, oc, j0, x, m, panel) };
    }
    panel_matmat_avx2(out, oc, j0, x, m, panel)
}

simd_fn! {
    fn panel_matmat_avx2<W: Weight>(out: &mut [f32], oc: usize, j0: usize, x: &[f32], m: usize, panel: &[W]) {
        panel_matmat_tiles::<16, _>(out, oc, j0, x, m, panel);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn panel_matmat_avx512<W: Weight>(
    out: &mut [f32],
    oc: usize,
    j0: usize,
    x: &[f32],
    m: usize,
    panel: &[W],
) {
    panel_matmat_tiles::<64, _>(out, oc, j0, x, m, panel);
}

/// [`panel_matmat`] in tiles of four rows by CW columns, then of two, then the last row.
/// With CW = 64 (AVX-512), first in tiles of eight rows by 32 columns.
///
/// Every row a tile adds shares each weight loaded. Eight rows read half the bytes per
/// multiply-add that four read, which counts where the panel comes from L2 (a panel of a
/// lane's linear2 at config B is 64 KiB, more than L1): profile_panels' products at B's
/// shapes with M = 8 took 8-17% less time on an Intel Xeon. The two-row tile is there
/// because two or three rows one at a time read the weights once per row: in
/// profile_batch at config B, two sequences stepped together then ran at 1.2x the rate of
/// one stepped the same way, now 1.5x (docs/performance.md).
#[inline(always)]
fn panel_matmat_tiles<const CW: usize, W: Weight>(
    out: &mut [f32],
    oc: usize,
    j0: usize,
    x: &[f32],
    m: usize,
    panel: &[W],
) {
    let ic = x.len() / m;
    let w = panel.len() / ic;
    let mut r0 = 0;
    if CW == 64 {
        while r0 + 8 <= m {
            rows_tile::<8, 32, _>(out, oc, j0, &x[r0 * ic..][..8 * ic], r0, panel, w);
            r0 += 8;
        }
    }
    while r0 + 4 <= m {
        rows_tile::<4, CW, _>(out, oc, j0, &x[r0 * ic..][..4 * ic], r0, panel, w);
        r0 += 4;
    }
    if r0 + 2 <= m {
        rows_tile::<2, CW, _>(out, oc, j0, &x[r0 * ic..][..2 * ic], r0, panel, w);
        r0 += 2;
    }
    while r0 < m {
        rows_tile::<1, CW, _>(out, oc, j0, &x[r0 * ic..][..ic], r0, panel, w);
        r0 += 1;
    }
}

/// Rows r0..r0 + R of [`panel_matmat`]: CW columns at a time, then the last W % CW by
/// vector adds; every output the chain out = sum_i x[i] w[i] in order from zero.
#[inline(always)]
fn rows_tile<const R: usize, const CW: usize, W: Weight>(
    out: &mut [f32],
    oc: usize,
    j0: usize,
    x: &[f32],
    r0: usize,
    panel: &[W],
    w: usize,
) {
    let ic = x.len() / R;
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[r * ic..][..ic]);
    let full = w / CW * CW;
    for c0 in (0..full).step_by(CW) {
        let mut acc = [[0.0f32; CW]; R];
        for (i, row) in panel.chunks_exact(w).enumerate() {
            let wv: &[W; CW] = row[c0..c0 + CW].try_into().expect("CW columns");
            for (a, xr) in acc.iter_mut().zip(&xs) {
                let xi = xr[i];
                for (a, &wj) in a.iter_mut().zip(wv) {
                    *a = xi.mul_add(wj.to_f32(), *a);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            out[(r0 + r) * oc + j0 + c0..][..CW].copy_from_slice(a);
        }
    }
    if full < w {
        for (r, xr) in xs.iter().enumerate() {
            let o = &mut out[(r0 + r) * oc + j0 + full..][..w - full];
            o.fill(0.0);
            for (&xi, row) in xr.iter().zip(panel.chunks_exact(w)) {
                for (a, &wj) in o.iter_mut().zip(&row[full..]) {
                    *a = xi.mul_add(wj.to_f32(), *a);
                }
            }
        }
    }
}

simd_fn! {
    /// out (W) = x (IC) @ panel (IC, W), W <= 64: the accumulators stay in registers and
    /// the panel is read once, in order.
    fn panel_matvec<W: Weight>(out: &mut [f32], x: &[f32], panel: &[W]) {
        if let Ok(out) = <&mut [f32; PANEL]>::try_from(&mut *out) {
            let mut acc = [0.0f32; PANEL];
            for (&xi, row) in x.iter().zip(panel.chunks_exact(PANEL)) {
                let row: &[W; PANEL] = row.try_into().expect("a full panel row");
                for (a, &w) in acc.iter_mut().zip(row) {
                    *a = xi.mul_add(w.to_f32(), *a);
                }
            }
            *out = acc;
        } else {
            let w = out.len();
            out.fill(0.0);
            for (&xi, row) in x.iter().zip(panel.chunks_exact(w)) {
                axpy(out, xi, row);
            }
        }
    }
}

/// Models narrower than this run as one lane: their products are too short for a second
/// thread to pay for the hand-offs.
pub const TWO_LANES_MIN_D_MODEL: usize = 128;

/// What one lane computes: a run of key/value heads with the query heads that read them,
/// and a slice of the feed-forward width. Lane 0 takes the first half (rounded up) of the
/// key/value heads and of the width, lane 1 the rest (nothing, in a model narrower than
/// [`TWO_LANES_MIN_D_MODEL`]): a function of the configuration alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LaneShape {
    pub heads: Range<usize>,
    /// Columns of q (and rows of W_o): query heads * head size.
    pub dims: Range<usize>,
    /// Columns of k and v: key/value heads * head size.
    pub kv_dims: Range<usize>,
    /// Columns of linear1 and of the gate (and rows of linear2).
    pub ff: Range<usize>,
}

impl LaneShape {
    pub fn both(config: &Config) -> [LaneShape; 2] {
        let (h, kv, d, f) = (
            config.n_heads,
            config.kv_heads(),
            config.head_dim(),
            config.d_ff,
        );
        let group = h / kv;
        let (k0, f0) = if config.d_model >= TWO_LANES_MIN_D_MODEL {
            (kv.div_ceil(2), f.div_ceil(2))
        } else {
            (kv, f)
        };
        let h0 = k0 * group;
        [
            LaneShape {
                heads: 0..h0,
                dims: 0..h0 * d,
                kv_dims: 0..k0 * d,
                ff: 0..f0,
            },
            LaneShape {
                heads: h0..h,
                dims: h0 * d..h * d,
                kv_dims: k0 * d..kv * d,
                ff: f0..f,
            },
        ]
    }
}

/// One lane's weights of one block.
#[derive(Clone)]
pub struct LaneWeights {
    /// [W_q | W_k | W_v] for the lane's heads: (C, C_lane + 2 KD_lane).
    pub qkv: Panels,
    /// Their biases, side by side, if the model has them.
    pub qkv_bias: Option<Vec<f32>>,
    /// The rows of W_o for the lane's heads: (C_lane, C).
    pub proj: Panels,
    /// linear1's columns for the lane's slice: (C, F_lane), and their biases; with a gated
    /// activation [W_gate | linear1]'s: (C, 2 F_lane).
    pub ff1: Panels,
    pub ff1_bias: Option<Vec<f32>>,
    /// linear2's rows for the lane's slice: (F_lane, C).
    pub ff2: Panels,
}

/// Every block's weights per lane, packed for decoding, in the model's dtype. In float32
/// the output head is not repacked: it is stored `[V][C]`, so its rows are already
/// contiguous dot products; in bfloat16 it is a copy of those rows in bfloat16.
#[derive(Clone)]
pub struct PackedWeights {
    /// Per block, the two lanes' weights.
    pub blocks: Vec<[LaneWeights; 2]>,
    /// The output head (V, C) in bfloat16, for a bfloat16 model.
    head_bf16: Option<Vec<Bf16>>,
}

/// Rows of a matrix stored `[out][in]` (the output head), in float32 or in bfloat16.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F32(&'a [f32]),
    Bf16(&'a [Bf16]),
}

impl<'a> Rows<'a> {
    /// Rows `range` of rows of width c.
    pub fn rows(self, range: Range<usize>, c: usize) -> Rows<'a> {
        let values = range.start * c..range.end * c;
        match self {
            Rows::F32(rows) => Rows::F32(&rows[values]),
            Rows::Bf16(rows) => Rows::Bf16(&rows[values]),
        }
    }

    /// Bytes the rows take.
    pub fn bytes(&self) -> usize {
        match self {
            Rows::F32(rows) => std::mem::size_of_val(*rows),
            Rows::Bf16(rows) => std::mem::size_of_val(*rows),
        }
    }
}

impl PackedWeights {
    /// Bytes of the packed weights of a model with `params` parameters in `dtype` (at most).
    pub fn bytes(params: usize, dtype: Dtype) -> u128 {
        params as u128 * dtype.bytes() as u128
    }

    /// Bytes of the weight matrices a token's decode reads: every panel and the output
    /// head (the biases, norms and embedding rows are float32 and few).
    pub fn matrix_bytes(&self, model: &Model) -> usize {
        let lanes = self.blocks.iter().flatten();
        self.head(model).bytes()
            + lanes
                .map(|w| w.qkv.bytes() + w.proj.bytes() + w.ff1.bytes() + w.ff2.bytes())
                .sum::<usize>()
    }

    /// The output head's rows: the model's own, or their bfloat16 copy.
    pub fn head<'a>(&'a self, model: &'a Model) -> Rows<'a> {
        match &self.head_bf16 {
            Some(rows) => Rows::Bf16(rows),
            None => Rows::F32(model.layout.lm_head.of(model.params())),
        }
    }

    pub fn new(model: &Model) -> PackedWeights {
        let (c, f, kd) = (
            model.config.d_model,
            model.config.d_ff,
            model.config.kv_dim(),
        );
        let dtype = model.dtype();
        let prm = model.params();
        let lanes = LaneShape::both(&model.config);
        let blocks = model
            .layout
            .blocks
            .iter()
            .map(|blk| {
                let w2 = blk.w_down.of(prm);
                // The gate's columns (if gated) before linear1's, and their biases.
                let ff_in: Vec<_> = blk.w_gate.into_iter().chain([blk.w_up]).collect();
                let ff_bias: Vec<_> = blk.b_gate.into_iter().chain(blk.b_up).collect();
                let pack_lane = |lane: &LaneShape| {
                    let (dims, kv_dims) = (lane.dims.clone(), lane.kv_dims.clone());
                    let qkv_cols = [
                        (blk.w_q, c, dims.clone()),
                        (blk.w_k, kd, kv_dims.clone()),
                        (blk.w_v, kd, kv_dims.clone()),
                    ];
                    let qkv_bias = [(blk.b_q, &dims), (blk.b_k, &kv_dims), (blk.b_v, &kv_dims)];
                    let ff_cols: Vec<Columns> = ff_in
                        .iter()
                        .map(|w| Columns::range(w.of(prm), f, lane.ff.clone()))
                        .collect();
                    LaneWeights {
                        qkv: Panels::pack(
                            c,
                            &qkv_cols.map(|(w, cols, r)| Columns::range(w.of(prm), cols, r)),
                            dtype,
                        ),
                        qkv_bias: qkv_bias
                            .iter()
                            .map(|(bias, r)| bias.map(|b| b.of(prm)[(*r).clone()].to_vec()))
                            .collect::<Option<Vec<_>>>()
                            .map(|parts| parts.concat()),
                        proj: Panels::pack(
                            dims.len(),
                            &[Columns::all(&blk.w_o.of(prm)[dims.start * c..], c)],
                            dtype,
                        ),
                        ff1: Panels::pack(c, &ff_cols, dtype),
                        ff1_bias: (!ff_bias.is_empty()).then(|| {
                            ff_bias
                                .iter()
                                .flat_map(|b| b.of(prm)[lane.ff.clone()].iter().copied())
                                .collect()
                        }),
                        ff2: Panels::pack(
                            lane.ff.len(),
                            &[Columns::all(&w2[lane.ff.start * c..], c)],
                            dtype,
                        ),
                    }
                };
                [pack_lane(&lanes[0]), pack_lane(&lanes[1])]
            })
            .collect();
        let head_bf16 = (dtype == Dtype::Bf16).then(|| {
            let head = model.layout.lm_head.of(prm);
            head.iter().map(|&w| Bf16::round(w)).collect()
        });
        PackedWeights { blocks, head_bf16 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x @ W in float64, from W (IC, OC) row-major.
    fn reference(x: &[f32], w: &[f32], oc: usize) -> Vec<f64> {
        (0..oc)
            .map(|j| {
                x.iter()
                    .enumerate()
                    .map(|(i, &xi)| xi as f64 * w[i * oc + j] as f64)
                    .sum()
            })
            .collect()
    }

    #[test]
    fn panel_products_match_the_plain_product_at_any_width() {
        for &(ic, widths) in &[
            (5usize, &[3usize][..]),
            (16, &[64]),
            (33, &[100, 28]),
            (70, &[64, 64, 65]),
        ] {
            let mats: Vec<Vec<f32>> = widths
                .iter()
                .enumerate()
                .map(|(m, &w)| {
                    (0..ic * w)
                        .map(|i| ((i * 7 + m * 3) % 11) as f32 * 0.1 - 0.5)
                        .collect()
                })
                .collect();
            let blocks: Vec<Columns> = mats
                .iter()
                .zip(widths)
                .map(|(m, &w)| Columns::all(m, w))
                .collect();
            let packed = Panels::pack(ic, &blocks, Dtype::F32);
            let x: Vec<f32> = (0..ic).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
            let mut out = vec![f32::NAN; widths.iter().sum()];
            packed.matvec(&mut out, &x);
            let mut offset = 0;
            for (m, &w) in mats.iter().zip(widths) {
                for (got, want) in out[offset..offset + w].iter().zip(reference(&x, m, w)) {
                    assert!(
                        (*got as f64 - want).abs() < 1e-4,
                        "ic {ic}, widths {widths:?}"
                    );
                }
                offset += w;
            }
        }
    }

    /// Every tile width (16 columns for AVX2, 64 for AVX-512) and the row tail give each
    /// row of a product the bits of the matrix-vector product, at widths with and without
    /// a partial panel.
    #[test]
    fn matmat_rows_are_bit_identical_to_matvec_at_every_tile_width() {
        for &(ic, oc) in &[(7usize, 3usize), (33, 64), (70, 100), (48, 129)] {
            let w: Vec<f32> = (0..ic * oc)
                .map(|i| ((i * 13) % 17) as f32 * 0.07 - 0.55)
                .collect();
            let packed = Panels::pack(ic, &[Columns::all(&w, oc)], Dtype::F32);
            let Values::F32(data) = &packed.data else {
                unreachable!("packed in float32")
            };
            for m in [1usize, 2, 3, 4, 5, 6, 8, 9, 13, 16] {
                let x: Vec<f32> = (0..m * ic)
                    .map(|i| ((i * 5) % 11) as f32 * 0.19 - 0.9)
                    .collect();
                let mut want = vec![0.0f32; m * oc];
                for (o, xr) in want.chunks_exact_mut(oc).zip(x.chunks_exact(ic)) {
                    packed.matvec(o, xr);
                }
                let mut by_16 = vec![f32::NAN; m * oc];
                let mut by_64 = vec![f32::NAN; m * oc];
                for (j0, panel) in (0..oc).step_by(PANEL).zip(data.chunks(PANEL * ic)) {
                    panel_matmat_tiles::<16, _>(&mut by_16, oc, j0, &x, m, panel);
                    panel_matmat_tiles::<64, _>(&mut by_64, oc, j0, &x, m, panel);
                }
                let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&by_16),
                    bits(&want),
                    "ic {ic} oc {oc} m {m}, 16 columns"
                );
                assert_eq!(
                    bits(&by_64),
                    bits(&want),
                    "ic {ic} oc {oc} m {m}, 64 columns"
                );
                let mut dispatched = vec![f32::NAN; m * oc];
                packed.matmat(&mut dispatched, &x);
                assert_eq!(bits(&dispatched), bits(&want), "ic {ic} oc {oc} m {m}");
            }
        }
    }

    #[test]
    fn column_ranges_and_row_offsets_pick_the_right_values() {
        // A (4, 6) matrix; rows 1..3 of its columns 2..5.
        let m: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let packed = Panels::pack(2, &[Columns::range(&m[6..], 6, 2..5)], Dtype::F32);
        let mut out = vec![0.0; 3];
        packed.matvec(&mut out, &[1.0, 0.0]);
        assert_eq!(out, [8.0, 9.0, 10.0]);
        packed.matvec(&mut out, &[0.0, 1.0]);
        assert_eq!(out, [14.0, 15.0, 16.0]);
    }

    /// Panels in bfloat16 give the bits of panels in float32 of the same matrix rounded to
    /// bfloat16, for one row and for many, and a matrix already on the grid packs the same.
    #[test]
    fn bfloat16_panels_are_float32_panels_of_the_rounded_matrix() {
        use crate::kernels::bf16::round_to_bf16;
        for &(ic, oc) in &[(7usize, 3usize), (33, 64), (70, 100), (48, 129)] {
            let w: Vec<f32> = (0..ic * oc)
                .map(|i| ((i * 13) % 17) as f32 * 0.0731 - 0.557)
                .collect();
            let rounded: Vec<f32> = w.iter().map(|&x| round_to_bf16(x)).collect();
            assert_ne!(w, rounded, "the test matrix is off the bfloat16 grid");
            let half = Panels::pack(ic, &[Columns::all(&w, oc)], Dtype::Bf16);
            let full = Panels::pack(ic, &[Columns::all(&rounded, oc)], Dtype::F32);
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            for m in [1usize, 2, 3, 4, 5, 6, 8, 9, 13, 16] {
                let x: Vec<f32> = (0..m * ic)
                    .map(|i| ((i * 5) % 11) as f32 * 0.19 - 0.9)
                    .collect();
                let (mut got, mut want) = (vec![f32::NAN; m * oc], vec![f32::NAN; m * oc]);
                half.matmat(&mut got, &x);
                full.matmat(&mut want, &x);
                assert_eq!(bits(&got), bits(&want), "ic {ic} oc {oc} m {m}, matmat");
                half.matvec(&mut got[..oc], &x[..ic]);
                full.matvec(&mut want[..oc], &x[..ic]);
                assert_eq!(bits(&got), bits(&want), "ic {ic} oc {oc} m {m}, matvec");
            }
        }
    }
}
