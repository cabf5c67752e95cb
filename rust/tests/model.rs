//! The model against the Go TinyLM's reference values and against finite differences.

mod common;

use common::{random_model, small_config};
use tinylm::batch::BatchRunner;
use tinylm::decode::Decoder;
use tinylm::generate::{generate, GenerateOptions, Window};
use tinylm::optim::{AdamW, AdamWConfig};
use tinylm::sample::{argmax, SamplingParams};
use tinylm::{Config, Model, Workspace};

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-3)
}

fn loss_of(model: &Model, ids: &[u32], targets: &[u32], b: usize, t: usize) -> f64 {
    let mut ws = Workspace::new();
    model.loss(&mut ws, ids, targets, b, t).unwrap() as f64
}

/// Central differences for every parameter of a small model, in float32: tolerances are
/// loose here; the float64 check lives in the Python tests.
fn check_gradients(config: Config) {
    let model = random_model(config, 7);
    let (b, t) = (2, 4);
    let ids = [1, 4, 2, 6, 0, 3, 3, 5];
    let targets = [4, 2, 6, 0, 3, 3, 5, 1];
    let mut ws = Workspace::new();
    model.loss(&mut ws, &ids, &targets, b, t).unwrap();
    let mut grads = vec![0.0f32; model.layout.total];
    model.backward(&mut ws, &mut grads).unwrap();
    let h = 1e-2f32;
    let mut worst = 0.0f64;
    for spec in &model.layout.specs {
        for i in spec.range() {
            let mut plus = model.clone();
            plus.params_mut()[i] += h;
            let mut minus = model.clone();
            minus.params_mut()[i] -= h;
            let numeric = (loss_of(&plus, &ids, &targets, b, t)
                - loss_of(&minus, &ids, &targets, b, t))
                / (2.0 * h as f64);
            let analytic = grads[i] as f64;
            let err = (numeric - analytic).abs() / (numeric.abs() + analytic.abs() + 1e-2);
            worst = worst.max(err);
            assert!(
                err < 2e-2,
                "{} [{}]: analytic {analytic}, numeric {numeric}",
                spec.name,
                i - spec.offset
            );
        }
    }
    eprintln!("worst relative gradient error {worst:e}");
}

#[test]
fn gradients_match_finite_differences_go_style() {
    check_gradients(small_config(false, false));
}

#[test]
fn gradients_match_finite_differences_gpt2_style() {
    check_gradients(small_config(true, true));
}

#[test]
fn batch_rows_are_independent() {
    let model = random_model(small_config(true, false), 3);
    let v = model.config.vocab_size;
    let mut ws = Workspace::new();
    model.forward(&mut ws, &[1, 2, 3, 4, 5, 6], 2, 3).unwrap();
    let batched = ws.logits(&model.config).to_vec();
    for (s, seq) in [[1, 2, 3], [4, 5, 6]].iter().enumerate() {
        let mut single = Workspace::new();
        model.forward(&mut single, seq, 1, 3).unwrap();
        let one = single.logits(&model.config);
        for (a, b) in one.iter().zip(&batched[s * 3 * v..(s + 1) * 3 * v]) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0));
        }
    }
}

#[test]
fn bad_ids_are_errors_not_panics() {
    let model = random_model(small_config(false, false), 1);
    let mut ws = Workspace::new();
    let err = model
        .forward(&mut ws, &[1, 99], 1, 2)
        .unwrap_err()
        .to_string();
    assert!(err.contains("99") && err.contains("vocab_size 7"), "{err}");
    let err = model
        .forward(&mut ws, &[1; 6], 1, 6)
        .unwrap_err()
        .to_string();
    assert!(err.contains("context of 5"), "{err}");
    let err = model.forward(&mut ws, &[], 1, 0).unwrap_err().to_string();
    assert!(err.contains("at least one token"), "{err}");
}

#[test]
fn adamw_training_lowers_the_loss() {
    let mut model = Model::new(small_config(true, true), 0).unwrap();
    let ids = [1, 2, 3, 4, 5];
    let targets = [2, 3, 4, 5, 6];
    let mut opt = AdamW::new(
        AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        },
        &model.layout,
    )
    .unwrap();
    let mut ws = Workspace::new();
    let mut grads = vec![0.0; model.layout.total];
    let first = model.loss(&mut ws, &ids, &targets, 1, 5).unwrap();
    let mut last = first;
    for _ in 0..100 {
        grads.fill(0.0);
        last = model.loss(&mut ws, &ids, &targets, 1, 5).unwrap();
        model.backward(&mut ws, &mut grads).unwrap();
        opt.step(model.params_mut(), &grads, 1e-2).unwrap();
    }
    assert!(last < 0.2 * first, "loss went from {first} to {last}");
}

