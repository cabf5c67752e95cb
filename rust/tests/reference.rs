//! The reference path: each operation's backward pass against central finite
//! differences, the whole model's gradients against finite differences for every option
//! combination, the fast path (training and key/value-cache generation) against the
//! reference for every option combination, and models on either backend (training,
//! generation, files).

mod common;

use common::{random_model, small_config};
use tinylm::batch::BatchRunner;
use tinylm::beam::{beam_search, beam_search_until, BeamOptions, EarlyStopping};
use tinylm::config::{Activation, Norm, Position};
use tinylm::decode::Decoder;
use tinylm::generate::{generate, GenerateOptions, Window};
use tinylm::model::Backend;
use tinylm::optim::{AdamW, AdamWConfig};
use tinylm::params::ParamLayout;
use tinylm::reference::activation::{activation_backward, activation_forward, erf};
use tinylm::reference::attention::{attention_backward, attention_forward, AttentionShape};
use tinylm::reference::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use tinylm::reference::embedding::{embedding_backward, embedding_forward};
use tinylm::reference::layernorm::{layernorm_backward, layernorm_forward};
use tinylm::reference::linear::{head_backward, head_forward, linear_backward, linear_forward};
use tinylm::reference::model::{self as reference, Weights};
use tinylm::reference::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use tinylm::reference::rope::{rope_backward, rope_forward};
use tinylm::reference::softmax::{softmax_backward, softmax_forward};
use tinylm::rng::Rng;
use tinylm::sample::{argmax, SamplingParams};
use tinylm::weights::{self, WeightsFormat};
use tinylm::{Config, Model, Workspace};

fn random(len: usize, scale: f64, rng: &mut Rng) -> Vec<f32> {
    (0..len)
        .map(|_| (rng.next_normal() * scale) as f32)
        .collect()
}

/// Checks an operation's backward pass against central differences of
/// L = sum_i r_i out_i (r random), for every element of every input.
/// `backward(inputs, dout, grads)` must add into `grads`, which start at 0.5 here, so an
/// overwrite instead of an addition fails too.
fn check_op(
    name: &str,
    inputs: Vec<Vec<f32>>,
    forward: impl Fn(&[Vec<f32>]) -> Vec<f32>,
    backward: impl Fn(&[Vec<f32>], &[f32], &mut [Vec<f32>]),
) {
    let mut rng = Rng::new(99);
    let out = forward(&inputs);
    let r = random(out.len(), 1.0, &mut rng);
    let objective = |inputs: &[Vec<f32>]| -> f64 {
        forward(inputs)
            .iter()
            .zip(&r)
            .map(|(&o, &ri)| o as f64 * ri as f64)
            .sum()
    };
    let mut grads: Vec<Vec<f32>> = inputs.iter().map(|x| vec![0.5; x.len()]).collect();
    backward(&inputs, &r, &mut grads);
    let h = 1e-2f32;
    for (which, input) in inputs.iter().enumerate() {
        for i in 0..input.len() {
            let mut plus = inputs.clone();
            plus[which][i] += h;
            let mut minus = inputs.clone();
            minus[which][i] -= h;
            let numeric = (objective(&plus) - objective(&minus)) / (2.0 * h as f64);
            let analytic = grads[which][i] as f64 - 0.5;
            let err = (numeric - analytic).abs() / (numeric.abs() + analytic.abs() + 1e-2);
            assert!(
                err < 5e-3,
                "{name}: input {which}[{i}]: analytic {analytic}, numeric {numeric}"
            );
        }
    }
}

#[test]
fn embedding_backward_matches_finite_differences() {
    let mut rng = Rng::new(1);
    let ids = [2u32, 0, 2, 3];
    check_op(
        "embedding",
        vec![random(4 * 3, 1.0, &mut rng)],
        |x| {
            let mut out = vec![0.0; ids.len() * 3];
            embedding_forward(&mut out, &ids, &x[0], 3);
            out
        },
        |_, dout, g| embedding_backward(&mut g[0], dout, &ids, 3),
    );
}

#[test]
fn linear_backward_matches_finite_differences() {
    let mut rng = Rng::new(2);
    let (n, i, o) = (3, 4, 5);
    check_op(
        "linear",
        vec![
            random(n * i, 1.0, &mut rng),
            random(i * o, 1.0, &mut rng),
            random(o, 1.0, &mut rng),
        ],
        |x| {
            let mut out = vec![0.0; n * o];
            linear_forward(&mut out, &x[0], &x[1], Some(&x[2]), i);
            out
        },
        |x, dout, g| {
            let [dx, dw, db] = g else { unreachable!() };
            linear_backward(dx, dw, Some(db), dout, &x[0], &x[1], i);
        },
    );
}

#[test]
fn head_backward_matches_finite_differences() {
    let mut rng = Rng::new(3);
    let (n, c, v) = (3, 4, 6);
    check_op(
        "head",
        vec![random(n * c, 1.0, &mut rng), random(v * c, 1.0, &mut rng)],
        |x| {
            let mut out = vec![0.0; n * v];
            head_forward(&mut out, &x[0], &x[1], c);
            out
        },
        |x, dout, g| {
            let [dx, dw] = g else { unreachable!() };
            head_backward(dx, dw, dout, &x[0], &x[1], c);
        },
    );
}

