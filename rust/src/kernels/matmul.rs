//! Matrix multiplication and the linear layer built on it.
//!
//! out[i][j] (+)= sum_k a[i][k] * b[k][j]. Matrices are strided views, so a transpose is a
//! swap of strides and never a copy: the backward pass multiplies by W^T and x^T this way.
//! The arithmetic runs in the `gemm` crate (cache blocking, AVX2/AVX-512 microkernels,
//! rayon threads over output tiles). Each output element sums over k in the same order
//! whatever the number of threads, so results do not depend on the thread count.

use gemm::Parallelism;

/// A read-only matrix view: element (i, j) is `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// A mutable matrix view, laid out like [`MatRef`].
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
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
    /// A row-major [rows][cols] matrix.
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

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_WORK: usize = 1 << 15;

/// out (+)= a @ b, where a is [M][K], b is [K][N] and out is [M][N] (any strides).
/// With `accumulate` false, out is overwritten.
pub fn matmul(out: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
    let work = a.rows * a.cols * b.cols;
    let parallelism = if work >= PARALLEL_WORK && rayon::current_num_threads() > 1 {
        Parallelism::Rayon(0)
    } else {
        Parallelism::None
    };
    matmul_on(out, a, b, accumulate, parallelism)
}

/// [`matmul`] on the calling thread only: for products inside an already parallel loop.
pub fn matmul_serial(out: MatMut, a: MatRef, b: MatRef, accumulate: bool) {
    matmul_on(out, a, b, accumulate, Parallelism::None)
}

fn matmul_on(out: MatMut, a: MatRef, b: MatRef, accumulate: bool, parallelism: Parallelism) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: a is {m}x{k} but b has {} rows", b.rows);
    assert_eq!((out.rows, out.cols), (m, n), "matmul: out must be {m}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    out.data[i * out.row_stride + j * out.col_stride] = 0.0;
                }
            }
        }
        return;
    }
    // SAFETY: the constructors checked that each view lies inside its slice, `out` is
    // borrowed mutably (so it aliases neither input), and the shapes agree (asserted above).
    // gemm computes dst = alpha * dst + beta * (lhs @ rhs), with dst read only if read_dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.data.as_mut_ptr(),
            out.col_stride as isize,
            out.row_stride as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
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
) {
    let (ic, oc) = (weight.rows, weight.cols);
    matmul(
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
) {
    let (ic, oc) = (weight.rows, weight.cols);
    let dout_m = MatRef::new(dout, n, oc);
    if let Some(dinp) = dinp {
        matmul(MatMut::new(dinp, n, ic), dout_m, weight.t(), true);
    }
    matmul(dweight, MatRef::new(inp, n, ic).t(), dout_m, true);
    if let Some(dbias) = dbias {
        sum_rows_into(dbias, dout, oc);
    }
}

/// acc[j] += sum_i x[i][j] for a row-major x with `cols` columns.
/// Rows are added in order, so the result never depends on the thread count.
pub fn sum_rows_into(acc: &mut [f32], x: &[f32], cols: usize) {
    for row in x.chunks_exact(cols) {
        for (a, v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}
