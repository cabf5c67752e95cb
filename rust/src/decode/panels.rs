//! Weight matrices repacked for matrix-vector products, and the product itself.
//!
//! A matrix W (IC, OC) stored [in][out] is cut into panels of 64 columns (the last one
//! may be narrower); each panel (IC, 64) is stored row-major and contiguous. Then
//! out = x @ W reads every panel front to back, one sequential stream, while the 64
//! outputs of the panel stay in registers:
//!
//! ```text
//! out[j] = sum_i x[i] W[i][j], one chain of fused multiply-adds over i in order.
//! ```
//!
//! Each output is computed whole by one thread, so splitting the panels between threads
//! does not change a single bit of the result.

use std::fmt;
use std::sync::OnceLock;

use super::team::{both, Team};
use crate::kernels::simd::simd_fn;
use crate::kernels::vecmath::axpy;
use crate::model::Model;

/// Columns per panel: 8 AVX registers of accumulators.
pub const PANEL: usize = 64;
/// Products with fewer multiply-adds than this run whole on the calling thread.
const SPLIT_WORK: usize = 16 * 1024;

/// A matrix (IC, OC) in panels of [`PANEL`] columns.
#[derive(Clone)]
pub struct Panels {
    data: Vec<f32>,
    ic: usize,
    oc: usize,
}

impl Panels {
    /// Packs the matrix whose columns are those of `blocks` side by side: each block is a
    /// row-major (IC, width) matrix given as (values, width). [W_q | W_k | W_v] is one.
    pub fn pack(ic: usize, blocks: &[(&[f32], usize)]) -> Panels {
        let oc: usize = blocks.iter().map(|&(_, w)| w).sum();
        let mut data = vec![0.0f32; ic * oc];
        let mut row = Vec::with_capacity(oc);
        for i in 0..ic {
            row.clear();
            for &(m, w) in blocks {
                row.extend_from_slice(&m[i * w..(i + 1) * w]);
            }
            // Panels before column j0 hold ic * j0 values.
            for j0 in (0..oc).step_by(PANEL) {
                let w = PANEL.min(oc - j0);
                data[j0 * ic + i * w..][..w].copy_from_slice(&row[j0..j0 + w]);
            }
        }
        Panels { data, ic, oc }
    }

    pub fn out_len(&self) -> usize {
        self.oc
    }

    fn count(&self) -> usize {
        self.oc.div_ceil(PANEL)
    }

    /// out = columns p0 * 64.. of x @ W, for panels p0..p0 + out.len() / 64 (rounded up).
    fn matvec_from(&self, out: &mut [f32], x: &[f32], p0: usize) {
        let data = &self.data[p0 * PANEL * self.ic..];
        for (out, panel) in out.chunks_mut(PANEL).zip(data.chunks(PANEL * self.ic)) {
            panel_matvec(out, x, panel);
        }
    }

    /// out (OC) = x (IC) @ W, the panels split between the team's two threads.
    pub fn matvec(&self, team: Option<&Team>, out: &mut [f32], x: &[f32]) {
        debug_assert_eq!((x.len(), out.len()), (self.ic, self.oc));
        let count = self.count();
        if count < 2 || self.ic * self.oc < SPLIT_WORK {
            self.matvec_from(out, x, 0);
            return;
        }
        let cut = count.div_ceil(2);
        let (first, second) = out.split_at_mut(cut * PANEL);
        both(
            team,
            || self.matvec_from(second, x, cut),
            || self.matvec_from(first, x, 0),
        );
    }
}

simd_fn! {
    /// out (W) = x (IC) @ panel (IC, W), W <= 64: the accumulators stay in registers and
    /// the panel is read once, in order.
    fn panel_matvec(out: &mut [f32], x: &[f32], panel: &[f32]) {
        if let Ok(out) = <&mut [f32; PANEL]>::try_from(&mut *out) {
            let mut acc = [0.0f32; PANEL];
            for (&xi, row) in x.iter().zip(panel.chunks_exact(PANEL)) {
                let row: &[f32; PANEL] = row.try_into().expect("a full panel row");
                for (a, &w) in acc.iter_mut().zip(row) {
                    *a = xi.mul_add(w, *a);
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

/// One block's matrices, packed.
#[derive(Clone)]
pub struct PackedBlock {
    /// [W_q | W_k | W_v]: (C, 3C).
    pub qkv: Panels,
    /// W_o: (C, C).
    pub proj: Panels,
    /// linear1: (C, F).
    pub ff1: Panels,
    /// linear2: (F, C).
    pub ff2: Panels,
}

/// Every block's matrices, packed for decoding. The output head is not repacked: it is
/// stored [V][C], so its rows are already contiguous dot products.
#[derive(Clone)]
pub struct PackedWeights {
    pub blocks: Vec<PackedBlock>,
}

impl PackedWeights {
    pub fn new(model: &Model) -> PackedWeights {
        let (c, f) = (model.config.d_model, model.config.d_ff);
        let prm = model.params();
        let blocks = model
            .layout
            .blocks
            .iter()
            .map(|blk| {
                let w = |i: usize| &prm[blk.attn_weight[i]..][..c * c];
                PackedBlock {
                    qkv: Panels::pack(c, &[(w(0), c), (w(1), c), (w(2), c)]),
                    proj: Panels::pack(c, &[(w(3), c)]),
                    ff1: Panels::pack(c, &[(&prm[blk.ff1_weight..][..c * f], f)]),
                    ff2: Panels::pack(f, &[(&prm[blk.ff2_weight..][..f * c], c)]),
                }
            })
            .collect();
        PackedWeights { blocks }
    }
}

/// A model's [`PackedWeights`], built on first use and dropped whenever the parameters
/// change (see [`Model::params_mut`]). Cloning a model does not clone it.
#[derive(Default)]
pub struct DecodeCache(OnceLock<PackedWeights>);

impl DecodeCache {
    pub fn get_or_build(&self, model: &Model) -> &PackedWeights {
        self.0.get_or_init(|| PackedWeights::new(model))
    }
}

impl Clone for DecodeCache {
    fn clone(&self) -> Self {
        DecodeCache::default()
    }
}

impl fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.0.get().is_some() {
            "built"
        } else {
            "empty"
        };
        write!(f, "DecodeCache({state})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::team::with_team;

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
            let blocks: Vec<(&[f32], usize)> = mats
                .iter()
                .map(|m| m.as_slice())
                .zip(widths.iter().copied())
                .collect();
            let packed = Panels::pack(ic, &blocks);
            let x: Vec<f32> = (0..ic).map(|i| (i % 5) as f32 * 0.3 - 0.6).collect();
            let mut out = vec![f32::NAN; packed.out_len()];
            packed.matvec(None, &mut out, &x);
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

    #[test]
    fn a_helper_thread_changes_no_bit_of_a_product() {
        let (ic, oc) = (96, 3 * 160);
        let w: Vec<f32> = (0..ic * oc)
            .map(|i| ((i * 13) % 17) as f32 * 0.01 - 0.08)
            .collect();
        let packed = Panels::pack(ic, &[(&w, oc)]);
        let x: Vec<f32> = (0..ic).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut alone = vec![0.0f32; oc];
        packed.matvec(None, &mut alone, &x);
        let mut shared = vec![0.0f32; oc];
        with_team(|team| packed.matvec(team, &mut shared, &x));
        assert_eq!(
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            shared.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