#[test]
fn layernorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(4);
    let (n, c) = (3, 5);
    check_op(
        "layernorm",
        vec![
            random(n * c, 1.0, &mut rng),
            random(c, 1.0, &mut rng),
            random(c, 1.0, &mut rng),
        ],
        |x| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x[0], &x[1], &x[2], c, 1e-5);
            out
        },
        |x, dout, g| {
            let (mut out, mut mean, mut rstd) = (vec![0.0; n * c], vec![0.0; n], vec![0.0; n]);
            layernorm_forward(&mut out, &mut mean, &mut rstd, &x[0], &x[1], &x[2], c, 1e-5);
            let [dx, dw, db] = g else { unreachable!() };
            layernorm_backward(dx, dw, db, dout, &x[0], &x[1], &mean, &rstd, c);
        },
    );
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let mut rng = Rng::new(5);
    let (n, c) = (3, 5);
    check_op(
        "rmsnorm",
        vec![random(n * c, 1.0, &mut rng), random(c, 1.0, &mut rng)],
        |x| {
            let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
            rmsnorm_forward(&mut out, &mut rstd, &x[0], &x[1], c, 1e-5);
            out
        },
        |x, dout, g| {
            let (mut out, mut rstd) = (vec![0.0; n * c], vec![0.0; n]);
            rmsnorm_forward(&mut out, &mut rstd, &x[0], &x[1], c, 1e-5);
            let [dx, dw] = g else { unreachable!() };
            rmsnorm_backward(dx, dw, dout, &x[0], &x[1], &rstd, c);
        },
    );
}

#[test]
fn softmax_backward_matches_finite_differences() {
    let mut rng = Rng::new(6);
    check_op(
        "softmax",
        vec![random(6, 2.0, &mut rng)],
        |x| {
            let mut p = vec![0.0; 6];
            softmax_forward(&mut p, &x[0]);
            p
        },
        |x, dout, g| {
            let mut p = vec![0.0; 6];
            softmax_forward(&mut p, &x[0]);
            softmax_backward(&mut g[0], dout, &p);
        },
    );
}

#[test]
fn softmax_returns_the_log_sum_exp_and_survives_large_inputs() {
    let x = [1000.0f32, 999.0, -1000.0];
    let mut p = [0.0f32; 3];
    let lse = softmax_forward(&mut p, &x);
    let want = 1000.0 + (1.0 + (-1.0f64).exp()).ln();
    assert!((lse as f64 - want).abs() < 1e-4, "{lse} vs {want}");
    assert!((p[0] as f64 - 1.0 / (1.0 + (-1.0f64).exp())).abs() < 1e-6);
    assert_eq!(p[2], 0.0);
}

#[test]
fn cross_entropy_backward_matches_finite_differences() {
    let mut rng = Rng::new(7);
    let (n, v) = (3, 5);
    let targets = [4u32, 0, 2];
    // The backward pass takes one dloss for every row, so the objective is the plain sum.
    let forward = |x: &[Vec<f32>]| {
        let (mut losses, mut probs) = (vec![0.0; n], vec![0.0; n * v]);
        cross_entropy_forward(&mut losses, &mut probs, &x[0], &targets, v);
        (losses, probs)
    };
    let logits = random(n * v, 2.0, &mut rng);
    let (losses, probs) = forward(std::slice::from_ref(&logits));
    let mut grads = vec![0.0; n * v];
    cross_entropy_backward(&mut grads, &probs, &targets, 1.0, v);
    let h = 1e-2;
    for i in 0..n * v {
        let mut plus = logits.clone();
        plus[i] += h;
        let mut minus = logits.clone();
        minus[i] -= h;
        let sum = |x: Vec<f32>| forward(&[x]).0.iter().map(|&l| l as f64).sum::<f64>();
        let numeric = (sum(plus) - sum(minus)) / (2.0 * h as f64);
        assert!(
            (numeric - grads[i] as f64).abs() < 1e-3,
            "{i}: {numeric} vs {}",
            grads[i]
        );
    }
    // loss = -log p[target], from the logits directly.
    for (row, &target) in targets.iter().enumerate() {
        let z = &logits[row * v..][..v];
        let lse = z.iter().map(|&x| (x as f64).exp()).sum::<f64>().ln();
        assert!((losses[row] as f64 - (lse - z[target as usize] as f64)).abs() < 1e-5);
    }
}

#[test]
fn attention_backward_matches_finite_differences_with_grouped_heads() {
    let mut rng = Rng::new(8);
    // Four query heads reading two key/value heads.
    let s = AttentionShape {
        b: 2,
        t: 4,
        h: 4,
        k: 2,
        d: 3,
    };
    let (n, c, kd) = (s.b * s.t, s.h * s.d, s.k * s.d);
    let forward = move |x: &[Vec<f32>]| {
        let (mut out, mut att) = (vec![0.0; n * c], vec![0.0; s.b * s.h * s.t * s.t]);
        attention_forward(&mut out, &mut att, &x[0], &x[1], &x[2], None, s);
        (out, att)
    };
    check_op(
        "attention",
        vec![
            random(n * c, 1.0, &mut rng),
            random(n * kd, 1.0, &mut rng),
            random(n * kd, 1.0, &mut rng),
        ],
        |x| forward(x).0,
        |x, dout, g| {
            let att = forward(x).1;
            let [dq, dk, dv] = g else { unreachable!() };
            attention_backward(dq, dk, dv, dout, &x[0], &x[1], &x[2], &att, None, s);
        },
    );
}

