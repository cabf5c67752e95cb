"""Dropout: a NumPy float64 forward with the documented mask hash against tinylm's training
loss, p = 0 against no dropout, bad p, evaluation unaffected, saving and the CLI flag."""

from __future__ import annotations

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


@pytest.mark.parametrize("llama", [False, True])
def test_training_loss_matches_a_numpy_forward_with_the_documented_masks(llama: bool) -> None:
    p, seed, step = 0.3, 12, 5
    cfg = tinylm.Config.llama(11, 8, n_layers=2, n_heads=2, max_seq_len=6, dropout=p)
    cfg = cfg if llama else config(p)
    model = random_model(cfg, seed=3)

    def drop(x: np.ndarray, site: int) -> np.ndarray:
        return x * mask(p, seed, step, site, x.shape)

    params = model.state_dict()
    want = reference.loss(params, cfg, IDS, TARGETS, drop)
    got = model.forward_backward(IDS, TARGETS, dropout_key=(seed, step))
    assert got == pytest.approx(want, rel=1e-5)
    assert abs(want - reference.loss(params, cfg, IDS, TARGETS)) > 1e-3  # the masks matter
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
