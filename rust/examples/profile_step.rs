//! Times the parts of a training step at a reference configuration:
//! `THREADS=2 ROUNDS=6 cargo run --release --example profile_step -- B` (A, B, C, D or
//! Dllama, D's sizes with Llama's block). Prints tokens/s and GFLOP/s.
//! Reports the best of several rounds: the machine's speed drifts, the best round is the
//! least disturbed one. RHS, LHS1 and LHS2 set the `gemm` crate's packing thresholds, for
//! experiments (at C they made no measurable difference).
use std::time::Instant;

use tinylm::batch::BatchRunner;
use tinylm::optim::{AdamW, AdamWConfig};
use tinylm::Model;

mod common;

fn main() {
    let (which, config, b) = common::reference_from_args("B");
    common::global_pool_from_env(2);
    if let Some(x) = common::env_opt("RHS") {
        gemm::set_rhs_packing_threshold(x);
    }
    if let Some(x) = common::env_opt("LHS1") {
        gemm::set_lhs_packing_threshold_single_thread(x);
    }
    if let Some(x) = common::env_opt("LHS2") {
        gemm::set_lhs_packing_threshold_multi_thread(x);
    }
    let (v, c, t) = (config.vocab_size, config.d_model, config.max_seq_len);
    let flops = common::train_flops_per_token(&config);
    let mut model = Model::new(config, 0).unwrap();
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % v) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| (i * 11 % v) as u32).collect();
    let mut runner = BatchRunner::new();
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout).unwrap();
    let steps_per_round = (200_000 / (b * t * c)).clamp(2, 50);
    let rounds: usize = common::env_or("ROUNDS", 6);
    let mut best = f64::MAX;
    for round in 0..rounds {
        let t0 = Instant::now();
        for _ in 0..steps_per_round {
            runner
                .train_step(&mut model, &mut opt, &ids, &tg, b, t, 1, 1e-4, Some(1.0))
                .unwrap();
        }
        let step = t0.elapsed().as_secs_f64() / steps_per_round as f64;
        if round > 0 {
            best = best.min(step);
        }
    }
    println!(
        "{which}: {:.2} ms per training step, {:.0} tokens/s, {:.0} GFLOP/s",
        best * 1e3,
        (b * t) as f64 / best,
        (b * t) as f64 / best * flops / 1e9
    );
}
