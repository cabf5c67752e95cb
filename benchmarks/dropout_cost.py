"""What dropout costs a training step: tinylm's full step (forward, backward, clipping,
AdamW) at a benchmark configuration with p = 0 and with p > 0 (embedding, residual and
attention-probability masks, each a counter hash), side by side in one run.

    .venv/bin/python benchmarks/dropout_cost.py [--configs B,D] [--p 0.1] [--seconds 4]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinylm
from configs import CONFIGS


def tokens_per_second(name: str, p: float, seconds: float) -> float:
    cfg = CONFIGS[name]
    config = tinylm.Config(
        vocab_size=cfg.vocab,
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        n_heads=cfg.n_heads,
        max_seq_len=cfg.context,
        dropout=p,
    )
    model = tinylm.Transformer(config, seed=0)
    optimizer = tinylm.AdamW(model, lr=3e-4)
    rng = np.random.default_rng(0)
    b, t = cfg.batch, cfg.context
    step = 0

    def one_step() -> None:
        nonlocal step
        x = rng.integers(0, cfg.vocab, size=(b, t + 1))
        key = (1, step) if p > 0 else None
        model.train_step(optimizer, x[:, :-1], x[:, 1:], grad_clip=1.0, dropout_key=key)
        step += 1

    one_step()
    start, n = time.perf_counter(), 0
    while n < 2 or time.perf_counter() - start < seconds:
        one_step()
        n += 1
    return n * b * t / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="B,D", help="default: B,D")
    parser.add_argument("--p", type=float, default=0.1, help="dropout (default: 0.1)")
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement (default: 4)")
    parser.add_argument("--threads", type=int, default=2, help="default: 2")
    args = parser.parse_args()
    tinylm.set_num_threads(args.threads)
    print(f"| config | p = 0 tok/s | p = {args.p} tok/s | cost |")
    print("|---|---|---|---|")
    for name in args.configs.split(","):
        plain = tokens_per_second(name, 0.0, args.seconds)
        dropped = tokens_per_second(name, args.p, args.seconds)
        print(f"| {name} | {plain:,.0f} | {dropped:,.0f} | {plain / dropped - 1:+.0%} |")


if __name__ == "__main__":
    main()