#[test]
fn attention_is_causal_and_its_rows_sum_to_one() {
    let mut rng = Rng::new(9);
    let s = AttentionShape {
        b: 1,
        t: 5,
        h: 2,
        k: 1,
        d: 2,
    };
    let (q, k, v) = (
        random(20, 1.0, &mut rng),
        random(10, 1.0, &mut rng),
        random(10, 1.0, &mut rng),
    );
    let (mut out, mut att) = (vec![0.0; 20], vec![0.0; 2 * 25]);
    attention_forward(&mut out, &mut att, &q, &k, &v, None, s);
    for row in att.chunks_exact(5).enumerate() {
        let (i, p) = row;
        let t = i % 5;
        assert!(
            p[t + 1..].iter().all(|&x| x == 0.0),
            "row {t} sees the future"
        );
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
    // Position 0 can only copy its own value.
    assert_eq!(&out[..2], &v[..2]);
}

#[test]
fn rope_backward_matches_finite_differences() {
    let mut rng = Rng::new(10);
    let (t, heads, d) = (3, 2, 4);
    check_op(
        "rope",
        vec![random(2 * t * heads * d, 1.0, &mut rng)],
        |x| {
            let mut out = vec![0.0; x[0].len()];
            rope_forward(&mut out, &x[0], t, heads, d, 100.0);
            out
        },
        |_, dout, g| rope_backward(&mut g[0], dout, t, heads, d, 100.0),
    );
}

#[test]
fn rope_scores_depend_only_on_the_distance() {
    // A query and a key repeated at every position: q_t . k_s depends on t - s only.
    let (t, d) = (6, 4);
    let q: Vec<f32> = [0.3f32, -1.0, 0.7, 0.2].repeat(t);
    let k: Vec<f32> = [1.1f32, 0.4, -0.5, 0.9].repeat(t);
    let (mut qr, mut kr) = (vec![0.0; t * d], vec![0.0; t * d]);
    rope_forward(&mut qr, &q, t, 1, d, 10000.0);
    rope_forward(&mut kr, &k, t, 1, d, 10000.0);
    let score = |a: usize, b: usize| -> f32 {
        qr[a * d..][..d]
            .iter()
            .zip(&kr[b * d..][..d])
            .map(|(x, y)| x * y)
            .sum()
    };
    assert!((score(3, 1) - score(5, 3)).abs() < 1e-5);
    assert!((score(2, 2) - score(0, 0)).abs() < 1e-5);
    // Position 0 is not rotated.
    assert_eq!(&qr[..d], &q[..d]);
}

#[test]
fn every_activation_backward_matches_finite_differences() {
    let mut rng = Rng::new(11);
    for &act in Activation::ALL {
        // Away from relu's kink at 0, where the difference quotient straddles it.
        let away = |v: Vec<f32>| -> Vec<f32> {
            v.into_iter()
                .map(|x| if x.abs() < 0.05 { x + 0.1 } else { x })
                .collect()
        };
        let (gate, up) = (
            away(random(12, 1.5, &mut rng)),
            away(random(12, 1.5, &mut rng)),
        );
        check_op(
            act.name(),
            vec![gate, up],
            move |x| {
                let gate: &[f32] = if act.is_gated() { &x[0] } else { &[] };
                let mut out = vec![0.0; 12];
                activation_forward(act, &mut out, gate, &x[1]);
                out
            },
            move |x, dout, g| {
                let gate: &[f32] = if act.is_gated() { &x[0] } else { &[] };
                let [dgate, dup] = g else { unreachable!() };
                let mut no_gate: Vec<f32> = Vec::new();
                let dgate = if act.is_gated() {
                    dgate.as_mut_slice()
                } else {
                    no_gate.as_mut_slice()
                };
                activation_backward(act, dgate, dup, dout, gate, &x[1]);
            },
        );
    }
}

#[test]
fn activations_have_their_textbook_values() {
    let at = |act: Activation, x: f32| {
        let mut out = [0.0f32];
        let gate = [x];
        if act.is_gated() {
            activation_forward(act, &mut out, &gate, &[2.0]);
        } else {
            activation_forward(act, &mut out, &[], &[x]);
        }
        out[0] as f64
    };
    let x = 0.8f64;
    let sigmoid = 1.0 / (1.0 + (-x).exp());
    // Phi(0.8) from tables: 0.788144601.
    let phi = 0.788_144_601_416_603_4;
    let cases = [
        (Activation::Relu, -0.8, 0.0),
        (Activation::Relu, x, x),
        (Activation::Relu2, x, x * x),
        (Activation::Silu, x, x * sigmoid),
        (Activation::Gelu, x, x * phi),
        (
            Activation::GeluTanh,
            x,
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh()),
        ),
        (Activation::SwiGlu, x, x * sigmoid * 2.0),
        (Activation::GeGlu, x, x * phi * 2.0),
    ];
    for (act, input, want) in cases {
        let got = at(act, input as f32);
        assert!(
            (got - want).abs() < 1e-6,
            "{act}({input}) = {got}, want {want}"
        );
    }
    // erf against known values (Abramowitz and Stegun, table 7.1), on both branches.
    for (x, want) in [
        (0.5, 0.520_499_877_813_046_5),
        (2.0, 0.995_322_265_018_952_7),
        (3.5, 0.999_999_256_901_627_7),
    ] {
        assert!((erf(x) - want).abs() < 1e-12, "erf({x}) = {}", erf(x));
        assert!((erf(-x) + want).abs() < 1e-12);
    }
}

