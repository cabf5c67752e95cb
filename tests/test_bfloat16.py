"""Weights in bfloat16 (``Transformer.to("bfloat16")``): the rounding, checked against a
NumPy reimplementation of round-to-nearest-even; generation, batches and beams on the
2-byte weights, checked against a float32 model holding the same rounded values and
against the NumPy float64 reference; training refused; bad dtypes refused."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import reference
import tinylm
from conftest import random_model

CONFIGS = {
    # Narrow (one lane), wide (two lanes, a partial panel: 3 * 160 = 480 columns of qkv),
    # and Llama's block with grouped key/value heads and RoPE.
    "gpt2-narrow": tinylm.Config(vocab_size=37, d_model=16, n_layers=2, n_heads=2, max_seq_len=12),
    "gpt2-wide": tinylm.Config(
        vocab_size=300, d_model=160, n_layers=2, n_heads=4, d_ff=200, max_seq_len=16
    ),
    "llama-gqa": tinylm.Config.llama(
        vocab_size=70, d_model=128, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=96, max_seq_len=16
    ),
}


def bf16_round(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), back as float32: on the bit patterns,
    add 0x7fff plus the lowest kept bit, then clear the low 16 bits."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return rounded.astype(np.uint32).view(np.float32)


def pair(name: str, seed: int = 1) -> tuple[tinylm.Transformer, tinylm.Transformer]:
    """(the model in bfloat16, a float32 model given the same rounded values)."""
    half = random_model(CONFIGS[name], seed=seed, scale=0.4).to("bfloat16")
    full = tinylm.Transformer(CONFIGS[name])
    full.load_state_dict(half.state_dict())
    assert full.dtype == "float32"
    return half, full


def test_the_numpy_rounding_is_round_to_nearest_even() -> None:
    # Halfway cases: 1 + 2^-8 lies between 1 and 1 + 2^-7 and goes to the even one (1);
    # 1 + 3 * 2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6 and goes up.
    x = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 1 + 2**-8 + 2**-20], np.float32)
    want = np.array([1, 1 + 2**-6, -1, 1 + 2**-7], np.float32)
    np.testing.assert_array_equal(bf16_round(x), want)


@pytest.mark.parametrize("name", CONFIGS)
def test_to_bfloat16_rounds_every_parameter_to_the_nearest_bfloat16(name) -> None:
    model = random_model(CONFIGS[name], seed=2, scale=0.7)
    before = model.state_dict()
    assert model.to("bfloat16") is model
    assert model.dtype == "bfloat16"
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = 0
    for key, value in before.items():
        np.testing.assert_array_equal(after[key], bf16_round(value), err_msg=key)
        assert not (after[key].view(np.uint32) & 0xFFFF).any(), key
        changed += int((after[key] != value).sum())
    assert changed > 0.9 * sum(v.size for v in before.values())
    # Back to float32 keeps the rounded values; rounding again changes nothing.
    model.to("float32")
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, after[key], err_msg=key)


@pytest.mark.parametrize("name", CONFIGS)
def test_bfloat16_logits_are_the_float64_reference_of_the_rounded_weights(name) -> None:
    half, _ = pair(name)
    ids = np.array([[1, 5, 2, 9, 3, 0, 7]])
    params = {k: v.astype(np.float64) for k, v in half.state_dict().items()}
    want = reference.forward(params, half.config, ids)
    got = half.logits(ids)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("name", CONFIGS)
def test_greedy_generation_is_the_argmax_of_the_reference_logits(name) -> None:
    half, _ = pair(name)
    params = {k: v.astype(np.float64) for k, v in half.state_dict().items()}
    prompt = [3, 1, 4]
    got = half.generate(prompt, max_new_tokens=9, temperature=0)
    seq = list(prompt)
    for _ in range(9):
        logits = reference.forward(params, half.config, np.array([seq]))[0, -1]
        top2 = np.sort(logits)[-2:]
        # float32 sums are good to about 1e-6 of the logits here; a closer pair would be
        # a tie the test cannot decide (another seed then).
        assert top2[1] - top2[0] > 1e-5 * max(1.0, abs(top2[1])), "a near tie"
        seq.append(int(np.argmax(logits)))
    assert got == seq


@pytest.mark.parametrize("name", CONFIGS)
def test_two_byte_weights_give_the_float32_kernels_bits(name) -> None:
    """Generation reads 2-byte weights and widens each to float32 before its multiply-add,
    in the float32 kernels' order: every sampled id, batch row and beam score is the
    float32 model's, exactly."""
    half, full = pair(name)
    sampling = {"temperature": 1.3, "top_p": 0.95, "seed": 11}
    assert half.generate([2, 7], 10, **sampling) == full.generate([2, 7], 10, **sampling)
    prompts = [[1], [4, 2, 8], [5, 5]]
    assert half.generate_many(prompts, 8, num_samples=2, temperature=0.9, seed=3) == (
        full.generate_many(prompts, 8, num_samples=2, temperature=0.9, seed=3)
    )
    beams_half = half.beam_search([6, 1], 7, num_beams=4, num_return_sequences=3)
    beams_full = full.beam_search([6, 1], 7, num_beams=4, num_return_sequences=3)
    assert [(b.ids, b.logprob, b.score) for b in beams_half] == [
        (b.ids, b.logprob, b.score) for b in beams_full
    ]
    # score runs the full forward pass, which reads the rounded parameters (in float32).
    text = [3, 8, 1, 1, 2, 9]
    np.testing.assert_array_equal(half.score(text).token_logprobs, full.score(text).token_logprobs)


