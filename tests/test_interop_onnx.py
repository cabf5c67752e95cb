"""ONNX export checked by onnxruntime: the forward graph gives tinylm's logits for both
presets and odd configs, at any batch and sequence length, and the decoder graph with its
key/value cache generates tinylm's greedy ids."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import tinylm
from interop_helpers import gpt2_config, llama_config, model_of, rel_err

onnx = pytest.importorskip("onnx", reason="the onnx package is a test dependency")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency")

CONFIGS = {
    "gpt2": gpt2_config(),
    "llama": llama_config(),
    "gpt2_untied_relu2_no_bias": gpt2_config(
        tie_embeddings=False, activation="relu2", attn_bias=False, mlp_bias=False
    ),
    "rmsnorm_learned_geglu": gpt2_config(norm="rmsnorm", activation="geglu", d_ff=40),
    "rope_layernorm_gelu_mqa": gpt2_config(
        position="rope", activation="gelu", n_kv_heads=1, rope_theta=321.0
    ),
    "llama_tied_biases_silu": llama_config(
        tie_embeddings=True, attn_bias=True, mlp_bias=True, n_kv_heads=None
    ),
    "one_layer_one_head": gpt2_config(n_layers=1, n_heads=1, activation="silu"),
}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_onnxruntime_forward_gives_tinylms_logits(tmp_path: Path, name: str) -> None:
    model = model_of(CONFIGS[name], seed=1)
    forward, _ = model.export_onnx(tmp_path / "model.onnx")
    onnx.checker.check_model(str(forward))
    run = session(forward)
    rng = np.random.default_rng(0)
    for batch, t in [(1, 1), (2, 7), (3, 16)]:  # dynamic batch and sequence axes
        ids = rng.integers(0, model.config.vocab_size, size=(batch, t)).astype(np.int64)
        (logits,) = run.run(["logits"], {"input_ids": ids})
        assert logits.shape == (batch, t, model.config.vocab_size)
        assert rel_err(logits, model.logits(ids)) <= 1e-4


def greedy_with_past(path: Path, model: tinylm.Transformer, prompt: list[int], n: int) -> list[int]:
    """Greedy decoding with the decoder graph: the prompt once, then one id per call."""
    run = session(path)
    config = model.config
    k, d = config.n_kv_heads or config.n_heads, config.d_model // config.n_heads
    names = [o.name for o in run.get_outputs()]
    past = {
        i.name: np.zeros((1, k, 0, d), dtype=np.float32)
        for i in run.get_inputs()
        if i.name.startswith("past_key_values.")
    }
    ids, feed = list(prompt), list(prompt)
    for _ in range(n):
        outputs = dict(zip(names, run.run(names, {"input_ids": np.array([feed]), **past})))
        next_id = int(np.argmax(outputs["logits"][0, -1]))
        ids.append(next_id)
        feed = [next_id]
        past = {p: outputs[p.replace("past_key_values.", "present.")] for p in past}
    return ids


@pytest.mark.parametrize("name", ["gpt2", "llama", "rope_layernorm_gelu_mqa"])
def test_the_decoder_graph_generates_tinylms_greedy_ids(tmp_path: Path, name: str) -> None:
    model = model_of(CONFIGS[name], seed=2)
    _, decoder = model.export_onnx(tmp_path / "model.onnx")
    onnx.checker.check_model(str(decoder))
    prompt = [5, 9, 2]
    n = model.config.max_seq_len - len(prompt)
    assert greedy_with_past(decoder, model, prompt, n) == model.generate(prompt, n, temperature=0)


def test_the_decoder_graph_with_a_past_gives_the_forward_logits(tmp_path: Path) -> None:
    model = model_of(CONFIGS["llama"], seed=3)
    _, decoder = model.export_onnx(tmp_path / "model.onnx")
    run = session(decoder)
    names = [o.name for o in run.get_outputs()]
    ids = np.array([[4, 8, 15, 16, 23, 42, 7], [1, 2, 3, 4, 5, 6, 7]], dtype=np.int64)
    empty = {i.name: np.zeros((2, 2, 0, 8), np.float32) for i in run.get_inputs()[1:]}
    first = dict(zip(names, run.run(names, {"input_ids": ids[:, :4], **empty})))
    past = {p: first[p.replace("past_key_values.", "present.")] for p in empty}
    rest = dict(zip(names, run.run(names, {"input_ids": ids[:, 4:], **past})))
    assert rest["present.0.key"].shape == (2, 2, 7, 8)
    logits = np.concatenate([first["logits"], rest["logits"]], axis=1)
    assert rel_err(logits, model.logits(ids)) <= 1e-4


def test_cli_export_to_onnx(tmp_path: Path) -> None:
    from test_cli import run

    model = model_of(CONFIGS["gpt2"], seed=4)
    model.save(tmp_path / "m.safetensors")
    out = run("export", "--to", "onnx", "--weights", "m.safetensors", "m.onnx", cwd=tmp_path).stdout
    assert "m_with_past.onnx" in out
    (logits,) = session(tmp_path / "m.onnx").run(["logits"], {"input_ids": np.array([[1, 2, 3]])})
    assert rel_err(logits, model.logits([[1, 2, 3]])) <= 1e-4


def test_a_large_model_keeps_its_weights_in_a_data_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past protobuf's 2 GiB the weights go to ``<name>.data`` (the limit lowered here)."""
    from tinylm.interop import onnx_graph

    monkeypatch.setattr(onnx_graph, "MAX_INLINE_BYTES", 0)
    model = model_of(CONFIGS["llama"], seed=5)
    forward, decoder = model.export_onnx(tmp_path / "big.onnx")
    assert (tmp_path / "big.onnx.data").is_file() and (
        tmp_path / "big_with_past.onnx.data"
    ).is_file()
    (logits,) = session(forward).run(["logits"], {"input_ids": np.array([[7, 3, 9]])})
    assert rel_err(logits, model.logits([[7, 3, 9]])) <= 1e-4
    assert greedy_with_past(decoder, model, [7, 3], 4) == model.generate([7, 3], 4, temperature=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "big.onnx",
        "big.onnx.data",
        "big_with_past.onnx",
        "big_with_past.onnx.data",
    ]  # no staging folder left behind


