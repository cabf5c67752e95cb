//! Token plus position embedding: out[b][t] = wte[ids[b][t]] + wpe[t].

/// ids is (B, T), wte is (V, C), wpe is (P, C) with P >= T, out will be (B, T, C).
/// Ids must already be checked against V.
pub fn embedding_forward(
    out: &mut [f32],
    ids: &[u32],
    wte: &[f32],
    wpe: &[f32],
    t: usize,
    c: usize,
) {
    for (i, (row, &id)) in out.chunks_exact_mut(c).zip(ids).enumerate() {
        let tok = &wte[id as usize * c..][..c];
        let pos = &wpe[(i % t) * c..][..c];
        for ((o, a), b) in row.iter_mut().zip(tok).zip(pos) {
            *o = a + b;
        }
    }
}

/// In the forward pass this was: out[b][t] = wte[id] + wpe[t]; so the gradient of each
/// output row flows unchanged into the token's row of dwte and the position's row of dwpe.
/// Rows are visited in order, so repeated tokens sum in a fixed order.
pub fn embedding_backward(
    dwte: &mut [f32],
    dwpe: &mut [f32],
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
        let dpos = &mut dwpe[(i % t) * c..][..c];
        for (g, d) in dpos.iter_mut().zip(drow) {
            *g += d;
        }
    }
}
