//! The machine's float32 multiply-add peak: loops of independent multiply-adds, with no
//! loads, on 256-bit (AVX2 + FMA) and 512-bit (AVX-512F) registers, on 1 and 2 threads.
//! It is the ceiling of any product (a GFLOP/s figure elsewhere is a fraction of it):
//! `cargo run --release --example fma_peak`.
use std::time::Instant;

/// Independent accumulators: more than the multiply-add latency times the pipes, so the
/// loop waits on the pipes only, and few enough to stay in registers with the two
/// operands (16 ymm registers, 32 zmm).
const ACCUMULATORS_256: usize = 12;
const ACCUMULATORS_512: usize = 16;
const ITERATIONS: usize = 50_000_000;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{ACCUMULATORS_256, ACCUMULATORS_512, ITERATIONS};
    use std::arch::x86_64::*;

    /// `ITERATIONS` rounds of ACCUMULATORS_256 multiply-adds of 8 lanes; the sum, so the
    /// work is not removed.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn fma256() -> f32 {
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        let mut acc = [_mm256_set1_ps(1.0); ACCUMULATORS_256];
        for _ in 0..ITERATIONS {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut lanes = [0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, x| _mm256_add_ps(s, *x));
        _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
        lanes.iter().sum()
    }

    /// The same with ACCUMULATORS_512 multiply-adds of 16 lanes.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn fma512() -> f32 {
        let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
        let mut acc = [_mm512_set1_ps(1.0); ACCUMULATORS_512];
        for _ in 0..ITERATIONS {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        _mm512_reduce_add_ps(
            acc.iter()
                .fold(_mm512_setzero_ps(), |s, x| _mm512_add_ps(s, *x)),
        )
    }
}

/// GFLOP/s of `threads` threads each running `kernel` once (a multiply-add is 2 FLOPs).
fn gflops(threads: usize, lanes: usize, accumulators: usize, kernel: fn() -> f32) -> f64 {
    let start = Instant::now();
    let sums: Vec<f32> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(kernel)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    assert!(sums.iter().all(|s| s.is_finite()));
    (threads * ITERATIONS * accumulators * lanes * 2) as f64 / seconds / 1e9
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        // (name, on this CPU, lanes, accumulators, kernel): a kernel runs only where its
        // features were detected.
        type Kernel = (&'static str, bool, usize, usize, fn() -> f32);
        let kernels: [Kernel; 2] = [
            (
                "256-bit (AVX2 + FMA)",
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
                8,
                ACCUMULATORS_256,
                || unsafe { x86::fma256() },
            ),
            (
                "512-bit (AVX-512F)",
                is_x86_feature_detected!("avx512f"),
                16,
                ACCUMULATORS_512,
                || unsafe { x86::fma512() },
            ),
        ];
        for (name, available, lanes, accumulators, kernel) in kernels {
            if !available {
                println!("{name}: not on this CPU");
                continue;
            }
            for threads in [1, 2] {
                let best = (0..3)
                    .map(|_| gflops(threads, lanes, accumulators, kernel))
                    .fold(0.0, f64::max);
                println!("{name}, {threads} thread(s): {best:.1} GFLOP/s");
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("fma_peak measures x86-64 only");
}
