"""Transformer.trace and Transformer.attention: every activation of the reference path
against the float64 NumPy model of tests/reference.py, for GPT-2 and Llama style blocks."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import reference
import tinylm
from conftest import GO_CONFIG, random_model

REPO = Path(__file__).resolve().parent.parent

CONFIGS = {
    "gpt2": tinylm.Config(vocab_size=11, d_model=8, n_layers=2, n_heads=2, max_seq_len=7),
    "llama": tinylm.Config.llama(vocab_size=11, d_model=8, n_layers=2, n_heads=4, n_kv_heads=2),
    "go": GO_CONFIG,
}


def _model(name: str) -> tinylm.Transformer:
    model = tinylm.Transformer(CONFIGS[name], seed=0, backend="reference")
    from conftest import randomize

    randomize(model, seed=3, scale=0.4)
    return model


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_traced_activation_equals_the_float64_reference(name: str) -> None:
    model = _model(name)
    ids = np.array([[1, 4, 2, 7, 0], [3, 3, 8, 1, 5]])
    traced = model.trace(ids)
    params = model.state_dict()
    expected = reference.trace(params, model.config, ids)
    assert set(traced) == set(expected)
    for key, value in traced.items():
        assert value.dtype == np.float32, key
        assert value.shape == expected[key].shape, key
        np.testing.assert_allclose(value, expected[key], rtol=1e-4, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_trace_of_one_sequence_drops_the_batch_axis(name: str) -> None:
    model = _model(name)
    one = model.trace([1, 2, 3])
    batch = model.trace([[1, 2, 3]])
    for key in one:
        np.testing.assert_array_equal(one[key], batch[key][0], err_msg=key)
    assert one["logits"].shape == (3, model.config.vocab_size)


def test_trace_is_the_reference_path_on_the_fast_backend_too() -> None:
    fast = random_model(CONFIGS["gpt2"], seed=2)
    ids = [0, 5, 2, 7]
    traced = fast.trace(ids)
    expected = reference.trace(fast.state_dict(), fast.config, np.array([ids]))
    np.testing.assert_allclose(traced["logits"], expected["logits"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(traced["logits"], fast.logits(ids), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_attention_rows_sum_to_one_and_vanish_above_the_diagonal(name: str) -> None:
    model = _model(name)
    ids = [2, 7, 1, 1, 4]
    att = model.attention(ids)
    c = model.config
    assert att.shape == (c.n_layers, c.n_heads, 5, 5)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, atol=1e-6)
    assert np.all(att[..., np.triu_indices(5, k=1)[0], np.triu_indices(5, k=1)[1]] == 0.0)
    assert np.all(att >= 0.0)
    expected = reference.trace(model.state_dict(), c, np.array([ids]))
    for layer in range(c.n_layers):
        np.testing.assert_allclose(
            att[layer], expected[f"blocks.{layer}.att"][0], rtol=1e-5, atol=1e-6
        )


def test_attention_of_a_batch_has_a_leading_batch_axis() -> None:
    model = _model("gpt2")
    att = model.attention([[1, 2, 3], [4, 5, 6]])
    assert att.shape == (2, 2, 2, 3, 3)
    np.testing.assert_allclose(att[1], model.attention([4, 5, 6]), rtol=1e-6)


def test_scores_before_the_mask_are_q_dot_k_over_sqrt_d() -> None:
    model = _model("gpt2")
    traced = model.trace([3, 1, 4, 1])
    q, k = traced["blocks.1.q"].astype(np.float64), traced["blocks.1.k"].astype(np.float64)
    d = model.config.d_model // model.config.n_heads
    expected = np.einsum("thd,shd->hts", q, k) / np.sqrt(d)
    np.testing.assert_allclose(traced["blocks.1.att_scores"], expected, rtol=1e-5, atol=1e-6)
    # Above the diagonal the scores exist, but the mask gives them no probability.
    assert np.any(traced["blocks.1.att_scores"][:, 0, 1:] != 0.0)


def test_each_step_names_a_reference_function_that_exists_in_its_file() -> None:
    for name in sorted(CONFIGS):
        for step in _model(name).trace_steps([1, 2]):
            file, function = step.source.split(": ")
            text = (REPO / file).read_text()
            assert re.search(rf"\bfn {re.escape(function)}\b", text), step.source
            assert step.formula, step.name


def test_trace_of_a_prompt_longer_than_the_context_is_a_clear_error() -> None:
    model = _model("gpt2")
    with pytest.raises(ValueError, match="more than the model's context of 7"):
        model.trace(list(range(8)))
    with pytest.raises(ValueError, match="out of range for vocab_size 11"):
        model.attention([1, 11])