/// A tiny model's config with the given options (small sizes keep the test fast).
fn tiny(
    activation: Activation,
    norm: Norm,
    position: Position,
    biases: bool,
    n_kv_heads: Option<usize>,
) -> Config {
    Config {
        vocab_size: 5,
        d_model: 8,
        n_layers: 2,
        n_heads: 2,
        d_ff: 6,
        max_seq_len: 4,
        eps: 1e-5,
        attn_bias: biases,
        tie_embeddings: biases,
        activation,
        norm,
        mlp_bias: biases,
        position,
        rope_theta: 100.0,
        n_kv_heads,
        dropout: 0.0,
    }
}

/// Every parameter random (norm weights near 1), so no term hides behind a zero.
fn random_params(layout: &ParamLayout, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let mut params = random(layout.total, 0.5, &mut rng);
    for spec in layout
        .specs
        .iter()
        .filter(|s| s.name.contains("norm") || s.name.starts_with("ln_f"))
    {
        if spec.name.ends_with(".weight") {
            for p in &mut params[spec.range()] {
                *p += 1.0;
            }
        }
    }
    params
}

/// Which inputs of the activations are positive: where relu's kink is.
fn relu_signs(acts: &reference::Activations) -> Vec<bool> {
    acts.blocks
        .iter()
        .flat_map(|blk| blk.up.iter().map(|&u| u > 0.0))
        .collect()
}

#[test]
fn reference_gradients_match_finite_differences_for_every_option() {
    let (b, t) = (2, 4);
    let ids = [1, 4, 2, 0, 0, 3, 3, 2];
    let targets = [4, 2, 0, 3, 3, 3, 2, 1];
    let (mut combinations, mut checked, mut skipped) = (0, 0, 0);
    let mut worst = 0.0f64;
    let mut worst_at = String::new();
    for &activation in Activation::ALL {
        for &norm in Norm::ALL {
            for &position in Position::ALL {
                for (biases, n_kv_heads) in [(true, None), (false, Some(1))] {
                    {
                        let config = tiny(activation, norm, position, biases, n_kv_heads);
                        config.validate().unwrap();
                        let layout = ParamLayout::new(&config);
                        let params = random_params(&layout, combinations);
                        let w = Weights {
                            config: &config,
                            layout: &layout,
                            params: &params,
                        };
                        let mut acts = reference::forward(w, &ids, b, t);
                        reference::loss(&mut acts, &targets);
                        let mut grads = vec![0.0f32; layout.total];
                        reference::backward(w, &acts, 1.0 / (b * t) as f32, &mut grads);
                        for spec in &layout.specs {
                            for i in spec.range() {
                                let mut shifted = params.clone();
                                let mut loss_at = |x: f32| {
                                    shifted[i] = x;
                                    let w = Weights {
                                        params: &shifted,
                                        ..w
                                    };
                                    let mut acts = reference::forward(w, &ids, b, t);
                                    let loss =
                                        reference::loss(&mut acts, &targets) / (b * t) as f64;
                                    (loss, relu_signs(&acts))
                                };
                                // Richardson's extrapolation of two central differences (h and
                                // h / 2): the h^2 error terms cancel, leaving float32 rounding.
                                // Where the loss curves sharply, a smaller h is tried too.
                                let mut straddles = false;
                                let mut richardson = |h: f32| {
                                    let mut difference = |h: f32| {
                                        let (plus, minus) =
                                            (loss_at(params[i] + h), loss_at(params[i] - h));
                                        straddles |= plus.1 != minus.1;
                                        (plus.0 - minus.0) / (2.0 * h as f64)
                                    };
                                    (4.0 * difference(h / 2.0) - difference(h)) / 3.0
                                };
                                let analytic = grads[i] as f64;
                                let rel = |numeric: f64| {
                                    (numeric - analytic).abs()
                                        / (numeric.abs() + analytic.abs() + 1e-2)
                                };
                                let mut numeric = richardson(1e-2);
                                if rel(numeric) >= 1e-2 {
                                    let smaller = richardson(2e-3);
                                    if rel(smaller) < rel(numeric) {
                                        numeric = smaller;
                                    }
                                }
                                if straddles
                                    && matches!(activation, Activation::Relu | Activation::Relu2)
                                {
                                    // Across relu's kink a difference quotient says nothing, and
                                    // across relu2's (where its second derivative jumps) too little.
                                    skipped += 1;
                                    continue;
                                }
                                let err = rel(numeric);
                                if err > worst {
                                    worst = err;
                                    worst_at = format!(
                                        "{} {}[{}]: analytic {analytic}, numeric {numeric}",
                                        config.activation,
                                        spec.name,
                                        i - spec.offset
                                    );
                                }
                                checked += 1;
                                assert!(
                                    err < 1e-2,
                                    "{config:?}\n{} [{}]: analytic {analytic}, numeric {numeric}",
                                    spec.name,
                                    i - spec.offset
                                );
                            }
                        }
                        combinations += 1;
                    }
                }
            }
        }
    }
    eprintln!(
        "{combinations} option combinations, {checked} gradients, worst relative error {worst:e} ({worst_at}); \
         {skipped} skipped where a relu or relu2 input crossed 0"
    );
    assert!(
        skipped * 50 < checked,
        "too many gradients skipped: {skipped}"
    );
}

fn weights(model: &Model) -> Weights<'_> {
    Weights {
        config: &model.config,
        layout: &model.layout,
        params: model.params(),
    }
}