#[test]
fn results_do_not_depend_on_the_thread_count() {
    let config = Config {
        vocab_size: 65,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        d_ff: 256,
        max_seq_len: 32,
        eps: 1e-5,
        attn_bias: true,
        tie_embeddings: true,
        ..Config::default()
    };
    let model = Model::new(config, 5).unwrap();
    let (b, t) = (8, 32);
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 7 % 65) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 11 % 65) as u32).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut ws = Workspace::new();
            let loss = model.loss(&mut ws, &ids, &targets, b, t).unwrap();
            let mut grads = vec![0.0f32; model.layout.total];
            model.backward(&mut ws, &mut grads).unwrap();
            (
                loss.to_bits(),
                grads.iter().map(|g| g.to_bits()).collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn greedy_generation_follows_the_argmax_of_the_logits() {
    let model = random_model(small_config(true, false), 11);
    let prompt = [3u32, 1];
    let opts = GenerateOptions {
        max_new_tokens: 9, // runs past the context of 5
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Window::Sliding,
    };
    let generated = generate(&Decoder::new(&model), &prompt, &opts).unwrap();
    assert_eq!(generated.len(), 9);
    let mut seq = prompt.to_vec();
    let v = model.config.vocab_size;
    for &tok in &generated {
        let window = &seq[seq.len().saturating_sub(model.config.max_seq_len)..];
        let mut ws = Workspace::new();
        model.forward(&mut ws, window, 1, window.len()).unwrap();
        let logits = ws.logits(&model.config);
        let last = &logits[(window.len() - 1) * v..];
        assert_eq!(argmax(last) as u32, tok);
        seq.push(tok);
    }
}

#[test]
fn greedy_generation_with_a_shifted_window_follows_the_argmax_over_that_window() {
    // The documented rule: the model sees every token since the last shift; when a new
    // token would make P + 1 of them, only the last P / 2 are kept.
    for (p, prompt) in [(5usize, vec![3u32, 1]), (6, vec![2, 4, 1, 0, 3, 2, 1, 1])] {
        let mut config = small_config(true, false);
        config.max_seq_len = p;
        let model = random_model(config, 12);
        let opts = GenerateOptions {
            max_new_tokens: 4 * p,
            sampling: SamplingParams::default(),
            seed: 0,
            stop: vec![],
            window: Window::Shift,
        };
        let generated = generate(&Decoder::new(&model), &prompt, &opts).unwrap();
        let v = model.config.vocab_size;
        let mut seen = prompt[prompt.len().saturating_sub(p)..].to_vec();
        for &tok in &generated {
            let mut ws = Workspace::new();
            model.forward(&mut ws, &seen, 1, seen.len()).unwrap();
            let last = &ws.logits(&model.config)[(seen.len() - 1) * v..];
            assert_eq!(argmax(last) as u32, tok);
            seen.push(tok);
            if seen.len() == p + 1 {
                seen.drain(..seen.len() - p / 2);
            }
        }
    }
}

#[test]
fn sharded_batches_give_the_loss_and_gradient_of_the_whole_batch() {
    let model = random_model(small_config(true, false), 12);
    let (b, t) = (3, 4); // an odd batch: shards of 1 and 2 sequences
    let ids: Vec<u32> = (0..b * t).map(|i| (i * 5 % 7) as u32).collect();
    let targets: Vec<u32> = (0..b * t).map(|i| (i * 3 % 7) as u32).collect();
    let mut ws = Workspace::new();
    let whole = model.loss(&mut ws, &ids, &targets, b, t).unwrap();
    let mut want = vec![0.0f32; model.layout.total];
    model.backward(&mut ws, &mut want).unwrap();
    let mut runner = BatchRunner::new();
    let mut got = vec![1.0f32; model.layout.total]; // overwritten, not added to
    let sharded = runner
        .loss_and_grads(&model, &ids, &targets, b, t, &mut got)
        .unwrap();
    assert!((whole - sharded).abs() < 1e-6, "{whole} vs {sharded}");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "gradient {i}: {g} vs {w}"
        );
    }
}

