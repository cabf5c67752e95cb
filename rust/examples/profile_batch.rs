//! Batched decoding speed: B sequences stepped together from one token to the end of the
//! context, with and without the helper thread, and the same through
//! [`BatchGeneration`] (greedy, as `generate_many` runs it):
//! `cargo run --release --example profile_batch -- B` (`SEQS=8`).
use std::time::{Duration, Instant};

use tinylm::decode::batched::BatchState;
use tinylm::decode::{with_team, Decoder};
use tinylm::generate_many::BatchGeneration;

mod common;

fn main() {
    let (which, config, _batch) = common::reference_from_args("B");
    common::global_pool_from_env(2);
    let seqs: usize = common::env_or("SEQS", 8);
    let p = config.max_seq_len;
    let model = common::model_from_env(config);
    let decoder = Decoder::new(&model);
    let rows: Vec<usize> = (0..seqs).collect();
    let tokens = vec![1u32; seqs];
    let mut state = BatchState::new(&model, seqs).unwrap();
    for helper in [false, true] {
        let best = common::best_rate(|| {
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
            p * seqs
        });
        println!("{which}: {seqs} sequences, helper {helper}: {best:.0} tokens/s");
    }
    let opts = common::greedy_options(p - 1);
    let best = common::best_rate(|| {
        let mut run = BatchGeneration::new(&decoder, &[vec![1]], seqs, opts.clone()).unwrap();
        run.run_until(&decoder, Instant::now() + Duration::from_secs(60))
            .unwrap();
        run.into_ids().iter().map(Vec::len).sum()
    });
    println!("{which}: {seqs} sequences, BatchGeneration: {best:.0} tokens/s");
}
