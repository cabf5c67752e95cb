//! Helpers shared by the Rust tests.
#![allow(dead_code)]

use std::path::PathBuf;

use tinylm::{Config, Model};

/// The Go seed weights, `seed/tiny_gpt_weights.json` in the shared folder: `../shared`
/// beside the repository, or `$TINYLM_SHARED` as for pytest (see rust/tests/go_seed.rs).
pub fn seed_weights_path() -> PathBuf {
    let shared = std::env::var_os("TINYLM_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"));
    shared.join("seed/tiny_gpt_weights.json")
}

pub fn small_config(attn_bias: bool, tie_embeddings: bool) -> Config {
    Config {
        vocab_size: 7,
        d_model: 6,
        n_layers: 2,
        n_heads: 3,
        d_ff: 10,
        max_seq_len: 5,
        eps: 1e-5,
        attn_bias,
        tie_embeddings,
        ..Config::default()
    }
}

/// A model whose every parameter is random (biases and norms too), so that no term of the
/// gradient hides behind a zero or a one.
pub fn random_model(config: Config, seed: u64) -> Model {
    let mut model = Model::new(config, seed).unwrap();
    let mut rng = tinylm::rng::Rng::new(seed ^ 0xABCD);
    for p in model.params_mut().iter_mut() {
        *p = (rng.next_normal() * 0.5) as f32;
    }
    model
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tinylm-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
