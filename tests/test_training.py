"""The training loop: it learns, it resumes exactly, it stops cleanly, it keeps the last
good checkpoint when the loss goes non-finite."""

from __future__ import annotations

import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm.train import CHECKPOINT_NAME, get_batch

TEXT = (
    "the quick brown fox jumps over the lazy dog. " * 40
    + "pack my box with five dozen liquor jugs. " * 40
)


def _setup(seed: int = 0):
    tok = tinylm.Tokenizer.char_level(TEXT)
    ids = np.array(tok.encode(TEXT))
    n = int(len(ids) * 0.9)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=seed, tokenizer=tok)
    return model, ids[:n], ids[n:]


def _train_config(**kw) -> tinylm.TrainConfig:
    base = dict(
        steps=40,
        batch_size=8,
        lr=3e-3,
        min_lr=3e-4,
        warmup_steps=5,
        eval_interval=10,
        eval_batches=4,
        seed=7,
    )
    return tinylm.TrainConfig(**{**base, **kw})


def test_training_lowers_training_and_validation_loss() -> None:
    model, train_ids, val_ids = _setup()
    before = tinylm.evaluate(model, val_ids)
    model, result = tinylm.train(model, train_ids, val_ids, _train_config(steps=80), progress=False)
    after = tinylm.evaluate(model, val_ids)
    assert result.steps_done == 80 and len(result.train_losses) == 80
    assert np.mean(result.train_losses[-10:]) < 0.7 * np.mean(result.train_losses[:5])
    assert after < 0.75 * before
    assert [s for s, _ in result.val_losses] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert result.tokens_per_second > 0


def test_resume_continues_with_the_uninterrupted_losses(tmp_path: Path) -> None:
    model, train_ids, val_ids = _setup()
    straight, full = tinylm.train(
        model, train_ids, val_ids, _train_config(), out_dir=tmp_path / "a", progress=False
    )

    def interrupt_at_20(step: int, _loss: float, _val) -> None:
        if step == 20:
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C would

    model_b, _, _ = _setup()
    with pytest.raises(tinylm.TrainingInterrupted) as stopped:  # a KeyboardInterrupt
        tinylm.train(
            model_b,
            train_ids,
            val_ids,
            _train_config(),
            out_dir=tmp_path / "b",
            progress=False,
            on_eval=interrupt_at_20,
        )
    first = stopped.value.result
    assert isinstance(stopped.value, KeyboardInterrupt)
    assert first.interrupted and first.steps_done == 20
    assert (tmp_path / "b" / CHECKPOINT_NAME).exists()
    resumed, second = tinylm.train(
        model_b,
        train_ids,
        val_ids,
        _train_config(),
        out_dir=tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert second.steps_done == 40 and not second.interrupted
    # Bit-identical, not merely close.
    assert second.train_losses == full.train_losses
    assert second.val_losses == full.val_losses
    for name, value in straight.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[name], value, err_msg=name)


