"""Generation speed past the context, bundled Shakespeare model (context 64), batch 1:
a 60-token sample (inside the context) against 500 tokens with each window rule.

    .venv/bin/python benchmarks/past_context.py [--repeats 5]

Prints tokens/s (best of the repeats) and each sample's time relative to the 60-token one
per token, so "12x" reads as "a token past the context costs 12 tokens inside it".
"""

from __future__ import annotations

import argparse
import time

import tinylm


def tokens_per_second(model: tinylm.Transformer, n: int, window: str, repeats: int) -> float:
    prompt = model.tokenizer.encode("\n")
    best = float("inf")
    for seed in range(repeats):
        start = time.perf_counter()
        out = model.generate(prompt, n, temperature=0.8, top_k=40, seed=seed, window=window)
        best = min(best, time.perf_counter() - start)
        assert len(out) == len(prompt) + n
    return n / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    model = tinylm.Transformer.from_bundled("shakespeare")
    tokens_per_second(model, 60, "shift", 1)  # packs the weights, starts the helper
    inside = tokens_per_second(model, 60, "shift", args.repeats)
    print(f"threads: {tinylm.get_num_threads()}")
    print(f"{'sample':<32}{'tokens/s':>10}{'cost per token vs 60':>24}")
    print(f"{'60 tokens (inside the context)':<32}{inside:>10,.0f}{1.0:>24.2f}")
    for window in ("shift", "sliding"):
        rate = tokens_per_second(model, 500, window, args.repeats)
        print(f"{'500 tokens, window=' + window:<32}{rate:>10,.0f}{inside / rate:>24.2f}")


if __name__ == "__main__":
    main()