/// A GPT-2 style model wide enough for the fast path's tiled kernels and products.
fn wide_config() -> Config {
    Config {
        vocab_size: 65,
        d_model: 64,
        n_layers: 2,
        n_heads: 4,
        d_ff: 256,
        max_seq_len: 32,
        ..Config::default()
    }
}

/// Largest |a - b| over the largest |b| (at least 1e-3: the gradient of the key bias is
/// zero but for rounding, since softmax ignores a shift of all scores of a row).
fn scaled_difference(a: &[f32], b: &[f32]) -> f64 {
    let scale = b.iter().fold(1e-3f64, |m, &x| m.max(x.abs() as f64));
    a.iter()
        .zip(b)
        .fold(0.0f64, |m, (&x, &y)| m.max((x as f64 - y as f64).abs()))
        / scale
}

/// The fast path (Model::forward, the batch runner's loss_and_grads) against the reference
/// on one model: logits, loss and every parameter's gradient.
fn check_fast_against_reference(model: &Model, b: usize, t: usize) -> (f64, f64, f64) {
    let v = model.config.vocab_size as u32;
    let ids: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7 + 3) % v).collect();
    let targets: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 11 + 1) % v).collect();
    let mut ws = Workspace::new();
    model.forward(&mut ws, &ids, b, t).unwrap();
    let mut acts = reference::forward(weights(model), &ids, b, t);
    let logits = scaled_difference(ws.logits(&model.config), &acts.logits);
    let want_loss = reference::loss(&mut acts, &targets) / (b * t) as f64;
    let mut want = vec![0.0f32; model.layout.total];
    reference::backward(weights(model), &acts, 1.0 / (b * t) as f32, &mut want);
    let mut got = vec![0.0f32; model.layout.total];
    let loss = BatchRunner::new()
        .loss_and_grads(model, &ids, &targets, b, t, &mut got)
        .unwrap();
    let loss = (loss as f64 - want_loss).abs() / want_loss;
    let mut grads = 0.0f64;
    for spec in &model.layout.specs {
        let d = scaled_difference(&got[spec.range()], &want[spec.range()]);
        assert!(
            d < 1e-4,
            "{}: fast and reference gradients differ by {d:e} of its scale",
            spec.name
        );
        grads = grads.max(d);
    }
    (logits, loss, grads)
}

#[test]
fn fast_path_matches_the_reference_for_gpt2_blocks() {
    let mut wide = random_model(wide_config(), 4);
    for p in wide.params_mut() {
        *p *= 0.2; // activations in a realistic range for a model this wide
    }
    let models = [
        (random_model(small_config(true, true), 1), 3, 5),
        (random_model(small_config(false, false), 2), 2, 4),
        (wide, 3, 32),
    ];
    for (model, b, t) in &models {
        let (logits, loss, grads) = check_fast_against_reference(model, *b, *t);
        eprintln!(
            "C = {}: logits {logits:e}, loss {loss:e}, gradients {grads:e}",
            model.config.d_model
        );
        // float32 sums in another order, and the fast path's own exp and tanh.
        assert!(logits < 1e-5, "logits differ by {logits:e} of their scale");
        assert!(loss < 1e-6, "losses differ by {loss:e}");
    }
}

#[test]
fn fast_greedy_generation_follows_the_reference_logits() {
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
    let (mut seq, v, p) = (
        prompt.to_vec(),
        model.config.vocab_size,
        model.config.max_seq_len,
    );
    for &tok in &generated {
        let window = &seq[seq.len().saturating_sub(p)..];
        let acts = reference::forward(weights(&model), window, 1, window.len());
        assert_eq!(argmax(&acts.logits[(window.len() - 1) * v..]) as u32, tok);
        seq.push(tok);
    }
}

/// Llama's block: RMSNorm, RoPE, SwiGLU, no biases, untied head (with two key/value heads).
fn llama_config() -> Config {
    Config {
        vocab_size: 11,
        d_model: 16,
        n_layers: 2,
        n_heads: 4,
        d_ff: 24,
        max_seq_len: 6,
        attn_bias: false,
        tie_embeddings: false,
        activation: Activation::SwiGlu,
        norm: Norm::RmsNorm,
        mlp_bias: false,
        position: Position::Rope,
        n_kv_heads: Some(2),
        ..Config::default()
    }
}

#[test]
fn the_reference_backend_trains_a_llama_block() {
    let mut model = Model::new_on(llama_config(), 3, Backend::Reference).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout).unwrap();
    let ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2];
    let targets = [2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3];
    let mut runner = BatchRunner::new();
    let mut losses = Vec::new();
    for _ in 0..60 {
        let (loss, _) = runner
            .train_step(
                &mut model,
                &mut opt,
                &ids,
                &targets,
                2,
                6,
                1,
                1e-2,
                Some(1.0),
            )
            .unwrap();
        losses.push(loss);
    }
    assert!(
        losses[59] < 0.2 * losses[0],
        "loss went from {} to {}",
        losses[0],
        losses[59]
    );
}