def test_resume_refuses_changed_settings(tmp_path: Path) -> None:
    model, train_ids, val_ids = _setup()
    tinylm.train(
        model, train_ids, val_ids, _train_config(steps=10), out_dir=tmp_path, progress=False
    )
    lr = _train_config(steps=10).lr
    with pytest.raises(ValueError, match=rf"lr: checkpoint's {lr!r}, now 0.01"):
        tinylm.train(
            model,
            train_ids,
            val_ids,
            _train_config(steps=10, lr=1e-2),
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    # A longer run keeps the decay horizon: the error says which value to pass.
    with pytest.raises(ValueError, match=r"lr_decay_steps: checkpoint's 10, now 20.*=10\)"):
        tinylm.train(
            model,
            train_ids,
            val_ids,
            _train_config(steps=20),
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    model, result = tinylm.train(
        model,
        train_ids,
        val_ids,
        _train_config(steps=20, lr_decay_steps=10),
        out_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert result.steps_done == 20


def test_same_seed_gives_bit_identical_weights() -> None:
    runs = []
    for _ in range(2):
        model, train_ids, _val_ids = _setup(seed=3)
        model, _ = tinylm.train(model, train_ids, None, _train_config(steps=15), progress=False)
        runs.append(model.state_dict())
    for name in runs[0]:
        np.testing.assert_array_equal(runs[0][name], runs[1][name])


def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path) -> None:
    model, train_ids, val_ids = _setup()
    tinylm.train(
        model, train_ids, val_ids, _train_config(steps=10), out_dir=tmp_path, progress=False
    )
    ckpt = tmp_path / CHECKPOINT_NAME
    good = ckpt.read_bytes()
    state = model.state_dict()
    state["ln_f.weight"] = np.full_like(state["ln_f.weight"], 3e38)
    state["token_embed.weight"] = np.full_like(state["token_embed.weight"], 3e38)
    model.load_state_dict(state)
    with pytest.raises(tinylm.NonFiniteError, match="diverged at step 0"):
        tinylm.train(
            model, train_ids, val_ids, _train_config(steps=10), out_dir=tmp_path, progress=False
        )
    assert ckpt.read_bytes() == good


def test_learning_rate_schedule_is_warmup_then_cosine() -> None:
    cfg = tinylm.TrainConfig(steps=2000, lr=1e-3, min_lr=1e-4, warmup_steps=100)

    # nanoGPT's get_lr, written out again.
    def nano(it: int) -> float:
        if it < 100:
            return 1e-3 * (it + 1) / 101
        if it > 2000:
            return 1e-4
        ratio = (it - 100) / 1900
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)

    for it in (0, 50, 99, 100, 101, 1000, 1999, 2000):
        assert cfg.lr_at(it) == pytest.approx(nano(it), rel=1e-12)


def test_batches_depend_only_on_seed_and_step() -> None:
    data = np.arange(1000)
    x1, y1 = get_batch(data, 4, 8, seed=1, step=5)
    x2, _y2 = get_batch(data, 4, 8, seed=1, step=5)
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, x1 + 1)
    x3, _ = get_batch(data, 4, 8, seed=1, step=6)
    assert not np.array_equal(x1, x3)


@pytest.mark.parametrize("n_tokens", [0, 1, 16])
def test_data_shorter_than_the_context_is_an_error(n_tokens: int) -> None:
    model, train_ids, _ = _setup()
    with pytest.raises(ValueError, match="too few"):
        tinylm.train(model, train_ids[:n_tokens], None, _train_config(), progress=False)


@pytest.mark.parametrize(
    ("settings", "error", "message"),
    [
        ({"steps": True}, TypeError, "steps must be an int"),
        ({"warmup_steps": 1.5}, TypeError, "warmup_steps must be an int"),
        ({"seed": -1}, ValueError, "seed must be between 0 and"),
        ({"weight_decay": float("nan")}, ValueError, "weight_decay must be in"),
        ({"lr": 1e300}, ValueError, "lr must be in"),
        ({"grad_clip": float("inf")}, ValueError, "grad_clip must be in"),
        ({"beta2": 1.5}, ValueError, "beta2 must be in"),
        ({"grad_accum": 2**40}, ValueError, "grad_accum must be between 1 and"),
        ({"batch_size": 2**15, "grad_accum": 2**15}, ValueError, "sequences a step"),
    ],
)
def test_bad_training_settings_are_refused_naming_them(settings, error, message) -> None:
    with pytest.raises(error, match=message):
        tinylm.TrainConfig(**settings)


@pytest.mark.parametrize(
    ("data", "kwargs", "error", "message"),
    [
        (np.arange(10), {"seq_len": 10}, ValueError, "data has 10 tokens, too few"),
        (np.arange(10), {"seq_len": -1}, ValueError, "seq_len must be between 1"),
        (np.zeros((4, 8), np.int64), {}, ValueError, "data must be a 1-D array"),
        (np.zeros(50, np.float32), {}, TypeError, "data must hold integer token ids"),
    ],
)
def test_get_batch_checks_its_arguments(data, kwargs, error, message) -> None:
    args = {"batch_size": 2, "seq_len": 4, "seed": 0, "step": 0, **kwargs}
    with pytest.raises(error, match=message):
        tinylm.get_batch(data, **args)


def test_training_ids_beyond_the_core_s_range_are_refused() -> None:
    model, train_ids, _ = _setup()
    data = train_ids.astype(np.uint64)
    data[3] = 2**63
    with pytest.raises(ValueError, match=r"training data holds the token id 9223372036854775808"):
        tinylm.train(model, data, None, _train_config(steps=2), progress=False)
