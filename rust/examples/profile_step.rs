//! Times the parts of a training step: `cargo run --release --example profile_step -- B`.
use std::time::Instant;

use tinylm::optim::{AdamW, AdamWConfig};
use tinylm::{Config, Model, Workspace};

fn main() {
    let which = std::env::args().nth(1).unwrap_or_else(|| "B".into());
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
    };
    let mut model = Model::new(config, 0).unwrap();
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % v) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| (i * 11 % v) as u32).collect();
    let mut ws = Workspace::new();
    let mut grads = vec![0.0; model.layout.total];
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout).unwrap();
    let iters = 20;
    let (mut tf, mut tb, mut to) = (0.0, 0.0, 0.0);
    for i in 0..iters + 3 {
        let t0 = Instant::now();
        model.loss(&mut ws, &ids, &tg, b, t).unwrap();
        let t1 = Instant::now();
        grads.fill(0.0);
        model.backward(&mut ws, &mut grads).unwrap();
        let t2 = Instant::now();
        opt.step(&mut model.params, &grads, 1e-4).unwrap();
        let t3 = Instant::now();
        if i >= 3 {
            tf += (t1 - t0).as_secs_f64();
            tb += (t2 - t1).as_secs_f64();
            to += (t3 - t2).as_secs_f64();
        }
    }
    let n = iters as f64;
    let step = (tf + tb + to) / n;
    println!(
        "{which}: forward {:.2} ms, backward {:.2} ms, adamw {:.2} ms, {:.0} tokens/s",
        tf / n * 1e3,
        tb / n * 1e3,
        to / n * 1e3,
        (b * t) as f64 / step
    );
}
