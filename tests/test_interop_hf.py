"""Hugging Face directories both ways: exact round trips, the other side's semantics (a
NumPy GPT-2 and Llama written from transformers' code read tinylm's export), hub-style
files, shards, tokenizers, and malformed directories as FormatErrors naming file and field."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tinylm
from hf_reference import gpt2_logits, llama_logits
from interop_helpers import BPE_TEXT, gpt2_config, llama_config, model_of, rel_err

IDS = [3, 17, 0, 42, 9, 9, 60, 1, 25, 33, 5]


def assert_same_model(a: tinylm.Transformer, b: tinylm.Transformer) -> None:
    assert a.config == b.config
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        np.testing.assert_array_equal(sa[name], sb[name], err_msg=name)


ROUND_TRIP_CONFIGS = {
    "gpt2": gpt2_config(),
    "gpt2_untied_gelu": gpt2_config(tie_embeddings=False, activation="gelu", eps=1e-6),
    "llama_gqa": llama_config(),
    "llama_mha_tied": llama_config(n_kv_heads=None, tie_embeddings=True),
    "llama_biases_geglu": llama_config(attn_bias=True, mlp_bias=True, activation="geglu"),
    "llama_theta": llama_config(rope_theta=500000.0, n_kv_heads=1),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_CONFIGS))
def test_save_pretrained_then_from_pretrained_is_exact(tmp_path: Path, name: str) -> None:
    config = ROUND_TRIP_CONFIGS[name]
    model = model_of(config, seed=1)
    model.save_pretrained(tmp_path / "hf")
    back = tinylm.Transformer.from_pretrained(tmp_path / "hf")
    assert_same_model(model, back)
    np.testing.assert_array_equal(model.logits(IDS), back.logits(IDS))


@pytest.mark.parametrize("name", ["gpt2", "gpt2_untied_gelu"])
def test_numpy_gpt2_from_hf_semantics_gives_tinylms_logits(tmp_path: Path, name: str) -> None:
    model = model_of(ROUND_TRIP_CONFIGS[name], seed=2)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["architectures"] == ["GPT2LMHeadModel"]
    assert rel_err(model.logits(IDS), gpt2_logits(tmp_path, IDS)) <= 1e-4


@pytest.mark.parametrize("name", [n for n in ROUND_TRIP_CONFIGS if n.startswith("llama")])
def test_numpy_llama_from_hf_semantics_gives_tinylms_logits(tmp_path: Path, name: str) -> None:
    model = model_of(ROUND_TRIP_CONFIGS[name], seed=3)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert rel_err(model.logits(IDS), llama_logits(tmp_path, IDS)) <= 1e-4


def test_gpt2_config_json_has_hugging_faces_fields(tmp_path: Path) -> None:
    config = gpt2_config()
    model_of(config).save_pretrained(tmp_path)
    hf = json.loads((tmp_path / "config.json").read_text())
    assert hf["n_embd"] == 32 and hf["n_layer"] == 2 and hf["n_head"] == 4
    assert hf["n_positions"] == hf["n_ctx"] == 16 and hf["vocab_size"] == 61
    assert hf["layer_norm_epsilon"] == 1e-5 and hf["activation_function"] == "gelu_new"
    tensors = load_file(tmp_path / "model.safetensors")
    # Conv1D [in, out], c_attn = W_q | W_k | W_v, the tied head not stored.
    assert tensors["transformer.h.0.attn.c_attn.weight"].shape == (32, 96)
    assert tensors["transformer.h.0.mlp.c_fc.weight"].shape == (32, 128)
    assert "lm_head.weight" not in tensors
    assert json.loads((tmp_path / "generation_config.json").read_text())["top_k"] == 40


def test_hub_style_gpt2_names_and_mask_buffers_are_read(tmp_path: Path) -> None:
    """The hub's gpt2 files name tensors without ``transformer.`` and hold ``attn.bias``."""
    model = model_of(gpt2_config(), seed=4)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    hub = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    for i in range(2):
        hub[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=np.float32))
    save_file(hub, tmp_path / "model.safetensors", metadata={"format": "pt"})
    assert_same_model(model, tinylm.Transformer.from_pretrained(tmp_path))


