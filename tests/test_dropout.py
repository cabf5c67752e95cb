"""Dropout: a NumPy float64 forward with the documented mask hash (embedding sum, attention
probabilities, residual branches) against tinylm's training loss, p = 0 against no dropout,
bad p, evaluation unaffected, saving, the CLI flag, resuming and ``info``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

import reference
import tinylm
from conftest import random_model
from tinylm import _core

M64 = (1 << 64) - 1


def splitmix64(x: int) -> int:
    z = (x + 0x9E3779B97F4A7C15) & M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def mask(p: float, seed: int, step: int, site: int, shape: tuple[int, ...]) -> np.ndarray:
    """The documented mask (rust/src/dropout.rs): element i is kept when
    (h >> 40) / 2^24 >= p with h = sm(sm(sm(sm(seed) ^ step) ^ site) ^ i); kept values are
    scaled by 1 / (1 - p)."""
    key = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ site)
    n = int(np.prod(shape))
    u = np.array([(splitmix64(key ^ i) >> 40) / 2.0**24 for i in range(n)])
    p32 = float(np.float32(p))
    return np.where(u >= p32, 1.0 / (1.0 - p32), 0.0).reshape(shape)


def config(p: float, **extra: object) -> tinylm.Config:
    return tinylm.Config(
        vocab_size=11, d_model=8, n_layers=2, n_heads=2, max_seq_len=6, dropout=p, **extra
    )


IDS = np.array([[1, 4, 2, 6, 0, 3], [3, 5, 7, 9, 10, 2]])
TARGETS = np.array([[4, 2, 6, 0, 3, 3], [5, 7, 9, 10, 2, 1]])


#: The site of layer l's attention probabilities is ATTN_PROBS + l (rust/src/dropout.rs).
ATTN_PROBS = 2**32

ARCHS = {
    "gpt2": config(0.3),
    "llama": tinylm.Config.llama(11, 8, n_layers=2, n_heads=2, max_seq_len=6, dropout=0.3),
    "llama_gqa": tinylm.Config.llama(
        11, 8, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=6, dropout=0.3
    ),
}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_training_loss_matches_a_numpy_forward_with_the_documented_masks(arch: str) -> None:
    p, seed, step = 0.3, 12, 5
    cfg = ARCHS[arch]
    model = random_model(cfg, seed=3)

    def drop(x: np.ndarray, site: int) -> np.ndarray:
        # The attention probabilities come as (B, T, H, T): element ((b T + t) H + h) T + s.
        return x * mask(p, seed, step, site, x.shape)

    def drop_residual_only(x: np.ndarray, site: int) -> np.ndarray:
        return x if site >= ATTN_PROBS else drop(x, site)

    params = model.state_dict()
    want = reference.loss(params, cfg, IDS, TARGETS, drop)
    got = model.forward_backward(IDS, TARGETS, dropout_key=(seed, step))
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(want - reference.loss(params, cfg, IDS, TARGETS)) > 1e-3  # the masks matter
    # The attention probabilities' masks matter on their own.
    assert abs(want - reference.loss(params, cfg, IDS, TARGETS, drop_residual_only)) > 1e-3
    # Micro-batches of one step continue the mask of the whole batch.
    opt = tinylm.AdamW(model, lr=0.0)
    stats = model.train_step(opt, IDS, TARGETS, micro_batches=2, dropout_key=(seed, step))
    assert stats.loss == pytest.approx(want, rel=1e-5)


def test_dropout_zero_gives_todays_results_exactly() -> None:
    plain = random_model(tinylm.Config(vocab_size=11, d_model=8, n_layers=2, n_heads=2), seed=1)
    zero = random_model(
        tinylm.Config(vocab_size=11, d_model=8, n_layers=2, n_heads=2, dropout=0.0), seed=1
    )
    a = plain.forward_backward(IDS, TARGETS)
    b = zero.forward_backward(IDS, TARGETS, dropout_key=(1, 2))
    assert a == b
    for name, g in plain.grad.items():
        np.testing.assert_array_equal(g, zero.grad[name])


def test_without_a_key_and_in_evaluation_nothing_drops() -> None:
    dropped = random_model(config(0.5), seed=2)
    plain = random_model(config(0.0), seed=2)
    assert dropped.forward_backward(IDS, TARGETS) == plain.forward_backward(IDS, TARGETS)
    np.testing.assert_array_equal(dropped.logits(IDS), plain.logits(IDS))
    assert dropped.loss(IDS, TARGETS) == plain.loss(IDS, TARGETS)
    assert dropped.generate([1, 2], max_new_tokens=4, seed=5) == plain.generate(
        [1, 2], max_new_tokens=4, seed=5
    )


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_outside_zero_one_is_a_clear_error(p: float) -> None:
    with pytest.raises(_core.ConfigError, match="dropout"):
        config(p)


def test_a_saved_model_keeps_its_dropout(tmp_path) -> None:
    model = random_model(config(0.2), seed=4)
    path = tmp_path / "m.safetensors"
    model.save(path)
    loaded = tinylm.Transformer.load(path)
    assert loaded.config.dropout == pytest.approx(0.2)
    assert loaded.forward_backward(IDS, TARGETS, dropout_key=(1, 1)) == model.forward_backward(
        IDS, TARGETS, dropout_key=(1, 1)
    )


def test_cli_train_has_a_dropout_flag() -> None:
    from tinylm.cli import build_parser

    args = build_parser().parse_args(["train", "--data", "x.txt", "--dropout", "0.1"])
    assert args.dropout == 0.1
    assert build_parser().parse_args(["train", "--data", "x.txt"]).dropout == 0.0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--data", "x.txt", "--dropout", "1"])


def test_train_with_dropout_is_reproducible_and_drops() -> None:
    from tinylm.train import TrainConfig, train

    data = np.random.default_rng(0).integers(0, 11, 2000)
    settings = TrainConfig(steps=3, batch_size=4, grad_accum=2, warmup_steps=0)

    def run(p: float) -> list[float]:
        model = tinylm.Transformer(config(p), seed=1)
        return train(model, data, None, settings, progress=False)[1].train_losses

    assert run(0.3) == run(0.3)
    assert run(0.3) != run(0.0)


def test_an_attention_mask_is_the_documented_hash_of_its_position() -> None:
    """Spot check of the index formula for the attention probabilities: one row of the mask
    of layer 1 by hand, at sequence b = 1, position t = 3, head 1 (T = 6, H = 2)."""
    p, seed, step, t_len, heads = 0.5, 7, 2, 6, 2
    full = mask(p, seed, step, ATTN_PROBS + 1, (2, t_len, heads, t_len))
    key = splitmix64(splitmix64(splitmix64(seed) ^ step) ^ (ATTN_PROBS + 1))
    row = ((1 * t_len + 3) * heads + 1) * t_len
    by_hand = [
        2.0 if (splitmix64(key ^ (row + s)) >> 40) / 2.0**24 >= 0.5 else 0.0 for s in range(6)
    ]
    np.testing.assert_array_equal(full[1, 3, 1], by_hand)


def _train_args(corpus, out, *extra: str) -> list[str]:
    return [
        "train", "--data", str(corpus), "--out", str(out), "--steps", "2",
        "--batch-size", "2", "--context", "8", "--d-model", "16", "--n-layers", "1",
        "--n-heads", "2", "--eval-interval", "1", "--eval-batches", "1",
        "--final-eval", "none", "--quiet", *extra,
    ]  # fmt: skip


def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tinylm", *args], cwd=cwd, capture_output=True, text=True
    )


def test_resume_with_another_dropout_is_an_error_naming_the_flag(tmp_path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the cat sat on the mat. the dog ate the log. " * 20)
    out = tmp_path / "run"
    first = _cli(*_train_args(corpus, out, "--dropout", "0.1"), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    conflict = _cli(
        "train", "--resume", "--out", str(out), "--steps", "3", "--dropout", "0.2", cwd=tmp_path
    )
    assert conflict.returncode == 2 and "Traceback" not in conflict.stderr
    assert "--dropout 0.2 (the checkpoint's: 0.1)" in conflict.stderr
    # The checkpoint's own value is no conflict.
    same = _cli(
        "train", "--resume", "--out", str(out), "--steps", "3", "--dropout", "0.1", cwd=tmp_path
    )
    assert same.returncode == 0, same.stderr
    info = _cli("info", str(out / "model.safetensors"), cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "dropout:     0.1" in info.stdout


def test_info_does_not_show_dropout_zero(tmp_path) -> None:
    path = tmp_path / "m.safetensors"
    random_model(config(0.0), seed=1).save(path)
    info = _cli("info", str(path), cwd=tmp_path)
    assert info.returncode == 0, info.stderr
    assert "dropout" not in info.stdout


def test_hugging_face_export_writes_every_pdrop_and_import_reads_it(tmp_path) -> None:
    model = random_model(tinylm.Config(vocab_size=11, d_model=8, n_heads=2, dropout=0.25), 1)
    model.save_pretrained(tmp_path / "hf")
    hf = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf["attn_pdrop"] == hf["resid_pdrop"] == hf["embd_pdrop"] == pytest.approx(0.25)
    assert tinylm.Transformer.from_pretrained(tmp_path / "hf").config.dropout == 0.25
    llama = random_model(tinylm.Config.llama(11, 8, n_heads=2, dropout=0.25), 1)
    llama.save_pretrained(tmp_path / "llama")
    hf = json.loads((tmp_path / "llama" / "config.json").read_text())
    assert hf["attention_dropout"] == pytest.approx(0.25)
    assert tinylm.Transformer.from_pretrained(tmp_path / "llama").config.dropout == 0.25


def test_hugging_face_pdrops_that_differ_warn_and_resid_pdrop_wins(tmp_path) -> None:
    random_model(tinylm.Config(vocab_size=11, d_model=8, n_heads=2), 1).save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    hf = json.loads(path.read_text())
    path.write_text(json.dumps({**hf, "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.2}))
    with pytest.warns(UserWarning, match=r"attn_pdrop = 0.2 differ from resid_pdrop = 0.1"):
        loaded = tinylm.Transformer.from_pretrained(tmp_path)
    assert loaded.config.dropout == pytest.approx(0.1)
    path.write_text(json.dumps({**hf, "resid_pdrop": 1.0}))
    with pytest.raises(_core.FormatError, match="resid_pdrop"):
        tinylm.Transformer.from_pretrained(tmp_path)
