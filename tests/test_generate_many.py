"""Many sequences at once: each sequence of a batch is what generating it alone gives."""

from __future__ import annotations

import numpy as np
import pytest

import tinylm
from conftest import random_model

CONFIG = tinylm.Config(vocab_size=30, d_model=32, n_layers=2, n_heads=4, max_seq_len=16)
WIDE = tinylm.Config(vocab_size=70, d_model=144, n_layers=2, n_heads=3, d_ff=200, max_seq_len=24)
RMS = tinylm.Config(
    vocab_size=30,
    d_model=32,
    n_layers=2,
    n_heads=4,
    max_seq_len=16,
    norm="rmsnorm",
    activation="silu",
    mlp_bias=False,
)


@pytest.fixture(scope="module", params=[CONFIG, WIDE, RMS], ids=["small", "wide", "rmsnorm"])
def model(request) -> tinylm.Transformer:
    return random_model(request.param, seed=41, scale=0.3)


def test_greedy_batches_of_different_prompts_equal_each_alone(model):
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9, 10, 11], [1, 2, 3]]
    got = model.generate_many(prompts, 50, temperature=0)  # past the context of 16 / 24
    assert got == [model.generate(p, 50, temperature=0) for p in prompts]


def test_samples_of_one_prompt_use_consecutive_seeds(model):
    chain = {"temperature": 0.9, "top_k": 12, "repetition_penalty": 1.2, "min_p": 0.02}
    got = model.generate_many([3, 1], 40, num_samples=5, seed=100, **chain)
    assert got == [model.generate([3, 1], 40, seed=100 + j, **chain) for j in range(5)]
    assert len({tuple(g) for g in got}) > 1


def test_prompt_by_prompt_seeds_and_stop_ids(model):
    prompts = [[2, 2], [7, 1, 3]]
    stop = model.generate([2, 2], 10, temperature=1.0, top_k=None, seed=9)[5]
    got = model.generate_many(
        prompts, 30, num_samples=2, temperature=1.0, top_k=None, seed=7, stop=[stop]
    )
    want = [
        model.generate(p, 30, temperature=1.0, top_k=None, seed=7 + k, stop=[stop])
        for k, p in enumerate([prompts[0], prompts[0], prompts[1], prompts[1]])
    ]
    assert got == want


def test_the_reference_backend_and_the_sliding_window_give_the_same_rule(model):
    prompts = [[1, 2], [3]]
    got = model.generate_many(prompts, 30, temperature=0, window="sliding")
    assert got == [model.generate(p, 30, temperature=0, window="sliding") for p in prompts]


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "message"),
    [
        ([[1], []], {}, ValueError, "prompt 1: the prompt is empty"),
        ([[1], [99]], {}, ValueError, "out of range"),
        ([1, 2], {"num_samples": 0}, ValueError, "num_samples must be between 1"),
        ([[1.5]], {}, TypeError, "int token ids"),
        ([1], {"min_p": 2.0}, ValueError, "min_p"),
        (np.zeros((0, 3), np.int64), {}, ValueError, "prompts holds no prompt"),
    ],
)
def test_bad_batches_are_clear_errors(model, prompts, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.generate_many(prompts, 5, **kwargs)


def test_a_batch_prompt_longer_than_the_context_is_a_clear_error(model):
    context = model.config.max_seq_len
    long = [1] * (context + 1)
    with pytest.raises(ValueError, match=f"prompt 1 has {context + 1} ids, more than the context"):
        model.generate_many([[2], long], 5)
    with pytest.raises(ValueError, match=f"prompt 0 has {context + 1} ids"):
        model.generate_many(long, 5, num_samples=2)
    # With samples, the index is still the prompt's, not the sequence's.
    with pytest.raises(ValueError, match=f"prompt 1 has {context + 1} ids"):
        model.generate_many([[2], long], 5, num_samples=3)
    with pytest.raises(ValueError, match="prompt 1: the prompt is empty"):
        model.generate_many([[2], []], 5, num_samples=3)
    # One sequence alone keeps its last P ids, as generate does.
    assert model.generate_many(long, 5, temperature=0) == [model.generate(long, 5, temperature=0)]
