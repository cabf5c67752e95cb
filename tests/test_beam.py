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
#: Llama's block (RMSNorm, RoPE in the cache, SwiGLU, one key/value head, untied head).
TINY_LLAMA = tinylm.Config.llama(5, d_model=8, n_layers=1, n_heads=2, n_kv_heads=1, max_seq_len=16)
LLAMA = tinylm.Config.llama(20, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=32)


@pytest.fixture(scope="module", params=[TINY, TINY_LLAMA], ids=["gpt2", "llama"])
def tiny(request) -> tinylm.Transformer:
    return random_model(request.param, seed=31, scale=1.0)


@pytest.fixture(scope="module", params=[CONFIG, LLAMA], ids=["gpt2", "llama"])
def model(request) -> tinylm.Transformer:
    return random_model(request.param, seed=32, scale=0.6)


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


def log_softmax64(row: np.ndarray) -> np.ndarray:
    z = row.astype(np.float64) - row.max()
    return z - np.log(np.exp(z).sum())


def reference_search(model, prompt, max_new, num_beams, length_penalty, early_stopping, stop):
    """Beam search as rust/src/beam.rs's header documents it, over ``logits()`` of each
    whole sequence: (score, logprob, new ids) of the hypotheses, best first."""
    running: list[tuple[float, list[int]]] = [(0.0, [])]
    finished: list[tuple[float, float, list[int]]] = []

    def add(logprob: float, new: list[int], length: int) -> None:
        finished.append((logprob / length**length_penalty, logprob, new))
        finished.sort(key=lambda h: -h[0])  # stable: an earlier tie stays first
        del finished[num_beams:]

    for step in range(max_new):
        candidates = sorted(
            (
                (total + lp, b, t)
                for b, (total, new) in enumerate(running)
                for t, lp in enumerate(log_softmax64(model.logits(prompt + new)[-1]))
            ),
            key=lambda c: (-c[0], c[1], c[2]),
        )[: 2 * num_beams]
        length, chosen = step + 1, []
        for rank, (total, b, t) in enumerate(candidates):
            new = running[b][1] + [t]
            if t in stop:
                if rank < num_beams:
                    add(total, new, length)
            else:
                chosen.append((total, new))
            if len(chosen) == num_beams:
                break
        if not chosen:
            return finished
        if len(finished) >= num_beams:
            if early_stopping is True:
                return finished
            longest = early_stopping == "never" and length_penalty > 0
            bound = chosen[0][0] / (max_new if longest else length) ** length_penalty
            if finished[-1][0] >= bound:
                return finished
        running = chosen
    for total, new in running:
        add(total, new, max(len(new), 1))
    return finished


def test_early_stopping_follows_its_documented_rules(model):
    outcomes = {}
    for stop_at, length_penalty in itertools.product((0, 1, 2), (1.0, 2.0)):
        prompt = [4, 1]
        stop = model.generate(prompt, 3, temperature=0.0)[len(prompt) + stop_at]
        for early in (True, False, "never"):
            want = reference_search(model, prompt, 10, 3, length_penalty, early, [stop])
            got = model.beam_search(
                prompt,
                10,
                num_beams=3,
                num_return_sequences=3,
                length_penalty=length_penalty,
                early_stopping=early,
                stop=stop,
            )
            assert [b.ids[len(prompt) :] for b in got] == [new for _, _, new in want]
            assert [b.score for b in got] == pytest.approx([s for s, _, _ in want], abs=1e-4)
            outcomes[stop_at, length_penalty, early] = [tuple(b.ids) for b in got]
    # The three settings are not all alike: some search ends at a different point.
    assert any(
        len({tuple(outcomes[k, lp, e]) for e in (True, False, "never")}) > 1
        for k in (0, 1, 2)
        for lp in (1.0, 2.0)
    )


def test_no_repeat_ngram_size_forbids_repeated_ngrams(model):
    (beam,) = model.beam_search([1, 2, 3], 40, num_beams=3, no_repeat_ngram_size=2)
    grams = list(zip(beam.ids, beam.ids[1:]))
    assert len(grams) == len(set(grams))


def test_beams_end_where_no_token_may_follow_them(tiny):
    # Five ids and no repeated id at all: after five new ids (fewer if the prompt holds
    # some), every id is banned. The beams end there and are returned, not dropped.
    beams = tiny.beam_search([0], 10, num_beams=2, num_return_sequences=2, no_repeat_ngram_size=1)
    assert len(beams) == 2
    for beam in beams:
        assert sorted(beam.ids) == [0, 1, 2, 3, 4]
        new = beam.ids[1:]
        assert beam.logprob == pytest.approx(logprob_of(tiny, [0], new), abs=1e-4)


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
