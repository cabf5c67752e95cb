"""The sampler chain against a reimplementation written here from its documentation
(``Transformer.generate``'s docstring and ``rust/src/sample.rs``'s header): the same ids
for the same seed, with the seeded generator (xoshiro256** seeded by SplitMix64) written
out again too."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tinylm
from conftest import random_model

CONFIG = tinylm.Config(vocab_size=24, d_model=16, n_layers=2, n_heads=2, max_seq_len=64)
LLAMA = tinylm.Config.llama(24, d_model=16, n_layers=2, n_heads=2, n_kv_heads=1, max_seq_len=64)
MASK = (1 << 64) - 1


@pytest.fixture(scope="module", params=[CONFIG, LLAMA], ids=["gpt2", "llama"])
def model(request) -> tinylm.Transformer:
    return random_model(request.param, seed=11, scale=0.5)


class Xoshiro:
    """xoshiro256** (Blackman and Vigna), its state from SplitMix64 of the seed."""

    def __init__(self, seed: int) -> None:
        x = seed & MASK
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x: int, k: int) -> int:
        return ((x << k) | (x >> (64 - k))) & MASK

    def next_u64(self) -> int:
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK, 7) * 9) & MASK
        t = (s[1] << 17) & MASK
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def next_f64(self) -> float:
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))


def sample(logits: np.ndarray, recent: list[int], rng: Xoshiro, p: dict) -> int:
    """One id by the documented chain, in float32 where the chain computes in float32."""
    f32 = np.float32
    z = logits.astype(np.float32).copy()
    n = p.get("penalty_last_n", 64)
    r, fp, pp = (
        f32(p.get(k, d))
        for k, d in (
            ("repetition_penalty", 1.0),
            ("frequency_penalty", 0.0),
            ("presence_penalty", 0.0),
        )
    )
    if n > 0 and (r != 1 or fp != 0 or pp != 0):
        window = recent[-n:]
        for token in set(window):
            zi = z[token] / r if z[token] > 0 else z[token] * r
            z[token] = f32(zi) - (f32(window.count(token)) * fp + pp)
    for token, bias in p.get("logit_bias", {}).items():
        z[token] = z[token] + f32(bias)
    t = p.get("temperature", 0.0)
    if t == 0:
        return int(np.argmax(z))
    scaled = (z - z.max()) * f32(1.0 / f32(t))
    ids = list(range(len(z)))
    if p.get("top_k") is not None or p.get("top_p") is not None:
        ids.sort(key=lambda i: (-scaled[i], i))
        if p.get("top_k") is not None:
            ids = ids[: p["top_k"]]
    weights = [np.exp(scaled[i]).astype(np.float32) for i in ids]
    total = math.fsum(float(w) for w in weights)
    if p.get("top_p") is not None:
        mass, keep = 0.0, len(ids)
        for i, w in enumerate(weights):
            mass += float(w) / total
            if mass >= float(f32(p["top_p"])):
                keep = i + 1
                break
        ids, weights = ids[:keep], weights[:keep]
        total = sum(float(w) for w in weights)
    if p.get("min_p") is not None:
        floor = f32(p["min_p"]) * max(weights)
        kept = [(i, w) for i, w in zip(ids, weights) if w >= floor]
        ids, weights = [i for i, _ in kept], [w for _, w in kept]
        total = sum(float(w) for w in weights)
    target = rng.next_f64() * total
    cumulative = 0.0
    for i, w in zip(ids, weights):
        cumulative += float(w)
        if target < cumulative:
            return i
    return ids[-1]


CHAINS = [
    {"temperature": 0.0, "repetition_penalty": 1.8},
    {"temperature": 0.0, "frequency_penalty": 0.7, "presence_penalty": 0.4},
    {"temperature": 1.0},
    {"temperature": 0.7, "top_k": 5},
    {"temperature": 1.2, "top_p": 0.8},
    {"temperature": 1.0, "min_p": 0.2},
    {"temperature": 0.9, "top_k": 10, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 1.0, "repetition_penalty": 1.3, "penalty_last_n": 6, "top_k": 8},
    {"temperature": 1.0, "logit_bias": {3: 4.0, 5: -math.inf, 7: -2.5}},
    {"temperature": 0.8, "repetition_penalty": 0.8, "frequency_penalty": -0.2, "min_p": 0.1},
]


@pytest.mark.parametrize("chain", CHAINS, ids=[",".join(c) for c in CHAINS])
def test_the_sampler_chain_follows_its_documentation(model, chain):
    prompt = [1, 2, 3, 2]
    for seed in (0, 7):
        got = model.generate(prompt, 40, seed=seed, **{"top_k": None, **chain})
        rng = Xoshiro(seed)
        seq = list(prompt)
        for _ in range(40):
            seq.append(sample(model.logits(seq)[-1], seq, rng, chain))
        assert got == seq, f"seed {seed}"


def test_a_banned_id_never_comes(model):
    out = model.generate([1], 60, temperature=1.5, seed=3, logit_bias={4: -math.inf})
    assert 4 not in out[1:]


def test_a_repetition_penalty_of_one_changes_nothing(model):
    plain = model.generate([1, 2], 40, temperature=1.0, seed=5)
    assert model.generate([1, 2], 40, temperature=1.0, seed=5, repetition_penalty=1.0) == plain


def test_stream_ids_take_the_same_chain(model):
    chain = {"temperature": 0.9, "top_k": 6, "repetition_penalty": 1.4, "min_p": 0.05}
    full = model.generate([1, 2], 50, seed=2, **chain)
    assert [1, 2, *model.stream_ids([1, 2], 50, seed=2, **chain)] == full


def test_a_misspelled_option_is_named_with_the_one_it_is_closest_to(model):
    # generate() names its keywords itself; stream_ids and generate_text take **options.
    with pytest.raises(TypeError, match=r"^unknown generation option 'topk'; did you mean 'top_k'"):
        model.stream_ids([1, 2], 5, topk=3)
    with pytest.raises(TypeError, match="unknown generation option 'num_beams'"):
        model.generate_many([1, 2], 5, num_beams=2)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"min_p": 1.5}, ValueError, r"min_p must be in \[0, 1\]"),
        ({"min_p": -0.1}, ValueError, "min_p must be in"),
        ({"repetition_penalty": float("nan")}, ValueError, "repetition_penalty must be > 0 and"),
        ({"repetition_penalty": 0.0}, ValueError, "repetition_penalty must be > 0 and finite"),
        ({"frequency_penalty": float("nan")}, ValueError, "frequency_penalty must be a finite"),
        ({"presence_penalty": float("inf")}, ValueError, "presence_penalty must be a finite"),
        ({"penalty_last_n": -1}, ValueError, "penalty_last_n must be between"),
        # Values that float32 would narrow out of range are refused as given.
        ({"top_p": 1e-300}, ValueError, r"top_p must be in \(0, 1\] in float32, got 1e-300 \(0"),
        ({"temperature": 1e300}, ValueError, r"temperature .* got 1e\+300 \(inf in float32\)"),
        ({"logit_bias": {24: 1.0}}, ValueError, "id 24 is out of range for vocab_size 24"),
        ({"logit_bias": {1: float("nan")}}, ValueError, "must be finite or -inf"),
        (
            {"logit_bias": {2: 3.5e38}},
            ValueError,
            r"logit_bias\[2\] must be finite or -inf in float32, got 3.5e\+38 \(inf in float32\)",
        ),
        (
            {"logit_bias": {i: -math.inf for i in range(24)}},
            ValueError,
            "logit_bias bans every one of the 24 ids",
        ),
        ({"logit_bias": {1: "big"}}, TypeError, "must be a number"),
        ({"logit_bias": [1, 2]}, TypeError, "logit_bias must be a dict"),
        ({"window": "wide"}, ValueError, 'window must be "shift" or "sliding"'),
        ({"beams": 3}, TypeError, "'beams'"),
        ({"topk": 3}, TypeError, "'topk'"),
    ],
)
def test_bad_sampler_settings_are_clear_errors(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.generate([1, 2], 5, **kwargs)
    with pytest.raises(error, match=message):
        model.stream_ids([1, 2], 5, **kwargs)
