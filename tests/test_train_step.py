"""The training step in its parts (forward_backward, clip_grad_norm, AdamW.step) against
the one-call train_step and against AdamW written here in NumPy float64."""

from __future__ import annotations

import numpy as np
import pytest

import tinylm
from tinylm import AdamW, Config, Transformer

CONFIG = Config(vocab_size=11, d_model=8, n_layers=2, n_heads=2, max_seq_len=6)


def batch(seed: int, b: int = 4, t: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, CONFIG.vocab_size, size=(b, t + 1))
    return x[:, :-1], x[:, 1:]


def test_the_parts_give_the_one_call_step_bit_for_bit() -> None:
    one, parts = Transformer(CONFIG, seed=3), Transformer(CONFIG, seed=3)
    opt_one, opt_parts = AdamW(one, lr=1e-2), AdamW(parts, lr=1e-2)
    for step in range(3):
        x, y = batch(step)
        stats = one.train_step(opt_one, x, y, grad_clip=0.5, micro_batches=2)
        losses = [
            parts.forward_backward(x[rows], y[rows], scale=0.5, accumulate=k > 0)
            for k, rows in enumerate((slice(0, 2), slice(2, 4)))
        ]
        norm = parts.clip_grad_norm(0.5)
        assert opt_parts.step() == norm == stats.grad_norm
        assert np.float32(sum(losses) / 2) == np.float32(stats.loss)
        for name, p in one.state_dict().items():
            np.testing.assert_array_equal(parts.state_dict()[name], p, err_msg=name)
    assert opt_one.steps_taken == opt_parts.steps_taken == 3


def test_the_held_gradient_is_the_gradient_and_accumulates() -> None:
    model = Transformer(CONFIG, seed=1)
    assert model.grad is None
    x, y = batch(7)
    loss, want = model.gradients(x, y)
    assert model.forward_backward(x, y) == loss
    held = model.grad
    assert held is not None and held.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(held[name], want[name], err_msg=name)
    # Two halves, each scaled by 1/2 and added up: the whole batch's mean gradient.
    model.forward_backward(x[:2], y[:2], scale=0.5)
    model.forward_backward(x[2:], y[2:], scale=0.5, accumulate=True)
    summed = model.grad
    assert summed is not None
    for name in want:
        np.testing.assert_allclose(summed[name], want[name], rtol=1e-5, atol=1e-7, err_msg=name)
    model.zero_grad()
    assert model.grad is None


def test_clip_grad_norm_measures_and_scales() -> None:
    model = Transformer(CONFIG, seed=2)
    x, y = batch(3)
    model.forward_backward(x, y)
    grads = model.grad
    assert grads is not None
    norm64 = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values()))
    assert model.clip_grad_norm(None) == pytest.approx(norm64, rel=1e-6)
    assert model.clip_grad_norm(norm64 / 4) == pytest.approx(norm64, rel=1e-6)
    assert model.clip_grad_norm(None) == pytest.approx(norm64 / 4, rel=1e-5)


def test_adamw_step_is_adamw() -> None:
    """Two steps against AdamW in float64: decay on matrices (2-D tensors, embedding tables
    included), PyTorch's bias correction."""
    model = Transformer(CONFIG, seed=4)
    lr, (b1, b2), eps, wd = 3e-3, (0.8, 0.95), 1e-8, 0.1
    opt = AdamW(model, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    p = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(v) for k, v in p.items()}
    for t in (1, 2):
        x, y = batch(10 + t)
        model.forward_backward(x, y)
        grads = model.grad
        assert grads is not None
        opt.step()
        for k in p:
            g = grads[k].astype(np.float64)
            if p[k].ndim == 2:
                p[k] *= 1 - lr * wd
            m[k] = b1 * m[k] + (1 - b1) * g
            v[k] = b2 * v[k] + (1 - b2) * g * g
            m_hat, v_hat = m[k] / (1 - b1**t), v[k] / (1 - b2**t)
            p[k] -= lr * m_hat / (np.sqrt(v_hat) + eps)
        got = model.state_dict()
        for k in p:
            np.testing.assert_allclose(got[k], p[k], rtol=1e-5, atol=1e-6, err_msg=f"{k}, step {t}")


def test_misuse_is_a_clear_error_and_changes_nothing() -> None:
    model = Transformer(CONFIG, seed=5)
    opt = AdamW(model)
    before = model.state_dict()
    with pytest.raises(ValueError, match="no gradient"):
        opt.step()
    with pytest.raises(ValueError, match="no gradient"):
        model.clip_grad_norm(1.0)
    with pytest.raises(ValueError, match="another model"):
        Transformer(CONFIG, seed=5).train_step(opt, *batch(0))
    with pytest.raises(TypeError, match=r"tinylm\.AdamW"):
        model.train_step(object(), *batch(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^lr must"):
        opt.lr = float("nan")
    with pytest.raises(ValueError, match="beta1"):
        AdamW(model, betas=(1.5, 0.9))
    with pytest.raises(ValueError, match="context of 6"):
        model.forward_backward(*batch(0, t=7))
    x, y = batch(0)
    with pytest.raises(tinylm.ShapeError):
        model.forward_backward(x, y[:, :-1])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_a_non_finite_loss_drops_the_gradient() -> None:
    model = Transformer(CONFIG, seed=6)
    state = model.state_dict()
    model.load_state_dict({k: np.full_like(v, 3e38) for k, v in state.items()})
    with pytest.raises(tinylm.NonFiniteError):
        model.forward_backward(*batch(1))
    assert model.grad is None
    with pytest.raises(ValueError, match="no gradient"):
        AdamW(model).step()


@pytest.mark.parametrize("scale", [float("inf"), float("nan")])
def test_a_non_finite_scale_is_refused_saying_finite(scale: float) -> None:
    """The bounds are infinite: "must be in [-inf, inf], got inf" would say nothing."""
    model = Transformer(CONFIG, seed=7)
    with pytest.raises(ValueError, match=r"^scale must be a finite number, got"):
        model.forward_backward(*batch(0), scale=scale)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda m: AdamW("model"), TypeError, "AdamW needs a tinylm.Transformer, got str"),
        (lambda m: AdamW(m, betas=(0.9, 0.9, 0.9)), TypeError, "betas must be a pair"),
        (lambda m: AdamW(m, lr=True), TypeError, "lr must be a number"),
        (lambda m: AdamW(m, lr=1e300), ValueError, "lr must be in"),
    ],
)
def test_bad_optimizer_arguments_are_clear_errors(make, error, message) -> None:
    model = Transformer(CONFIG, seed=7)
    with pytest.raises(error, match=message):
        make(model)
    assert AdamW(model, lr=np.float32(0.1)).lr == pytest.approx(0.1)
