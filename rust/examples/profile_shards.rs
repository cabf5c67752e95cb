//! Prototype: a training step as two half-batches run side by side, each on its own
//! one-thread pool, gradients summed at the end.
use std::time::Instant;

use tinylm::{Model, Workspace};

mod common;

fn main() {
    let (which, config, b) = common::reference_from_args("B");
    let (v, c, t) = (config.vocab_size, config.d_model, config.max_seq_len);
    let model = Model::new(config, 0).unwrap();
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % v) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|i| (i * 11 % v) as u32).collect();
    let pools: Vec<rayon::ThreadPool> = (0..2)
        .map(|_| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap()
        })
        .collect();
    let half = b / 2;
    let mut ws = [Workspace::new(), Workspace::new()];
    let mut grads = [
        vec![0.0f32; model.layout.total],
        vec![0.0f32; model.layout.total],
    ];
    let mut best = f64::MAX;
    for _round in 0..6 {
        let steps = (200_000 / (b * t * c)).clamp(2, 50);
        let t0 = Instant::now();
        for _ in 0..steps {
            let [w0, w1] = &mut ws;
            let [g0, g1] = &mut grads;
            std::thread::scope(|s| {
                let m = &model;
                let (ids, tg) = (&ids, &tg);
                let p = &pools;
                s.spawn(move || {
                    p[0].install(|| {
                        g0.fill(0.0);
                        m.loss(w0, &ids[..half * t], &tg[..half * t], half, t)
                            .unwrap();
                        m.backward(w0, g0).unwrap();
                    })
                });
                p[1].install(|| {
                    g1.fill(0.0);
                    m.loss(w1, &ids[half * t..], &tg[half * t..], b - half, t)
                        .unwrap();
                    m.backward(w1, g1).unwrap();
                });
            });
            for (a, x) in grads[0].clone().iter_mut().zip(&grads[1]) {
                *a += x;
            }
        }
        best = best.min(t0.elapsed().as_secs_f64() / steps as f64);
    }
    println!(
        "{which} sharded: {:.2} ms/step, {:.0} tokens/s",
        best * 1e3,
        (b * t) as f64 / best
    );
}
