//! bfloat16: a float32 with the low 16 bits of its mantissa dropped (1 sign bit, 8
//! exponent bits, 7 mantissa bits), so the same range as float32 with about 3 decimal
//! digits. A bfloat16 is the top half of a float32, which makes widening it exact and
//! free: `f32::from_bits((b as u32) << 16)`.
//!
//! Generation reads every weight once per token, and at batch size one it waits on
//! memory, not on arithmetic; weights stored in bfloat16 are half the bytes. The
//! arithmetic stays float32: a product widens each weight as it loads it, so with
//! weights already rounded to bfloat16 it gives exactly the float32 product's bits.

use crate::error::{Error, Result};

/// A bfloat16 value: the top 16 bits of a float32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// `x` rounded to the nearest bfloat16, ties to even (as NumPy's `ml_dtypes`, PyTorch
    /// and the AVX-512 BF16 instructions round); infinities stay, NaN stays a (quiet) NaN,
    /// and a finite value beyond the largest bfloat16 rounds to infinity.
    pub fn round(x: f32) -> Bf16 {
        let bits = x.to_bits();
        if x.is_nan() {
            return Bf16((bits >> 16) as u16 | 0x0040);
        }
        // Adding 0x7fff rounds up exactly the values past the halfway point; adding the
        // lowest kept bit as well makes a tie round up only from an odd value (to even).
        let rounded = bits + 0x7fff + ((bits >> 16) & 1);
        Bf16((rounded >> 16) as u16)
    }

    #[inline(always)]
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

/// `x` rounded to bfloat16 and widened back: the float32 on the bfloat16 grid nearest x.
pub fn round_to_bf16(x: f32) -> f32 {
    Bf16::round(x).to_f32()
}

/// An error naming `what` if one of `values` is finite but beyond the largest bfloat16
/// (about 3.39e38), so that rounding it would make it infinite.
pub fn check_fits_bf16(what: &str, values: &[f32]) -> Result<()> {
    match values
        .iter()
        .position(|&x| x.is_finite() && round_to_bf16(x).is_infinite())
    {
        None => Ok(()),
        Some(i) => Err(Error::value(format!(
            "{what} holds {:e} (at flat index {i}), beyond the largest bfloat16 ({:e}): \
             it would round to infinity",
            values[i],
            Bf16(0x7f7f).to_f32()
        ))),
    }
}

/// How generation stores a model's weights: float32 (4 bytes each) or bfloat16 (2). A
/// model in bfloat16 has every parameter rounded to bfloat16 ([`crate::Model::set_dtype`]),
/// so its full forward pass and its generation compute with the same values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Dtype {
    #[default]
    F32,
    Bf16,
}

impl Dtype {
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::Bf16 => "bfloat16",
        }
    }

    /// "float32" or "bfloat16" (also "fp32", "f32", "bf16").
    pub fn from_name(name: &str) -> Result<Dtype> {
        match name {
            "float32" | "fp32" | "f32" => Ok(Dtype::F32),
            "bfloat16" | "bf16" => Ok(Dtype::Bf16),
            _ => Err(Error::value(format!(
                "dtype must be \"float32\" or \"bfloat16\" (or \"fp32\", \"f32\", \"bf16\"), \
                 got {name:?}"
            ))),
        }
    }

    /// Bytes of one stored weight.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::Bf16 => 2,
        }
    }
}

/// How a weight is stored in the products that read weights from memory: float32 or
/// bfloat16, each read as a float32 (`to_f32`) before its multiply-add.
pub trait Weight: Copy + Send + Sync + 'static {
    fn to_f32(self) -> f32;
}

impl Weight for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl Weight for Bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        Bf16::to_f32(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nearest bfloat16 by search: of the two grid values around x, the closer one,
    /// the one with an even last bit on a tie.
    fn nearest(x: f32) -> f32 {
        let down = f32::from_bits(x.to_bits() & 0xffff_0000);
        let up_bits = (x.to_bits() & 0xffff_0000) + 0x1_0000;
        let up = f32::from_bits(up_bits);
        let (dd, du) = ((x as f64 - down as f64).abs(), (up as f64 - x as f64).abs());
        if dd < du || (dd == du && (down.to_bits() >> 16) & 1 == 0) {
            down
        } else {
            up
        }
    }

    #[test]
    fn values_that_would_round_to_infinity_are_named() {
        let largest = Bf16(0x7f7f).to_f32();
        assert!(check_fits_bf16("w", &[1.0, largest, -largest, f32::INFINITY]).is_ok());
        // f32::MAX lies past the halfway point between the largest bfloat16 and 2^128.
        let err = check_fits_bf16("w", &[0.5, -f32::MAX])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("w holds") && err.contains("flat index 1"),
            "{err}"
        );
    }

    #[test]
    fn rounding_is_to_the_nearest_grid_value_ties_to_even() {
        let mut bits = 0x3f80_0000u32; // 1.0
        for _ in 0..100_000 {
            bits = bits.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let x = f32::from_bits(bits);
            if !x.is_finite() || nearest(x).is_infinite() {
                continue;
            }
            assert_eq!(
                round_to_bf16(x).to_bits(),
                nearest(x).to_bits(),
                "x = {x:e}"
            );
        }
        // Ties: 1 + 2^-8 is halfway between 1 and 1 + 2^-7, and goes to 1 (even);
        // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6, and goes up.
        assert_eq!(round_to_bf16(1.0 + 2f32.powi(-8)), 1.0);
        assert_eq!(
            round_to_bf16(1.0 + 3.0 * 2f32.powi(-8)),
            1.0 + 2f32.powi(-6)
        );
        assert_eq!(round_to_bf16(-2.5), -2.5);
    }

    #[test]
    fn special_values_keep_their_kind() {
        assert_eq!(round_to_bf16(f32::INFINITY), f32::INFINITY);
        assert_eq!(round_to_bf16(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(round_to_bf16(f32::NAN).is_nan());
        assert!(
            round_to_bf16(f32::from_bits(0x7f80_0001)).is_nan(),
            "a NaN's low bits"
        );
        assert_eq!(round_to_bf16(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_bf16(-0.0).to_bits(), (-0.0f32).to_bits());
        let tiny = f32::from_bits(1); // the smallest subnormal rounds to zero
        assert_eq!(round_to_bf16(tiny), 0.0);
    }
}
