//! Register-tiled products for attention's small matrices.
//!
//! `out[i][j] (+)= sum_p a[i][p] * b[p][j]`, with a any strided (M, K) view and b an (K, N)
//! matrix whose rows are contiguous. Attention multiplies matrices of a head's width
//! (D = 64 at most reference sizes) a few hundred at a time, too small for the `gemm`
//! crate to win back what it spends packing both operands on every call (measured: 30 to
//! 35 GFLOP/s per core at these shapes, a third of its rate on the model's large products).
//!
//! Here nothing is packed: both operands are read in place. Out is computed in tiles of
//! [`TILE_ROWS`] rows, [`STRIP`] columns at a time, the sums kept in registers: with AVX2
//! that is 4 rows x 2 vectors = 8 registers, beside the two vectors of a row of b and one
//! broadcast element of a. (Wider strips of 3 vectors measured slower: the compiler spilled
//! a sum to the stack; 6 rows measured no faster.) With AVX-512 the same 8 registers hold
//! strips twice as wide (4 x 32 columns: causal attention at D, forward and backward,
//! 86 -> about 100 GFLOP/s over 2 threads; 4 x 64 and 8 x 32 measured slower). Sums run
//! over p in order, so results never depend on anything but the inputs, nor on the strip
//! width.
//!
//! Attention's causal mask leaves half of each score matrix zero; [`Causal`] says which
//! part of a product is needed, and whole tiles beyond it are skipped.

use std::ops::Range;

use super::simd::simd_fn;

/// Rows of out per tile.
pub const TILE_ROWS: usize = 4;
/// Columns of out per register strip (two AVX2 vectors).
pub const STRIP: usize = 16;

/// Which part of a product is needed, for a row i of out (entries outside it may be
/// computed anyway, up to the end of a register strip, or left as they were).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causal {
    /// All of it.
    Full,
    /// Only the columns j <= i + offset (scores of query row i + offset against keys).
    ColsThrough(usize),
    /// Only the terms p <= i + offset (probabilities of query row i + offset times keys'
    /// rows): later terms are zero.
    TermsThrough(usize),
    /// Only the terms p >= i - offset (key row i against the queries p + offset that see
    /// it): earlier terms are zero.
    TermsFrom(usize),
}

/// A read-only strided operand: element (i, p) is `data[i * row_stride + p * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> Operand<'a> {
    /// The same operand from row r on.
    pub fn rows_from(self, r: usize) -> Self {
        Operand {
            data: &self.data[r * self.row_stride..],
            ..self
        }
    }
}

/// out (M, N) with row stride `ldo` (+)= a (M, K) times b (K, N) with row stride `ldb`.
/// Panics if a view does not fit its slice (a programming error, checked before any work).
#[allow(clippy::too_many_arguments)]
pub fn tiled_matmul(
    out: &mut [f32],
    ldo: usize,
    a: Operand,
    b: &[f32],
    ldb: usize,
    (m, k, n): (usize, usize, usize),
    causal: Causal,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs + (cols - 1) * cs + 1
        }
    };
    assert!(
        last(m, n, ldo, 1) <= out.len(),
        "tiled_matmul: out too small"
    );
    assert!(
        last(m, k, a.row_stride, a.col_stride) <= a.data.len(),
        "tiled_matmul: a too small"
    );
    assert!(last(k, n, ldb, 1) <= b.len(), "tiled_matmul: b too small");
    for i0 in (0..m).step_by(TILE_ROWS) {
        let rows = TILE_ROWS.min(m - i0);
        let (terms, cols) = tile_extent(causal, i0, rows, k, n);
        // Where each row of the tile starts in a (rows past the end repeat the last one:
        // their sums are computed but never stored).
        let a_starts: [usize; TILE_ROWS] = std::array::from_fn(|r| {
            (i0 + r.min(rows - 1)) * a.row_stride + terms.start * a.col_stride
        });
        let tile = Tile {
            a_starts,
            a_col_stride: a.col_stride,
            terms: terms.len(),
            rows,
            cols,
        };
        // (With no terms left, b's rows are not read at all, and may end before the start.)
        let b_from = b.get(terms.start * ldb..).unwrap_or(&[]);
        run_tile(
            &mut out[i0 * ldo..],
            ldo,
            a.data,
            b_from,
            ldb,
            tile,
            accumulate,
        );
    }
}

/// One tile of rows of out, as `run_tile` needs it.
#[derive(Clone, Copy)]
struct Tile {
    /// Index in a of element (row, first term) for each row of the tile.
    a_starts: [usize; TILE_ROWS],
    a_col_stride: usize,
    /// How many terms (rows of b, from the one given) the sums run over.
    terms: usize,
    /// Rows of out to store (at most TILE_ROWS) and columns to compute.
    rows: usize,
    cols: usize,
}