#[test]
fn the_reference_backend_gives_the_reference_loss_and_gradients() {
    let model = Model::new_on(llama_config(), 4, Backend::Reference).unwrap();
    let (b, t) = (3, 5); // shards of 1 and 2 sequences
    let ids: Vec<u32> = (0..15).map(|i| (i * 7 % 11) as u32).collect();
    let targets: Vec<u32> = (0..15).map(|i| (i * 3 % 11) as u32).collect();
    let mut acts = reference::forward(model.weights(), &ids, b, t);
    let want_loss = reference::loss(&mut acts, &targets) / 15.0;
    let mut want = vec![0.0f32; model.layout.total];
    reference::backward(model.weights(), &acts, 1.0 / 15.0, &mut want);
    let mut got = vec![1.0f32; model.layout.total];
    let loss = BatchRunner::new()
        .loss_and_grads(&model, &ids, &targets, b, t, &mut got)
        .unwrap();
    assert!((loss as f64 - want_loss).abs() < 1e-6);
    assert!(scaled_difference(&got, &want) < 1e-6);
}

#[test]
fn reference_greedy_generation_follows_the_argmax_past_the_context() {
    let model = Model::new_on(llama_config(), 5, Backend::Reference).unwrap();
    let mut model = model;
    for p in model.params_mut() {
        *p *= 20.0; // peaked logits: no ties in the argmax
    }
    let prompt = [3u32, 1, 4];
    let opts = GenerateOptions {
        max_new_tokens: 8, // runs past the context of 6
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Window::Sliding,
    };
    let generated = generate(&Decoder::new(&model), &prompt, &opts).unwrap();
    assert_eq!(generated.len(), 8);
    let (mut seq, v, p) = (
        prompt.to_vec(),
        model.config.vocab_size,
        model.config.max_seq_len,
    );
    for &tok in &generated {
        let window = &seq[seq.len().saturating_sub(p)..];
        let acts = reference::forward(model.weights(), window, 1, window.len());
        assert_eq!(argmax(&acts.logits[(window.len() - 1) * v..]) as u32, tok);
        seq.push(tok);
    }
}

#[test]
fn options_survive_a_safetensors_round_trip_on_both_backends() {
    let dir = common::temp_dir("reference-options");
    let path = dir.join("llama.safetensors");
    let model = Model::new_on(llama_config(), 6, Backend::Reference).unwrap();
    weights::save(&path, &model, None, WeightsFormat::Safetensors).unwrap();
    let loaded = weights::load_on(&path, Backend::Reference).unwrap().model;
    assert_eq!(loaded.config, model.config);
    assert_eq!(loaded.params(), model.params());
    let fast = weights::load(&path).unwrap().model;
    assert_eq!(fast.backend(), Backend::Fast);
    assert_eq!(fast.config, model.config);
    assert_eq!(fast.params(), model.params());
    let err = weights::save(&dir.join("go.json"), &model, None, WeightsFormat::GoJson).unwrap_err();
    assert!(err.to_string().contains("activation = swiglu"), "{err}");
}

#[test]
fn a_fast_model_moves_to_the_reference_backend_and_back() {
    let model = random_model(small_config(true, true), 8);
    let on_reference = model.clone().on_backend(Backend::Reference).unwrap();
    let (mut fast_ws, mut ref_ws) = (Workspace::new(), Workspace::new());
    model.forward(&mut fast_ws, &[1, 2, 3], 1, 3).unwrap();
    on_reference.forward(&mut ref_ws, &[1, 2, 3], 1, 3).unwrap();
    let d = scaled_difference(fast_ws.logits(&model.config), ref_ws.logits(&model.config));
    assert!(d < 1e-5, "{d:e}");
    let llama = Model::new_on(llama_config(), 0, Backend::Reference).unwrap();
    let on_fast = llama.clone().on_backend(Backend::Fast).unwrap();
    let (mut fast_ws, mut ref_ws) = (Workspace::new(), Workspace::new());
    on_fast.forward(&mut fast_ws, &[1, 2, 3], 1, 3).unwrap();
    llama.forward(&mut ref_ws, &[1, 2, 3], 1, 3).unwrap();
    let d = scaled_difference(fast_ws.logits(&llama.config), ref_ws.logits(&llama.config));
    assert!(d < 1e-5, "{d:e}");
    assert!(Backend::from_name("gpu")
        .unwrap_err()
        .to_string()
        .contains("unknown backend \"gpu\""));
}

/// Every combination of the block options: activation, norm, position, biases (attention
/// and feed-forward together, the head tied with them) and key/value heads K (H, H / 2, 1).
fn every_option(base: &Config) -> Vec<Config> {
    let mut configs = Vec::new();
    for &activation in Activation::ALL {
        for &norm in Norm::ALL {
            for &position in Position::ALL {
                for biases in [true, false] {
                    for kv in [base.n_heads, base.n_heads / 2, 1] {
                        configs.push(Config {
                            activation,
                            norm,
                            position,
                            attn_bias: biases,
                            mlp_bias: biases,
                            tie_embeddings: biases,
                            n_kv_heads: Some(kv),
                            rope_theta: 100.0,
                            ..base.clone()
                        });
                    }
                }
            }
        }
    }
    configs
}

fn describe(c: &Config) -> String {
    format!(
        "{}, {}, {}, biases {}, K = {}, C = {}",
        c.activation,
        c.norm,
        c.position,
        c.mlp_bias,
        c.kv_heads(),
        c.d_model
    )
}

