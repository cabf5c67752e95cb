"""Bad input of every kind gives a specific Python exception whose message names the
problem, and leaves nothing half-done. Each case builds its input in a temporary folder."""

from __future__ import annotations

import json
import resource
import struct
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import tinylm

GO_VOCAB = ["the", "cat", "sat", "on", "mat", "big", "dog", "ate", "END"]


def go_file() -> dict:
    """A valid Go TinyLM file (d_model 4, 1 layer, 2 heads, d_ff 4, 6 positions)."""
    rng = np.random.default_rng(0)
    c, f, v, p = 4, 4, 9, 6

    def m(rows: int, cols: int) -> list:
        return np.round(rng.standard_normal((rows, cols)) * 0.1, 4).tolist()

    weights = {
        "token_embed.weight": m(v, c),
        "pos_embed.weight": m(p, c),
        "blocks.0.norm1.weight": [1.0] * c,
        "blocks.0.norm1.bias": [0.0] * c,
        "blocks.0.attn.W_q.weight": m(c, c),
        "blocks.0.attn.W_k.weight": m(c, c),
        "blocks.0.attn.W_v.weight": m(c, c),
        "blocks.0.attn.W_o.weight": m(c, c),
        "blocks.0.norm2.weight": [1.0] * c,
        "blocks.0.norm2.bias": [0.0] * c,
        "blocks.0.ff.linear1.weight": m(c, f),
        "blocks.0.ff.linear1.bias": [0.0] * f,
        "blocks.0.ff.linear2.weight": m(f, c),
        "blocks.0.ff.linear2.bias": [0.0] * c,
        "ln_f.weight": [1.0] * c,
        "ln_f.bias": [0.0] * c,
        "lm_head.weight": m(v, c),
    }
    return {"d_model": c, "n_layers": 1, "n_heads": 2, "vocab": list(GO_VOCAB), "weights": weights}


def edit(change: Callable[[dict], None]) -> Callable[[], bytes]:
    def build() -> bytes:
        doc = go_file()
        change(doc)
        return json.dumps(doc).encode()

    return build


def setter(*keys_and_value):
    *keys, value = keys_and_value

    def change(doc: dict) -> None:
        target = doc
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value

    return change


def deleter(*keys):
    def change(doc: dict) -> None:
        target = doc
        for k in keys[:-1]:
            target = target[k]
        del target[keys[-1]]

    return change


def raw(text: str) -> Callable[[], bytes]:
    return lambda: text.encode()


