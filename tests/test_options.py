"""Block options (activation, norm, mlp_bias, position, n_kv_heads) on both backends:
logits against the float64 NumPy reference (tests/reference.py), every gradient against
central differences of that reference (reference backend) and against the reference
backend (fast backend), key/value-cache generation, beams and batches, files, and clear
errors."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

import reference
import tinylm
from conftest import randomize

BASE = {"vocab_size": 7, "d_model": 8, "n_layers": 2, "n_heads": 2, "d_ff": 6, "max_seq_len": 5}

OPTIONS = {
    **{f"activation_{a}": {"activation": a} for a in ("gelu", "relu", "relu2", "silu")},
    "swiglu": {"activation": "swiglu"},
    "geglu": {"activation": "geglu"},
    "rmsnorm": {"norm": "rmsnorm"},
    "no_mlp_bias": {"mlp_bias": False},
    "rope": {"position": "rope", "rope_theta": 100.0},
    "grouped_query": {"n_heads": 4, "n_kv_heads": 2},
    "multi_query_rope": {"n_heads": 4, "n_kv_heads": 1, "position": "rope"},
    "gelu_tanh_default": {},
}


def config_for(name: str) -> tinylm.Config:
    return tinylm.Config(**{**BASE, **OPTIONS[name]})


def reference_model(config: tinylm.Config, seed: int = 0, scale: float = 0.4) -> tinylm.Transformer:
    model = tinylm.Transformer(config, seed=seed, backend="reference")
    randomize(model, seed, scale)
    return model


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-12))


def llama() -> tinylm.Config:
    return tinylm.Config.llama(11, d_model=16, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=6)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_reference_logits_match_the_float64_numpy_reference(name: str) -> None:
    config = config_for(name)
    model = reference_model(config, seed=3)
    ids = np.random.default_rng(1).integers(0, config.vocab_size, size=(3, config.max_seq_len))
    ours = model.logits(ids)
    assert ours.shape == (3, config.max_seq_len, config.vocab_size)
    assert rel_err(ours, reference.forward(model.state_dict(), config, ids)) <= 1e-4


def test_llama_preset_logits_match_the_float64_numpy_reference() -> None:
    config = llama()
    model = reference_model(config, seed=4)
    ids = np.random.default_rng(2).integers(0, config.vocab_size, size=(2, config.max_seq_len))
    assert rel_err(model.logits(ids), reference.forward(model.state_dict(), config, ids)) <= 1e-4


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_reference_gradient_matches_central_differences(name: str) -> None:
    config = dataclasses.replace(config_for(name), n_layers=1, max_seq_len=4)
    model = reference_model(config, seed=11)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, config.vocab_size, size=(2, 4))
    targets = rng.integers(0, config.vocab_size, size=(2, 4))
    loss, grads = model.gradients(ids, targets)
    params = {k: v.astype(np.float64) for k, v in model.state_dict().items()}
    assert set(grads) == set(params)
    assert abs(loss - reference.loss(params, config, ids, targets)) < 1e-5
    h = 1e-5
    for tensor, value in params.items():
        numeric = np.zeros_like(value)
        flat = value.reshape(-1)
        for i in range(flat.size):
            orig = flat[i]
            flat[i] = orig + h
            up = reference.loss(params, config, ids, targets)
            flat[i] = orig - h
            down = reference.loss(params, config, ids, targets)
            flat[i] = orig
            numeric.reshape(-1)[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[tensor], numeric, rtol=1e-3, atol=2e-6, err_msg=tensor)


def test_the_fast_and_reference_backends_agree_on_a_gpt2_model() -> None:
    config = tinylm.Config(**BASE)
    fast = tinylm.Transformer(config, seed=1)
    state = randomize(fast, 1, 0.4)
    ref = tinylm.Transformer(config, seed=1, backend="reference")
    ref.load_state_dict(state)
    assert (fast.backend, ref.backend) == ("fast", "reference")
    ids = [[1, 2, 3, 4, 5], [0, 6, 6, 2, 1]]
    assert rel_err(fast.logits(ids), ref.logits(ids)) <= 1e-5
    _, g_fast = fast.gradients(ids, ids)
    _, g_ref = ref.gradients(ids, ids)
    for name, g in g_ref.items():
        np.testing.assert_allclose(g_fast[name], g, rtol=1e-4, atol=1e-6, err_msg=name)


def test_reference_greedy_generation_follows_the_argmax_past_the_context() -> None:
    config = llama()
    model = reference_model(config, seed=6, scale=1.0)
    out = model.generate([3, 1, 4], max_new_tokens=6, temperature=0, window="sliding")
    for i in range(3, len(out)):
        window = out[max(0, i - config.max_seq_len) : i]
        logits = reference.forward(model.state_dict(), config, np.array([window]))
        assert out[i] == int(np.argmax(logits[0, -1]))


def test_reference_training_lowers_the_loss() -> None:
    model = tinylm.Transformer(llama(), seed=0, backend="reference")
    optimizer = tinylm._core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.0)
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 1, 2]])
    targets = np.roll(ids, -1, axis=1)
    first = model.loss(ids, targets)
    for _ in range(60):
        model._core.train_step(optimizer, ids, targets, 1e-2, 1.0)
    assert model.loss(ids, targets) < 0.3 * first


def test_options_survive_safetensors_on_both_backends(tmp_path) -> None:
    model = reference_model(llama(), seed=7)
    path = tmp_path / "llama.safetensors"
    model.save(path)
    for backend in ("reference", "fast"):
        again = tinylm.Transformer.load(path, backend=backend)
        assert again.config == model.config and again.backend == backend
        for name, value in model.state_dict().items():
            np.testing.assert_array_equal(again.state_dict()[name], value)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_option_survives_safetensors_and_gives_the_same_logits(tmp_path, name) -> None:
    model = reference_model(config_for(name), seed=8)
    path = tmp_path / f"{name}.safetensors"
    model.save(path)
    ids = np.array([[1, 2, 3, 4, 5]])
    for backend in ("reference", "fast"):
        again = tinylm.Transformer.load(path, backend=backend)
        assert again.config == model.config
        for key, value in model.state_dict().items():
            np.testing.assert_array_equal(again.state_dict()[key], value)
        assert rel_err(again.logits(ids), model.logits(ids)) <= 1e-5


def test_the_go_format_refuses_options_naming_the_field(tmp_path) -> None:
    model = tinylm.Transformer(
        tinylm.Config(**BASE, norm="rmsnorm", attn_bias=False, tie_embeddings=False),
        backend="reference",
    )
    with pytest.raises(ValueError, match=r"Go TinyLM format .* norm = rmsnorm"):
        model.save(tmp_path / "model.json")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"activation": "tanh"}, 'unknown activation "tanh": expected one of gelu_tanh'),
        ({"norm": "batch"}, 'unknown norm "batch"'),
        ({"n_kv_heads": 3, "n_heads": 2}, "n_kv_heads = 3 does not divide n_heads = 2"),
        ({"position": "rope", "d_model": 6, "n_heads": 2}, r"head size .* must be even, got 3"),
    ],
)
def test_invalid_options_are_config_errors(options: dict, message: str) -> None:
    with pytest.raises(tinylm.ConfigError, match=message) as caught:
        tinylm.Transformer(tinylm.Config(**{**BASE, **options}), backend="reference")
    # The config's JSON is generated: a position in it would mean nothing to the user.
    assert "line 1 column" not in str(caught.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"eps": float("nan")}, "eps must be a finite number"),
        ({"eps": 1e300}, "eps must be a finite number within float32's range, got 1e"),
        ({"rope_theta": float("inf")}, "rope_theta must be a finite number"),
    ],
)
def test_values_json_cannot_carry_are_config_errors_naming_the_field(options, message) -> None:
    with pytest.raises(tinylm.ConfigError, match=message):
        tinylm.Config(**{**BASE, **options})


def test_numpy_integers_are_taken_as_ints() -> None:
    config = tinylm.Config.llama(
        np.int64(16), d_model=np.int32(16), n_heads=4, n_kv_heads=np.int64(2)
    )
    assert type(config.vocab_size) is int and type(config.n_kv_heads) is int
    model = tinylm.Transformer(config)
    assert model.config == config


def test_an_unknown_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match='unknown backend "gpu"'):
        tinylm.Transformer(tinylm.Config(**BASE), backend="gpu")


def test_a_config_written_before_the_options_means_gpt2() -> None:
    old = json.dumps({**BASE, "eps": 1e-5, "attn_bias": True, "tie_embeddings": True})
    config = tinylm.Config.from_json(old)
    options = (config.activation, config.norm, config.position)
    assert options == ("gelu_tanh", "layernorm", "learned")
    assert config.mlp_bias and config.n_kv_heads is None
    assert tinylm.Transformer(config).backend == "fast"


def test_the_llama_preset() -> None:
    config = tinylm.Config.llama(65, d_model=96)
    assert (config.norm, config.position, config.activation) == ("rmsnorm", "rope", "swiglu")
    assert not (config.attn_bias or config.mlp_bias or config.tie_embeddings)
    assert config.d_ff == 256  # 8 / 3 * 96, a multiple of 8
    model = tinylm.Transformer(config, backend="reference")
    names = set(model.state_dict())
    assert "pos_embed.weight" not in names and "lm_head.weight" in names
    assert "blocks.0.ff.gate.weight" in names


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm", *args], cwd=cwd, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return proc


def test_cli_trains_a_llama_model_on_the_reference_backend_and_generates(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 20, encoding="utf-8")
    out = tmp_path / "run"
    size = ["--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--context", "8"]
    steps = ["--batch-size", "2", "--eval-interval", "5", "--eval-batches", "1", "--quiet"]
    common = ["train", "--data", str(corpus), "--out", str(out), "--arch", "llama"]
    _cli(*common, *size, *steps, "--steps", "6", "--warmup", "2", cwd=tmp_path)
    model = tinylm.Transformer.load(out / "model.safetensors", backend="reference")
    assert (model.config.activation, model.config.position) == ("swiglu", "rope")
    sample = _cli(
        "generate", "--weights", str(out / "model.safetensors"), "--backend", "reference",
        "--prompt", "to", "--max-new-tokens", "5", "--seed", "1", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert sample.startswith("to")
    # The fast backend (generate's default) runs the same model with its key/value cache.
    on_fast = _cli(
        "generate", "--weights", str(out / "model.safetensors"),
        "--prompt", "to", "--max-new-tokens", "5", "--seed", "1", cwd=tmp_path,
    ).stdout  # fmt: skip
    assert on_fast.startswith("to")


def test_cli_demo_runs_on_the_reference_backend(tmp_path) -> None:
    out = _cli("demo", "--backend", "reference", "--steps", "3", cwd=tmp_path).stdout
    assert "step   2" in out


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_fast_backend_options_match_the_numpy_reference_and_the_reference_backend(
    name: str,
) -> None:
    config = config_for(name)
    fast = tinylm.Transformer(config, seed=2)
    state = randomize(fast, 2, 0.4)
    ref = tinylm.Transformer(config, seed=2, backend="reference")
    ref.load_state_dict(state)
    ids = np.random.default_rng(3).integers(0, config.vocab_size, size=(3, config.max_seq_len))
    assert rel_err(fast.logits(ids), reference.forward(state, config, ids)) <= 1e-4
    _, g_fast = fast.gradients(ids, ids)
    _, g_ref = ref.gradients(ids, ids)
    for tensor, g in g_ref.items():
        np.testing.assert_allclose(g_fast[tensor], g, rtol=1e-4, atol=1e-6, err_msg=tensor)
    out = fast.generate([1, 2], max_new_tokens=6, temperature=0)
    assert out == ref.generate([1, 2], max_new_tokens=6, temperature=0)


def test_reference_generation_follows_the_shift_window_as_the_fast_cache_does() -> None:
    config = tinylm.Config(**{**BASE, "max_seq_len": 4})
    fast = tinylm.Transformer(config, seed=8)
    state = randomize(fast, 8, 0.5)
    ref = tinylm.Transformer(config, seed=8, backend="reference")
    ref.load_state_dict(state)
    for window in ("shift", "sliding"):
        want = fast.generate([1, 5, 2], max_new_tokens=12, temperature=0, window=window)
        assert ref.generate([1, 5, 2], max_new_tokens=12, temperature=0, window=window) == want


def fast_llama(seed: int, scale: float = 1.0) -> tinylm.Transformer:
    model = tinylm.Transformer(llama(), seed=seed)
    randomize(model, seed, scale)
    return model


@pytest.mark.parametrize("window", ["shift", "sliding"])
def test_fast_llama_greedy_generation_is_the_numpy_argmax_past_the_context(window: str) -> None:
    config = llama()
    model = fast_llama(6)
    assert model.backend == "fast"
    prompt = [3, 1, 4]
    out = model.generate(prompt, max_new_tokens=12, temperature=0, window=window)
    p = config.max_seq_len
    seen = list(prompt)  # what the window rule lets the model see
    for i in range(len(prompt), len(out)):
        logits = reference.forward(model.state_dict(), config, np.array([seen]))
        assert out[i] == int(np.argmax(logits[0, -1])), (window, i)
        seen.append(out[i])
        if len(seen) > p:
            del seen[: len(seen) - (p if window == "sliding" else p // 2)]


def test_fast_llama_training_lowers_the_loss_as_the_reference_backend_does() -> None:
    fast = tinylm.Transformer(llama(), seed=0)
    ref = tinylm.Transformer(llama(), seed=0, backend="reference")
    ids = np.array([[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 1, 2]])
    targets = np.roll(ids, -1, axis=1)
    first = fast.loss(ids, targets)
    optimizers = [tinylm._core.AdamW(m._core, 0.9, 0.99, 1e-8, 0.0) for m in (fast, ref)]
    for _ in range(30):
        losses = [
            m._core.train_step(o, ids, targets, 1e-2, 1.0) for m, o in zip((fast, ref), optimizers)
        ]
        assert abs(losses[0][0] - losses[1][0]) < 1e-4 * max(losses[1][0], 1.0)
    assert fast.loss(ids, targets) < 0.3 * first


def test_beam_search_of_width_one_on_a_llama_model_is_greedy() -> None:
    model = fast_llama(2)
    greedy = model.generate([1, 2], max_new_tokens=9, temperature=0)
    beams = model.beam_search([1, 2], max_new_tokens=9, num_beams=1)
    assert list(beams[0].ids) == greedy
    wide = model.beam_search([1, 2], max_new_tokens=4, num_beams=3, num_return_sequences=3)
    assert len(wide) == 3 and wide[0].score >= wide[-1].score


@pytest.mark.parametrize(
    "name",
    [
        "rmsnorm",
        "activation_silu",
        "no_mlp_bias",
        "swiglu",
        "geglu",
        "rope",
        "grouped_query",
        "multi_query_rope",
        "llama",
    ],
)
def test_batched_generation_runs_the_fast_options(name: str) -> None:
    if name == "llama":
        config = tinylm.Config.llama(
            7, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=5
        )
    else:
        config = tinylm.Config(**{**BASE, **OPTIONS[name], "d_model": 128, "n_heads": 4})
    model = tinylm.Transformer(config, seed=3)
    randomize(model, 3, 0.3)
    prompts = [[1, 2], [3, 4, 5]]
    many = model.generate_many(prompts, max_new_tokens=7, temperature=0)
    assert many == [model.generate(p, max_new_tokens=7, temperature=0) for p in prompts]
