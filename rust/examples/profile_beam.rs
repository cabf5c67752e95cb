//! Beam search speed at a reference configuration: width 4 (`BEAMS`), from one token to
//! the end of the context, as `benchmarks/generation_peers.py` runs it:
//! `cargo run --release --example profile_beam -- D`. Prints steps (tokens of the best
//! sequence) per second.
use tinylm::beam::{beam_search, BeamOptions, EarlyStopping};
use tinylm::decode::Decoder;

mod common;

fn main() {
    let (which, config, _batch) = common::reference_from_args("D");
    common::global_pool_from_env(2);
    let p = config.max_seq_len;
    let model = common::model_from_env(config);
    let decoder = Decoder::new(&model);
    let opts = BeamOptions {
        num_beams: common::env_or("BEAMS", 4),
        max_new_tokens: p - 1,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::Never,
        no_repeat_ngram_size: 0,
        num_return_sequences: 1,
        stop: vec![],
    };
    let best = common::best_rate(|| beam_search(&decoder, &[1], &opts).unwrap()[0].tokens.len());
    println!("{which}: {} beams, {best:.0} steps/s", opts.num_beams);
}