GO_CASES = [
    ("truncated", lambda: json.dumps(go_file()).encode()[:300], "truncated JSON"),
    ("not_json", raw("{d_model: 4}"), "invalid JSON"),
    ("top_level_list", raw("[1, 2, 3]"), "safetensors"),
    ("infinity_literal", raw('{"d_model": Infinity}'), "invalid JSON"),
    ("d_model_string", edit(setter("d_model", "4")), '"d_model" must be a positive integer'),
    ("d_model_float", edit(setter("d_model", 4.5)), '"d_model" must be a positive integer'),
    ("d_model_zero", edit(setter("d_model", 0)), '"d_model" = 0 is out of range'),
    ("d_model_negative", edit(setter("d_model", -4)), '"d_model" must be a positive integer'),
    ("d_model_absurd", edit(setter("d_model", 10**9)), '"d_model" = 1000000000 is out of range'),
    ("n_layers_missing", edit(deleter("n_layers")), 'missing field "n_layers"'),
    ("n_heads_not_dividing", edit(setter("n_heads", 3)), "n_heads = 3 does not divide d_model = 4"),
    ("vocab_not_list", edit(setter("vocab", "the cat")), '"vocab" must be a list of strings'),
    ("vocab_number_inside", edit(setter("vocab", 0, 7)), '"vocab" must be a list of strings'),
    ("vocab_duplicate", edit(setter("vocab", 1, "the")), '"the" appears twice'),
    (
        "vocab_disagrees_with_embedding",
        edit(lambda d: d["vocab"].pop()),
        '"token_embed.weight" has shape [9, 4], expected [8, 4] (the vocab has 8 words)',
    ),
    ("weights_missing", edit(deleter("weights")), 'missing field "weights"'),
    ("weights_not_object", edit(setter("weights", [1, 2])), '"weights" must be an object'),
    (
        "weight_missing",
        edit(deleter("weights", "blocks.0.attn.W_q.weight")),
        'missing weight "blocks.0.attn.W_q.weight"',
    ),
    (
        "weight_extra",
        edit(setter("weights", "blocks.1.norm1.weight", [1.0] * 4)),
        'unexpected weight "blocks.1.norm1.weight"',
    ),
    (
        "weight_wrong_shape",
        edit(setter("weights", "blocks.0.attn.W_q.weight", [[0.1] * 3] * 4)),
        '"blocks.0.attn.W_q.weight" has shape [4, 3], expected [4, 4]',
    ),
    (
        "weight_ragged",
        edit(
            setter(
                "weights", "blocks.0.attn.W_k.weight", [[0.1] * 4, [0.1] * 4, [0.1] * 3, [0.1] * 4]
            )
        ),
        'weight "blocks.0.attn.W_k.weight": ragged nested list: the list at [2] has 3 entries',
    ),
    (
        "weight_is_string",
        edit(setter("weights", "ln_f.bias", "zeros")),
        'weight "ln_f.bias": expected a number',
    ),
    (
        "weight_has_null",
        edit(setter("weights", "ln_f.bias", [0.0, None, 0.0, 0.0])),
        'weight "ln_f.bias": expected a number at [1]',
    ),
    (
        "weight_overflows_float32",
        edit(setter("weights", "ln_f.weight", [1e39, 1.0, 1.0, 1.0])),
        "the number 1e+39 at [0] is out of range for float32",
    ),
    (
        "weight_too_deep",
        edit(setter("weights", "ln_f.bias", [[[[[[[[[0.0]]]]]]]]])),
        "nested deeper than 8 levels",
    ),
    (
        "pos_embed_wrong_width",
        edit(setter("weights", "pos_embed.weight", [[0.0] * 5] * 6)),
        '"pos_embed.weight" must have shape [positions, 4], found [6, 5]',
    ),
    (
        "max_seq_len_disagrees",
        edit(setter("max_seq_len", 8)),
        '"max_seq_len" = 8 disagrees with the weights',
    ),
    ("eps_not_number", edit(setter("eps", "small")), '"eps" must be a number'),
]


@pytest.mark.parametrize(("name", "build", "message"), GO_CASES, ids=[c[0] for c in GO_CASES])
def test_malformed_go_json_is_a_format_error_naming_the_problem(tmp_path, name, build, message):
    path = tmp_path / f"{name}.json"
    path.write_bytes(build())
    with pytest.raises(tinylm.FormatError) as err:
        tinylm.Transformer.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_valid_go_file_loads(tmp_path):
    """The base of the cases above is itself valid."""
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(go_file()))
    assert tinylm.Transformer.load(path).config.d_model == 4


def test_absurd_size_fails_before_allocating(tmp_path):
    doc = go_file()
    doc["d_model"] = 65536  # within the per-field limit; the shapes then disagree
    path = tmp_path / "big.json"
    path.write_text(json.dumps(doc))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(tinylm.FormatError, match="pos_embed"):
        tinylm.Transformer.load(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB


# ------------------------------------------------------------------------------ safetensors


def small_model() -> tinylm.Transformer:
    config = tinylm.Config(vocab_size=5, d_model=4, n_layers=1, n_heads=2, d_ff=4, max_seq_len=3)
    return tinylm.Transformer(config, seed=0, tokenizer=tinylm.Tokenizer.char_level("abcde"))


def st_parts(tmp_path: Path) -> tuple[dict, bytes]:
    """(header dict, data bytes) of a valid tinylm safetensors file."""
    path = tmp_path / "base.safetensors"
    small_model().save(path)
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def st_bytes(header: dict, body: bytes) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


def first_tensor(header: dict) -> str:
    return min(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )


def st_edit(change: Callable[[dict, bytes], tuple[dict, bytes]]):
    return lambda tmp: st_bytes(*change(*st_parts(tmp)))


def with_meta(key: str, value: str | None):
    def change(header: dict, body: bytes):
        if value is None:
            del header["__metadata__"][key]
        else:
            header["__metadata__"][key] = value
        return header, body

    return change


def with_dtype(dtype: str):
    def change(header: dict, body: bytes):
        header[first_tensor(header)]["dtype"] = dtype
        return header, body

    return change


def offsets_past_end(header: dict, body: bytes):
    last = max(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][1]
    )
    start, end = header[last]["data_offsets"]
    header[last]["data_offsets"] = [start, end + 64]
    return header, body