def test_a_bool_mask_buffer_is_ignored_and_an_integer_weight_refused(tmp_path: Path) -> None:
    """Buffers of any safetensors dtype may sit beside the weights; a weight must be float."""
    model = model_of(gpt2_config(), seed=21)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["transformer.h.0.attn.bias"] = np.tril(np.ones((1, 1, 16, 16), dtype=bool))
    save_file(tensors, tmp_path / "model.safetensors")
    assert_same_model(model, tinylm.Transformer.from_pretrained(tmp_path))
    tensors["transformer.ln_f.bias"] = np.zeros(32, dtype=np.int64)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        tinylm.FormatError,
        match=r"model\.safetensors: tensor 'transformer\.ln_f\.bias' has dtype I64",
    ):
        tinylm.Transformer.from_pretrained(tmp_path)


def test_a_stored_tied_head_is_ignored(tmp_path: Path) -> None:
    model = model_of(gpt2_config(), seed=5)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["transformer.wte.weight"].copy()
    save_file(tensors, tmp_path / "model.safetensors")
    assert_same_model(model, tinylm.Transformer.from_pretrained(tmp_path))


def test_f16_checkpoints_are_read_as_float32(tmp_path: Path) -> None:
    model = model_of(gpt2_config(), seed=6)
    model.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({k: v.astype(np.float16) for k, v in tensors.items()}, tmp_path / "model.safetensors")
    half = tinylm.Transformer.from_pretrained(tmp_path)
    for name, w in model.state_dict().items():
        np.testing.assert_array_equal(half.state_dict()[name], w.astype(np.float16), err_msg=name)


def test_sharded_checkpoints_round_trip_with_an_index(tmp_path: Path) -> None:
    config = llama_config()
    model = model_of(config, seed=7)
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert all((tmp_path / s).is_file() for s in shards)
    assert_same_model(model, tinylm.Transformer.from_pretrained(tmp_path))
    assert rel_err(model.logits(IDS), llama_logits(tmp_path, IDS)) <= 1e-4


def bpe_model(config: tinylm.Config) -> tinylm.Transformer:
    tok = tinylm.Tokenizer.bpe(BPE_TEXT, 300, pattern="gpt2", special_tokens=["<|endoftext|>"])
    config = dataclasses.replace(config, vocab_size=tok.vocab_size)
    model = model_of(config, seed=8)
    model.tokenizer = tok
    return model


def test_a_bpe_tokenizer_travels_as_tokenizer_json_and_gpt2_files(tmp_path: Path) -> None:
    from tokenizers import Tokenizer as HFTokenizer

    model = bpe_model(gpt2_config())
    model.save_pretrained(tmp_path)
    text = "the lazy fox, wherefore?"
    # Hugging Face's own tokenizers library reads tokenizer.json and encodes as tinylm does.
    hf = HFTokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text).ids == model.tokenizer.encode(text)
    back = tinylm.Transformer.from_pretrained(tmp_path)
    assert back.tokenizer.encode(text) == model.tokenizer.encode(text)
    assert back.tokenizer.decode(model.tokenizer.encode(text)) == text
    # Without tokenizer.json, GPT-2's vocab.json + merges.txt give the same tokenizer.
    (tmp_path / "tokenizer.json").unlink()
    again = tinylm.Transformer.from_pretrained(tmp_path)
    assert again.tokenizer.encode(text) == model.tokenizer.encode(text)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["eos_token_id"] == model.tokenizer.special_tokens["<|endoftext|>"]


def test_a_character_tokenizer_round_trips_beside_the_weights(tmp_path: Path) -> None:
    tok = tinylm.Tokenizer.char_level("hello world, ROMEO!")
    model = model_of(gpt2_config(vocab_size=tok.vocab_size), seed=9)
    model.tokenizer = tok
    model.save_pretrained(tmp_path)
    assert tinylm.Transformer.from_pretrained(tmp_path).tokenizer == tok


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (gpt2_config(norm="rmsnorm"), "norm"),
        (gpt2_config(activation="swiglu"), "activation"),
        (gpt2_config(attn_bias=False), "attn_bias"),
        (gpt2_config(mlp_bias=False), "mlp_bias"),
        (gpt2_config(n_kv_heads=2), "n_kv_heads"),
        (llama_config(norm="layernorm"), "norm"),
        (llama_config(activation="relu"), "activation"),
    ],
)
def test_a_config_hugging_face_cannot_hold_is_refused_naming_the_field(
    tmp_path: Path, config: tinylm.Config, field: str
) -> None:
    model = tinylm.Transformer(config, backend="reference")
    with pytest.raises(tinylm.ConfigError, match=f"{field} = "):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- malformed