#[test]
fn fast_path_matches_the_reference_for_every_option_combination() {
    // Small (head size 2) and wide enough for the tiled kernels (head size 16, 32 positions).
    let small = Config {
        vocab_size: 7,
        d_model: 8,
        n_heads: 4,
        d_ff: 10,
        max_seq_len: 5,
        ..small_config(true, true)
    };
    let (mut worst_logits, mut worst_grads) = (0.0f64, 0.0f64);
    let mut count = 0;
    // (One layer for the wide one keeps the test fast; the small one has two.)
    let wide = Config {
        n_layers: 1,
        ..wide_config()
    };
    for (base, b, t, scale) in [(small, 3, 5, 1.0), (wide, 2, 32, 0.2)] {
        for config in every_option(&base) {
            let mut model = random_model(config, 4);
            for p in model.params_mut() {
                *p *= scale; // activations in a realistic range for the wide model
            }
            let (logits, loss, grads) = check_fast_against_reference(&model, b, t);
            let what = describe(&model.config);
            assert!(
                logits < 1e-5,
                "{what}: logits differ by {logits:e} of their scale"
            );
            assert!(loss < 1e-6, "{what}: losses differ by {loss:e}");
            worst_logits = worst_logits.max(logits);
            worst_grads = worst_grads.max(grads);
            count += 1;
        }
    }
    eprintln!(
        "{count} models: logits within {worst_logits:e}, gradients within {worst_grads:e} of their scale"
    );
}

/// Greedy generation (the key/value cache, one sequence) equals the argmax of the
/// reference's logits over what the window rule lets the model see, step by step.
fn check_greedy_follows_the_reference(model: &Model, prompt: &[u32], opts: &GenerateOptions) {
    let generated = generate(&Decoder::new(model), prompt, opts).unwrap();
    assert_eq!(generated.len(), opts.max_new_tokens);
    let (v, p) = (model.config.vocab_size, model.config.max_seq_len);
    // The tokens the model sees: the last P under the sliding rule; under the shift rule
    // the cache refills from the last P / 2 when it is full.
    let mut window = prompt[prompt.len().saturating_sub(p)..].to_vec();
    for &tok in &generated {
        let acts = reference::forward(weights(model), &window, 1, window.len());
        assert_eq!(
            argmax(&acts.logits[(window.len() - 1) * v..]) as u32,
            tok,
            "{} ({:?})",
            describe(&model.config),
            opts.window
        );
        window.push(tok);
        if window.len() > p {
            let keep = match opts.window {
                Window::Sliding => p,
                Window::Shift => (p / 2).max(1),
            };
            window.drain(..window.len() - keep);
        }
    }
}

#[test]
fn fast_generation_follows_the_reference_for_every_option_combination() {
    // C = 128 and more: generation runs in two lanes (key/value heads and d_ff split in
    // halves; with K = 1 the second lane has no heads).
    let base = Config {
        d_model: 128,
        n_heads: 4,
        d_ff: 200,
        max_seq_len: 8,
        ..wide_config()
    };
    for (i, config) in every_option(&base).into_iter().enumerate() {
        let mut model = random_model(config, 9);
        for p in model.params_mut() {
            *p *= 0.3;
        }
        // Every model under the shift rule (the default), every third under the sliding one.
        let windows = if i % 3 == 0 {
            &[Window::Shift, Window::Sliding][..]
        } else {
            &[Window::Shift][..]
        };
        for &window in windows {
            let opts = GenerateOptions {
                max_new_tokens: 10, // past the context of 8
                sampling: SamplingParams::default(),
                seed: 0,
                stop: vec![],
                window,
            };
            let prompt = [5u32, 17, 40 + i as u32 % 20];
            check_greedy_follows_the_reference(&model, &prompt, &opts);
        }
    }
}

#[test]
fn the_reference_backend_follows_the_shift_window_as_the_cache_does() {
    // Past the context the fast path keeps the last P/2 tokens and rebuilds its cache; the
    // reference backend, which has no cache, must see the same tokens.
    let fast = random_model(
        Config {
            max_seq_len: 4,
            ..small_config(true, false)
        },
        21,
    );
    let on_reference = fast.clone().on_backend(Backend::Reference).unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Window::Shift,
    };
    let prompt = [1u32, 5, 2];
    assert_eq!(
        generate(&Decoder::new(&fast), &prompt, &opts).unwrap(),
        generate(&Decoder::new(&on_reference), &prompt, &opts).unwrap()
    );
}

/// A search told to stop before its fourth step ends as a search of three new tokens does.
#[test]
fn a_beam_search_stopped_between_steps_ends_there() {
    let model = Model::new(llama_config(), 2).unwrap();
    let opts = |max_new_tokens| BeamOptions {
        num_beams: 3,
        max_new_tokens,
        length_penalty: 1.0,
        early_stopping: EarlyStopping::False,
        no_repeat_ngram_size: 0,
        num_return_sequences: 3,
        stop: vec![],
    };
    let decoder = Decoder::new(&model);
    let mut asked = 0;
    let mut keep_going = || {
        asked += 1;
        asked <= 3
    };
    let stopped = beam_search_until(&decoder, &[1, 2], &opts(50), &mut keep_going).unwrap();
    let short = beam_search(&decoder, &[1, 2], &opts(3)).unwrap();
    let view = |hs: &[tinylm::beam::Hypothesis]| -> Vec<(Vec<u32>, u64)> {
        hs.iter()
            .map(|h| (h.tokens.clone(), h.logprob.to_bits()))
            .collect()
    };
    assert_eq!(view(&stopped), view(&short));
    assert!(stopped.iter().all(|h| h.tokens.len() == 3));
}

