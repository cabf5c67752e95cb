"""Logits and loss against the float64 NumPy reference (tests/reference.py) on random
weights, for configurations that exercise every branch of the model."""

from __future__ import annotations

import numpy as np
import pytest

import reference
import tinylm
from conftest import GO_CONFIG, random_model

CONFIGS = {
    "go_style": GO_CONFIG,
    "gpt2_style": tinylm.Config(vocab_size=65, d_model=32, n_layers=2, n_heads=4, max_seq_len=16),
    "three_heads_odd_ff": tinylm.Config(
        vocab_size=11,
        d_model=12,
        n_layers=2,
        n_heads=3,
        d_ff=20,
        max_seq_len=9,
        attn_bias=True,
        tie_embeddings=False,
    ),
    "bias_off_tied": tinylm.Config(
        vocab_size=13,
        d_model=24,
        n_layers=3,
        n_heads=6,
        d_ff=7,
        max_seq_len=8,
        attn_bias=False,
        tie_embeddings=True,
    ),
    "one_head_wide_ff": tinylm.Config(
        vocab_size=5, d_model=8, n_layers=1, n_heads=1, d_ff=64, max_seq_len=4, eps=1e-3
    ),
}


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seq_len", [1, 3, "full"])
def test_logits_match_float64_reference(name: str, seq_len) -> None:
    config = CONFIGS[name]
    model = random_model(config, seed=hash(name) % 1000, scale=0.3)
    t = config.max_seq_len if seq_len == "full" else seq_len
    rng = np.random.default_rng(1)
    ids = rng.integers(0, config.vocab_size, size=(3, t))
    ours = model.logits(ids)
    ref = reference.forward(model.state_dict(), config, ids)
    assert ours.dtype == np.float32
    assert ours.shape == (3, t, config.vocab_size)
    assert rel_err(ours, ref) <= 1e-4


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loss_matches_float64_reference(name: str) -> None:
    config = CONFIGS[name]
    model = random_model(config, seed=3, scale=0.3)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, config.vocab_size, size=(2, config.max_seq_len))
    targets = rng.integers(0, config.vocab_size, size=(2, config.max_seq_len))
    ref = reference.loss(model.state_dict(), config, ids, targets)
    assert abs(model.loss(ids, targets) - ref) <= 1e-4 * abs(ref)


def test_one_sequence_gives_a_2d_array() -> None:
    model = random_model(CONFIGS["gpt2_style"], seed=0)
    one = model.logits([1, 2, 3])
    batch = model.logits([[1, 2, 3]])
    assert one.shape == (3, 65)
    np.testing.assert_array_equal(one, batch[0])


def test_causality_later_tokens_do_not_change_earlier_logits() -> None:
    model = random_model(CONFIGS["gpt2_style"], seed=0)
    a = model.logits([1, 2, 3, 4, 5])
    b = model.logits([1, 2, 3, 60, 61])
    np.testing.assert_allclose(a[:3], b[:3], rtol=1e-6, atol=1e-6)
    assert not np.allclose(a[3:], b[3:])