@pytest.fixture
def gpt2_dir(tmp_path: Path) -> Path:
    model_of(gpt2_config(), seed=10).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def edit_config(directory: Path, **changes: object) -> None:
    path = directory / "config.json"
    config = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("key", ["n_embd", "n_layer", "n_head", "vocab_size", "model_type"])
def test_a_missing_config_key_is_a_format_error_naming_it(gpt2_dir: Path, key: str) -> None:
    edit_config(gpt2_dir, **{key: None})
    with pytest.raises(tinylm.FormatError, match=rf"config\.json: missing field '{key}'"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_an_unsupported_model_type_is_a_format_error_naming_it(gpt2_dir: Path) -> None:
    edit_config(gpt2_dir, model_type="bert")
    with pytest.raises(tinylm.FormatError, match=r"config\.json: field 'model_type' = 'bert'"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_shapes_disagreeing_with_config_json_are_a_format_error(gpt2_dir: Path) -> None:
    edit_config(gpt2_dir, n_inner=64)
    with pytest.raises(
        tinylm.FormatError,
        match=r"model\.safetensors: tensor 'transformer\.h\.0\.mlp\.c_fc\.weight'"
        r" has shape \[32, 128\], but config\.json implies \[32, 64\]",
    ):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_a_missing_tensor_is_a_format_error_naming_it(gpt2_dir: Path) -> None:
    tensors = load_file(gpt2_dir / "model.safetensors")
    del tensors["transformer.h.1.ln_2.bias"]
    save_file(tensors, gpt2_dir / "model.safetensors")
    with pytest.raises(tinylm.FormatError, match=r"missing tensor 'transformer\.h\.1\.ln_2\.bias'"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_an_unexpected_tensor_is_a_format_error_naming_it(gpt2_dir: Path) -> None:
    tensors = load_file(gpt2_dir / "model.safetensors")
    tensors["transformer.h.0.attn.q_norm.weight"] = np.ones(8, dtype=np.float32)
    save_file(tensors, gpt2_dir / "model.safetensors")
    with pytest.raises(
        tinylm.FormatError, match=r"unexpected tensor 'transformer\.h\.0\.attn\.q_norm"
    ):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_an_index_naming_a_missing_shard_is_a_format_error(tmp_path: Path) -> None:
    model_of(llama_config(), seed=11).save_pretrained(tmp_path, max_shard_size=20_000)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    gone = sorted(set(index["weight_map"].values()))[1]
    (tmp_path / gone).unlink()
    with pytest.raises(
        tinylm.FormatError,
        match=rf"model\.safetensors\.index\.json: weight_map\['.*'\] names the shard '{gone}', "
        "which is missing",
    ):
        tinylm.Transformer.from_pretrained(tmp_path, backend="reference")


def test_a_truncated_safetensors_file_is_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(tinylm.FormatError, match=r"model\.safetensors: tensor '.*': data_offsets"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_a_llama_file_with_rope_scaling_is_refused(tmp_path: Path) -> None:
    model_of(llama_config(), seed=12).save_pretrained(tmp_path)
    edit_config(tmp_path, rope_scaling={"type": "linear", "factor": 2.0})
    with pytest.raises(tinylm.FormatError, match="field 'rope_scaling'"):
        tinylm.Transformer.from_pretrained(tmp_path, backend="reference")


def test_a_transformers_5_config_gives_its_rope_theta_from_rope_parameters(
    tmp_path: Path,
) -> None:
    """transformers 5 writes ``rope_parameters: {rope_theta, rope_type}`` and no top-level
    ``rope_theta``: reading 10000 there would silently change every Llama 3 model."""
    model = model_of(llama_config(rope_theta=500000.0), seed=13)
    model.save_pretrained(tmp_path)
    params = {"rope_theta": 500000.0, "rope_type": "default"}
    edit_config(tmp_path, rope_theta=None, rope_scaling=None, rope_parameters=params)
    back = tinylm.Transformer.from_pretrained(tmp_path, backend="reference")
    assert back.config.rope_theta == 500000.0
    assert rel_err(back.logits(IDS), llama_logits(tmp_path, IDS)) <= 1e-4


@pytest.mark.parametrize(
    "changes",
    [
        {"rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0}},
        {"rope_parameters": {"rope_type": "default", "rope_theta": 1.0}},  # disagrees
    ],
)
def test_rope_parameters_tinylm_cannot_run_are_refused(tmp_path: Path, changes: dict) -> None:
    model_of(llama_config(), seed=14).save_pretrained(tmp_path)
    edit_config(tmp_path, **changes)
    with pytest.raises(
        tinylm.FormatError, match=r"config\.json: field '(rope_parameters|rope_theta)'"
    ):
        tinylm.Transformer.from_pretrained(tmp_path, backend="reference")


def test_a_directory_without_weights_is_a_format_error(gpt2_dir: Path) -> None:
    (gpt2_dir / "model.safetensors").unlink()
    with pytest.raises(tinylm.FormatError, match=r"no model\.safetensors"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def nan_in_last_layer(model: tinylm.Transformer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Makes ``model.state_dict()`` hold a NaN (the core refuses one in load_state_dict, so
    this stands in for a model that diverged)."""
    state = model.state_dict()
    state["ln_f.weight"][0] = np.nan
    monkeypatch.setattr(model, "state_dict", lambda: state)


def test_a_non_finite_model_leaves_no_folder_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = model_of(gpt2_config(), seed=15)
    nan_in_last_layer(model, monkeypatch)
    with pytest.raises(tinylm.NonFiniteError, match=r"'transformer\.ln_f\.weight'"):
        model.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_a_non_finite_model_saved_over_a_folder_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = model_of(llama_config(), seed=16)
    old.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    new = model_of(llama_config(), seed=17)
    nan_in_last_layer(new, monkeypatch)
    with pytest.raises(tinylm.NonFiniteError):
        new.save_pretrained(tmp_path, max_shard_size=20_000)  # would be shards
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert_same_model(old, tinylm.Transformer.from_pretrained(tmp_path, backend="reference"))


def test_saving_shards_over_a_single_file_then_back_leaves_one_checkpoint(tmp_path: Path) -> None:
    model = model_of(llama_config(), seed=18)
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("model*")) == ["model.safetensors"]
    model.save_pretrained(tmp_path, max_shard_size=20_000)
    assert not (tmp_path / "model.safetensors").exists()
    assert_same_model(model, tinylm.Transformer.from_pretrained(tmp_path, backend="reference"))


def test_a_bpe_tokenizer_saved_over_a_word_level_one_is_the_one_read(tmp_path: Path) -> None:
    model = bpe_model(gpt2_config())
    bpe = model.tokenizer
    model.tokenizer = tinylm.Tokenizer.word_level([f"w{i}" for i in range(bpe.vocab_size)])
    assert model.tokenizer.vocab_size == bpe.vocab_size
    model.save_pretrained(tmp_path)
    model.tokenizer = bpe
    model.save_pretrained(tmp_path)
    assert tinylm.Transformer.from_pretrained(tmp_path).tokenizer.kind == "bpe"


# ----------------------------------------------------------------------------- CLI


def test_cli_export_import_and_generate_from_a_directory(tmp_path: Path) -> None:
    from test_cli import run

    model = bpe_model(gpt2_config())
    model.save(tmp_path / "m.safetensors")
    run(
        "export",
        "--to",
        "hf",
        "--weights",
        str(tmp_path / "m.safetensors"),
        str(tmp_path / "hf"),
        cwd=tmp_path,
    )
    assert rel_err(model.logits(IDS), gpt2_logits(tmp_path / "hf", IDS)) <= 1e-4
    run(
        "import",
        "--from",
        "hf",
        str(tmp_path / "hf"),
        str(tmp_path / "back.safetensors"),
        cwd=tmp_path,
    )
    assert_same_model(model, tinylm.Transformer.load(tmp_path / "back.safetensors"))
    out = run(
        "generate",
        "--weights",
        str(tmp_path / "hf"),
        "--prompt",
        "the",
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
        cwd=tmp_path,
    ).stdout
    want = model.generate_text("the", 5, temperature=0, stop=["<|endoftext|>"])
    assert out.strip() == want.strip()


def test_cli_export_refuses_a_config_naming_the_field(tmp_path: Path) -> None:
    from test_cli import run

    tinylm.Transformer(gpt2_config(norm="rmsnorm"), backend="reference").save(
        tmp_path / "m.safetensors"
    )
    proc = run(
        "export", "--to", "hf", "--weights", "m.safetensors", "hf", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "norm = " in proc.stderr
    shutil.rmtree(tmp_path / "hf", ignore_errors=True)


def test_a_hub_style_gpt2_folder_with_gpt2s_real_tokenizer_generates_text(
    tmp_path: Path, assets: Path
) -> None:
    """The layout of the hub's gpt2 folder (unprefixed names, attn.bias buffers, vocab.json
    + merges.txt: GPT-2's own files), at a tiny width, through the command line."""
    from test_cli import run

    config = gpt2_config(vocab_size=50257, d_model=8, n_layers=1, n_heads=2, max_seq_len=32)
    model_of(config, seed=13).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    hub = {k.removeprefix("transformer."): v for k, v in tensors.items()}
    hub["h.0.attn.bias"] = np.tril(np.ones((1, 1, 32, 32), dtype=np.float32))
    save_file(hub, tmp_path / "model.safetensors")
    shutil.copy(assets / "encoder.json", tmp_path / "vocab.json")
    shutil.copy(assets / "vocab.bpe", tmp_path / "merges.txt")
    model = tinylm.Transformer.from_pretrained(tmp_path)
    assert model.tokenizer.encode("Hello world") == [15496, 995]
    ids = model.tokenizer.encode("Hello world, this is GPT-2's vocabulary.")
    assert rel_err(model.logits(ids), gpt2_logits(tmp_path, ids)) <= 1e-4
    out = run(
        "generate",
        "--weights",
        str(tmp_path),
        "--prompt",
        "Hello world",
        "--max-new-tokens",
        "8",
        "--seed",
        "1",
        cwd=tmp_path,
    ).stdout
    assert out.startswith("Hello world") and len(out) > len("Hello world")


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"n_embd": "32"}, r"field 'n_embd' must be an integer, got '32'"),
        ({"n_layer": 0}, r"field 'n_layer' must be positive, got 0"),
        ({"tie_word_embeddings": "yes"}, r"field 'tie_word_embeddings' must be true or false"),
        ({"activation_function": "swish_beta"}, r"field 'activation_function' = 'swish_beta'"),
        (
            {"scale_attn_by_inverse_layer_idx": True},
            r"field 'scale_attn_by_inverse_layer_idx' = True is not supported",
        ),
    ],
)
def test_config_values_of_the_wrong_kind_are_format_errors_naming_the_field(
    gpt2_dir: Path, changes: dict, needle: str
) -> None:
    edit_config(gpt2_dir, **changes)
    with pytest.raises(tinylm.FormatError, match=r"config\.json: " + needle):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_a_config_json_claiming_a_huge_model_fails_on_shapes_before_allocating(
    gpt2_dir: Path,
) -> None:
    edit_config(gpt2_dir, n_embd=16384, n_inner=65536, n_head=128)
    with pytest.raises(tinylm.FormatError, match=r"has shape \[61, 32\], but config\.json implies"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_an_index_entry_missing_from_its_shard_is_a_format_error(tmp_path: Path) -> None:
    model_of(llama_config(), seed=14).save_pretrained(tmp_path, max_shard_size=20_000)
    path = tmp_path / "model.safetensors.index.json"
    index = json.loads(path.read_text())
    name, shard = next(iter(index["weight_map"].items()))
    other = next(s for s in index["weight_map"].values() if s != shard)
    index["weight_map"][name] = other
    path.write_text(json.dumps(index))
    with pytest.raises(tinylm.FormatError, match=rf"{other}: tensor '{name}', which .* puts here"):
        tinylm.Transformer.from_pretrained(tmp_path, backend="reference")


def test_an_absurd_safetensors_header_length_is_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "model.safetensors"
    path.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    with pytest.raises(tinylm.FormatError, match=r"model\.safetensors: header length"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


@pytest.mark.parametrize(
    ("entry", "needle"),
    [
        ({"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}, "dtype"),
        ({"dtype": "F32", "shape": {"a": 1}, "data_offsets": [0, 4]}, "shape"),
        ({"dtype": "F32", "shape": [1], "data_offsets": {"a": 1}}, "data_offsets"),
        ({"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}, "dtype"),
    ],
)
def test_a_malformed_safetensors_header_entry_is_a_format_error(
    gpt2_dir: Path, entry: dict, needle: str
) -> None:
    text = json.dumps({"transformer.wte.weight": entry}).encode()
    path = gpt2_dir / "model.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + b"\0" * 8)
    with pytest.raises(tinylm.FormatError, match=rf"tensor 'transformer\.wte\.weight': {needle}"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_bf16_checkpoints_are_read_as_float32(gpt2_dir: Path) -> None:
    """A BF16 file written by hand from the safetensors spec (NumPy has no bfloat16): each
    value is the top 16 bits of a float32."""
    tensors = load_file(gpt2_dir / "model.safetensors")
    header, blobs, offset = {}, [], 0
    for name, w in tensors.items():
        top = (np.ascontiguousarray(w, dtype="<f4").view("<u4") >> 16).astype("<u2")
        blobs.append(top.tobytes())
        header[name] = {
            "dtype": "BF16",
            "shape": list(w.shape),
            "data_offsets": [offset, offset + top.nbytes],
        }
        offset += top.nbytes
    text = json.dumps(header).encode()
    (gpt2_dir / "model.safetensors").write_bytes(
        len(text).to_bytes(8, "little") + text + b"".join(blobs)
    )
    model = tinylm.Transformer.from_pretrained(gpt2_dir)
    wte = tensors["transformer.wte.weight"]
    truncated = ((wte.view("<u4") >> 16) << 16).view("<f4")
    np.testing.assert_array_equal(model.state_dict()["token_embed.weight"], truncated)


def test_a_loaded_folder_stops_at_its_eos_token_by_default(tmp_path: Path) -> None:
    model = bpe_model(gpt2_config())
    model.save_pretrained(tmp_path)
    back = tinylm.Transformer.from_pretrained(tmp_path)
    eos = model.tokenizer.special_tokens["<|endoftext|>"]
    assert back.default_stop == [eos]
    certain = {eos: 1e9}
    assert back.generate([5], 10, temperature=0, logit_bias=certain) == [5, eos]
    assert len(back.generate([5], 10, temperature=0, logit_bias=certain, stop=[])) == 11


@pytest.mark.parametrize("eos", [7, [7, 9]])
def test_a_folder_read_without_a_tokenizer_keeps_its_eos_token_id_when_saved_again(
    tmp_path: Path, eos: object
) -> None:
    model_of(gpt2_config(), seed=20).save_pretrained(tmp_path / "a")
    edit_config(tmp_path / "a", eos_token_id=eos)
    (tmp_path / "a" / "generation_config.json").unlink()
    back = tinylm.Transformer.from_pretrained(tmp_path / "a")
    assert back.tokenizer is None and back.default_stop == [7, 9][: 1 if eos == 7 else 2]
    back.save_pretrained(tmp_path / "b")
    for name in ("config.json", "generation_config.json"):
        assert json.loads((tmp_path / "b" / name).read_text())["eos_token_id"] == eos
    assert tinylm.Transformer.from_pretrained(tmp_path / "b").default_stop == back.default_stop


def test_an_eos_token_id_outside_the_vocabulary_is_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "generation_config.json"
    path.write_text(json.dumps({"eos_token_id": 50256}))
    with pytest.raises(tinylm.FormatError, match=r"generation_config\.json: field 'eos_token_id'"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def write_random_hf(directory: Path, config: dict, shapes: dict[str, tuple]) -> None:
    """A checkpoint made without tinylm: random tensors of Hugging Face's names and shapes."""
    rng = np.random.default_rng(16)
    tensors = {}
    for name, shape in shapes.items():
        noise = rng.standard_normal(shape).astype(np.float32)
        tensors[name] = 1 + 0.1 * noise if "norm" in name or "ln_" in name else 0.3 * noise
    directory.mkdir()
    save_file(tensors, directory / "model.safetensors")
    (directory / "config.json").write_text(json.dumps(config))


def test_a_llama_checkpoint_made_elsewhere_gives_hugging_faces_logits(tmp_path: Path) -> None:
    c, f, v, kd = 32, 48, 50, 16  # 4 query heads of 8, 2 key/value heads
    config = {
        "model_type": "llama",
        "vocab_size": v,
        "hidden_size": c,
        "intermediate_size": f,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 16,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
    }
    shapes: dict[str, tuple] = {"model.embed_tokens.weight": (v, c), "model.norm.weight": (c,)}
    shapes["lm_head.weight"] = (v, c)
    for i in range(2):
        p = f"model.layers.{i}"
        shapes |= {
            f"{p}.input_layernorm.weight": (c,),
            f"{p}.post_attention_layernorm.weight": (c,),
            f"{p}.self_attn.q_proj.weight": (c, c),
            f"{p}.self_attn.k_proj.weight": (kd, c),
            f"{p}.self_attn.v_proj.weight": (kd, c),
            f"{p}.self_attn.o_proj.weight": (c, c),
            f"{p}.mlp.gate_proj.weight": (f, c),
            f"{p}.mlp.up_proj.weight": (f, c),
            f"{p}.mlp.down_proj.weight": (c, f),
        }
    write_random_hf(tmp_path / "hf", config, shapes)
    model = tinylm.Transformer.from_pretrained(tmp_path / "hf")
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    assert rel_err(model.logits(ids), llama_logits(tmp_path / "hf", ids)) <= 1e-4


def test_a_gpt2_checkpoint_made_elsewhere_gives_hugging_faces_logits(tmp_path: Path) -> None:
    c, v = 24, 50
    config = {
        "model_type": "gpt2",
        "vocab_size": v,
        "n_embd": c,
        "n_layer": 2,
        "n_head": 3,
        "n_positions": 16,
        "n_inner": None,
        "activation_function": "gelu_new",
    }
    shapes: dict[str, tuple] = {"wte.weight": (v, c), "wpe.weight": (16, c)}
    shapes |= {"ln_f.weight": (c,), "ln_f.bias": (c,)}
    for i in range(2):
        p = f"h.{i}"
        shapes |= {
            f"{p}.ln_1.weight": (c,),
            f"{p}.ln_1.bias": (c,),
            f"{p}.ln_2.weight": (c,),
            f"{p}.ln_2.bias": (c,),
            f"{p}.attn.c_attn.weight": (c, 3 * c),
            f"{p}.attn.c_attn.bias": (3 * c,),
            f"{p}.attn.c_proj.weight": (c, c),
            f"{p}.attn.c_proj.bias": (c,),
            f"{p}.mlp.c_fc.weight": (c, 4 * c),
            f"{p}.mlp.c_fc.bias": (4 * c,),
            f"{p}.mlp.c_proj.weight": (4 * c, c),
            f"{p}.mlp.c_proj.bias": (c,),
        }
    write_random_hf(tmp_path / "hf", config, shapes)
    model = tinylm.Transformer.from_pretrained(tmp_path / "hf")
    ids = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5]
    assert rel_err(model.logits(ids), gpt2_logits(tmp_path / "hf", ids)) <= 1e-4


def write_safetensors(path: Path, entries: dict[str, dict], blob: bytes, text: bytes = b"") -> None:
    """A safetensors file written by hand from the spec: ``entries`` as the header."""
    text = text or json.dumps(entries).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + blob)


def contiguous(tensors: dict[str, np.ndarray]) -> tuple[dict[str, dict], bytes]:
    """The header entries and data section of ``tensors`` laid end to end, as F32."""
    entries, blobs, offset = {}, [], 0
    for name, w in tensors.items():
        raw = np.ascontiguousarray(w, dtype="<f4").tobytes()
        entries[name] = {
            "dtype": "F32",
            "shape": list(w.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    return entries, b"".join(blobs)


def test_tensors_sharing_bytes_are_a_format_error_naming_both(gpt2_dir: Path) -> None:
    """Two tensors of one shape pointing at the same bytes: the safetensors crate (and the
    core's reader) refuses the file; so does the Hugging Face reader."""
    path = gpt2_dir / "model.safetensors"
    tensors = load_file(path)
    alias, target = "transformer.h.1.ln_1.weight", "transformer.h.0.ln_1.weight"
    assert tensors[alias].shape == tensors[target].shape
    entries, blob = contiguous({k: v for k, v in tensors.items() if k != alias})
    entries[alias] = dict(entries[target])
    write_safetensors(path, entries, blob)
    with pytest.raises(
        tinylm.FormatError,
        match=rf"model\.safetensors: tensor '({alias}|{target})': data_offsets .* overlap "
        rf"tensor '({alias}|{target})'",
    ):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_bytes_between_tensors_are_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "model.safetensors"
    tensors = load_file(path)
    entries, blob = contiguous(tensors)
    last = list(entries)[-1]
    begin, end = entries[last]["data_offsets"]
    entries[last]["data_offsets"] = [begin + 4, end + 4]
    write_safetensors(path, entries, blob[:begin] + b"\0" * 4 + blob[begin:])
    with pytest.raises(
        tinylm.FormatError, match=rf"model\.safetensors: tensor '{last}': .* to no tensor"
    ):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_trailing_bytes_after_the_tensors_are_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 4)
    with pytest.raises(
        tinylm.FormatError, match=r"model\.safetensors: the tensors end .*trailing bytes"
    ):
        tinylm.Transformer.from_pretrained(gpt2_dir)


def test_a_tensor_named_twice_in_the_header_is_a_format_error(gpt2_dir: Path) -> None:
    path = gpt2_dir / "model.safetensors"
    entries, blob = contiguous(load_file(path))
    name = next(iter(entries))
    text = json.dumps(entries).encode()
    repeated = json.dumps({name: entries[name]}).encode()[1:-1]
    write_safetensors(path, entries, blob, text[:-1] + b"," + repeated + b"}")
    with pytest.raises(tinylm.FormatError, match=rf"model\.safetensors: .* names '{name}' twice"):
        tinylm.Transformer.from_pretrained(gpt2_dir)


@pytest.mark.parametrize("eos", [7, [7, 9]])
def test_import_from_hf_keeps_the_eos_token_id_in_the_tinylm_file(
    tmp_path: Path, eos: object
) -> None:
    """``import --from hf`` writes a tinylm file that still stops where Hugging Face's
    generate() would: at generation_config.json's eos_token_id."""
    from test_cli import run

    model_of(gpt2_config(), seed=21).save_pretrained(tmp_path / "hf")
    path = tmp_path / "hf" / "generation_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "eos_token_id": eos}))
    run(
        "import",
        "--from",
        "hf",
        str(tmp_path / "hf"),
        str(tmp_path / "m.safetensors"),
        cwd=tmp_path,
    )
    back = tinylm.Transformer.load(tmp_path / "m.safetensors")
    want = [7] if eos == 7 else [7, 9]
    assert back.default_stop == want
    certain = {want[-1]: 1e9}
    assert back.generate([5], 10, temperature=0, logit_bias=certain) == [5, want[-1]]
    # ...and exporting it again writes the same eos_token_id.
    back.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["eos_token_id"] == eos


def test_a_stored_stop_id_outside_the_vocabulary_is_a_format_error(tmp_path: Path) -> None:
    model = model_of(gpt2_config(), seed=22)
    model.default_stop = [10**6]
    model.save(tmp_path / "m.safetensors")
    with pytest.raises(tinylm.FormatError, match=r"m\.safetensors: metadata 'stop_ids'"):
        tinylm.Transformer.load(tmp_path / "m.safetensors")


@pytest.mark.parametrize("first", ["bpe", "word"])
def test_a_model_without_a_tokenizer_saved_over_one_with_leaves_no_tokenizer(
    tmp_path: Path, first: str
) -> None:
    """The earlier save's tokenizer files would be read with the new model: they go."""
    model = bpe_model(gpt2_config())
    if first == "word":
        words = [f"w{i}" for i in range(model.tokenizer.vocab_size)]
        model.tokenizer = tinylm.Tokenizer.word_level(words)
    model.save_pretrained(tmp_path)
    other = model_of(gpt2_config(), seed=23)
    assert other.tokenizer is None
    other.save_pretrained(tmp_path)
    left = {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"}
    left = {p.name for p in tmp_path.iterdir()} & (left | {"tinylm_tokenizer.json"})
    assert left == set()
    back = tinylm.Transformer.from_pretrained(tmp_path)
    assert back.tokenizer is None
    assert_same_model(other, back)
