"""tinylm.gradcheck: small errors on correct models, and a deliberately wrong gradient
(the test hook _scale_gradient_for_tests) named in the report."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

import reference
import tinylm
from conftest import random_model

CONFIG = tinylm.Config(vocab_size=9, d_model=8, n_layers=2, n_heads=2, max_seq_len=6)
LLAMA = tinylm.Config.llama(vocab_size=9, d_model=8, n_layers=1, n_heads=2, max_seq_len=6)


def _batch(config: tinylm.Config) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    shape = (2, config.max_seq_len - 1)
    return rng.integers(0, config.vocab_size, size=shape), rng.integers(
        0, config.vocab_size, size=shape
    )


@pytest.fixture
def wrong_gradient() -> Iterator[None]:
    yield
    tinylm._core._scale_gradient_for_tests(None)


def test_a_correct_model_passes_with_small_errors() -> None:
    model = random_model(CONFIG, seed=11)
    x, y = _batch(CONFIG)
    report = tinylm.gradcheck(model, x, y)
    assert report.ok and report.failed == []
    assert [t.name for t in report.tensors] == list(model.state_dict())
    assert all(t.max_rel_error < 5e-3 for t in report.tensors)
    text = str(report)
    for name in model.state_dict():
        assert name in text
    assert "every gradient agrees with the finite differences" in text


def test_a_llama_model_on_the_reference_backend_passes() -> None:
    model = tinylm.Transformer(LLAMA, seed=0, backend="reference")
    from conftest import randomize

    randomize(model, seed=2, scale=0.5)
    x, y = _batch(LLAMA)
    report = tinylm.gradcheck(model, x, y)
    assert report.ok, str(report)
    assert any(t.name.endswith("ff.gate.weight") for t in report.tensors)


def test_a_wrong_gradient_is_named_in_the_report(wrong_gradient: None) -> None:
    model = random_model(CONFIG, seed=11)
    x, y = _batch(CONFIG)
    tinylm._core._scale_gradient_for_tests("blocks.0.ff.linear1.weight", 1.5)
    report = tinylm.gradcheck(model, x, y)
    assert not report.ok
    assert report.failed == ["blocks.0.ff.linear1.weight"]
    assert report.worst.name == "blocks.0.ff.linear1.weight"
    assert report.worst.max_rel_error == pytest.approx(1 / 3, rel=0.05)  # |1.5 a - a| / 1.5 a
    text = str(report)
    assert "WRONG gradient in 1 tensor(s): blocks.0.ff.linear1.weight" in text
    line = next(s for s in text.splitlines() if s.startswith("blocks.0.ff.linear1.weight "))
    assert line.endswith("WRONG")


def test_the_float64_method_of_the_tests_catches_a_two_percent_error(
    wrong_gradient: None,
) -> None:
    model = random_model(CONFIG, seed=11)
    x, y = _batch(CONFIG)
    tinylm._core._scale_gradient_for_tests("blocks.1.attn.W_k.weight", 1.02)
    report = tinylm.gradcheck(
        model, x, y, loss_fn=lambda p: reference.loss(p, CONFIG, x, y), samples=None
    )
    assert report.failed == ["blocks.1.attn.W_k.weight"]
    assert report.method == "loss_fn (float64)"


def test_the_hook_only_touches_the_named_tensor(wrong_gradient: None) -> None:
    model = random_model(CONFIG, seed=3)
    x, y = _batch(CONFIG)
    _, before = model.gradients(x, y)
    tinylm._core._scale_gradient_for_tests("ln_f.bias", 2.0)
    _, after = model.gradients(x, y)
    for name in before:
        factor = 2.0 if name == "ln_f.bias" else 1.0
        np.testing.assert_array_equal(after[name], before[name] * np.float32(factor), name)


def test_gradcheck_leaves_the_parameters_as_they_were() -> None:
    model = random_model(CONFIG, seed=7)
    before = model.state_dict()
    x, y = _batch(CONFIG)
    tinylm.gradcheck(model, x, y, samples=4)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], name)


def test_samples_limits_the_entries_and_keeps_the_largest_gradient() -> None:
    model = random_model(CONFIG, seed=7)
    x, y = _batch(CONFIG)
    report = tinylm.gradcheck(model, x, y, samples=5)
    _, grads = model.gradients(x, y)
    for t in report.tensors:
        assert t.checked == min(5, int(np.prod(t.shape)))
        assert t.max_grad == pytest.approx(float(np.abs(grads[t.name]).max()))


def test_bad_settings_are_clear_errors() -> None:
    model = random_model(CONFIG, seed=7)
    x, y = _batch(CONFIG)
    with pytest.raises(ValueError, match="eps, rtol and atol must be positive"):
        tinylm.gradcheck(model, x, y, eps=0.0)
    with pytest.raises(ValueError, match="samples must be a positive int or None"):
        tinylm.gradcheck(model, x, y, samples=0)
    with pytest.raises(ValueError, match=r"shape mismatch|targets"):
        tinylm.gradcheck(model, x, y[:, :2])
