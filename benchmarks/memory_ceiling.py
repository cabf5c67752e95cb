"""The fastest batch-1 float32 generation this machine allows, per model shape.

Generating one token reads every weight once (each block's matrices and the output head),
so tokens/s can be no more than the rate the machine streams those bytes. NumPy's float32
matrix-vector product (OpenBLAS, 2 threads), run over a matrix holding as many floats as
the model reads per token, measures that rate at each size (the larger models stream from
memory or from the last-level cache, the smaller ones from the core caches):

    .venv/bin/python benchmarks/memory_ceiling.py [--seconds 2]

It prints, per shape, the megabytes read per token, the rate, and the ceiling in tokens/s,
to set beside the generation rows of bench.py and interop_bench.py.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "2")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from configs import CONFIGS

#: The real-scale shapes of interop_bench.py: (vocab, d_model, layers).
REAL = {"GPT-2 124M": (50257, 768, 12), "stories15M": (32000, 288, 6)}


def floats_per_token(vocab: int, d_model: int, layers: int) -> int:
    """Weights read per generated token: 12 C^2 per block (4 C^2 of attention and 8 C^2
    of feed-forward, gated with F = 8 C / 3 or not with F = 4 C) and the V C head."""
    return layers * 12 * d_model * d_model + vocab * d_model


def stream_rate(floats: int, cols: int, seconds: float) -> float:
    """Bytes per second of w @ x over a (floats / cols, cols) float32 matrix."""
    w = np.random.default_rng(0).standard_normal((floats // cols, cols), dtype=np.float32)
    x = np.ones(cols, dtype=np.float32)
    w @ x
    start, n = time.perf_counter(), 0
    while n < 3 or time.perf_counter() - start < seconds:
        w @ x
        n += 1
    return w.nbytes * n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per shape (default: 2)")
    args = parser.parse_args()
    shapes = {name: (c.vocab, c.d_model, c.n_layers) for name, c in CONFIGS.items()}
    shapes.update(REAL)
    print("| shape | MB read per token | NumPy sgemv GB/s | ceiling tok/s |")
    print("|---|---|---|---|")
    for name, (vocab, c, layers) in shapes.items():
        floats = floats_per_token(vocab, c, layers)
        rate = stream_rate(floats, c, args.seconds)
        ceiling = rate / (4 * floats)
        print(f"| {name} | {4 * floats / 1e6:,.1f} | {rate / 1e9:.1f} | {ceiling:,.0f} |")


if __name__ == "__main__":
    main()
