"""llama2.c's model.bin (versions 0 and 1) and tokenizer.bin both ways, checked by llama2.c's
own run.c (compiled here with the system C compiler) generating tinylm's greedy ids."""

from __future__ import annotations

import dataclasses
import re
import shutil
import struct
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

import tinylm
from conftest import SHARED
from interop_helpers import llama_config, model_of
from tinylm.interop import llama2c

RUN_C = SHARED / "peers" / "llama2.c" / "run.c"

CONFIGS = {
    "gqa_untied": llama_config(eps=1e-5),
    "mha_tied": llama_config(eps=1e-5, n_kv_heads=None, tie_embeddings=True),
}


def assert_same_model(a: tinylm.Transformer, b: tinylm.Transformer) -> None:
    assert a.config == b.config
    for name, w in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[name], w, err_msg=name)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_model_bin_round_trips_exactly(tmp_path: Path, name: str, version: int) -> None:
    config = CONFIGS[name]
    model = model_of(config, seed=1)
    llama2c.save(model, tmp_path / "model.bin", version)
    back = tinylm.Transformer.load(tmp_path / "model.bin", format="llama2c")
    assert_same_model(model, back)


def test_version_0_layout_is_the_one_run_c_maps(tmp_path: Path) -> None:
    """Header and the first arrays read by hand, in run.c's memory_map_weights order."""
    config = CONFIGS["gqa_untied"]
    model = model_of(config, seed=2)
    model.save(tmp_path / "model.bin", format="llama2c")
    raw = (tmp_path / "model.bin").read_bytes()
    header = struct.unpack("<7i", raw[:28])
    # dim, hidden_dim, n_layers, n_heads, n_kv_heads, -vocab_size (not shared), seq_len
    assert header == (32, config.d_ff, 2, 4, 2, -61, 16)
    body = np.frombuffer(raw[28:], dtype="<f4")
    state = model.state_dict()
    np.testing.assert_array_equal(body[: 61 * 32], state["token_embed.weight"].ravel())
    at = 61 * 32 + 2 * 32  # after token_embedding and rms_att
    # wq of layer 0 is PyTorch's [out, in]: tinylm's W_q transposed.
    np.testing.assert_array_equal(
        body[at : at + 32 * 32], state["blocks.0.attn.W_q.weight"].T.ravel()
    )
    np.testing.assert_array_equal(body[-61 * 32 :], state["lm_head.weight"].ravel())


def test_version_1_has_the_ak42_header(tmp_path: Path) -> None:
    model = model_of(CONFIGS["mha_tied"], seed=3)
    llama2c.save(model, tmp_path / "model.bin", version=1)
    raw = (tmp_path / "model.bin").read_bytes()
    assert raw[:4] == b"24ka"  # uint32 0x616b3432 little-endian
    assert struct.unpack("<i7iB", raw[4:37]) == (
        1,
        32,
        CONFIGS["mha_tied"].d_ff,
        2,
        4,
        4,
        61,
        16,
        1,
    )
    assert raw[37:256] == b"\0" * 219


def test_a_config_llama2c_cannot_hold_is_refused_naming_the_field(tmp_path: Path) -> None:
    model = tinylm.Transformer(llama_config(eps=1e-6), backend="reference")
    with pytest.raises(tinylm.ConfigError, match="eps = "):
        model.save(tmp_path / "model.bin", format="llama2c")
    model = tinylm.Transformer(
        tinylm.Config(vocab_size=10, d_model=16, n_heads=2), backend="reference"
    )
    with pytest.raises(tinylm.ConfigError, match="norm = "):
        model.save(tmp_path / "model.bin", format="llama2c")


def test_a_tokenizer_bin_given_to_load_points_to_the_llama2c_tokenizer(tmp_path: Path) -> None:
    model = model_of(CONFIGS["mha_tied"], seed=8)
    model.save(tmp_path / "model.bin", format="llama2c")
    with pytest.raises(ValueError, match=r"Llama2cTokenizer\.load"):
        tinylm.Transformer.load(
            tmp_path / "model.bin", format="llama2c", tokenizer="tokenizer.bin", backend="reference"
        )
    tok = tinylm.Tokenizer.word_level([f"w{i}" for i in range(61)])
    loaded = tinylm.Transformer.load(
        tmp_path / "model.bin", format="llama2c", tokenizer=tok, backend="reference"
    )
    assert loaded.tokenizer == tok and loaded.source_format == "llama2c"


def test_tokenizer_bin_round_trips(tmp_path: Path) -> None:
    pieces = [b"<unk>", b"<s>", b"</s>", b" hello", b"\xe2\x82", b""]
    scores = [0.0, 0.0, 0.0, -1.5, -2.25, 3.0]
    llama2c.save_tokenizer(tmp_path / "tokenizer.bin", pieces, scores)
    assert llama2c.read_tokenizer(tmp_path / "tokenizer.bin", 6) == (pieces, scores)


