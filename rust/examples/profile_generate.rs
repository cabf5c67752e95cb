//! Greedy generation speed at a reference configuration (KV cache, batch 1), from one
//! token to the end of the context or NEW tokens:
//! `cargo run --release --example profile_generate -- B` (also `stories15M`, `gpt2_124m`).
use tinylm::decode::Decoder;
use tinylm::generate::generate;

mod common;

fn main() {
    let (which, config, _batch) = common::reference_from_args("B");
    common::global_pool_from_env(2);
    let t = config.max_seq_len;
    let model = common::model_from_env(config);
    let decoder = Decoder::new(&model);
    let opts = common::greedy_options(common::env_or("NEW", t - 1));
    let best = common::best_rate(|| generate(&decoder, &[1], &opts).unwrap().len());
    println!("{which}: {best:.0} tokens/s");
}