/// The terms p and the columns of out that the tile of rows i0..i0+rows needs.
fn tile_extent(
    causal: Causal,
    i0: usize,
    rows: usize,
    k: usize,
    n: usize,
) -> (Range<usize>, usize) {
    let last_row = i0 + rows - 1;
    match causal {
        Causal::Full => (0..k, n),
        // Rounded up to whole strips: the extra columns cost less than a narrow strip.
        Causal::ColsThrough(offset) => {
            (0..k, n.min((last_row + offset + 1).next_multiple_of(STRIP)))
        }
        Causal::TermsThrough(offset) => (0..k.min(last_row + offset + 1), n),
        Causal::TermsFrom(offset) => (k.min(i0.saturating_sub(offset))..k, n),
    }
}

/// One tile of rows: out's first `tile.rows` rows, columns 0..tile.cols, from a's rows
/// and b's first `tile.terms` rows.
fn run_tile(
    out: &mut [f32],
    ldo: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    tile: Tile,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx512() {
        // SAFETY: the CPU has the features `run_tile_avx512` was compiled for.
        return unsafe { run_tile_avx512(out, ldo, a, b, ldb, tile, accumulate) };
    }
    run_tile_avx2(out, ldo, a, b, ldb, tile, accumulate)
}

simd_fn! {
    fn run_tile_avx2(
        out: &mut [f32],
        ldo: usize,
        a: &[f32],
        b: &[f32],
        ldb: usize,
        tile: Tile,
        accumulate: bool,
    ) {
        tile_strips::<STRIP>(out, ldo, a, b, ldb, tile, accumulate);
    }
}

/// With AVX-512 a strip is two of its 16-float vectors, so the same 8 registers of sums
/// cover twice the columns (and each broadcast element of a feeds twice the work).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn run_tile_avx512(
    out: &mut [f32],
    ldo: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    tile: Tile,
    accumulate: bool,
) {
    tile_strips::<{ 2 * STRIP }>(out, ldo, a, b, ldb, tile, accumulate);
}

/// [`run_tile`] in strips of WIDE columns, then 16, 8 and 1 for the rest. Each output is
/// the same chain of multiply-adds whatever strip computes it.
#[inline(always)]
fn tile_strips<const WIDE: usize>(
    out: &mut [f32],
    ldo: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    tile: Tile,
    accumulate: bool,
) {
    let mut j0 = 0;
    while j0 + WIDE <= tile.cols {
        strip::<WIDE>(out, ldo, a, b, ldb, tile, j0, accumulate);
        j0 += WIDE;
    }
    while j0 + STRIP <= tile.cols {
        strip::<STRIP>(out, ldo, a, b, ldb, tile, j0, accumulate);
        j0 += STRIP;
    }
    while j0 + 8 <= tile.cols {
        strip::<8>(out, ldo, a, b, ldb, tile, j0, accumulate);
        j0 += 8;
    }
    while j0 < tile.cols {
        strip::<1>(out, ldo, a, b, ldb, tile, j0, accumulate);
        j0 += 1;
    }
}

