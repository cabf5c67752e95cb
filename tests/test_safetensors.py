"""tinylm's own format: safetensors with the config and tokenizer in its metadata."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import tinylm
from conftest import random_model


def _model() -> tinylm.Transformer:
    config = tinylm.Config(vocab_size=9, d_model=16, n_layers=2, n_heads=4, d_ff=40, max_seq_len=10)
    model = random_model(config, seed=1)
    model.tokenizer = tinylm.Tokenizer.char_level("hello world!")
    return model


def test_round_trip_keeps_weights_config_and_tokenizer(tmp_path: Path) -> None:
    model = _model()
    path = tmp_path / "m.safetensors"
    model.save(path)
    again = tinylm.Transformer.load(path)
    assert again.config == model.config
    assert again.tokenizer == model.tokenizer
    assert again.source_format == "safetensors"
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[name], value)
    np.testing.assert_array_equal(again.logits([1, 2, 3]), model.logits([1, 2, 3]))


def test_file_is_standard_safetensors(tmp_path: Path) -> None:
    """Readable by any safetensors reader: an 8-byte header length, a JSON header with
    dtype/shape/offsets per tensor, and our metadata under __metadata__."""
    model = _model()
    path = tmp_path / "m.safetensors"
    model.save(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    meta = header.pop("__metadata__")
    assert meta["format"] == "tinylm"
    assert json.loads(meta["config"])["d_ff"] == 40
    assert json.loads(meta["tokenizer"])["type"] == "char"
    state = model.state_dict()
    assert set(header) == set(state)
    body = data[8 + n :]
    for name, info in header.items():
        assert info["dtype"] == "F32"
        start, end = info["data_offsets"]
        values = np.frombuffer(body[start:end], dtype="<f4").reshape(info["shape"])
        np.testing.assert_array_equal(values, state[name])


def test_format_is_detected_from_contents_not_the_name(tmp_path: Path, seed_path: Path) -> None:
    model = _model()
    odd = tmp_path / "weights.bin"
    model.save(odd, format="safetensors")
    assert tinylm.Transformer.load(odd).source_format == "safetensors"
    go_copy = tmp_path / "go_weights.dat"
    go_copy.write_bytes(seed_path.read_bytes())
    assert tinylm.Transformer.load(go_copy).source_format == "go-json"


def test_model_without_tokenizer_round_trips(tmp_path: Path) -> None:
    model = _model()
    model.tokenizer = None
    path = tmp_path / "m.safetensors"
    model.save(path)
    assert tinylm.Transformer.load(path).tokenizer is None


def test_a_tokenizer_of_another_size_is_refused() -> None:
    model = _model()
    with pytest.raises(tinylm.ConfigError, match="10 tokens"):
        model.tokenizer = tinylm.Tokenizer.char_level("0123456789")


def test_unknown_save_format_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown weights format"):
        _model().save(tmp_path / "m", format="pickle")
