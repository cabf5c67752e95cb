//! Panel products at one lane's shapes of config B, out (M, OC) = x (M, IC) @ W, on one
//! thread: `cargo run --release --example profile_panels` (`M=8`; `COPIES=N` cycles
//! through N copies of each matrix, so that with enough of them the weights come from L2
//! or beyond rather than L1). The machine's ceiling is `fma_peak`'s 1-thread figure.
use std::time::Instant;

use tinylm::decode::panels::{Columns, Panels};
use tinylm::kernels::bf16::Dtype;

mod common;

fn main() {
    let m: usize = common::env_or("M", 8);
    let copies: usize = common::env_or("COPIES", 1).max(1);
    for (name, ic, oc) in [
        ("W_qkv", 128, 192),
        ("W_o", 64, 128),
        ("linear1", 128, 256),
        ("linear2", 256, 128),
    ] {
        let w: Vec<f32> = (0..ic * oc).map(|i| (i % 7) as f32 * 0.01).collect();
        let all: Vec<Panels> = (0..copies)
            .map(|_| Panels::pack(ic, &[Columns::all(&w, oc)], Dtype::F32))
            .collect();
        let x: Vec<f32> = (0..m * ic).map(|i| (i % 5) as f32 * 0.1).collect();
        let mut out = vec![0.0f32; m * oc];
        let reps = 200_000;
        let mut best = f64::MAX;
        for _ in 0..5 {
            let start = Instant::now();
            for r in 0..reps {
                all[r % copies].matmat(&mut out, std::hint::black_box(&x));
            }
            best = best.min(start.elapsed().as_secs_f64());
        }
        let flops = 2.0 * (m * ic * oc) as f64 * reps as f64;
        println!(
            "{name} ({ic} x {oc}), M = {m}, {copies} copies: {:.1} GFLOP/s, {:.2} us",
            flops / best / 1e9,
            best / reps as f64 * 1e6
        );
    }
}
