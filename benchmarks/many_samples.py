"""Batched sampling: tokens/s of N sequences decoded together against one alone, at a
benchmark configuration (random weights), batch sizes 1, 4, 8, 16.

    .venv/bin/python benchmarks/many_samples.py [--config B] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tinylm
from configs import CONFIGS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="B", choices=sorted(CONFIGS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cfg = CONFIGS[args.config]
    model = tinylm.Transformer(
        tinylm.Config(
            vocab_size=cfg.vocab,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            max_seq_len=cfg.context,
        ),
        seed=0,
    )
    new = cfg.context - 1
    print(f"config {args.config}: {model!r}, {new} new tokens per sequence")
    base = None
    for n in (1, 4, 8, 16):
        best = float("inf")
        for seed in range(args.repeats):
            start = time.perf_counter()
            model.generate_many([1], new, num_samples=n, temperature=0.8, seed=seed)
            best = min(best, time.perf_counter() - start)
        rate = n * new / best
        base = base or rate
        print(f"{n:>3} sequences: {rate:>10,.0f} tokens/s  ({rate / base:.2f}x one)")


if __name__ == "__main__":
    main()
