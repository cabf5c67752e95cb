//! Times causal attention forward and backward at a reference configuration's shapes, one
//! shard per thread as in training: `THREADS=2 cargo run --release --example
//! profile_attention -- C` (A, B, C or D; ITERS=20 repetitions). Prints GFLOP/s counting
//! the causal products only.
use std::time::Instant;

use rayon::prelude::*;
use tinylm::kernels::attention::{attention_backward, attention_forward, Heads};

mod common;

fn main() {
    let (which, config, b) = common::reference_from_args("C");
    let threads = common::global_pool_from_env(2);
    let (c, h, t) = (config.d_model, config.n_heads, config.max_seq_len);
    let per_shard = b / threads;
    let heads = Heads { h, kv: h, d: c / h };
    let qkv: Vec<f32> = (0..b * t * 3 * c)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.02)
        .collect();
    let dout: Vec<f32> = (0..b * t * c)
        .map(|i| ((i * 13 % 97) as f32 - 48.0) * 0.01)
        .collect();
    let mut out = vec![0.0f32; b * t * c];
    let mut lse = vec![0.0f32; b * h * t];
    let mut dqkv = vec![0.0f32; b * t * 3 * c];
    // Causal multiply-adds per sequence and head: sum over rows t of (t + 1) keys, times D.
    let causal = (t * (t + 1) / 2 * (c / h) * h * b) as f64;
    let (mut best_f, mut best_b) = (f64::MAX, f64::MAX);
    for _ in 0..common::env_or("ITERS", 20) {
        let t0 = Instant::now();
        out.par_chunks_mut(per_shard * t * c)
            .zip(lse.par_chunks_mut(per_shard * h * t))
            .zip(qkv.par_chunks(per_shard * t * 3 * c))
            .for_each(|((o, l), q)| attention_forward(o, l, q, t, heads, None));
        best_f = best_f.min(t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        dqkv.par_chunks_mut(per_shard * t * 3 * c)
            .zip(dout.par_chunks(per_shard * t * c))
            .zip(
                qkv.par_chunks(per_shard * t * 3 * c)
                    .zip(lse.par_chunks(per_shard * h * t)),
            )
            .for_each(|((d, g), (q, l))| attention_backward(d, g, q, l, t, heads, None));
        best_b = best_b.min(t0.elapsed().as_secs_f64());
    }
    println!(
        "{which}: forward {:.2} ms ({:.0} GFLOP/s causal), backward {:.2} ms ({:.0} GFLOP/s causal); checksum {:.4}",
        best_f * 1e3,
        2.0 * 2.0 * causal / best_f / 1e9,
        best_b * 1e3,
        4.0 * 2.0 * causal / best_b / 1e9,
        out.iter().sum::<f32>() + dqkv.iter().sum::<f32>()
    );
}
