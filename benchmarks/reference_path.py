"""The reference path: its training speed, and how far the fast path is from it.

    .venv/bin/python benchmarks/reference_path.py              # ~1 minute
    .venv/bin/python benchmarks/reference_path.py --steps 3    # a quick check

1. Training tokens/s of the reference backend (plain loops, one thread) at a small
   configuration (config A's shape: V 65, C 64, L 2, H 4, T 32, B 16), GPT-2 and llama
   blocks, beside the fast backend on the GPT-2 block.
2. The largest difference between the fast and reference backends' logits and loss on the
   bundled Shakespeare model, over a few batches of the corpus (or random ids without it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

import tinylm
from tinylm import _core

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"


def tokens_per_second(config: tinylm.Config, backend: str, steps: int, batch: int) -> float:
    model = tinylm.Transformer(config, seed=0, backend=backend)
    optimizer = _core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.1)
    rng = np.random.default_rng(0)
    t = config.max_seq_len
    ids = rng.integers(0, config.vocab_size, size=(batch, t + 1))
    model._core.train_step(optimizer, ids[:, :-1], ids[:, 1:], 1e-3, 1.0)  # warm up
    start = time.perf_counter()
    for _ in range(steps):
        model._core.train_step(optimizer, ids[:, :-1], ids[:, 1:], 1e-3, 1.0)
    return steps * batch * t / (time.perf_counter() - start)


def fast_vs_reference(batches: int) -> tuple[float, float, float]:
    fast = tinylm.Transformer.from_bundled("shakespeare")
    path = tinylm.bundled_weights("shakespeare")
    ref = tinylm.Transformer.load(path, backend="reference")
    tok, t = fast.tokenizer, fast.config.max_seq_len
    rng = np.random.default_rng(0)
    if CORPUS.exists() and tok is not None:
        data = np.array(tok.encode(CORPUS.read_text(encoding="utf-8")[:200_000]))
    else:
        print(f"({CORPUS} absent: random ids)", file=sys.stderr)
        data = rng.integers(0, fast.config.vocab_size, size=200_000)
    worst_logit = worst_rel = worst_loss = 0.0
    for _ in range(batches):
        starts = rng.integers(0, len(data) - t - 1, size=4)
        x = np.stack([data[s : s + t] for s in starts])
        y = np.stack([data[s + 1 : s + t + 1] for s in starts])
        a, b = fast.logits(x), ref.logits(x)
        worst_logit = max(worst_logit, float(np.abs(a - b).max()))
        worst_rel = max(worst_rel, float(np.abs(a - b).max() / np.abs(b).max()))
        worst_loss = max(worst_loss, abs(fast.loss(x, y) - ref.loss(x, y)))
    return worst_logit, worst_rel, worst_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", type=int, default=10)
    args = parser.parse_args()
    sizes = {"vocab_size": 65, "d_model": 64, "n_layers": 2, "n_heads": 4, "max_seq_len": 32}
    gpt2, llama = tinylm.Config(**sizes), tinylm.Config.llama(**sizes)
    batch = 16
    print("training tokens/s (config A's shape, batch 16):")
    runs = [
        ("reference, gpt2 block", gpt2, "reference", args.steps),
        ("reference, llama block", llama, "reference", args.steps),
        ("fast, gpt2 block", gpt2, "fast", args.steps * 20),
    ]
    for name, config, backend, steps in runs:
        print(f"  {name + ':':24s}{tokens_per_second(config, backend, steps, batch):9.0f}")
    logit, rel, loss = fast_vs_reference(args.batches)
    print(f"bundled Shakespeare model, fast vs reference over {args.batches} batches of 4 x T:")
    print(f"  largest |logit difference| {logit:.3e} ({rel:.3e} of the largest logit)")
    print(f"  largest |loss difference|  {loss:.3e}")


if __name__ == "__main__":
    main()
