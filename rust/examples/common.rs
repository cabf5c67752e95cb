//! What the profiling examples share (each includes this file with `mod common;`): knobs
//! read from the environment, the global thread pool, the reference configurations
//! A to D of issue 3 (the same as benchmarks/configs.py), greedy options and the timing.
#![allow(dead_code)] // each example uses part of it

use std::str::FromStr;
use std::time::Instant;

use tinylm::generate::GenerateOptions;
use tinylm::kernels::bf16::Dtype;
use tinylm::sample::SamplingParams;
use tinylm::{Config, Model};

/// The best rate of `run` (what it returns, such as tokens, per second) over five windows
/// of half a second, each running it as many times as fit.
pub fn best_rate(mut run: impl FnMut() -> usize) -> f64 {
    let mut best = 0.0f64;
    for _ in 0..5 {
        let t0 = Instant::now();
        let mut n = 0;
        while t0.elapsed().as_secs_f64() < 0.5 {
            n += run();
        }
        best = best.max(n as f64 / t0.elapsed().as_secs_f64());
    }
    best
}

/// Greedy generation of `max_new_tokens` ids, no stop ids, seed 0.
pub fn greedy_options(max_new_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_new_tokens,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Default::default(),
    }
}

/// The environment variable `name` parsed as a T, if it is set and parses.
pub fn env_opt<T: FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The environment variable `name` parsed as a T, else `default`.
pub fn env_or<T: FromStr>(name: &str, default: T) -> T {
    env_opt(name).unwrap_or(default)
}

/// A model of `config` (seed 0) with its weights in the dtype `DTYPE` names (float32 or
/// bfloat16; float32 if unset).
pub fn model_from_env(config: Config) -> Model {
    let mut model = Model::new(config, 0).unwrap();
    let name = std::env::var("DTYPE").unwrap_or_else(|_| "float32".into());
    model.set_dtype(Dtype::from_name(&name).unwrap()).unwrap();
    model
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
/// else is D; Dllama is D's sizes with Llama's block, as benchmarks/configs.py; stories15M
/// is llama2.c's shape, as benchmarks/interop_bench.py), else `default`; returns its name,
/// the model's configuration and the batch.
pub fn reference_from_args(default: &str) -> (String, Config, usize) {
    let which = std::env::args().nth(1).unwrap_or_else(|| default.into());
    if which == "stories15M" {
        // llama2.c's stories15M shape (interop_bench.py), with the llama preset's untied head.
        let config = Config {
            vocab_size: 32000,
            d_model: 288,
            n_layers: 6,
            n_heads: 6,
            d_ff: 768,
            max_seq_len: 256,
            attn_bias: false,
            tie_embeddings: false,
            activation: tinylm::config::Activation::SwiGlu,
            norm: tinylm::config::Norm::RmsNorm,
            mlp_bias: false,
            position: tinylm::config::Position::Rope,
            ..Config::default()
        };
        return (which, config, 8);
    }
    if which == "gpt2_124m" {
        // GPT-2 124M's shape (interop_bench.py): the gpt2 preset's defaults at its sizes.
        let config = Config {
            vocab_size: 50257,
            d_model: 768,
            n_layers: 12,
            n_heads: 12,
            d_ff: 3072,
            max_seq_len: 1024,
            ..Config::default()
        };
        return (which, config, 4);
    }
    if which == "Dllama" {
        let config = Config {
            vocab_size: 65,
            d_model: 384,
            n_layers: 6,
            n_heads: 6,
            d_ff: 1024,
            max_seq_len: 256,
            attn_bias: false,
            tie_embeddings: false,
            activation: tinylm::config::Activation::SwiGlu,
            norm: tinylm::config::Norm::RmsNorm,
            mlp_bias: false,
            position: tinylm::config::Position::Rope,
            ..Config::default()
        };
        return (which, config, 8);
    }
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

/// FLOPs of a training step per token (forward + backward = 3 x forward): 6 (L (4 C^2 +
/// (2 or 3 with a gate) C F) + V C + L T C), causal attention at its useful half (as
/// benchmarks/configs.py counts them).
pub fn train_flops_per_token(config: &Config) -> f64 {
    let (c, f, v, t, l) = (
        config.d_model as f64,
        config.d_ff as f64,
        config.vocab_size as f64,
        config.max_seq_len as f64,
        config.n_layers as f64,
    );
    let ff = if config.activation.is_gated() {
        3.0
    } else {
        2.0
    } * c
        * f;
    6.0 * (l * (4.0 * c * c + ff) + v * c + l * t * c)
}