def overlapping(header: dict, body: bytes):
    names = sorted(
        (k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0]
    )
    a, b = names[0], names[1]
    header[b]["data_offsets"] = [
        header[a]["data_offsets"][0],
        header[a]["data_offsets"][0] + 4 * int(np.prod(header[b]["shape"])),
    ]
    return header, body


def nan_value(header: dict, body: bytes):
    start = header["ln_f.weight"]["data_offsets"][0]
    body = body[:start] + struct.pack("<f", float("nan")) + body[start + 4 :]
    return header, body


def drop_tensor(header: dict, body: bytes):
    del header["ln_f.bias"]  # offsets now have a gap
    return header, body


def rename_tensor(name: str):
    def change(header: dict, body: bytes):
        header[name] = header.pop("ln_f.bias")
        return header, body

    return change


def wrong_shape(header: dict, body: bytes):
    header["ln_f.bias"]["shape"] = [2, 2]
    return header, body


ST_CASES = [
    ("truncated", lambda tmp: st_bytes(*st_parts(tmp))[:100], "invalid safetensors file"),
    (
        "header_length_huge",
        lambda tmp: struct.pack("<Q", 2**62) + b"{}" * 10,
        "invalid safetensors file",
    ),
    (
        "header_not_json",
        lambda tmp: struct.pack("<Q", 9) + b"{not json",
        "invalid safetensors file",
    ),
    ("offsets_past_end", st_edit(offsets_past_end), "invalid safetensors file"),
    ("overlapping_tensors", st_edit(overlapping), "invalid safetensors file"),
    ("dtype_f16", st_edit(with_dtype("F16")), "invalid safetensors file"),
    ("dtype_i32", st_edit(with_dtype("I32")), "dtype I32; tinylm reads only F32"),
    ("format_missing", st_edit(with_meta("format", None)), 'no "format": "tinylm" entry'),
    ("format_other", st_edit(with_meta("format", "pt")), 'metadata "format" is "pt"'),
    ("version_future", st_edit(with_meta("format_version", "9")), 'format_version "9"'),
    ("config_missing", st_edit(with_meta("config", None)), 'no "config" entry'),
    ("config_invalid_json", st_edit(with_meta("config", "{oops")), 'metadata "config" is invalid'),
    (
        "config_heads_not_dividing",
        st_edit(
            with_meta(
                "config",
                json.dumps(
                    {
                        "vocab_size": 5,
                        "d_model": 4,
                        "n_layers": 1,
                        "n_heads": 3,
                        "d_ff": 4,
                        "max_seq_len": 3,
                        "eps": 1e-5,
                        "attn_bias": True,
                        "tie_embeddings": True,
                    }
                ),
            )
        ),
        "n_heads = 3 does not divide d_model = 4",
    ),
    (
        "tokenizer_size_disagrees",
        st_edit(with_meta("tokenizer", json.dumps({"type": "char", "vocab": ["a", "b"]}))),
        "the tokenizer has 2 tokens but the config says vocab_size = 5",
    ),
    (
        "tokenizer_invalid",
        st_edit(with_meta("tokenizer", '{"type": "bpe"}')),
        "invalid tokenizer JSON",
    ),
    ("nan_value", st_edit(nan_value), 'tensor "ln_f.weight" holds a non-finite value (NaN)'),
    ("tensor_missing", st_edit(drop_tensor), "invalid safetensors file"),
    (
        "tensor_unexpected",
        st_edit(rename_tensor("blocks.7.ff.linear1.bias")),
        'unexpected tensor "blocks.7.ff.linear1.bias"',
    ),
    (
        "tensor_wrong_shape",
        st_edit(wrong_shape),
        'tensor "ln_f.bias" has shape [2, 2], expected [4]',
    ),
]


