//! Inverted dropout with masks that are a pure function of where they apply, so the
//! backward pass regenerates the forward's mask and both paths draw the same one.
//!
//! Element i of site s is kept when u >= p, with u = (h >> 40) / 2^24 and
//! h = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ step) ^ s) ^ i); a kept value is
//! scaled by 1 / (1 - p). Sites and their element index i:
//! - 0 the embedding sum, 1 + 2 l the attention output projection of layer l, 2 + 2 l the
//!   feed-forward output of layer l: i = r C + j for column j of token row r (N, C);
//! - 2^32 + l the attention probabilities P (after the softmax) of layer l:
//!   i = (r H + h) T + s for query head h, key position s and the query's token row r
//!   (row r = b T + t is position t of sequence b), so P[b, h, t, s] is element
//!   ((b T + t) H + h) T + s. These sites lie far above the others, which kept the numbers
//!   they had before the attention probabilities were dropped (and so their masks).
//!
//! Token rows r count from the whole batch's first row, so the masks do not depend on how
//! a batch is split into micro-batches or shards.

/// One training pass's dropout: the probability and the key of its masks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub seed: u64,
    pub step: u64,
    /// Index of this pass's first token row in the whole batch (micro-batches and shards
    /// of one step continue the count, so the mask does not depend on how a batch splits).
    pub first_row: u64,
}

/// The site of the embedding sum's dropout.
pub const SITE_EMBED: u64 = 0;

/// The site of layer l's attention output projection.
pub fn site_attn(layer: usize) -> u64 {
    1 + 2 * layer as u64
}

/// The site of layer l's feed-forward output.
pub fn site_mlp(layer: usize) -> u64 {
    2 + 2 * layer as u64
}

/// The site of layer l's attention probabilities.
pub fn site_attn_probs(layer: usize) -> u64 {
    (1 << 32) + layer as u64
}

/// SplitMix64's output function of x + the golden-ratio increment.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Dropout {
    /// The dropout of a training pass, or None when p is 0.
    pub fn new(p: f32, seed: u64, step: u64, first_row: u64) -> Option<Dropout> {
        (p > 0.0).then_some(Dropout {
            p,
            seed,
            step,
            first_row,
        })
    }

    /// The same key for a pass starting `rows` token rows further into the batch.
    pub fn shifted(self, rows: u64) -> Dropout {
        Dropout {
            first_row: self.first_row + rows,
            ..self
        }
    }

    /// Multiplies x (N, C) by the mask of `site` (0 or 1 / (1 - p)); the gradient through
    /// the dropout is the same multiplication of the output's gradient.
    pub fn apply(&self, x: &mut [f32], site: u64, c: usize) {
        let mask = Mask::new(self, site);
        let first = self.first_row.wrapping_mul(c as u64);
        for (i, v) in x.iter_mut().enumerate() {
            *v = mask.times(first.wrapping_add(i as u64), *v);
        }
    }

    /// The mask of layer `layer`'s attention probabilities, in passes of sequences of T
    /// positions with H query heads.
    pub fn attention(&self, layer: usize, t: usize, h: usize) -> AttentionDropout {
        AttentionDropout {
            mask: Mask::new(self, site_attn_probs(layer)),
            first_row: self.first_row,
            t,
            h,
        }
    }
}

/// The mask of one site: the key that the element index is hashed with.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Mask {
    key: u64,
    p: f64,
    scale: f32,
}

impl Mask {
    fn new(d: &Dropout, site: u64) -> Mask {
        Mask {
            key: splitmix64(splitmix64(splitmix64(d.seed) ^ d.step) ^ site),
            p: d.p as f64,
            scale: 1.0 / (1.0 - d.p),
        }
    }

    /// x times the mask at element i: 0, or x / (1 - p).
    fn times(&self, i: u64, x: f32) -> f32 {
        let h = splitmix64(self.key ^ i);
        let u = (h >> 40) as f64 / (1u64 << 24) as f64;
        if u >= self.p {
            x * self.scale
        } else {
            0.0
        }
    }
}

/// The dropout of one layer's attention probabilities P (B, H, T, T): P' = P * mask, the
/// mask being 0 or 1 / (1 - p) at element ((b T + t) H + h) T + s of the site 2^32 + l.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionDropout {
    mask: Mask,
    first_row: u64,
    t: usize,
    h: usize,
}

impl AttentionDropout {
    /// Multiplies the start of row t of P for sequence b and query head `head` (columns
    /// s = 0, 1, ..., row.len() - 1) by its mask.
    pub fn apply_row(&self, row: &mut [f32], b: usize, t: usize, head: usize) {
        let r = self.first_row + (b * self.t + t) as u64;
        let first = r
            .wrapping_mul(self.h as u64)
            .wrapping_add(head as u64)
            .wrapping_mul(self.t as u64);
        for (s, x) in row.iter_mut().enumerate() {
            *x = self.mask.times(first.wrapping_add(s as u64), *x);
        }
    }

    /// Writes that row's mask itself (0 or 1 / (1 - p)) to `row`.
    pub fn mask_row(&self, row: &mut [f32], b: usize, t: usize, head: usize) {
        row.fill(1.0);
        self.apply_row(row, b, t, head);
    }
}