/// Columns j0..j0+W of the tile: the sums stay in a (TILE_ROWS, W) array that the
/// compiler keeps in registers.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn strip<const W: usize>(
    out: &mut [f32],
    ldo: usize,
    a: &[f32],
    b: &[f32],
    ldb: usize,
    tile: Tile,
    j0: usize,
    accumulate: bool,
) {
    let mut acc = [[0.0f32; W]; TILE_ROWS];
    if accumulate {
        for (r, acc_row) in acc.iter_mut().enumerate().take(tile.rows) {
            acc_row.copy_from_slice(&out[r * ldo + j0..][..W]);
        }
    }
    if tile.terms > 0 {
        // Every index read below is at most these, so the loop needs no bounds checks.
        let a_last = (tile.terms - 1) * tile.a_col_stride;
        assert!(tile.a_starts.iter().all(|&s| s + a_last < a.len()));
        assert!((tile.terms - 1) * ldb + j0 + W <= b.len());
    }
    for p in 0..tile.terms {
        // SAFETY: p < terms, so b's row p, columns j0..j0+W, is inside b (asserted above).
        let b_row: &[f32; W] = unsafe { &*(b.as_ptr().add(p * ldb + j0) as *const [f32; W]) };
        for (acc_row, &start) in acc.iter_mut().zip(&tile.a_starts) {
            // SAFETY: start + p * a_col_stride <= start + a_last < a.len() (asserted above).
            let x = unsafe { *a.get_unchecked(start + p * tile.a_col_stride) };
            for (s, &y) in acc_row.iter_mut().zip(b_row) {
                *s = x.mul_add(y, *s);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(tile.rows) {
        out[r * ldo + j0..][..W].copy_from_slice(acc_row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain triple loop, in float64.
    fn reference(a: &[f32], b: &[f32], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut out = vec![0.0f64; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    out[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn matches_the_triple_loop_at_awkward_shapes() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (4, 64, 24),
            (7, 13, 37),
            (64, 64, 128),
            (9, 600, 50),
            (30, 5, 9),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 19) as f32 - 9.0) / 8.0)
                .collect();
            for causal in [Causal::Full, Causal::TermsThrough(2), Causal::TermsFrom(3)] {
                // The caller promises that the terms left out are zero: so they are here.
                let mut a = a.clone();
                for (idx, x) in a.iter_mut().enumerate() {
                    let (i, p) = (idx / k, idx % k);
                    let zero = match causal {
                        Causal::TermsThrough(o) => p > i + o,
                        Causal::TermsFrom(o) => p + o < i,
                        _ => false,
                    };
                    if zero {
                        *x = 0.0;
                    }
                }
                let want = reference(&a, &b, (m, k, n));
                for accumulate in [false, true] {
                    let mut out = vec![1.0f32; m * n];
                    let a_op = Operand {
                        data: &a,
                        row_stride: k,
                        col_stride: 1,
                    };
                    tiled_matmul(&mut out, n, a_op, &b, n, (m, k, n), causal, accumulate);
                    for (got, want) in out.iter().zip(&want) {
                        let want = want + if accumulate { 1.0 } else { 0.0 };
                        assert!(
                            (*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                            "{m}x{k}x{n} {causal:?}"
                        );
                    }
                }
            }
            // Only the needed columns are promised.
            let want = reference(&a, &b, (m, k, n));
            let mut out = vec![0.0f32; m * n];
            let a_op = Operand {
                data: &a,
                row_stride: k,
                col_stride: 1,
            };
            tiled_matmul(
                &mut out,
                n,
                a_op,
                &b,
                n,
                (m, k, n),
                Causal::ColsThrough(1),
                false,
            );
            for i in 0..m {
                for j in 0..n.min(i + 2) {
                    assert!(
                        (out[i * n + j] as f64 - want[i * n + j]).abs()
                            < 1e-4 * (1.0 + want[i * n + j].abs())
                    );
                }
            }
        }
    }

    /// Every output is one chain of f32 multiply-adds over p in order, whichever strip
    /// (AVX2's 16 columns, AVX-512's 32, or the narrow ones at the edge) computes it.
    #[test]
    fn each_output_is_the_in_order_chain_bit_for_bit() {
        for &(m, k, n) in &[(5, 64, 64), (9, 33, 70), (4, 128, 47), (13, 7, 100)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 19) as f32 - 9.0) / 7.0)
                .collect();
            for accumulate in [false, true] {
                let mut out: Vec<f32> = (0..m * n).map(|i| (i % 3) as f32 * 0.25).collect();
                let mut want = out.clone();
                for i in 0..m {
                    for j in 0..n {
                        let mut s = if accumulate { want[i * n + j] } else { 0.0 };
                        for p in 0..k {
                            s = a[i * k + p].mul_add(b[p * n + j], s);
                        }
                        want[i * n + j] = s;
                    }
                }
                let a_op = Operand {
                    data: &a,
                    row_stride: k,
                    col_stride: 1,
                };
                tiled_matmul(
                    &mut out,
                    n,
                    a_op,
                    &b,
                    n,
                    (m, k, n),
                    Causal::Full,
                    accumulate,
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&out),
                    bits(&want),
                    "{m}x{k}x{n}, accumulate {accumulate}"
                );
            }
        }
    }

    #[test]
    fn reads_a_transposed_view() {
        let (m, k, n) = (10, 6, 30);
        let a_t: Vec<f32> = (0..k * m).map(|i| (i % 7) as f32 - 3.0).collect(); // (K, M)
        let a: Vec<f32> = (0..m * k).map(|idx| a_t[(idx % k) * m + idx / k]).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 - 2.0).collect();
        let want = reference(&a, &b, (m, k, n));
        let mut out = vec![0.0f32; m * n];
        let a_op = Operand {
            data: &a_t,
            row_stride: 1,
            col_stride: m,
        };
        tiled_matmul(&mut out, n, a_op, &b, n, (m, k, n), Causal::Full, false);
        for (got, want) in out.iter().zip(&want) {
            assert_eq!(*got as f64, *want);
        }
    }
}