@pytest.mark.parametrize(("name", "build", "message"), ST_CASES, ids=[c[0] for c in ST_CASES])
def test_malformed_safetensors_is_a_format_error_naming_the_problem(tmp_path, name, build, message):
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(build(tmp_path))
    with pytest.raises(tinylm.FormatError) as err:
        tinylm.Transformer.load(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "the file is empty"), (b"hello world", "invalid safetensors file (and not JSON")],
    ids=["empty", "plain_text"],
)
def test_files_that_are_no_weights_at_all(tmp_path, content, message):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(tinylm.FormatError, match=message.replace("(", r"\(")):
        tinylm.Transformer.load(path)


def test_a_directory_is_not_a_weights_file(tmp_path):
    with pytest.raises(IsADirectoryError, match="is a directory"):
        tinylm.Transformer.load(tmp_path)


def test_a_missing_file_names_its_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.safetensors: no such file"):
        tinylm.Transformer.load(tmp_path / "nothing.safetensors")


# ------------------------------------------------------------------------------ model calls


@pytest.fixture(scope="module")
def model() -> tinylm.Transformer:
    return small_model()


CALL_CASES = [
    ("id_out_of_range", lambda m: m.logits([1, 99]), ValueError, "token id 99"),
    ("id_negative", lambda m: m.logits([1, -1]), ValueError, "token id -1"),
    ("ids_empty", lambda m: m.logits([]), ValueError, "empty"),
    ("ids_float", lambda m: m.logits([1.5, 2.0]), TypeError, "must be integers"),
    ("ids_ragged", lambda m: m.logits([[1, 2], [3]]), ValueError, "rectangular"),
    ("ids_3d", lambda m: m.logits(np.zeros((1, 1, 2), dtype=int)), ValueError, "1-D (T,) or 2-D"),
    (
        "longer_than_context",
        lambda m: m.logits([1, 2, 3, 4]),
        ValueError,
        "more than the model's context of 3",
    ),
    ("targets_other_shape", lambda m: m.loss([[1, 2]], [[1, 2, 3]]), tinylm.ShapeError, "targets"),
    ("target_out_of_range", lambda m: m.loss([1, 2], [1, 7]), ValueError, "token id 7"),
    ("prompt_empty", lambda m: m.generate([], 3), ValueError, "prompt is empty"),
    ("prompt_id_out_of_range", lambda m: m.generate([5], 3), ValueError, "token id 5"),
    ("max_new_tokens_negative", lambda m: m.generate([1], -1), ValueError, "max_new_tokens"),
    (
        "temperature_negative",
        lambda m: m.generate([1], 3, temperature=-1.0),
        ValueError,
        "temperature",
    ),
    (
        "temperature_nan",
        lambda m: m.generate([1], 3, temperature=float("nan")),
        ValueError,
        "temperature",
    ),
    ("top_p_zero", lambda m: m.generate([1], 3, temperature=1.0, top_p=0.0), ValueError, "top_p"),
    (
        "top_p_above_one",
        lambda m: m.generate([1], 3, temperature=1.0, top_p=1.01),
        ValueError,
        "top_p",
    ),
    ("top_k_zero", lambda m: m.generate([1], 3, top_k=0), ValueError, "top_k"),
    ("stop_id_out_of_range", lambda m: m.generate([1], 3, stop=[50]), ValueError, "stop"),
    ("unknown_character", lambda m: m.tokenizer.encode("abz"), tinylm.TokenizerError, "'z'"),
    ("undecodable_id", lambda m: m.tokenizer.decode([0, 9]), tinylm.TokenizerError, "token id 9"),
    (
        "save_unknown_format",
        lambda m: m.save("/tmp/x.bin", format="onnx"),
        ValueError,
        "unknown weights format",
    ),
    (
        "save_go_tied",
        lambda m: m.save("/tmp/never-written.json"),
        ValueError,
        "cannot save in the Go TinyLM format",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "message"), CALL_CASES, ids=[c[0] for c in CALL_CASES]
)
def test_bad_calls_raise_specific_errors(model, name, call, error, message):
    with pytest.raises(error) as err:
        call(model)
    assert message in str(err.value)


