//! One matmul shape in a loop, for profilers: `one_shape M K N [iters] [t]` (t: A transposed).
use std::time::Instant;
use tinylm::kernels::matmul::{matmul, MatMut, MatRef};

mod common;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .take(4)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n) = (args[0], args[1], args[2]);
    let iters = *args.get(3).unwrap_or(&1000);
    let ta = std::env::args().nth(5).is_some();
    common::global_pool_from_env(1);
    let a = vec![0.5f32; m * k];
    let b = vec![0.25f32; k * n];
    let mut c = vec![0.0f32; m * n];
    let t0 = Instant::now();
    for _ in 0..iters {
        let av = if ta {
            MatRef::new(&a, k, m).t()
        } else {
            MatRef::new(&a, m, k)
        };
        matmul(MatMut::new(&mut c, m, n), av, MatRef::new(&b, k, n), false);
    }
    let dt = t0.elapsed().as_secs_f64() / iters as f64;
    println!(
        "{m}x{k}x{n}: {:.1} GFLOP/s",
        2.0 * (m * k * n) as f64 / dt / 1e9
    );
}
