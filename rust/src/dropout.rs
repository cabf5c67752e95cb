//! Inverted dropout with masks that are a pure function of where they apply, so the
//! backward pass regenerates the forward's mask and both paths draw the same one.
//!
//! Element i (flat index into the (N, C) tensor, counted from the batch's first row) of
//! site s is kept when u >= p, with u = (h >> 40) / 2^24 and
//! h = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ step) ^ s) ^ i); a kept value is
//! scaled by 1 / (1 - p). Sites: 0 the embedding sum, 1 + 2 l the attention output
//! projection of layer l, 2 + 2 l the feed-forward output of layer l.

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
        let key = splitmix64(splitmix64(splitmix64(self.seed) ^ self.step) ^ site);
        let first = self.first_row.wrapping_mul(c as u64);
        let scale = 1.0 / (1.0 - self.p);
        let p = self.p as f64;
        for (i, v) in x.iter_mut().enumerate() {
            let h = splitmix64(key ^ first.wrapping_add(i as u64));
            let u = (h >> 40) as f64 / (1u64 << 24) as f64;
            *v = if u >= p { *v * scale } else { 0.0 };
        }
    }
}
