//! Token plus position embedding: `out[b][t] = wte[ids[b][t]] + wpe[t]`, or `wte[ids[b][t]]`
//! alone when the model has no position table (rotary positions act inside attention).

/// ids is (B, T), wte is (V, C), wpe is (P, C) with P >= T (or None), out will be (B, T, C).
/// Ids must already be checked against V.
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    wte: &[f32],
    wpe: Option<&[f32]>,
    t: usize,
    c: usize,
) {
    for (i, (row, &id)) in out.chunks_exact_mut(c).zip(ids).enumerate() {
        let tok = &wte[id as usize * c..][..c];
        row.copy_from_slice(tok);
        if let Some(wpe) = wpe {
            for (o, b) in row.iter_mut().zip(&wpe[(i % t) * c..][..c]) {
                *o += b;
            }
        }
    }
}

/// In the forward pass this was: `out[b][t] = wte[id] + wpe[t]`; so the gradient of each
/// output row flows unchanged into the token's row of dwte and the position's row of dwpe.
/// Rows are visited in order, so repeated tokens sum in a fixed order.
pub fn embedding_backward(
    dwte: &mut [f32],
    mut dwpe: Option<&mut [f32]>,
    dout: &[f32],
    ids: &[u32],
    t: usize,
    c: usize,
) {
    for (i, (drow, &id)) in dout.chunks_exact(c).zip(ids).enumerate() {
        let dtok = &mut dwte[id as usize * c..][..c];
        for (g, d) in dtok.iter_mut().zip(drow) {
            *g += d;
        }
        if let Some(dwpe) = dwpe.as_deref_mut() {
            for (g, d) in dwpe[(i % t) * c..][..c].iter_mut().zip(drow) {
                *g += d;
            }
        }
    }
}
