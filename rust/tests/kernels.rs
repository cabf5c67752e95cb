//! Each kernel against a plain float64 reference, and each backward against central
//! finite differences of its own forward (computed in float64 from the reference).

mod common;

use tinylm::kernels::attention::{attention_backward, attention_forward, Heads};
use tinylm::kernels::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use tinylm::kernels::gelu::{gelu_backward, gelu_forward};
use tinylm::kernels::layernorm::{layernorm_backward, layernorm_forward};
use tinylm::kernels::matmul::{
    linear_backward, linear_forward, matmul, matmul_in, MatMut, MatRef, Pieces,
};
use tinylm::kernels::vecmath;
use tinylm::rng::Rng;

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| rng.next_normal() as f32).collect()
}

fn assert_close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1e-3f64, |m, w| m.max(w.abs()));
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            ((*g as f64) - w).abs() <= tol * scale,
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn matmul_with_transposed_views_matches_naive() {
    let (m, k, n) = (37, 19, 23);
    let a = randn(m * k, 1);
    let b = randn(k * n, 2);
    let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // (K, M)
    let mut want = vec![0.0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            want[i * n + j] = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
        }
    }
    let mut out = vec![0.0f32; m * n];
    matmul(
        MatMut::new(&mut out, m, n),
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        false,
    );
    assert_close(&out, &want, 1e-5, "a @ b");
    out.fill(0.0);
    matmul(
        MatMut::new(&mut out, m, n),
        MatRef::new(&at, k, m).t(),
        MatRef::new(&b, k, n),
        false,
    );
    assert_close(&out, &want, 1e-5, "(a^T)^T @ b");
    // Accumulate adds to what is there.
    matmul(
        MatMut::new(&mut out, m, n),
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        true,
    );
    let doubled: Vec<f64> = want.iter().map(|w| 2.0 * w).collect();
    assert_close(&out, &doubled, 1e-5, "accumulate");
}

#[test]
fn big_matmul_matches_naive() {
    // Big enough to run on several threads inside gemm.
    let (m, k, n) = (300, 130, 257);
    let a = randn(m * k, 3);
    let b = randn(k * n, 4);
    let mut out = vec![0.0f32; m * n];
    matmul(
        MatMut::new(&mut out, m, n),
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        false,
    );
    for &(i, j) in &[(0, 0), (299, 256), (150, 3), (17, 200)] {
        let want: f64 = (0..k)
            .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
            .sum();
        assert!((out[i * n + j] as f64 - want).abs() < 1e-3, "({i},{j})");
    }
}

#[test]
fn whole_products_match_naive_too() {
    let (m, k, n) = (300, 40, 70);
    let (a, b) = (randn(m * k, 7), randn(k * n, 8));
    let mut out = vec![0.0f32; m * n];
    matmul_in(
        Pieces::Whole,
        MatMut::new(&mut out, m, n),
        MatRef::new(&a, m, k),
        MatRef::new(&b, k, n),
        false,
    );
    let want: Vec<f64> = (0..m * n)
        .map(|idx| {
            (0..k)
                .map(|p| a[idx / n * k + p] as f64 * b[p * n + idx % n] as f64)
                .sum()
        })
        .collect();
    assert_close(&out, &want, 1e-5, "whole 300x40x70");
}

#[test]
fn products_cut_into_pieces_match_naive_for_every_layout() {
    // Tall outputs are cut along rows, wide ones along columns; each big enough for 8 pieces.
    for (m, k, n) in [(300, 40, 70), (50, 60, 400)] {
        let a = randn(m * k, 5);
        let b = randn(k * n, 6);
        let want: Vec<f64> = (0..m * n)
            .map(|idx| {
                let (i, j) = (idx / n, idx % n);
                (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum()
            })
            .collect();
        let transpose = |x: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..rows * cols)
                .map(|i| x[(i % rows) * cols + i / rows])
                .collect()
        };
        let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
        for (a_t, b_t, out_t) in (0..8).map(|i| (i & 1 != 0, i & 2 != 0, i & 4 != 0)) {
            let a_view = if a_t {
                MatRef::new(&at, k, m).t()
            } else {
                MatRef::new(&a, m, k)
            };
            let b_view = if b_t {
                MatRef::new(&bt, n, k).t()
            } else {
                MatRef::new(&b, k, n)
            };
            let what = format!("{m}x{k}x{n}, a^T {a_t}, b^T {b_t}, out^T {out_t}");
            // Accumulating onto ones: out = 1 + a b.
            let mut out = vec![1.0f32; m * n];
            let out_view = if out_t {
                MatMut::strided(&mut out, m, n, 1, m)
            } else {
                MatMut::new(&mut out, m, n)
            };
            matmul(out_view, a_view, b_view, true);
            let got: Vec<f32> = if out_t { transpose(&out, n, m) } else { out };
            let plus_one: Vec<f64> = want.iter().map(|w| w + 1.0).collect();
            assert_close(&got, &plus_one, 1e-5, &what);
        }
    }
}

