//! What the profiling examples share (each includes this file with `mod common;`): knobs
//! read from the environment, the global thread pool, and the reference configurations
//! A to D of issue 3 (the same as benchmarks/configs.py).
#![allow(dead_code)] // each example uses part of it

use std::str::FromStr;

use tinylm::Config;

/// The environment variable `name` parsed as a T, if it is set and parses.
pub fn env_opt<T: FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The environment variable `name` parsed as a T, else `default`.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    env_opt(name).unwrap_or(default)
}

/// Builds rayon's global pool with `THREADS` threads (else `default`); returns the count.
pub fn global_pool_from_env(default: usize) -> usize {
    let threads = env_or("THREADS", default);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .unwrap();
    threads
}

/// The configuration named by the first command-line argument (A, B, C or D; anything
/// else is D), else `default`; returns its name, the model's configuration and the batch.
pub fn reference_from_args(default: &str) -> (String, Config, usize) {
    let which = std::env::args().nth(1).unwrap_or_else(|| default.into());
    let (v, c, l, h, t, b) = match which.as_str() {
        "A" => (65, 64, 2, 4, 32, 16),
        "B" => (65, 128, 4, 4, 64, 12),
        "C" => (256, 256, 4, 4, 128, 16),
        _ => (65, 384, 6, 6, 256, 8),
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
        ..Config::default()
    };
    (which, config, b)
}
