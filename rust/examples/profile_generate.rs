//! Greedy generation speed at a reference configuration (KV cache, batch 1):
//! `cargo run --release --example profile_generate -- B`.
use std::time::Instant;

use tinylm::generate::{generate, GenerateOptions};
use tinylm::sample::SamplingParams;
use tinylm::{Config, Model};

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "B".into());
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    let (v, c, l, h, t) = match which.as_str() {
        "A" => (65, 64, 2, 4, 32),
        "B" => (65, 128, 4, 4, 64),
        "C" => (256, 256, 4, 4, 128),
        _ => (65, 384, 6, 6, 256),
    };
    let config = Config {
        vocab_size: v,
        d_model: c,
        n_layers: l,
        n_heads: h,
        d_ff: 4 * c,
        max_seq_len: t,
        eps: 1e-5,
        attn_bias: true,
        tie_embeddings: true,
    };
    let model = Model::new(config, 0).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: t - 1,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
    };
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed().as_secs_f64() < 0.5 {
            n += generate(&model, &[1], &opts).unwrap().len();
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    println!("{which}: {best:.0} tokens/s");
}