def test_the_real_llama2_tokenizer_bin_is_read() -> None:
    path = SHARED / "peers" / "llama2.c" / "tokenizer.bin"
    if not path.exists():
        pytest.skip(f"{path} is absent (../shared)")
    pieces, scores = llama2c.read_tokenizer(path, 32000)
    assert pieces[1] == b"\n<s>\n" and pieces[3] == b"<0x00>" and len(scores) == 32000


# ----------------------------------------------------------------------------- run.c


@pytest.fixture(scope="module")
def run_c(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not RUN_C.exists():
        pytest.skip(f"llama2.c's run.c is not at {RUN_C} (../shared is absent)")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("no C compiler (cc, gcc or clang) to build llama2.c's run.c")
    exe = tmp_path_factory.mktemp("llama2c") / "run"
    subprocess.run([cc, "-O2", str(RUN_C), "-lm", "-o", str(exe)], check=True, timeout=120)
    return exe


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_run_c_generates_tinylms_greedy_ids(tmp_path: Path, run_c: Path, name: str) -> None:
    config = CONFIGS[name]
    # One distinct printable piece per id, so run.c's printed text gives back the ids.
    words = [f"[{i}]" for i in range(config.vocab_size)]
    model = model_of(config, seed=4, scale=0.4)
    model.tokenizer = tinylm.Tokenizer.word_level(words)
    llama2c.export(model, tmp_path)
    steps = config.max_seq_len
    proc = subprocess.run(
        [
            str(run_c),
            str(tmp_path / "model.bin"),
            "-z",
            str(tmp_path / "tokenizer.bin"),
            "-t",
            "0",
            "-n",
            str(steps),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    printed = [int(i) for i in re.findall(r"\[(\d+)\]", proc.stdout)]
    # run.c starts from BOS (id 1), samples one id per position 0..steps-1, and stops if it
    # samples BOS again.
    want = model.generate([1], steps, temperature=0)[1:]
    if 1 in want:
        want = want[: want.index(1)]
    assert len(printed) >= 5 and printed == want[: len(printed)]
    assert len(printed) == len(want)


def printed_by_run_c(tok: llama2c.Llama2cTokenizer, ids: list[int]) -> str:
    """What run.c prints for a sequence starting with BOS: each piece after the one before it,
    single bytes that are neither printable nor space skipped (its safe_printf)."""
    out = b""
    for prev, token in zip(ids, ids[1:]):
        piece = tok.decode_bytes([token], prev=prev)
        if len(piece) == 1 and not (0x20 <= piece[0] < 0x7F or piece in b" \t\n\v\f\r"):
            continue
        out += piece
    return out.decode("utf-8", errors="replace")


@pytest.mark.parametrize("prompt", ["Once upon a time", "Lily's café: 🦙 ß\tend"])
def test_run_c_and_tinylm_agree_on_the_llama2_tokenizer_and_text(
    tmp_path: Path, run_c: Path, prompt: str
) -> None:
    """The real Llama 2 tokenizer.bin: run.c encodes the prompt (merges, byte fallback),
    generates greedily and prints; tinylm's port encodes and decodes, tinylm generates."""
    tokenizer_bin = RUN_C.parent / "tokenizer.bin"
    tok = llama2c.Llama2cTokenizer.load(tokenizer_bin, 32000)
    config = tinylm.Config.llama(32000, d_model=16, n_layers=1, n_heads=2, max_seq_len=40)
    model = model_of(config, seed=7, scale=0.5)
    llama2c.save(model, tmp_path / "model.bin")
    steps = 32
    proc = subprocess.run(
        [
            str(run_c),
            str(tmp_path / "model.bin"),
            "-z",
            str(tokenizer_bin),
            "-t",
            "0",
            "-n",
            str(steps),
            "-i",
            prompt,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ids = tok.encode(prompt)
    assert tok.decode(ids) == prompt
    out = model.generate(ids, steps + 1 - len(ids), temperature=0, stop=[1])
    if 1 in out[len(ids) :]:
        out = out[: len(ids) + out[len(ids) :].index(1)]
    assert proc.stdout == printed_by_run_c(tok, out) + "\n"
    assert llama2c.generate_text(model, tok, prompt, steps + 1 - len(ids), temperature=0) == (
        tok.decode(out)
    )


# ----------------------------------------------------------------------------- malformed


def write_header(path: Path, sizes: list[int], body_floats: int = 0) -> None:
    path.write_bytes(struct.pack("<7i", *sizes) + b"\0" * (4 * body_floats))


def test_absurd_header_sizes_are_a_format_error_before_allocating(tmp_path: Path) -> None:
    write_header(tmp_path / "m.bin", [1 << 20, 1 << 22, 1 << 10, 1 << 10, 1 << 10, 32000, 256], 100)
    with pytest.raises(
        tinylm.FormatError, match=r"m\.bin: truncated body: array 'token_embedding'.*dim = 1048576"
    ):
        tinylm.Transformer.load(tmp_path / "m.bin", format="llama2c", backend="reference")


@pytest.mark.parametrize(("index", "field"), [(0, "dim"), (2, "n_layers"), (6, "seq_len")])
def test_a_non_positive_header_field_is_a_format_error_naming_it(
    tmp_path: Path, index: int, field: str
) -> None:
    sizes = [32, 96, 2, 4, 4, 61, 16]
    sizes[index] = -3 if index else 0
    write_header(tmp_path / "m.bin", sizes)
    with pytest.raises(tinylm.FormatError, match=rf"header field '{field}'"):
        tinylm.Transformer.load(tmp_path / "m.bin", format="llama2c", backend="reference")


def test_a_truncated_body_is_a_format_error_naming_the_array(tmp_path: Path) -> None:
    model = model_of(CONFIGS["gqa_untied"], seed=5)
    model.save(tmp_path / "model.bin", format="llama2c")
    raw = (tmp_path / "model.bin").read_bytes()
    (tmp_path / "model.bin").write_bytes(raw[:-4])
    with pytest.raises(tinylm.FormatError, match=r"truncated body: array 'wcls'"):
        tinylm.Transformer.load(tmp_path / "model.bin", format="llama2c", backend="reference")


def test_a_truncated_tokenizer_bin_is_a_format_error_naming_the_token(tmp_path: Path) -> None:
    llama2c.save_tokenizer(tmp_path / "t.bin", [b"a", b"bc", b"def"], [0.0, 0.0, 0.0])
    raw = (tmp_path / "t.bin").read_bytes()
    (tmp_path / "t.bin").write_bytes(raw[:-2])
    with pytest.raises(tinylm.FormatError, match="truncated at token 2 of 3"):
        llama2c.read_tokenizer(tmp_path / "t.bin", 3)


def test_cli_export_to_llama2c_writes_both_files(tmp_path: Path) -> None:
    from test_cli import run

    model = model_of(CONFIGS["mha_tied"], seed=6)
    model.tokenizer = tinylm.Tokenizer.word_level([f"w{i}" for i in range(61)])
    model.save(tmp_path / "m.safetensors")
    run("export", "--to", "llama2c", "--weights", "m.safetensors", "out", cwd=tmp_path)
    assert llama2c.read_tokenizer(tmp_path / "out" / "tokenizer.bin", 61)[0][5] == b" w5"
    run("import", "--from", "llama2c", "out/model.bin", "back.safetensors", cwd=tmp_path)
    back = tinylm.Transformer.load(tmp_path / "back.safetensors", backend="reference")
    assert_same_model(model, back)


def test_an_odd_head_size_in_the_header_is_a_format_error(tmp_path: Path) -> None:
    # dim 24 over 8 heads: head size 3, which RoPE cannot rotate in pairs.
    config = tinylm.Config.llama(61, d_model=24, n_layers=1, n_heads=4, max_seq_len=16)
    config = dataclasses.replace(config, n_heads=8, tie_embeddings=True, eps=1e-5)
    body = sum(int(np.prod(shape)) for _, shape in llama2c._tensors(config, 0))
    write_header(tmp_path / "m.bin", [24, config.d_ff, 1, 8, 8, 61, 16], body)
    with pytest.raises(tinylm.FormatError, match=r"m\.bin: the header describes an invalid"):
        tinylm.Transformer.load(tmp_path / "m.bin", format="llama2c", backend="reference")


def test_an_export_without_a_tokenizer_removes_an_earlier_tokenizer_bin(tmp_path: Path) -> None:
    words = tinylm.Tokenizer.word_level([f"w{i}" for i in range(llama_config().vocab_size)])
    with_tok = model_of(llama_config(), seed=30)
    with_tok.tokenizer = words
    assert llama2c.export(with_tok, tmp_path)[1] == tmp_path / "tokenizer.bin"
    without = model_of(llama_config(), seed=31)
    assert llama2c.export(without, tmp_path) == (tmp_path / "model.bin", None)
    assert not (tmp_path / "tokenizer.bin").exists()
    back = llama2c.load(tmp_path / "model.bin", "reference").state_dict()
    for name, w in without.state_dict().items():
        np.testing.assert_array_equal(back[name], w, err_msg=name)


def test_exporting_a_bpe_tokenizer_for_run_c_warns_that_only_ascii_matches(tmp_path: Path) -> None:
    from interop_helpers import BPE_TEXT

    tok = tinylm.Tokenizer.bpe(BPE_TEXT, 300, pattern="gpt2")
    model = model_of(dataclasses.replace(llama_config(), vocab_size=tok.vocab_size), seed=32)
    model.tokenizer = tok
    # The reason, from run.c's encode: a character that is not a whole piece falls back to
    # the ids byte + 3, while tinylm's byte tokens are the ids 0..255.
    assert tok.token_bytes(0xC3) == b"\xc3" and tok.encode("é") == [0xC3, 0xA9]
    with pytest.warns(UserWarning, match="ASCII text only"):
        llama2c.export(model, tmp_path)
    pieces, _ = llama2c.read_tokenizer(tmp_path / "tokenizer.bin", tok.vocab_size)
    assert pieces[0xC3 + 3] != b"\xc3"


def test_exporting_a_word_tokenizer_for_run_c_does_not_warn(tmp_path: Path) -> None:
    model = model_of(llama_config(), seed=33)
    model.tokenizer = tinylm.Tokenizer.word_level([f"w{i}" for i in range(61)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        llama2c.export(model, tmp_path)