def test_a_bfloat16_model_does_not_train_until_it_is_float32_again() -> None:
    model = random_model(CONFIGS["gpt2-narrow"], seed=4).to("bf16")
    before = model.state_dict()
    opt = tinylm.AdamW(model, lr=1e-2)
    x = np.array([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match=r"bfloat16.*float32 to train"):
        model.train_step(opt, x, x)
    # A gradient may be taken (it is the float32 gradient at the rounded values); the
    # step that would apply it is refused.
    model.forward_backward(x, x)
    with pytest.raises(ValueError, match=r"bfloat16.*float32 to train"):
        opt.step()
    with pytest.raises(ValueError, match=r"bfloat16.*float32 to train"):
        model._core.sgd_step(x, x, 0.1)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)
    model.to("float32")
    model.train_step(opt, x, x)
    assert any((model.state_dict()[k] != v).any() for k, v in before.items())


def test_a_refused_change_leaves_a_stream_under_way_running() -> None:
    model = random_model(CONFIGS["gpt2-narrow"], seed=4).to("bfloat16")
    want = model.generate([1, 2], 10, temperature=0)
    stream = model.stream_ids([1, 2], 10, temperature=0)
    got = [next(stream)]
    x = np.array([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="bfloat16"):
        model.train_step(tinylm.AdamW(model), x, x)
    model.to("bf16")  # the dtype it has: no change
    got += list(stream)
    assert [1, 2, *got] == want


def test_train_refuses_a_bfloat16_model_before_its_first_step(tmp_path) -> None:
    model = random_model(CONFIGS["gpt2-narrow"], seed=4).to("bfloat16")
    data = np.arange(200) % CONFIGS["gpt2-narrow"].vocab_size
    config = tinylm.TrainConfig(steps=3, batch_size=2, seq_len=8, eval_interval=2)
    with pytest.raises(ValueError, match=r"bfloat16.*float32 to train"):
        tinylm.train(model, data, None, config, out_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_gradcheck_of_a_bfloat16_model_checks_its_rounded_values_in_float32() -> None:
    from tinylm.gradient_check import gradcheck

    model = random_model(CONFIGS["gpt2-narrow"], seed=3, scale=0.3).to("bfloat16")
    before = model.state_dict()
    x = np.array([[1, 2, 3, 4, 5]])
    result = gradcheck(model, x, np.roll(x, -1), samples=8)
    assert result.ok, str(result)
    assert model.dtype == "bfloat16"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_a_value_beyond_bfloat16_is_refused_and_changes_nothing() -> None:
    largest = float(np.frombuffer(np.uint32(0x7F7F0000).tobytes(), np.float32)[0])
    too_big = np.float32(3.3999e38)  # past the halfway point to 2^128: rounds to infinity
    assert bf16_round(np.array([largest], np.float32))[0] == largest
    assert np.isinf(bf16_round(np.array([too_big]))[0])

    model = random_model(CONFIGS["gpt2-narrow"], seed=5)
    state = model.state_dict()
    name = next(iter(state))
    state[name].reshape(-1)[3] = too_big
    model.load_state_dict(state)  # float32 holds it
    with pytest.raises(ValueError, match=rf"{name}.*flat index 3.*bfloat16"):
        model.to("bfloat16")
    assert model.dtype == "float32"
    assert model.state_dict()[name].reshape(-1)[3] == too_big

    half = random_model(CONFIGS["gpt2-narrow"], seed=5).to("bfloat16")
    before = half.state_dict()
    with pytest.raises(ValueError, match=rf'state_dict\["{name}"\].*flat index 3'):
        half.load_state_dict(state)
    for key, value in half.state_dict().items():
        np.testing.assert_array_equal(value, before[key], err_msg=key)


def test_load_state_dict_into_a_bfloat16_model_rounds_what_it_is_given() -> None:
    model = tinylm.Transformer(CONFIGS["gpt2-narrow"]).to("bfloat16")
    state = random_model(CONFIGS["gpt2-narrow"], seed=5).state_dict()
    model.load_state_dict(state)
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, bf16_round(state[key]), err_msg=key)


def test_a_saved_bfloat16_model_loads_with_the_same_values(tmp_path) -> None:
    half, _ = pair("llama-gqa")
    half.save(tmp_path / "m.safetensors")
    loaded = tinylm.Transformer.load(tmp_path / "m.safetensors", dtype="bfloat16")
    assert loaded.dtype == "bfloat16"
    assert repr(loaded).endswith("dtype='bfloat16')")
    for key, value in loaded.state_dict().items():
        np.testing.assert_array_equal(value, half.state_dict()[key], err_msg=key)
    assert tinylm.Transformer.load(tmp_path / "m.safetensors").dtype == "float32"


@pytest.mark.parametrize(
    "dtype, error, match",
    [
        ("float16", ValueError, r'dtype must be "float32" or "bfloat16" .*got "float16"'),
        ("", ValueError, "dtype must be"),
        (16, TypeError, "dtype must be a str"),
    ],
)
def test_bad_dtypes_are_errors(dtype, error, match) -> None:
    model = tinylm.Transformer(CONFIGS["gpt2-narrow"])
    with pytest.raises(error, match=match):
        model.to(dtype)
    assert model.dtype == "float32"


def test_load_checks_its_dtype_before_reading_anything(tmp_path) -> None:
    missing = tmp_path / "no-such-file.safetensors"
    with pytest.raises(ValueError, match=r'dtype must be .*got "fp16"'):
        tinylm.Transformer.load(missing, dtype="fp16")
    with pytest.raises(ValueError, match=r'dtype must be .*got "half"'):
        tinylm.Transformer.from_pretrained(tmp_path, dtype="half")


def test_from_pretrained_loads_in_bfloat16(tmp_path) -> None:
    model = random_model(CONFIGS["gpt2-wide"], seed=6)
    model.save_pretrained(tmp_path)
    half = tinylm.Transformer.from_pretrained(tmp_path, dtype="bf16")
    assert half.dtype == "bfloat16"
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(half.state_dict()[key], bf16_round(value), err_msg=key)


def test_the_cli_generates_and_evaluates_in_bfloat16(tmp_path) -> None:
    run = [sys.executable, "-m", "tinylm"]
    out = subprocess.run(
        [*run, "generate", "--dtype", "bfloat16", "--prompt", "ROMEO:", "--max-new-tokens", "40"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ROMEO:") and len(out.stdout) > len("ROMEO:") + 20
    data = tmp_path / "text.txt"
    data.write_text("ROMEO:\nWhat light through yonder window breaks?\n" * 3)
    scores = {}
    for dtype in ("float32", "bfloat16"):
        out = subprocess.run(
            [*run, "eval", "--data", str(data), "--dtype", dtype],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        scores[dtype] = out.stdout
    assert "perplexity" in scores["bfloat16"]
    assert scores["bfloat16"] != scores["float32"], "the rounding moves the loss a little"
    bad = subprocess.run(
        [*run, "generate", "--dtype", "float16"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode != 0 and "float16" in bad.stderr and "bfloat16" in bad.stderr
