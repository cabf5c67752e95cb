//! Greedy generation speed at a reference configuration (KV cache, batch 1), from one
//! token to the end of the context or NEW tokens:
//! `cargo run --release --example profile_generate -- B` (also `stories15M`, `gpt2_124m`).
use std::time::Instant;

use tinylm::decode::Decoder;
use tinylm::generate::{generate, GenerateOptions};
use tinylm::sample::SamplingParams;
use tinylm::Model;

mod common;

fn main() {
    let (which, config, _batch) = common::reference_from_args("B");
    common::global_pool_from_env(2);
    let t = config.max_seq_len;
    let model = Model::new(config, 0).unwrap();
    let decoder = Decoder::new(&model);
    let opts = GenerateOptions {
        max_new_tokens: common::env_or("NEW", t - 1),
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Default::default(),
    };
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed().as_secs_f64() < 0.5 {
            n += generate(&decoder, &[1], &opts).unwrap().len();
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    println!("{which}: {best:.0} tokens/s");
}
