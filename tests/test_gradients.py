"""Every parameter's gradient against central finite differences of the float64 reference
loss, on small models with random weights (biases and norms included)."""

from __future__ import annotations

import numpy as np
import pytest

import reference
import tinylm
from conftest import GO_CONFIG, random_model

SMALL = {
    "go_style": GO_CONFIG,
    "gpt2_style_two_layers": tinylm.Config(
        vocab_size=7, d_model=6, n_layers=2, n_heads=3, d_ff=10, max_seq_len=5
    ),
    "bias_untied": tinylm.Config(
        vocab_size=6,
        d_model=4,
        n_layers=2,
        n_heads=1,
        d_ff=3,
        max_seq_len=4,
        attn_bias=True,
        tie_embeddings=False,
    ),
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_gradient_matches_central_differences(name: str) -> None:
    config = SMALL[name]
    model = random_model(config, seed=11, scale=0.5)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, config.vocab_size, size=(2, config.max_seq_len - 1))
    targets = rng.integers(0, config.vocab_size, size=ids.shape)
    loss, grads = model.gradients(ids, targets)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    assert set(grads) == set(params)
    assert abs(loss - reference.loss(params, config, ids, targets)) < 1e-5
    # tinylm.gradcheck's float64 method: central differences (h = 1e-5) of the reference
    # loss, every entry within rtol 1e-3 (atol 2e-6 near zero).
    report = tinylm.gradcheck(
        model,
        ids,
        targets,
        loss_fn=lambda p: reference.loss(p, config, ids, targets),
        samples=None,
    )
    assert (report.eps, report.rtol, report.atol) == (1e-5, 1e-3, 2e-6)
    assert report.ok, str(report)
    assert sum(t.checked for t in report.tensors) == model.num_parameters


def test_tied_head_gradient_includes_both_uses_of_the_embedding() -> None:
    config = SMALL["gpt2_style_two_layers"]
    model = random_model(config, seed=2)
    _, grads = model.gradients([[1, 2, 3]], [[2, 3, 4]])
    assert "lm_head.weight" not in grads
    # Token 6 never appears in the input, so its embedding row gets gradient only as a head row.
    assert np.abs(grads["token_embed.weight"][6]).sum() > 0


def test_gradients_are_those_of_the_mean_loss() -> None:
    """Repeating a batch leaves the mean loss, hence the gradient, unchanged (the Go program
    back-propagates the sum instead)."""
    config = SMALL["go_style"]
    model = random_model(config, seed=4)
    x, y = np.array([[0, 1, 2, 3]]), np.array([[1, 2, 3, 4]])
    _, once = model.gradients(x, y)
    _, twice = model.gradients(np.repeat(x, 2, axis=0), np.repeat(y, 2, axis=0))
    for name in once:
        np.testing.assert_allclose(once[name], twice[name], rtol=1e-5, atol=1e-7)