/// A scalar function of the kernel's input, for finite differences in float32 with a
/// generous step; each kernel is smooth, so a 1e-2 relative error budget is ample.
fn check_fd(x: &mut [f32], analytic: &[f32], f: impl FnMut(&[f32]) -> f64, what: &str) {
    check_fd_every(1, x, analytic, f, what);
}

/// [`check_fd`] on every `step`-th entry only, for inputs too large to check whole.
fn check_fd_every(
    step: usize,
    x: &mut [f32],
    analytic: &[f32],
    mut f: impl FnMut(&[f32]) -> f64,
    what: &str,
) {
    let h = 1e-2f32;
    for i in (0..x.len()).step_by(step) {
        let orig = x[i];
        x[i] = orig + h;
        let up = f(x);
        x[i] = orig - h;
        let down = f(x);
        x[i] = orig;
        let numeric = (up - down) / (2.0 * h as f64);
        let a = analytic[i] as f64;
        assert!(
            (numeric - a).abs() <= 2e-2 * (numeric.abs() + a.abs()) + 2e-3,
            "{what}[{i}]: analytic {a}, numeric {numeric}"
        );
    }
}

#[test]
fn linear_backward_matches_finite_differences() {
    let (n, ic, oc) = (5, 4, 3);
    let mut inp = randn(n * ic, 5);
    let mut w = randn(ic * oc, 6);
    let mut bias = randn(oc, 7);
    let g = randn(n * oc, 8); // weights of the scalar objective sum(g * out)
    let objective = |inp: &[f32], w: &[f32], bias: &[f32]| -> f64 {
        let mut out = vec![0.0f32; n * oc];
        linear_forward(
            &mut out,
            inp,
            MatRef::new(w, ic, oc),
            Some(bias),
            n,
            Pieces::ByShape,
        );
        out.iter()
            .zip(&g)
            .map(|(o, gg)| (*o as f64) * (*gg as f64))
            .sum()
    };
    let mut dinp = vec![0.0f32; n * ic];
    let mut dw = vec![0.0f32; ic * oc];
    let mut db = vec![0.0f32; oc];
    linear_backward(
        Some(&mut dinp),
        MatMut::new(&mut dw, ic, oc),
        Some(&mut db),
        &g,
        &inp,
        MatRef::new(&w, ic, oc),
        n,
        Pieces::ByShape,
    );
    let (w0, b0) = (w.clone(), bias.clone());
    check_fd(&mut inp.clone(), &dinp, |x| objective(x, &w0, &b0), "dinp");
    let i0 = inp.clone();
    check_fd(&mut w, &dw, |x| objective(&i0, x, &b0), "dweight");
    let w1 = w.clone();
    check_fd(&mut bias, &db, |x| objective(&i0, &w1, x), "dbias");
    let _ = &mut inp;
}

