//! Linear layer: out = inp @ W + b, with W stored `[in][out]`; and the output head,
//! logits = inp @ W^T, whose W (V, C) is stored one row per output (it may be the token
//! embedding itself).

/// inp is (N, I), w is (I, O), bias (O), out will be (N, O).
pub fn linear_forward(out: &mut [f32], inp: &[f32], w: &[f32], bias: Option<&[f32]>, i: usize) {
    let o = w.len() / i;
    for (out_row, x) in out.chunks_exact_mut(o).zip(inp.chunks_exact(i)) {
        match bias {
            Some(b) => out_row.copy_from_slice(b),
            None => out_row.fill(0.0),
        }
        for (&xk, w_row) in x.iter().zip(w.chunks_exact(o)) {
            for (y, &wv) in out_row.iter_mut().zip(w_row) {
                *y += xk * wv;
            }
        }
    }
}

/// In the forward pass this was: `out[n][o] = b[o] + sum_k inp[n][k] w[k][o]`; so
/// `dinp[n][k] += sum_o dout[n][o] w[k][o]`, `dw[k][o] += sum_n inp[n][k] dout[n][o]`,
/// `db[o] += sum_n dout[n][o]`.
pub fn linear_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dbias: Option<&mut [f32]>,
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    i: usize,
) {
    let o = w.len() / i;
    for ((dx, x), dy) in dinp
        .chunks_exact_mut(i)
        .zip(inp.chunks_exact(i))
        .zip(dout.chunks_exact(o))
    {
        for (k, (w_row, dw_row)) in w.chunks_exact(o).zip(dw.chunks_exact_mut(o)).enumerate() {
            for ((&wv, g), &d) in w_row.iter().zip(dw_row.iter_mut()).zip(dy) {
                dx[k] += d * wv;
                *g += x[k] * d;
            }
        }
    }
    if let Some(db) = dbias {
        for dy in dout.chunks_exact(o) {
            for (g, &d) in db.iter_mut().zip(dy) {
                *g += d;
            }
        }
    }
}

/// inp is (N, C), w is (V, C), out will be (N, V): `out[n][v] = sum_c inp[n][c] w[v][c]`.
pub fn head_forward(out: &mut [f32], inp: &[f32], w: &[f32], c: usize) {
    let v = w.len() / c;
    for (out_row, x) in out.chunks_exact_mut(v).zip(inp.chunks_exact(c)) {
        for (y, w_row) in out_row.iter_mut().zip(w.chunks_exact(c)) {
            *y = x.iter().zip(w_row).map(|(a, b)| a * b).sum();
        }
    }
}

/// In the forward pass this was: `out[n][v] = sum_c inp[n][c] w[v][c]`; so
/// `dinp[n][c] += sum_v dout[n][v] w[v][c]` and `dw[v][c] += sum_n dout[n][v] inp[n][c]`.
pub fn head_backward(
    dinp: &mut [f32],
    dw: &mut [f32],
    dout: &[f32],
    inp: &[f32],
    w: &[f32],
    c: usize,
) {
    let v = w.len() / c;
    for ((dx, x), dy) in dinp
        .chunks_exact_mut(c)
        .zip(inp.chunks_exact(c))
        .zip(dout.chunks_exact(v))
    {
        for ((&d, w_row), dw_row) in dy.iter().zip(w.chunks_exact(c)).zip(dw.chunks_exact_mut(c)) {
            for (((g_in, &wv), g_w), &xv) in dx.iter_mut().zip(w_row).zip(dw_row).zip(x) {
                *g_in += d * wv;
                *g_w += d * xv;
            }
        }
    }
}
