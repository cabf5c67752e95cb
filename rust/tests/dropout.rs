//! Dropout: the fast path against the reference path with the same masks, the gradient
//! against finite differences with a fixed mask, and p = 0 against no dropout at all.

mod common;

use common::{random_model, small_config};
use tinylm::batch::BatchRunner;
use tinylm::config::{Activation, Config, Norm, Position};
use tinylm::dropout::Dropout;
use tinylm::model::Backend;
use tinylm::{Model, Workspace};

const IDS: [u32; 8] = [1, 4, 2, 6, 0, 3, 3, 5];
const TARGETS: [u32; 8] = [4, 2, 6, 0, 3, 3, 5, 1];

fn with_dropout(mut config: Config, p: f32) -> Config {
    config.dropout = p;
    config
}

/// Loss and gradient of one training pass with `dropout` (mean over the tokens).
fn loss_and_grads(model: &Model, dropout: Option<Dropout>) -> (f64, Vec<f32>) {
    let mut ws = Workspace::new();
    let sum = model
        .loss_sum_train(&mut ws, &IDS, &TARGETS, 2, 4, dropout)
        .unwrap();
    let mut grads = vec![0.0f32; model.layout.total];
    model.backward(&mut ws, &mut grads).unwrap();
    (sum / 8.0, grads)
}

fn fast_equals_reference(config: Config) {
    let fast = random_model(with_dropout(config, 0.3), 11);
    let reference = fast.clone().on_backend(Backend::Reference).unwrap();
    let d = Dropout::new(0.3, 5, 9, 0);
    let (loss_f, grads_f) = loss_and_grads(&fast, d);
    let (loss_r, grads_r) = loss_and_grads(&reference, d);
    let (loss_0, _) = loss_and_grads(&fast, None);
    assert!(
        (loss_f - loss_0).abs() > 1e-3,
        "the dropout changed nothing"
    );
    assert!(
        (loss_f - loss_r).abs() < 1e-5 * loss_r.abs().max(1.0),
        "{loss_f} vs {loss_r}"
    );
    for spec in &fast.layout.specs {
        for i in spec.range() {
            let (a, b) = (grads_f[i], grads_r[i]);
            assert!(
                (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                "{} [{}]: fast {a}, reference {b}",
                spec.name,
                i - spec.offset
            );
        }
    }
}

#[test]
fn fast_path_with_dropout_equals_the_reference_path_gpt2() {
    fast_equals_reference(small_config(true, true));
}

#[test]
fn fast_path_with_dropout_equals_the_reference_path_llama() {
    fast_equals_reference(Config {
        norm: Norm::RmsNorm,
        position: Position::Rope,
        activation: Activation::SwiGlu,
        mlp_bias: false,
        d_model: 8,
        n_heads: 2,
        n_kv_heads: Some(1),
        ..small_config(false, false)
    });
}

#[test]
fn gradients_with_dropout_match_finite_differences() {
    let model = random_model(with_dropout(small_config(true, false), 0.25), 7);
    let d = Dropout::new(0.25, 1, 2, 0);
    let (_, grads) = loss_and_grads(&model, d);
    let h = 1e-2f32;
    for spec in &model.layout.specs {
        for i in spec.range() {
            let mut plus = model.clone();
            plus.params_mut()[i] += h;
            let mut minus = model.clone();
            minus.params_mut()[i] -= h;
            let numeric =
                (loss_and_grads(&plus, d).0 - loss_and_grads(&minus, d).0) / (2.0 * h as f64);
            let analytic = grads[i] as f64;
            let err = (numeric - analytic).abs() / (numeric.abs() + analytic.abs() + 1e-2);
            assert!(
                err < 2e-2,
                "{} [{}]: analytic {analytic}, numeric {numeric}",
                spec.name,
                i - spec.offset
            );
        }
    }
}

#[test]
fn masks_keep_about_one_minus_p_and_scale_the_kept() {
    let d = Dropout::new(0.4, 3, 0, 0).unwrap();
    let mut x = vec![1.0f32; 10_000];
    d.apply(&mut x, 1, 100);
    let kept = x.iter().filter(|&&v| v != 0.0).count();
    assert!((5700..6300).contains(&kept), "kept {kept} of 10000");
    assert!(x.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.6).abs() < 1e-6));
    // Another step or site draws another mask; a shifted key continues the same one.
    let mut y = vec![1.0f32; 10_000];
    Dropout::new(0.4, 3, 1, 0).unwrap().apply(&mut y, 1, 100);
    assert_ne!(x, y);
    let mut tail = vec![1.0f32; 5_000];
    d.shifted(50).apply(&mut tail, 1, 100);
    assert_eq!(&x[5_000..], &tail[..]);
}

#[test]
fn evaluation_and_a_runner_without_key_do_not_drop() {
    let model = random_model(with_dropout(small_config(true, true), 0.5), 3);
    let plain = random_model(small_config(true, true), 3);
    let mut runner = BatchRunner::new();
    let mut g1 = vec![0.0f32; model.layout.total];
    let mut g2 = vec![0.0f32; model.layout.total];
    let l1 = runner
        .loss_and_grads(&model, &IDS, &TARGETS, 2, 4, &mut g1)
        .unwrap();
    let l2 = runner
        .loss_and_grads(&plain, &IDS, &TARGETS, 2, 4, &mut g2)
        .unwrap();
    assert_eq!((l1, &g1), (l2, &g2));
    runner.dropout_key = Some((1, 0));
    let l3 = runner
        .loss_and_grads(&model, &IDS, &TARGETS, 2, 4, &mut g1)
        .unwrap();
    assert_ne!(l1, l3);
    // Evaluation ignores the key.
    assert_eq!(
        runner.loss(&model, &IDS, &TARGETS, 2, 4).unwrap(),
        runner.loss(&plain, &IDS, &TARGETS, 2, 4).unwrap()
    );
}

#[test]
fn sharded_and_micro_batched_masks_match_one_pass() {
    // The runner's shards and micro-batches continue the row count, so one step's masks
    // are those of the whole batch in one workspace.
    let model = random_model(with_dropout(small_config(true, true), 0.3), 4);
    let (loss_one, grads_one) = loss_and_grads(&model, Dropout::new(0.3, 8, 2, 0));
    let mut runner = BatchRunner::new();
    runner.dropout_key = Some((8, 2));
    let mut grads = vec![0.0f32; model.layout.total];
    let loss = runner
        .loss_and_grads(&model, &IDS, &TARGETS, 2, 4, &mut grads)
        .unwrap();
    assert!((loss as f64 - loss_one).abs() < 1e-5);
    for (a, b) in grads.iter().zip(&grads_one) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()));
    }
}

#[test]
fn dropout_outside_zero_to_one_is_a_config_error() {
    for p in [-0.1f32, 1.0, 1.5, f32::NAN] {
        let err = Model::new(with_dropout(small_config(true, true), p), 1).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("dropout"), "{text}");
    }
    assert!(Model::new(with_dropout(small_config(true, true), 0.0), 1).is_ok());
}

#[test]
fn old_config_json_loads_with_dropout_zero() {
    let mut config = small_config(true, true);
    let mut json: serde_json::Value = serde_json::to_value(&config).unwrap();
    json.as_object_mut().unwrap().remove("dropout");
    let loaded: Config = serde_json::from_value(json).unwrap();
    assert_eq!(loaded.dropout, 0.0);
    config.dropout = 0.2;
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<Config>(&text).unwrap(), config);
}
