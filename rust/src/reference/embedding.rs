//! Embedding: a table lookup, one row per id: `out[i] = table[ids[i]]`.
//! The model uses it twice: token ids into the token table (V, C), and (with learned
//! positions) each row's position t into the position table (P, C).

/// ids is (N), table is (R, C) with every id below R, out will be (N, C).
pub fn embedding_forward(out: &mut [f32], ids: &[u32], table: &[f32], c: usize) {
    for (row, &id) in out.chunks_exact_mut(c).zip(ids) {
        row.copy_from_slice(&table[id as usize * c..][..c]);
    }
}

/// In the forward pass this was: `out[i] = table[ids[i]]`; so the gradient of each output row
/// flows unchanged into its id's row: `dtable[ids[i]] += dout[i]`.
pub fn embedding_backward(dtable: &mut [f32], dout: &[f32], ids: &[u32], c: usize) {
    for (drow, &id) in dout.chunks_exact(c).zip(ids) {
        for (g, d) in dtable[id as usize * c..][..c].iter_mut().zip(drow) {
            *g += d;
        }
    }
}
