//! Dropout (embedding sum, attention probabilities, residual branches): the fast path
//! against the reference path with the same masks, the tiled attention kernel against the
//! reference kernel over several row blocks, the gradient against finite differences with
//! a fixed mask, and p = 0 against no dropout at all.

mod common;

use common::{random_model, small_config};
use tinylm::batch::BatchRunner;
use tinylm::config::{Activation, Config, Norm, Position};
use tinylm::dropout::Dropout;
use tinylm::kernels::attention as fast;
use tinylm::model::Backend;
use tinylm::reference::attention as plain;
use tinylm::rng::Rng;
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
    fast_equals_reference(llama_gqa());
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_normal() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

#[test]
fn tiled_attention_with_dropout_equals_the_reference_kernel() {
    // 70 positions (three row blocks of the tiled kernel, whose backward regenerates each
    // block's mask), two sequences, four query heads over two key/value heads of 6, and a
    // pass that starts 140 rows into its batch.
    let (b, t, h, kv, d) = (2, 70, 4, 2, 6);
    let heads = fast::Heads { h, kv, d };
    let (c, kd, w) = (h * d, kv * d, heads.width());
    let drop = Dropout::new(0.3, 5, 9, 140).unwrap().attention(1, t, h);
    let qkv = randn(b * t * w, 1);
    let dout = randn(b * t * c, 2);
    let (mut out, mut lse) = (vec![0.0; b * t * c], vec![0.0; b * h * t]);
    fast::attention_forward(&mut out, &mut lse, &qkv, t, heads, Some(drop));
    let mut dqkv = vec![0.0; qkv.len()];
    fast::attention_backward(&mut dqkv, &dout, &qkv, &lse, t, heads, Some(drop));

    let columns = |x: &[f32], col: usize, width: usize| -> Vec<f32> {
        x.chunks_exact(w)
            .flat_map(|row| row[col..col + width].to_vec())
            .collect()
    };
    let (q, k, v) = (
        columns(&qkv, 0, c),
        columns(&qkv, c, kd),
        columns(&qkv, c + kd, kd),
    );
    let shape = plain::AttentionShape { b, t, h, k: kv, d };
    let mask = plain::dropout_mask(&drop, shape);
    let (mut want, mut att) = (vec![0.0; b * t * c], vec![0.0; b * h * t * t]);
    plain::attention_forward(&mut want, &mut att, &q, &k, &v, Some(&mask), shape);
    assert_close(&out, &want, "out");
    let (mut dq, mut dk, mut dv) = (vec![0.0; q.len()], vec![0.0; k.len()], vec![0.0; v.len()]);
    plain::attention_backward(
        &mut dq,
        &mut dk,
        &mut dv,
        &dout,
        &q,
        &k,
        &v,
        &att,
        Some(&mask),
        shape,
    );
    assert_close(&columns(&dqkv, 0, c), &dq, "dq");
    assert_close(&columns(&dqkv, c, kd), &dk, "dk");
    assert_close(&columns(&dqkv, c + kd, kd), &dv, "dv");

    // The mask drops about 30% of the visible probabilities and scales the rest.
    let visible: Vec<f32> = (0..b * h * t)
        .flat_map(|row| mask[row * t..][..=row % t].to_vec())
        .collect();
    let dropped = visible.iter().filter(|&&m| m == 0.0).count() as f64;
    let share = dropped / visible.len() as f64;
    assert!((0.27..0.33).contains(&share), "dropped {share}");
    assert!(visible
        .iter()
        .all(|&m| m == 0.0 || (m - 1.0 / 0.7).abs() < 1e-6));
    let mut plain_out = vec![0.0; out.len()];
    fast::attention_forward(&mut plain_out, &mut lse, &qkv, t, heads, None);
    assert!(out
        .iter()
        .zip(&plain_out)
        .any(|(a, b)| (a - b).abs() > 1e-2));
}

#[test]
fn dropout_zero_is_bit_identical_to_no_dropout() {
    for config in [small_config(true, true), llama_gqa()] {
        let model = random_model(with_dropout(config, 0.0), 6);
        let mut runner = BatchRunner::new();
        let mut g0 = vec![0.0f32; model.layout.total];
        let l0 = runner
            .loss_and_grads(&model, &IDS, &TARGETS, 2, 4, &mut g0)
            .unwrap();
        runner.dropout_key = Some((3, 4));
        let mut g1 = vec![0.0f32; model.layout.total];
        let l1 = runner
            .loss_and_grads(&model, &IDS, &TARGETS, 2, 4, &mut g1)
            .unwrap();
        assert_eq!(l0.to_bits(), l1.to_bits());
        assert!(g0.iter().zip(&g1).all(|(a, b)| a.to_bits() == b.to_bits()));
        assert_eq!(Dropout::new(0.0, 3, 4, 0), None);
    }
}

/// The llama preset, tiny: RMSNorm, RoPE, SwiGLU, two query heads over one key/value head.
fn llama_gqa() -> Config {
    Config {
        norm: Norm::RmsNorm,
        position: Position::Rope,
        activation: Activation::SwiGlu,
        mlp_bias: false,
        d_model: 8,
        n_heads: 2,
        n_kv_heads: Some(1),
        ..small_config(false, false)
    }
}

#[test]
fn gradients_with_dropout_match_finite_differences() {
    gradients_match_finite_differences(small_config(true, false));
}

#[test]
fn gradients_with_dropout_match_finite_differences_llama() {
    gradients_match_finite_differences(llama_gqa());
}

/// Central differences of the dropped loss (the key fixes the masks, so the loss is smooth
/// in the parameters) against the fast path's gradient, with p = 0.25 at every site.
fn gradients_match_finite_differences(config: Config) {
    let model = random_model(with_dropout(config, 0.25), 7);
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