CONFIG_CASES = [
    ({"n_heads": 3}, tinylm.ConfigError, "n_heads = 3 does not divide d_model = 4"),
    ({"d_model": 0}, tinylm.ConfigError, "d_model must be positive, got 0"),
    ({"d_model": -8}, tinylm.ConfigError, "d_model must be positive, got -8"),
    ({"d_model": 10**9}, tinylm.ConfigError, "d_model = 1000000000 exceeds the limit"),
    ({"vocab_size": 10**12}, tinylm.ConfigError, "vocab_size = 1000000000000 exceeds"),
    ({"d_model": 4096, "n_layers": 1000}, tinylm.ConfigError, "parameters, more than the limit"),
    ({"d_model": 4.0}, TypeError, "d_model must be an int"),
    ({"attn_bias": "yes"}, TypeError, "attn_bias must be a bool"),
    ({"eps": 0.0}, tinylm.ConfigError, "eps must be a positive finite number"),
    ({"max_seq_len": 0}, tinylm.ConfigError, "max_seq_len must be positive"),
]


@pytest.mark.parametrize(
    ("change", "error", "message"), CONFIG_CASES, ids=[str(c[0]) for c in CONFIG_CASES]
)
def test_bad_configs_are_refused_before_allocating(change, error, message):
    base = {"vocab_size": 5, "d_model": 4, "n_layers": 1, "n_heads": 2, "max_seq_len": 3}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(error) as err:
        tinylm.Transformer(tinylm.Config(**{**base, **change}))
    assert message in str(err.value)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100 * 1024  # KiB


STATE_CASES = [
    ("missing", lambda s: s.pop("ln_f.bias"), ValueError, 'missing "ln_f.bias"'),
    (
        "extra",
        lambda s: s.update({"blocks.5.x": np.zeros(2, np.float32)}),
        ValueError,
        'unexpected entry "blocks.5.x"',
    ),
    (
        "wrong_shape",
        lambda s: s.update({"ln_f.bias": np.zeros(5, np.float32)}),
        tinylm.ShapeError,
        'state_dict["ln_f.bias"]',
    ),
    (
        "nan",
        lambda s: s["ln_f.weight"].__setitem__(0, np.nan),
        tinylm.NonFiniteError,
        'state_dict["ln_f.weight"] holds NaN',
    ),
    (
        "not_numbers",
        lambda s: s.update({"ln_f.bias": np.array(["a", "b", "c", "d"])}),
        ValueError,
        "could not convert",
    ),
]


@pytest.mark.parametrize(
    ("name", "change", "error", "message"), STATE_CASES, ids=[c[0] for c in STATE_CASES]
)
def test_bad_state_dict_changes_nothing(name, change, error, message):
    model = small_model()
    before = model.state_dict()
    state = model.state_dict()
    state["ln_f.weight"] = state["ln_f.weight"] + 1.0  # a valid change that must not land
    change(state)
    with pytest.raises(error) as err:
        model.load_state_dict(state)
    assert message in str(err.value)
    for key, value in before.items():
        np.testing.assert_array_equal(model.state_dict()[key], value)


# ------------------------------------------------------------------------------ training data


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        (b"", [], "at least 2 characters"),
        (b"x", [], "at least 2 characters"),
        (b"\xc3\x28 invalid utf-8", [], "not UTF-8 text (invalid byte 0xc3 at offset 0)"),
        (b"short text, long context" * 2, ["--context", "64"], "too few for a context of 64"),
    ],
    ids=["empty", "one_character", "not_utf8", "context_longer_than_data"],
)
def test_bad_training_text_is_a_one_line_cli_error(tmp_path, content, extra, message):
    data = tmp_path / "data.txt"
    data.write_bytes(content)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm",
            "train",
            "--data",
            str(data),
            "--out",
            str(tmp_path / "out"),
            "--steps",
            "2",
            *extra,
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_training_data_shorter_than_the_context_is_an_error():
    model = small_model()
    with pytest.raises(ValueError, match="too few for a context of 3"):
        tinylm.train(model, np.array([1, 2, 3]), None, tinylm.TrainConfig(steps=1), progress=False)
