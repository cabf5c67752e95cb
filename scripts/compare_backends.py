"""The fast and the reference backend side by side: the same training run on each, step for
step, and the largest difference of their loss curves.

    .venv/bin/python scripts/compare_backends.py [--steps 200] [--arch gpt2|llama|both]

Two runs per architecture:
- the Go TinyLM demo (the bundled word-level model, SGD on one sentence, 100 steps);
- Tiny Shakespeare at the bundled model's configuration (characters, d_model 128, 4 layers,
  4 heads, context 64, batch 12, AdamW with nanoGPT's schedule) for ``--steps`` steps.
Both backends start from the same parameters and see the same batches, so their loss
curves differ only by float32 rounding (the order of the sums), which training amplifies
slowly. The reference backend is slow (plain loops, one thread): the 200-step run takes a
few minutes.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import tinylm
from tinylm.cli import DEMO_SENTENCE
from tinylm.train import TrainConfig, get_batch

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


def demo_losses(backend: str, steps: int = 100) -> list[float]:
    model = tinylm.Transformer.load(tinylm.bundled_weights("tiny"), backend=backend)
    assert model.tokenizer is not None
    ids = model.tokenizer.encode(DEMO_SENTENCE)
    x, y = np.array([ids[:-1]]), np.array([ids[1:]])
    return [model._core.sgd_step(x, y, 0.01) for _ in range(steps)]


def shakespeare_losses(
    arch: str, backend: str, steps: int, data: np.ndarray, vocab: int
) -> tuple[list[float], float]:
    make = tinylm.Config.llama if arch == "llama" else tinylm.Config
    model = tinylm.Transformer(make(vocab_size=vocab), seed=1337, backend=backend)
    config = TrainConfig(steps=steps)
    optimizer = tinylm.AdamW(
        model, config.lr, (config.beta1, config.beta2), weight_decay=config.weight_decay
    )
    seq_len = model.config.max_seq_len
    losses = []
    start = time.perf_counter()
    for step in range(steps):
        optimizer.lr = config.lr_at(step)
        x, y = get_batch(data, config.batch_size, seq_len, config.seed, step)
        losses.append(model.forward_backward(x, y))
        model.clip_grad_norm(config.grad_clip)
        optimizer.step()
    rate = steps * config.batch_size * seq_len / (time.perf_counter() - start)
    return losses, rate


def report(name: str, fast: list[float], ref: list[float]) -> None:
    diff = np.abs(np.array(fast) - np.array(ref))
    worst = int(diff.argmax())
    print(
        f"{name}: {len(fast)} steps, loss {fast[0]:.4f} -> {fast[-1]:.4f} (fast) / "
        f"{ref[-1]:.4f} (reference); largest difference {diff.max():.2e} at step {worst} "
        f"(relative {diff.max() / abs(ref[worst]):.1e}), mean {diff.mean():.1e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--arch", choices=("gpt2", "llama", "both"), default="both")
    args = parser.parse_args()
    report("Go demo (SGD, one sentence)", demo_losses("fast"), demo_losses("reference"))
    text = CORPUS.read_text(encoding="utf-8")
    tok = tinylm.Tokenizer.char_level(text)
    data = np.array(tok.encode(text[: int(0.9 * len(text))]))
    for arch in ("gpt2", "llama") if args.arch == "both" else (args.arch,):
        fast, fast_rate = shakespeare_losses(arch, "fast", args.steps, data, tok.vocab_size)
        ref, ref_rate = shakespeare_losses(arch, "reference", args.steps, data, tok.vocab_size)
        report(f"Shakespeare, {arch}", fast, ref)
        print(
            f"  training tokens/s: fast {fast_rate:,.0f}, reference {ref_rate:,.0f} "
            f"({fast_rate / ref_rate:.0f}x)"
        )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
