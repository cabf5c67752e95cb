//! Times matmul at transformer shapes.
use std::time::Instant;
use tinylm::kernels::matmul::{matmul, MatMut, MatRef};

fn main() {
    for &(m, k, n, ta) in &[
        (768usize, 128usize, 128usize, false),
        (768, 128, 512, false),
        (768, 512, 128, false),
        (128, 768, 128, true),
        (768, 128, 65, false),
    ] {
        let a = vec![0.5f32; m * k];
        let b = vec![0.25f32; k * n];
        let mut c = vec![0.0f32; m * n];
        let iters = 200;
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
            "{m}x{k}x{n} (a^T: {ta}): {:.3} ms, {:.1} GFLOP/s",
            dt * 1e3,
            2.0 * (m * k * n) as f64 / dt / 1e9
        );
    }
}
