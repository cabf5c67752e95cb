"""Properties that hold for any input (Hypothesis draws the inputs)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinylm

#: Examples per property: 40 in the test suite; a long run sets, e.g.,
#: TINYLM_HYPOTHESIS_EXAMPLES=20000 (see README, Robustness).
EXAMPLES = int(os.environ.get("TINYLM_HYPOTHESIS_EXAMPLES", "40"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

words = st.text(alphabet=st.characters(blacklist_categories=("Z", "C")), min_size=1, max_size=8)


@SETTINGS
@given(st.text(min_size=1, max_size=200))
def test_char_tokenizer_round_trips_the_text_it_was_built_from(text):
    tok = tinylm.Tokenizer.char_level(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text


@SETTINGS
@given(st.lists(words, min_size=1, max_size=30, unique=True), st.data())
def test_word_tokenizer_round_trips_sentences_of_its_words(vocab, data):
    tok = tinylm.Tokenizer.word_level(vocab)
    sentence = data.draw(st.lists(st.sampled_from(vocab), min_size=1, max_size=20))
    ids = tok.encode("  ".join(sentence) + "\n")
    assert tok.decode(ids) == " ".join(sentence)
    assert tinylm.Tokenizer.from_json(tok.to_json()) == tok


configs = st.builds(
    lambda v, h, per_head, layers, ff, ctx, bias, tied: tinylm.Config(
        vocab_size=v,
        d_model=h * per_head,
        n_layers=layers,
        n_heads=h,
        d_ff=ff,
        max_seq_len=ctx,
        attn_bias=bias,
        tie_embeddings=tied,
    ),
    st.integers(1, 12),
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(1, 2),
    st.integers(1, 9),
    st.integers(1, 6),
    st.booleans(),
    st.booleans(),
)


@SETTINGS
@given(configs, st.integers(0, 2**32))
def test_safetensors_round_trip_is_exact_for_any_small_config(config, seed):
    model = tinylm.Transformer(config, seed=seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.safetensors"
        model.save(path)
        again = tinylm.Transformer.load(path)
    assert again.config == config
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)


@SETTINGS
@given(configs, st.integers(0, 2**32))
def test_go_round_trip_is_exact_when_the_format_can_hold_the_model(config, seed):
    config = tinylm.Config(**{**config.__dict__, "attn_bias": False, "tie_embeddings": False})
    tok = tinylm.Tokenizer.word_level([f"w{i}" for i in range(config.vocab_size)])
    model = tinylm.Transformer(config, seed=seed, tokenizer=tok)
    state = {
        k: (np.random.default_rng(seed).standard_normal(v.shape) * 3).astype(np.float32)
        for k, v in model.state_dict().items()
    }
    model.load_state_dict(state)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.json"
        model.save(path)
        again = tinylm.Transformer.load(path)
    assert again.config == config
    for name, value in state.items():
        np.testing.assert_array_equal(again.state_dict()[name], value)


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_either_load_or_raise_a_tinylm_error(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "weights"
        path.write_bytes(data)
        try:
            tinylm.Transformer.load(path)
        except tinylm.TinyLMError as exc:
            assert str(path) in str(exc)


@SETTINGS
@given(st.binary(min_size=9, max_size=400))
def test_bytes_behind_a_safetensors_header_length_never_crash(data):
    header = b'{"__metadata__": {"format": "tinylm"}, "x": {"dtype": "F32", "shape": [2], '
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "w.safetensors"
        body = header + data
        path.write_bytes(len(body).to_bytes(8, "little") + body)
        try:
            tinylm.Transformer.load(path)
        except tinylm.TinyLMError:
            pass


@SETTINGS
@given(
    st.integers(0, 2**32),
    st.floats(0.0, 5.0),
    st.one_of(st.none(), st.integers(1, 20)),
    st.one_of(st.none(), st.floats(0.01, 1.0)),
    st.lists(st.integers(0, 10), min_size=1, max_size=12),
)
def test_generation_stays_in_the_vocabulary(seed, temperature, top_k, top_p, prompt):
    config = tinylm.Config(vocab_size=11, d_model=8, n_layers=1, n_heads=2, max_seq_len=5)
    model = tinylm.Transformer(config, seed=seed % 7)
    out = model.generate(
        prompt, max_new_tokens=8, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
    )
    assert out[: len(prompt)] == prompt and len(out) == len(prompt) + 8
    assert all(0 <= i < 11 for i in out)
