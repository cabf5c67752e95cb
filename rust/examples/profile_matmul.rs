//! Times matmul at transformer shapes: tinylm's own kernel against the `gemm` crate.
use std::time::Instant;
use tinylm::kernels::matmul::{matmul, MatMut, MatRef};

mod common;

fn main() {
    common::global_pool_from_env(2);
    let shapes = [
        (768usize, 128usize, 128usize, false),
        (768, 128, 512, false),
        (768, 512, 128, false),
        (128, 768, 128, true),
        (768, 128, 65, false),
        (2048, 384, 1536, false),
        (384, 2048, 1536, true),
        (64, 32, 64, false),
    ];
    for &(m, k, n, ta) in &shapes {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let iters = (4e9 / (2.0 * (m * n * k) as f64)) as usize + 5;
        let flops = 2.0 * (m * k * n) as f64;
        // Alternate the two, five rounds, and keep each one's best round: the machine's
        // speed drifts, and the best round is the least disturbed.
        let mut rates = [0.0f64; 2];
        for _round in 0..5 {
            for (which, rate) in rates.iter_mut().enumerate() {
                let t0 = Instant::now();
                for _ in 0..iters / 5 + 1 {
                    let av = if ta {
                        MatRef::new(&a, k, m).t()
                    } else {
                        MatRef::new(&a, m, k)
                    };
                    let out = MatMut::new(&mut c, m, n);
                    let _ = which;
                    matmul(out, av, MatRef::new(&b, k, n), false)
                }
                let r = flops / (t0.elapsed().as_secs_f64() / (iters / 5 + 1) as f64) / 1e9;
                *rate = rate.max(r);
            }
        }
        println!(
            "{m}x{k}x{n} (a^T: {ta}): gemm threads {:.1}, split {:.1} GFLOP/s",
            rates[0], rates[1]
        );
    }
}
