"""The Go TinyLM's weights file: loading it, its reference values, and the format round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import reference
import tinylm
from conftest import GO_CONFIG, random_model

GO_VOCAB = ["the", "cat", "sat", "on", "mat", "big", "dog", "ate", "END"]


def test_seed_file_loads_with_its_config_and_vocab(seed_path: Path) -> None:
    model = tinylm.Transformer.load(seed_path)
    c = model.config
    assert (c.d_model, c.n_layers, c.n_heads, c.d_ff, c.max_seq_len) == (4, 1, 2, 4, 6)
    assert (c.attn_bias, c.tie_embeddings, c.eps) == (False, False, 1e-5)
    assert model.source_format == "go-json"
    assert model.tokenizer is not None and model.tokenizer.vocab == GO_VOCAB


def test_seed_logits_match_the_go_reference(seed_path: Path) -> None:
    model = tinylm.Transformer.load(seed_path)
    logits = model.logits(model.tokenizer.encode("the cat")).astype(np.float64)
    row0 = [0.3577351046779953, 0.7154702093559906, 1.0732053140339857]
    np.testing.assert_allclose(logits[0, :3], row0, rtol=1e-6)
    np.testing.assert_allclose(logits[0, -1], 3.2196159421019575, rtol=1e-6)
    np.testing.assert_allclose(logits[1, :2], [0.0973442097341306, 0.1946884194682612], rtol=1e-6)
    np.testing.assert_allclose(logits[1, -1], 0.8760978876071754, rtol=1e-6)


def test_seed_loss_matches_the_go_reference(seed_path: Path) -> None:
    model = tinylm.Transformer.load(seed_path)
    loss = model.loss([0, 1, 2, 3, 4], [1, 2, 3, 4, 8])
    assert abs(loss - 2.3959804603732877) < 1e-6


def test_seed_matches_the_float64_reference_on_raw_json(seed_path: Path) -> None:
    """The reference reads the JSON itself, so a loader bug cannot hide in both."""
    raw = json.loads(seed_path.read_text())
    params = {k: np.array(v, dtype=np.float64) for k, v in raw["weights"].items()}
    config = GO_CONFIG
    ids = np.array([[0, 1, 2, 3, 4, 5]])
    ref = reference.forward(params, config, ids)
    ours = tinylm.Transformer.load(seed_path).logits(ids)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)


def test_go_format_round_trip_is_exact(tmp_path: Path) -> None:
    config = tinylm.Config(
        vocab_size=9,
        d_model=8,
        n_layers=2,
        n_heads=2,
        d_ff=12,
        max_seq_len=7,
        attn_bias=False,
        tie_embeddings=False,
    )
    model = random_model(config, seed=9)
    model.tokenizer = tinylm.Tokenizer.word_level(GO_VOCAB)
    path = tmp_path / "model.json"
    model.save(path)
    again = tinylm.Transformer.load(path)
    assert again.config == config
    assert again.tokenizer == model.tokenizer
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value, err_msg=name)
    # Saving the reloaded model writes the same bytes.
    path2 = tmp_path / "again.json"
    again.save(path2)
    assert path2.read_bytes() == path.read_bytes()


def test_saved_go_file_has_the_go_layout(tmp_path: Path, seed_path: Path) -> None:
    model = tinylm.Transformer.load(seed_path)
    path = tmp_path / "out.json"
    model.save(path)
    saved = json.loads(path.read_text())
    original = json.loads(seed_path.read_text())
    assert {k: saved[k] for k in ("d_model", "n_layers", "n_heads", "vocab")} == {
        k: original[k] for k in ("d_model", "n_layers", "n_heads", "vocab")
    }
    assert set(saved["weights"]) == set(original["weights"])
    for name, value in original["weights"].items():
        np.testing.assert_array_equal(
            np.array(saved["weights"][name], dtype=np.float32),
            np.array(value, dtype=np.float32),
            err_msg=name,
        )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"attn_bias": True}, "attention biases"),
        ({"tie_embeddings": True}, "tied output head"),
        ({"eps": 1e-6}, "eps 1e-5"),
    ],
)
def test_models_the_go_format_cannot_hold_are_refused(tmp_path: Path, change, reason) -> None:
    base = dict(
        vocab_size=9,
        d_model=4,
        n_layers=1,
        n_heads=2,
        d_ff=4,
        max_seq_len=6,
        attn_bias=False,
        tie_embeddings=False,
    )
    model = tinylm.Transformer(
        tinylm.Config(**{**base, **change}), tokenizer=tinylm.Tokenizer.word_level(GO_VOCAB)
    )
    path = tmp_path / "m.json"
    with pytest.raises(ValueError, match=reason):
        model.save(path)
    assert not path.exists()


def test_go_format_needs_a_word_vocabulary(tmp_path: Path) -> None:
    config = tinylm.Config(
        vocab_size=3,
        d_model=4,
        n_layers=1,
        n_heads=2,
        max_seq_len=4,
        attn_bias=False,
        tie_embeddings=False,
    )
    model = tinylm.Transformer(config, tokenizer=tinylm.Tokenizer.char_level("abc"))
    with pytest.raises(ValueError, match="word-level"):
        model.save(tmp_path / "m.json")
    model.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer"):
        model.save(tmp_path / "m.json")


def test_go_model_generation_stops_after_end(seed_path: Path) -> None:
    model = tinylm.Transformer.load(seed_path)
    end = GO_VOCAB.index("END")
    out = model.generate([0], max_new_tokens=20, temperature=0.0)
    assert end not in out[1:-1]
    assert out[-1] == end or len(out) == 21
    # Without the Go default, an explicit empty stop list runs to max_new_tokens.
    assert len(model.generate([0], max_new_tokens=20, stop=[], temperature=0.0)) == 21