#[test]
fn layernorm_forward_and_backward() {
    let (n, c) = (6, 10);
    let inp: Vec<f32> = randn(n * c, 9).iter().map(|x| x * 3.0 + 1.0).collect();
    let weight = randn(c, 10);
    let bias = randn(c, 11);
    let eps = 1e-5f32;
    let mut out = vec![0.0f32; n * c];
    let (mut mean, mut rstd) = (vec![0.0f32; n], vec![0.0f32; n]);
    layernorm_forward(&mut out, &mut mean, &mut rstd, &inp, &weight, &bias, c, eps);
    let mut want = vec![0.0f64; n * c];
    for r in 0..n {
        let row: Vec<f64> = inp[r * c..(r + 1) * c].iter().map(|&x| x as f64).collect();
        let m = row.iter().sum::<f64>() / c as f64;
        let var = row.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / c as f64;
        for j in 0..c {
            want[r * c + j] =
                (row[j] - m) / (var + eps as f64).sqrt() * weight[j] as f64 + bias[j] as f64;
        }
    }
    assert_close(&out, &want, 1e-5, "layernorm");

    let g = randn(n * c, 12);
    let objective = |x: &[f32], w: &[f32], b: &[f32]| -> f64 {
        let mut o = vec![0.0f32; n * c];
        let (mut m, mut s) = (vec![0.0f32; n], vec![0.0f32; n]);
        layernorm_forward(&mut o, &mut m, &mut s, x, w, b, c, eps);
        o.iter()
            .zip(&g)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum()
    };
    let mut dinp = vec![0.0f32; n * c];
    let mut dw = vec![0.0f32; c];
    let mut db = vec![0.0f32; c];
    layernorm_backward(
        &mut dinp, &mut dw, &mut db, &g, &inp, &weight, &mean, &rstd, c,
    );
    check_fd(
        &mut inp.clone(),
        &dinp,
        |x| objective(x, &weight, &bias),
        "dinp",
    );
    check_fd(
        &mut weight.clone(),
        &dw,
        |x| objective(&inp, x, &bias),
        "dweight",
    );
    check_fd(
        &mut bias.clone(),
        &db,
        |x| objective(&inp, &weight, x),
        "dbias",
    );
}

#[test]
fn gelu_forward_and_backward() {
    let x: Vec<f32> = (-60..=60).map(|i| i as f32 * 0.1).collect();
    let mut out = vec![0.0f32; x.len()];
    let mut th = vec![0.0f32; x.len()];
    gelu_forward(&mut out, &mut th, &x);
    let want: Vec<f64> = x
        .iter()
        .map(|&v| {
            let v = v as f64;
            0.5 * v
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh())
        })
        .collect();
    assert_close(&out, &want, 1e-6, "gelu");
    let g = randn(x.len(), 13);
    let mut dx = g.clone();
    gelu_backward(&mut dx, &x, &th);
    check_fd(
        &mut x.clone(),
        &dx,
        |v| {
            let mut o = vec![0.0f32; v.len()];
            let mut t = vec![0.0f32; v.len()];
            gelu_forward(&mut o, &mut t, v);
            o.iter()
                .zip(&g)
                .map(|(a, b)| (*a as f64) * (*b as f64))
                .sum()
        },
        "dgelu",
    );
}

#[test]
fn fast_exp_and_tanh_are_accurate() {
    for i in -8000..=8000 {
        let x = i as f32 * 0.01;
        let want = (x as f64).exp();
        let got = vecmath::exp(x) as f64;
        assert!(
            (got - want).abs() <= 3e-7 * want,
            "exp({x}): {got} vs {want}"
        );
        let want_t = (x as f64).tanh();
        assert!(
            (vecmath::tanh(x) as f64 - want_t).abs() <= 2e-7,
            "tanh({x})"
        );
    }
    // At the ends of the clamp: still accurate, then held at the range of normal floats.
    for x in [-87.0f32, 88.0] {
        let want = (x as f64).exp();
        assert!(
            (vecmath::exp(x) as f64 - want).abs() <= 3e-7 * want,
            "exp({x})"
        );
    }
    assert_eq!(vecmath::exp(-1e4), vecmath::exp(-87.0));
    assert_eq!(vecmath::exp(f32::INFINITY), vecmath::exp(88.0));
    // NaN stays NaN, so a diverged run is still caught as a non-finite loss.
    assert!(vecmath::exp(f32::NAN).is_nan());
    assert!(vecmath::tanh(f32::NAN).is_nan());
}