def test_a_large_model_that_fails_its_check_leaves_no_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tinylm.interop import onnx_graph

    def refuse(path: object) -> None:
        raise onnx.checker.ValidationError("refused by the test")

    monkeypatch.setattr(onnx_graph, "MAX_INLINE_BYTES", 0)
    monkeypatch.setattr(onnx.checker, "check_model", refuse)
    with pytest.raises(onnx.checker.ValidationError):
        model_of(CONFIGS["gpt2"], seed=6).export_onnx(tmp_path / "big.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_prompt_fed_in_chunks_over_a_past_then_greedy_gives_tinylms_ids(
    tmp_path: Path, name: str
) -> None:
    """Several new ids at once over a non-empty past (the mask offset by the past length),
    then one id per call: onnxruntime's greedy ids are tinylm's."""
    model = model_of(CONFIGS[name], seed=5)
    _, decoder = model.export_onnx(tmp_path / "model.onnx")
    run = session(decoder)
    config = model.config
    k, d = config.n_kv_heads or config.n_heads, config.d_model // config.n_heads
    names = [o.name for o in run.get_outputs()]
    past = {i.name: np.zeros((1, k, 0, d), np.float32) for i in run.get_inputs()[1:]}
    prompt = [3, 1, 4, 1, 5, 9, 2]
    n = config.max_seq_len - len(prompt)
    ids, feeds = list(prompt), [prompt[:3], prompt[3:]]
    while len(ids) < len(prompt) + n:
        feed = feeds.pop(0) if feeds else [ids[-1]]
        out = dict(zip(names, run.run(names, {"input_ids": np.array([feed]), **past})))
        past = {p: out[p.replace("past_key_values.", "present.")] for p in past}
        if not feeds:
            ids.append(int(np.argmax(out["logits"][0, -1])))
    assert ids == model.generate(prompt, n, temperature=0)


@pytest.mark.parametrize("blocked", ["big.onnx", "big_with_past.onnx.data"])
def test_export_onto_a_folder_names_it_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    from tinylm.interop import onnx_graph

    monkeypatch.setattr(onnx_graph, "MAX_INLINE_BYTES", 0)
    (tmp_path / blocked).mkdir()
    with pytest.raises(IsADirectoryError, match=f"{blocked}: is a directory"):
        model_of(CONFIGS["gpt2"], seed=6).export_onnx(tmp_path / "big.onnx")
    assert [p.name for p in tmp_path.iterdir()] == [blocked]
