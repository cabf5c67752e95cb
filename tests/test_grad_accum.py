"""Gradient accumulation: micro-batches adding up to one step train as one big batch."""

from __future__ import annotations

import numpy as np
import pytest

import tinylm


def _run(batch_size: int, grad_accum: int) -> tuple[list[float], dict[str, np.ndarray]]:
    text = "the quick brown fox jumps over the lazy dog. " * 40
    tok = tinylm.Tokenizer.char_level(text)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=32, n_layers=2, n_heads=2, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=4, tokenizer=tok)
    ids = np.array(tok.encode(text))
    train = tinylm.TrainConfig(
        steps=12,
        batch_size=batch_size,
        grad_accum=grad_accum,
        warmup_steps=2,
        eval_interval=100,
        lr=3e-3,
    )
    model, result = tinylm.train(model, ids, None, train, progress=False)
    return result.train_losses, model.state_dict()


def test_accumulated_micro_batches_train_like_one_big_batch() -> None:
    big_losses, big = _run(batch_size=8, grad_accum=1)
    acc_losses, acc = _run(batch_size=2, grad_accum=4)
    np.testing.assert_allclose(acc_losses, big_losses, rtol=1e-4)
    for name, value in big.items():
        np.testing.assert_allclose(acc[name], value, atol=1e-4, err_msg=name)


def test_grad_accum_must_be_positive() -> None:
    with pytest.raises(ValueError, match="grad_accum"):
        tinylm.TrainConfig(grad_accum=0)