#[test]
fn beam_search_of_width_one_on_a_llama_model_is_greedy() {
    let mut model = Model::new(llama_config(), 1).unwrap();
    for p in model.params_mut() {
        *p *= 20.0; // peaked logits: no ties
    }
    let opts = BeamOptions {
        num_beams: 1,
        max_new_tokens: 9, // past the context of 6
        length_penalty: 1.0,
        early_stopping: EarlyStopping::False,
        no_repeat_ngram_size: 0,
        num_return_sequences: 1,
        stop: vec![],
    };
    let decoder = Decoder::new(&model);
    let beams = beam_search(&decoder, &[1, 2], &opts).unwrap();
    let greedy = GenerateOptions {
        max_new_tokens: 9,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Window::Shift,
    };
    check_greedy_follows_the_reference(&model, &[1, 2], &greedy);
    assert_eq!(
        beams[0].tokens,
        generate(&decoder, &[1, 2], &greedy).unwrap()
    );
}

#[test]
fn fast_llama_training_follows_the_reference_backend_step_by_step() {
    let fast = Model::new(llama_config(), 3).unwrap();
    let mut on_reference = fast.clone().on_backend(Backend::Reference).unwrap();
    let mut fast = fast;
    let (mut opt_f, mut opt_r) = (
        AdamW::new(AdamWConfig::default(), &fast.layout).unwrap(),
        AdamW::new(AdamWConfig::default(), &fast.layout).unwrap(),
    );
    let ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2];
    let targets = [2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3];
    let (mut runner_f, mut runner_r) = (BatchRunner::new(), BatchRunner::new());
    for step in 0..30 {
        let (lf, _) = runner_f
            .train_step(
                &mut fast,
                &mut opt_f,
                &ids,
                &targets,
                2,
                6,
                1,
                1e-2,
                Some(1.0),
            )
            .unwrap();
        let (lr, _) = runner_r
            .train_step(
                &mut on_reference,
                &mut opt_r,
                &ids,
                &targets,
                2,
                6,
                1,
                1e-2,
                Some(1.0),
            )
            .unwrap();
        assert!(
            (lf - lr).abs() < 1e-4 * lr.max(1.0),
            "step {step}: {lf} vs {lr}"
        );
    }
}

#[test]
fn a_fast_llama_checkpoint_resumes_exactly_where_it_stopped() {
    let dir = common::temp_dir("fast-llama-resume");
    let path = dir.join("ckpt.safetensors");
    let ids = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2];
    let targets = [2, 3, 4, 5, 6, 7, 8, 9, 10, 1, 2, 3];
    let steps = |model: &mut Model, opt: &mut AdamW, n: usize| -> Vec<f32> {
        let mut runner = BatchRunner::new();
        (0..n)
            .map(|_| {
                runner
                    .train_step(model, opt, &ids, &targets, 2, 6, 1, 1e-2, Some(1.0))
                    .unwrap()
                    .0
            })
            .collect()
    };
    let mut straight = Model::new(llama_config(), 7).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &straight.layout).unwrap();
    let want = steps(&mut straight, &mut opt, 6);
    let mut first = Model::new(llama_config(), 7).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), &first.layout).unwrap();
    let mut got = steps(&mut first, &mut opt, 3);
    tinylm::weights::checkpoint::save_checkpoint(&path, &first, None, &opt, &Default::default())
        .unwrap();
    let (loaded, mut opt, _) = tinylm::weights::checkpoint::load_checkpoint(&path).unwrap();
    let mut resumed = loaded.model;
    assert_eq!(resumed.backend(), Backend::Fast);
    assert_eq!(resumed.config, llama_config());
    got.extend(steps(&mut resumed, &mut opt, 3));
    assert_eq!(got, want);
    assert_eq!(resumed.params(), straight.params());
}

#[test]
fn every_source_a_trace_names_is_a_function_of_its_file() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for source in tinylm::reference::trace::SOURCES {
        let text = std::fs::read_to_string(root.join(source.file)).unwrap();
        assert!(
            text.contains(&format!("fn {}(", source.function)),
            "{} has no function {}",
            source.file,
            source.function
        );
    }
}

#[test]
fn a_trace_holds_the_forward_pass_and_its_scores_give_its_probabilities() {
    let model = random_model(small_config(true, false), 4);
    let (b, t) = (2, 4);
    let ids = [1, 0, 6, 2, 3, 3, 5, 1];
    let acts = reference::forward(model.weights(), &ids, b, t);
    let traced = tinylm::reference::trace::trace(model.weights(), &ids, b, t);
    let get = |name: &str| {
        let found = traced.iter().find(|a| a.name == name);
        &found.unwrap_or_else(|| panic!("no {name}")).data
    };
    assert_eq!(get("logits"), &acts.logits);
    assert_eq!(get("blocks.1.att"), &acts.blocks[1].att);
    assert_eq!(get("blocks.0.x_mid"), &acts.blocks[0].x_mid);
    // softmax of each score row over s <= t is the probability row.
    let (scores, att) = (get("blocks.1.att_scores"), get("blocks.1.att"));
    for (i, (s, p)) in scores.chunks_exact(t).zip(att.chunks_exact(t)).enumerate() {
        let row = i % t;
        let mut expected = vec![0.0; row + 1];
        softmax_forward(&mut expected, &s[..=row]);
        assert_eq!(&p[..=row], &expected[..]);
        assert!(p[row + 1..].iter().all(|&x| x == 0.0));
    }
    // Every activation's shape holds its data.
    for a in &traced {
        assert_eq!(
            a.shape.iter().product::<usize>(),
            a.data.len(),
            "{}",
            a.name
        );
    }
}
