"""Scoring: per-token log-probabilities against float64 log-softmax of ``logits()`` over
the documented windows, and the summaries computed from them."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinylm
from conftest import random_model

CONFIG = tinylm.Config(vocab_size=20, d_model=16, n_layers=2, n_heads=2, max_seq_len=8)
LLAMA = tinylm.Config.llama(20, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=8)


@pytest.fixture(scope="module", params=[CONFIG, LLAMA], ids=["gpt2", "llama"])
def model(request) -> tinylm.Transformer:
    return random_model(request.param, seed=21, scale=0.5)


def log_softmax64(row: np.ndarray) -> np.ndarray:
    z = row.astype(np.float64)
    z = z - z.max()
    return z - np.log(np.exp(z).sum())


def expected_logprobs(model: tinylm.Transformer, ids: list[int]) -> np.ndarray:
    """The documented rule: windows of P inputs; the first scores all its targets, each
    next one the following P // 2 targets, ending at the last target it scores."""
    p = model.config.max_seq_len
    stride = max(p // 2, 1)
    n = len(ids) - 1
    out = np.zeros(n)
    done = 0
    while done < n:
        end = min(p, n) if done == 0 else min(done + stride, n)
        start = max(end - p, 0)
        logits = model.logits(ids[start:end])
        for i in range(done, end):
            out[i] = log_softmax64(logits[i - start])[ids[i + 1]]
        done = end
    return out


@pytest.mark.parametrize("length", [2, 5, 9, 10, 23, 64])
def test_token_logprobs_are_the_log_softmax_of_the_logits(model, length):
    ids = [(i * 7 + 3) % CONFIG.vocab_size for i in range(length)]
    got = model.score(ids).token_logprobs
    assert got.shape == (length - 1,) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected_logprobs(model, ids), rtol=1e-5, atol=1e-5)


def test_inside_the_context_the_score_is_the_training_loss(model):
    ids = [1, 5, 2, 8, 3, 9, 4, 11, 6]  # 9 ids: 8 inputs, the whole context
    score = model.score(ids)
    assert score.loss == pytest.approx(model.loss(ids[:-1], ids[1:]), rel=1e-5)
    assert score.perplexity == pytest.approx(math.exp(score.loss))
    assert score.bits_per_token == pytest.approx(score.loss / math.log(2))
    assert score.total_logprob == pytest.approx(-score.loss * 8)
    assert score.bits_per_char is None


def test_text_scores_give_bits_per_character_and_byte():
    model = tinylm.Transformer.from_bundled("shakespeare")
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 3
    score = model.score(text)
    assert score.n_chars == len(text) - 1 and score.n_bytes == len(text.encode()) - 1
    bits = -score.token_logprobs.astype(np.float64).sum() / math.log(2)
    assert score.bits_per_char == pytest.approx(bits / (len(text) - 1))
    assert 0.5 < score.bits_per_char < 4  # a trained model, far below log2(65) = 6.02


@pytest.mark.parametrize(
    ("arg", "error", "message"),
    [
        ([3], ValueError, "at least 2 tokens"),
        ([1, 99], ValueError, "out of range"),
        ([1.5, 2], TypeError, "int token ids"),
        (b"ab", TypeError, "sequence of int"),
    ],
)
def test_bad_scoring_input_is_a_clear_error(model, arg, error, message):
    with pytest.raises(error, match=message):
        model.score(arg)
