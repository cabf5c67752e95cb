//! Matrix multiplication and the linear layer built on it.
//!
//! `out[i][j] (+)= sum_k a[i][k] * b[k][j]`. Matrices are strided views, so a transpose is a
//! swap of strides and never a copy: the backward pass multiplies by W^T and x^T this way.
//! The arithmetic runs in the `gemm` crate (cache blocking, AVX2/AVX-512 micro-kernels),
//! one single-threaded call per piece of a product (see [`matmul`]); how a product is cut
//! depends only on its shape, so results do not depend on the thread count.

use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
/// The fields are private: the constructors check that the view lies inside its slice,
/// which the unsafe gemm calls rely on.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// A mutable matrix view, laid out like [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

/// Index of the last element a strided view touches, plus one.
fn extent(rows: usize, cols: usize, row_stride: usize, col_stride: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * row_stride + (cols - 1) * col_stride + 1
    }
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows][cols]` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    pub fn strided(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            extent(rows, cols, row_stride, col_stride) <= data.len(),
            "matrix view {rows}x{cols} (strides {row_stride}, {col_stride}) exceeds its buffer of {}",
            data.len()
        );
        MatRef {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }

    /// Rows r0..r1, as a view of the same memory.
    pub fn rows(self, r0: usize, r1: usize) -> Self {
        MatRef::strided(
            &self.data[r0 * self.row_stride..],
            r1 - r0,
            self.cols,
            self.row_stride,
            self.col_stride,
        )
    }

    /// The transpose, as a view of the same memory.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Self {
        Self::strided(data, rows, cols, cols, 1)
    }

    pub fn strided(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        assert!(
            extent(rows, cols, row_stride, col_stride) <= data.len(),
            "matrix view {rows}x{cols} (strides {row_stride}, {col_stride}) exceeds its buffer of {}",
            data.len()
        );
        MatMut {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// Below this many multiply-adds a product runs whole on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;
/// A product is cut into at most this many pieces...
const MAX_PIECES: usize = 8;
/// ...of at least this many multiply-adds each.
const MIN_PIECE_WORK: usize = 1 << 15;

/// How a product runs: cut into pieces that run side by side on the thread pool (how it
/// is cut depends only on its shape), or whole on the calling thread, for products that
/// are already one of several parallel tasks (the shards of a training batch, see
/// [`crate::batch`]), where cutting only adds overhead. The two can differ in the last
/// bits, since gemm blocks the sum over K by the shape it is given.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pieces {
    #[default]
    ByShape,
    Whole,
}

/// out (+)= a @ b, where a is `[M][K]`, b is `[K][N]` and out is `[M][N]` (any strides).
/// With `accumulate` false, out is overwritten.
///
/// A big product is cut into pieces (halves of the longer side of `out`, again and
/// again) that run side by side on the thread pool, each as one single-threaded gemm call.
/// How a product is cut depends only on its shape, never on the number of threads, so
/// neither do its results.
pub fn matmul(out: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
    matmul_in(Pieces::ByShape, out, a, b, accumulate);
}

/// [`matmul`], run as `pieces` says.
pub fn matmul_in(pieces: Pieces, out: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
    let product = Product::new(out, a, b, accumulate);
    let work = product.m * product.k * product.n;
    let mut count = 1;
    if pieces == Pieces::ByShape && product.out_is_one_to_one() {
        while count < MAX_PIECES && work >= PARALLEL_WORK && work / (2 * count) >= MIN_PIECE_WORK {
            count *= 2;
        }
    }
    product.run_in_pieces(count);
}

/// One gemm call, as raw parts so that it can be cut into pieces that write disjoint
/// parts of the output from different threads.
#[derive(Clone, Copy)]
struct Product {
    m: usize,
    k: usize,
    n: usize,
    /// (pointer, row stride, column stride) of out, a and b.
    out: (*mut f32, usize, usize),
    a: (*const f32, usize, usize),
    b: (*const f32, usize, usize),
    accumulate: bool,
}

// SAFETY: a Product is only created from borrowed views (`Product::new`) and only split
// into pieces whose outputs are disjoint, all finished before the borrows end (rayon::join
// returns when both halves are done).
unsafe impl Send for Product {}

/// Where a side of `len` is cut in two: near the middle, on a multiple of 16 (whole
/// micro-kernel tiles); None when it is too short to cut.
fn cut(len: usize) -> Option<usize> {
    (len >= 32).then(|| (len / 2).next_multiple_of(16))
}

impl Product {
    fn new(out: MatMut, a: MatRef, b: MatRef, accumulate: bool) -> Product {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert_eq!(b.rows, k, "matmul: a is {m}x{k} but b has {} rows", b.rows);
        assert_eq!((out.rows, out.cols), (m, n), "matmul: out must be {m}x{n}");
        Product {
            m,
            k,
            n,
            out: (out.data.as_mut_ptr(), out.row_stride, out.col_stride),
            a: (a.data.as_ptr(), a.row_stride, a.col_stride),
            b: (b.data.as_ptr(), b.row_stride, b.col_stride),
            accumulate,
        }
    }

    /// Whether distinct elements of out are distinct floats (a layout like row-major or
    /// like column-major), so that the pieces of it are disjoint. Views that overlap
    /// themselves (a zero stride, say) run whole.
    fn out_is_one_to_one(&self) -> bool {
        let (m, n, rs, cs) = (self.m, self.n, self.out.1, self.out.2);
        (cs >= 1 && rs >= cs * n) || (rs >= 1 && cs >= rs * m)
    }

    /// The two halves of this product: rows of out (and a) when out is taller than wide,
    /// columns of out (and b) otherwise.
    fn halves(self) -> Option<(Product, Product)> {
        let (mut first, mut second) = (self, self);
        if self.m >= self.n {
            let c = cut(self.m)?;
            first.m = c;
            second.m = self.m - c;
            // SAFETY (of the pointer offsets): row c of out and of a lie inside their views.
            second.out.0 = self.out.0.wrapping_add(c * self.out.1);
            second.a.0 = self.a.0.wrapping_add(c * self.a.1);
        } else {
            let c = cut(self.n)?;
            first.n = c;
            second.n = self.n - c;
            second.out.0 = self.out.0.wrapping_add(c * self.out.2);
            second.b.0 = self.b.0.wrapping_add(c * self.b.2);
        }
        Some((first, second))
    }

    fn run_in_pieces(self, pieces: usize) {
        match self.halves().filter(|_| pieces > 1) {
            Some((first, second)) => {
                rayon::join(
                    move || first.run_in_pieces(pieces / 2),
                    move || second.run_in_pieces(pieces / 2),
                );
            }
            None => self.run(),
        }
    }

    /// The product on this thread.
    fn run(self) {
        let Product { m, k, n, .. } = self;
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            if !self.accumulate {
                for i in 0..m {
                    for j in 0..n {
                        // SAFETY: (i, j) lies inside the output view.
                        unsafe { *self.out.0.add(i * self.out.1 + j * self.out.2) = 0.0 };
                    }
                }
            }
            return;
        }
        // SAFETY: the views lie inside their slices (checked by their constructors), the
        // output is borrowed mutably (so it aliases neither input), the shapes agree
        // (asserted in `new`), and pieces of one product write disjoint parts of it.
        // gemm computes dst = alpha * dst + beta * (lhs @ rhs), with dst read only if
        // read_dst.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                self.out.0,
                self.out.2 as isize,
                self.out.1 as isize,
                self.accumulate,
                self.a.0,
                self.a.2 as isize,
                self.a.1 as isize,
                self.b.0,
                self.b.2 as isize,
                self.b.1 as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Linear layer: out = inp @ W + bias.
// inp is (N, IC), W is a view of shape (IC, OC), bias is (OC), out is (N, OC).
// W is a view so the same code serves [in][out] projections and the transposed
// [V][C] output head.
// ---------------------------------------------------------------------------------------

pub fn linear_forward(
    out: &mut [f32],
    inp: &[f32],
    weight: MatRef,
    bias: Option<&[f32]>,
    n: usize,
    pieces: Pieces,
) {
    let (ic, oc) = (weight.rows, weight.cols);
    matmul_in(
        pieces,
        MatMut::new(out, n, oc),
        MatRef::new(inp, n, ic),
        weight,
        false,
    );
    if let Some(bias) = bias {
        for row in out[..n * oc].chunks_exact_mut(oc) {
            for (o, b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
}

/// Backward of [`linear_forward`], accumulating into the gradients.
/// In the forward pass this was: out = inp @ W + bias; so
/// dinp += dout @ W^T, dW += inp^T @ dout, dbias += sum over rows of dout.
/// `dweight` is laid out like `weight` (a view of the same shape and strides).
#[allow(clippy::too_many_arguments)]
pub fn linear_backward(
    dinp: Option<&mut [f32]>,
    dweight: MatMut,
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    weight: MatRef,
    n: usize,
    pieces: Pieces,
) {
    let (ic, oc) = (weight.rows, weight.cols);
    let dout_m = MatRef::new(dout, n, oc);
    if let Some(dinp) = dinp {
        matmul_in(pieces, MatMut::new(dinp, n, ic), dout_m, weight.t(), true);
    }
    matmul_in(pieces, dweight, MatRef::new(inp, n, ic).t(), dout_m, true);
    if let Some(dbias) = dbias {
        sum_rows_into(dbias, dout, oc);
    }
}

/// `acc[j] += sum_i x[i][j]` for a row-major x with `cols` columns.
/// Rows are added in order, so the result never depends on the thread count.
pub fn sum_rows_into(acc: &mut [f32], x: &[f32], cols: usize) {
    for row in x.chunks_exact(cols) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}