#[test]
fn training_steps_are_bit_identical_for_one_and_two_threads() {
    let config = Config {
        vocab_size: 65,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        d_ff: 256,
        max_seq_len: 32,
        eps: 1e-5,
        attn_bias: true,
        tie_embeddings: true,
        ..Config::default()
    };
    let (b, t) = (8, 32);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut model = Model::new(config.clone(), 5).unwrap();
            let mut opt = AdamW::new(
                AdamWConfig {
                    weight_decay: 0.1,
                    ..Default::default()
                },
                &model.layout,
            )
            .unwrap();
            let mut runner = BatchRunner::new();
            let mut losses = Vec::new();
            for step in 0..5u32 {
                let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + step) % 65).collect();
                let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 11 + step) % 65).collect();
                let (loss, _) = runner
                    .train_step(
                        &mut model,
                        &mut opt,
                        &ids,
                        &targets,
                        b,
                        t,
                        1,
                        1e-3,
                        Some(1.0),
                    )
                    .unwrap();
                losses.push(loss.to_bits());
            }
            (
                losses,
                model
                    .params()
                    .iter()
                    .map(|p| p.to_bits())
                    .collect::<Vec<_>>(),
            )
        })
    };
    assert_eq!(run(1), run(2));
}

#[test]
fn the_steps_parts_are_the_one_call_step() {
    let config = small_config(true, false);
    let (b, t, micro) = (4, 5, 2);
    let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 5 + 1) % 7).collect();
    let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 3 + 2) % 7).collect();
    let adamw = AdamWConfig {
        weight_decay: 0.1,
        ..Default::default()
    };
    let mut one = random_model(config.clone(), 3);
    let mut parts = one.clone();
    let (mut opt_one, mut opt_parts) = (
        AdamW::new(adamw, &one.layout).unwrap(),
        AdamW::new(adamw, &parts.layout).unwrap(),
    );
    let (mut r_one, mut r_parts) = (BatchRunner::new(), BatchRunner::new());
    for _ in 0..3 {
        let (loss, norm) = r_one
            .train_step(
                &mut one,
                &mut opt_one,
                &ids,
                &targets,
                b,
                t,
                micro,
                1e-2,
                Some(0.5),
            )
            .unwrap();
        let bm = b / micro;
        let mut loss_sum = 0.0f64;
        for k in 0..micro {
            let rows = k * bm * t..(k + 1) * bm * t;
            loss_sum += r_parts
                .backward(
                    &parts,
                    &ids[rows.clone()],
                    &targets[rows],
                    bm,
                    t,
                    0.5,
                    k > 0,
                )
                .unwrap() as f64;
        }
        let clipped = r_parts.clip_grad_norm(Some(0.5)).unwrap();
        assert_eq!(
            r_parts
                .adamw_step(&mut parts, &mut opt_parts, 1e-2)
                .unwrap(),
            clipped
        );
        assert_eq!(((loss_sum / micro as f64) as f32, clipped), (loss, norm));
        assert_eq!(one.params(), parts.params());
    }
    // Without a gradient there is no step, and nothing changes.
    r_parts.zero_grad();
    let before = parts.params().to_vec();
    let err = r_parts
        .adamw_step(&mut parts, &mut opt_parts, 1e-2)
        .unwrap_err();
    assert!(err.to_string().contains("no gradient"), "{err}");
    assert!(r_parts.clip_grad_norm(None).is_err());
    assert_eq!(parts.params(), &before[..]);
}

#[test]
fn accumulated_micro_batches_give_the_big_batchs_loss_and_gradient() {
    let model = random_model(small_config(true, false), 31);
    let (b, t) = (6, 5);
    let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 5 + 1) % 7).collect();
    let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 3 + 2) % 7).collect();
    let total = model.layout.total;
    let mut runner = BatchRunner::new();
    let mut big = vec![0.0f32; total];
    let big_loss = runner
        .loss_and_grads(&model, &ids, &targets, b, t, &mut big)
        .unwrap();
    for micro in [2, 3, 6] {
        // The parts of a step, as train.py runs them: one backward pass per micro-batch.
        let (bm, scale) = (b / micro, 1.0 / micro as f32);
        let mut loss_sum = 0.0f64;
        for k in 0..micro {
            let rows = k * bm * t..(k + 1) * bm * t;
            loss_sum += runner
                .backward(
                    &model,
                    &ids[rows.clone()],
                    &targets[rows],
                    bm,
                    t,
                    scale,
                    k > 0,
                )
                .unwrap() as f64;
        }
        let loss = (loss_sum / micro as f64) as f32;
        let acc = runner.gradient().unwrap().to_vec();
        assert!(
            close(loss as f64, big_loss as f64, 1e-6),
            "{micro}: {loss} vs {big_loss}"
        );
        let scale = big.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        for (i, (a, g)) in acc.iter().zip(&big).enumerate() {
            assert!(
                (a - g).abs() <= 1e-5 * scale,
                "{micro} micro-batches, grad {i}: {a} vs {g}"
            );
        }
    }
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout).unwrap();
    let mut m = model.clone();
    let err = runner
        .train_step(&mut m, &mut opt, &ids, &targets, b, t, 4, 1e-3, None)
        .unwrap_err();
    assert!(err.to_string().contains("does not split into 4"), "{err}");
}
