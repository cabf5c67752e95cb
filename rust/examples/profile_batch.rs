//! Batched decoding speed: B sequences stepped together from one token to the end of the
//! context, with and without the helper thread, and the same through
//! [`BatchGeneration`] (greedy, as `generate_many` runs it):
//! `cargo run --release --example profile_batch -- B` (`SEQS=8`).
use std::time::{Duration, Instant};

use tinylm::decode::batched::BatchState;
use tinylm::decode::{with_team, Decoder};
use tinylm::generate::GenerateOptions;
use tinylm::generate_many::BatchGeneration;
use tinylm::sample::SamplingParams;
use tinylm::Model;

mod common;

fn main() {
    let (which, config, _batch) = common::reference_from_args("B");
    common::global_pool_from_env(2);
    let seqs: usize = common::env_or("SEQS", 8);
    let p = config.max_seq_len;
    let model = Model::new(config, 0).unwrap();
    let decoder = Decoder::new(&model);
    let rows: Vec<usize> = (0..seqs).collect();
    let tokens = vec![1u32; seqs];
    for helper in [false, true] {
        let mut best = 0.0f64;
        for _ in 0..5 {
            let mut state = BatchState::new(&model, seqs).unwrap();
            let t0 = Instant::now();
            let mut n = 0;
            while t0.elapsed().as_secs_f64() < 0.5 {
                (0..seqs).for_each(|s| state.clear(s));
                let mut run = |team: Option<&tinylm::decode::Team>| {
                    for _ in 0..p {
                        state.step(&decoder, team, &rows, &tokens);
                    }
                };
                if helper {
                    with_team(run);
                } else {
                    run(None);
                }
                n += p * seqs;
            }
            best = best.max(n as f64 / t0.elapsed().as_secs_f64());
        }
        println!("{which}: {seqs} sequences, helper {helper}: {best:.0} tokens/s");
    }
    let opts = GenerateOptions {
        max_new_tokens: p - 1,
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
            let mut run = BatchGeneration::new(&decoder, &[vec![1]], seqs, opts.clone()).unwrap();
            run.run_until(&decoder, Instant::now() + Duration::from_secs(60))
                .unwrap();
            n += run.into_ids().iter().map(Vec::len).sum::<usize>();
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    println!("{which}: {seqs} sequences, BatchGeneration: {best:.0} tokens/s");
}