/// Attention output (B, T, C) and row log-sum-exps (B, H, T), in float64, from rows of
/// q (H D), k (K D), v (K D); query head h reads key/value head h / (H / K).
fn attention_reference(
    qkv: &[f32],
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    kv: usize,
) -> (Vec<f64>, Vec<f64>) {
    let d = c / h;
    let w = c + 2 * kv * d;
    let mut out = vec![0.0f64; b * t * c];
    let mut lse = vec![0.0f64; b * h * t];
    for bi in 0..b {
        let at = |ti: usize, col: usize| qkv[(bi * t + ti) * w + col] as f64;
        for hh in 0..h {
            let (k0, v0) = (c + hh / (h / kv) * d, c + kv * d + hh / (h / kv) * d);
            for ti in 0..t {
                let scores: Vec<f64> = (0..=ti)
                    .map(|s| {
                        (0..d)
                            .map(|j| at(ti, hh * d + j) * at(s, k0 + j))
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f64 = e.iter().sum();
                lse[(bi * h + hh) * t + ti] = m + z.ln();
                for j in 0..d {
                    out[(bi * t + ti) * c + hh * d + j] =
                        (0..=ti).map(|s| e[s] / z * at(s, v0 + j)).sum();
                }
            }
        }
    }
    (out, lse)
}

#[test]
fn attention_forward_and_backward() {
    let (b, t, c, h) = (2, 5, 6, 3);
    attention_case(b, t, c, h);
}

#[test]
fn attention_longer_than_one_row_block() {
    // 70 positions: three row blocks of the causal product (32, 32 and 6 rows).
    attention_case(1, 70, 4, 2);
}

#[test]
fn attention_with_wide_heads() {
    // Heads 40 wide (register strips of 16, 16 and 8 columns) over 70 positions (row tiles
    // of 4 with 2 left over, and three row blocks): every edge of the tiled products.
    attention_case_every(7, 1, 70, 80, 2);
}

#[test]
fn attention_with_grouped_query_heads() {
    // Four query heads over two key/value heads, and over one (multi-query), 24 wide.
    attention_case_grouped(1, 2, 37, 96, 4, 2);
    attention_case_grouped(3, 1, 40, 96, 4, 1);
}

fn attention_case(b: usize, t: usize, c: usize, h: usize) {
    attention_case_every(1, b, t, c, h);
}

fn attention_case_every(step: usize, b: usize, t: usize, c: usize, h: usize) {
    attention_case_grouped(step, b, t, c, h, h);
}

/// Forward against the float64 reference, backward against finite differences on every
/// `step`-th input; H query heads over K key/value heads.
fn attention_case_grouped(step: usize, b: usize, t: usize, c: usize, h: usize, kv: usize) {
    let heads = Heads { h, kv, d: c / h };
    let qkv = randn(b * t * heads.width(), 14);
    let mut out = vec![0.0f32; b * t * c];
    let mut lse = vec![0.0f32; b * h * t];
    attention_forward(&mut out, &mut lse, &qkv, t, heads, None);
    let (want_out, want_lse) = attention_reference(&qkv, b, t, c, h, kv);
    assert_close(&out, &want_out, 1e-5, "attention");
    assert_close(&lse, &want_lse, 1e-5, "log-sum-exp");
    let g = randn(b * t * c, 15);
    let mut dqkv = vec![0.0f32; qkv.len()];
    attention_backward(&mut dqkv, &g, &qkv, &lse, t, heads, None);
    check_fd_every(
        step,
        &mut qkv.clone(),
        &dqkv,
        |x| {
            let mut o = vec![0.0f32; b * t * c];
            let mut a = vec![0.0f32; b * h * t];
            attention_forward(&mut o, &mut a, x, t, heads, None);
            o.iter()
                .zip(&g)
                .map(|(p, q)| (*p as f64) * (*q as f64))
                .sum()
        },
        "dqkv",
    );
}

#[test]
fn cross_entropy_forward_and_backward() {
    let (n, v) = (4, 7);
    let logits: Vec<f32> = randn(n * v, 16).iter().map(|x| x * 4.0).collect();
    let targets = [0u32, 6, 3, 3];
    let mut losses = vec![0.0f32; n];
    let mut probs = vec![0.0f32; n * v];
    cross_entropy_forward(&mut losses, &mut probs, &logits, &targets, v);
    for r in 0..n {
        let row: Vec<f64> = logits[r * v..(r + 1) * v]
            .iter()
            .map(|&x| x as f64)
            .collect();
        let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
        assert!((losses[r] as f64 - (lse - row[targets[r] as usize])).abs() < 1e-5);
    }
    let mut dlogits = vec![0.0f32; n * v];
    cross_entropy_backward(&mut dlogits, &probs, &targets, 1.0 / n as f32, v);
    check_fd(
        &mut logits.clone(),
        &dlogits,
        |z| {
            let mut l = vec![0.0f32; n];
            let mut p = vec![0.0f32; n * v];
            cross_entropy_forward(&mut l, &mut p, z, &targets, v);
            l.iter().map(|&x| x as f64).sum::<f64>() / n as f64
        },
        "dlogits",
    );
}

#[test]
fn softmax_of_huge_logits_does_not_overflow() {
    let mut row = [1000.0f32, 999.0, -1000.0];
    tinylm::kernels::vecmath::softmax_in_place(&mut row);
    assert!(row.iter().all(|p| p.is_finite()));
    assert!((row[0] - 0.731_058_6).abs() < 1e-6);
}
