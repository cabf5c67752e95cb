"""Beam search against searches written here over ``logits()``: width 1 is greedy, a wide
enough beam finds what an exhaustive search finds, and scores are the log-probabilities
recomputed from the logits with the documented length penalty."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import tinylm
from conftest import random_model

TINY = tinylm.Config(vocab_size=5, d_model=8, n_layers=1, n_heads=2, max_seq_len=16)
CONFIG = tinylm.Config(vocab_size=20, d_model=16, n_layers=2, n_heads=2, max_seq_len=32)


@pytest.fixture(scope="module")
def tiny() -> tinylm.Transformer:
    return random_model(TINY, seed=31, scale=1.0)


@pytest.fixture(scope="module")
def model() -> tinylm.Transformer:
    return random_model(CONFIG, seed=32, scale=0.6)


def logprob_of(model: tinylm.Transformer, prompt: list[int], new: list[int]) -> float:
    """Sum of log p(new[i] | prompt + new[:i]) from float64 log-softmax of the logits."""
    seq = prompt + new
    logits = model.logits(seq[:-1]).astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    return float(sum(logp[len(prompt) - 1 + i, t] for i, t in enumerate(new)))


def test_one_beam_is_greedy(model):
    greedy = model.generate([1, 2, 3], 20, temperature=0.0)
    (best,) = model.beam_search([1, 2, 3], 20, num_beams=1)
    assert best.ids == greedy


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_a_wide_enough_beam_finds_the_exhaustive_optimum(tiny, length_penalty):
    prompt, horizon = [2, 0], 3
    best_logprob, best_new = max(
        (logprob_of(tiny, prompt, list(new)), list(new))
        for new in itertools.product(range(TINY.vocab_size), repeat=horizon)
    )
    # Width V ** (horizon - 1) keeps every prefix, so the search is exhaustive.
    (found,) = tiny.beam_search(
        prompt,
        horizon,
        num_beams=TINY.vocab_size ** (horizon - 1),
        length_penalty=length_penalty,
        early_stopping="never",
    )
    assert found.ids == prompt + best_new
    assert found.logprob == pytest.approx(best_logprob, abs=1e-5)


def test_returned_scores_are_the_recomputed_log_probabilities(model):
    prompt = [4, 1]
    found = model.beam_search(prompt, 12, num_beams=5, num_return_sequences=5, length_penalty=0.7)
    assert len(found) == 5
    assert [b.score for b in found] == sorted((b.score for b in found), reverse=True)
    for beam in found:
        new = beam.ids[len(prompt) :]
        assert beam.logprob == pytest.approx(logprob_of(model, prompt, new), abs=1e-4)
        assert beam.score == pytest.approx(beam.logprob / len(new) ** 0.7, abs=1e-4)


def test_a_stop_id_finishes_a_beam_with_its_length(model):
    prompt = [4, 1]
    free = model.beam_search(prompt, 10, num_beams=4, num_return_sequences=4)
    stop = free[0].ids[len(prompt) + 2]  # an id the best beam emits third
    found = model.beam_search(prompt, 10, num_beams=4, num_return_sequences=4, stop=stop)
    for beam in found:
        new = beam.ids[len(prompt) :]
        assert stop not in new[:-1]
        assert beam.score == pytest.approx(beam.logprob / len(new), abs=1e-4)
    assert any(b.ids[-1] == stop for b in found)


def test_no_repeat_ngram_size_forbids_repeated_ngrams(model):
    (beam,) = model.beam_search([1, 2, 3], 40, num_beams=3, no_repeat_ngram_size=2)
    grams = list(zip(beam.ids, beam.ids[1:]))
    assert len(grams) == len(set(grams))


def test_beams_past_the_context_keep_going(model):
    (beam,) = model.beam_search([1, 2], 80, num_beams=2)  # context 32
    assert len(beam.ids) == 82


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"num_beams": 0}, ValueError, "num_beams must be between 1"),
        ({"num_beams": 2, "num_return_sequences": 3}, ValueError, "num_return_sequences"),
        ({"early_stopping": "sometimes"}, ValueError, "early_stopping must be"),
        ({"length_penalty": float("nan")}, ValueError, "length_penalty"),
        ({"num_beams": 2.0}, TypeError, "num_beams must be an int"),
        ({"stop": [99]}, ValueError, "out of range"),
    ],
)
def test_bad_beam_settings_are_clear_errors(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.beam_search([1, 2], 5, **kwargs)
