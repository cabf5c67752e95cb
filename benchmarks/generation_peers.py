"""Beam search and batched sampling: tinylm against Hugging Face transformers' `generate`
(PyTorch, KV cache) on the same random GPT-2-shaped models, side by side in one run.

    .venv/bin/python benchmarks/generation_peers.py [--configs B,D] [--repeats 3] [--dtype bfloat16]

For each benchmark configuration (benchmarks/configs.py) it times, from a one-token prompt
to the end of the context (no end-of-text id, so every search runs its whole length):
- beam search of width 4: tokens of the best sequence per second of the whole search
  (tinylm `beam_search(num_beams=4)`, transformers `generate(num_beams=4)`);
- sampling of 1, 4, 8 and 16 sequences decoded as one batch (temperature 0.8, top-k 40):
  tokens of all sequences per second (tinylm `generate_many(num_samples=n)`, transformers
  `generate(do_sample=True, num_return_sequences=n)`).
`--dtype bfloat16` stores both sides' weights in bfloat16 (tinylm `Transformer.to`,
PyTorch `model.to(torch.bfloat16)`). The best of `--repeats` runs (and of as many as fit in
a second) counts. The PyTorch side
runs in benchmarks/.torch-venv (created as bench.py creates it, with transformers added).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from configs import CONFIGS, ModelConfig  # noqa: E402

BATCHES = (1, 4, 8, 16)
BEAMS = 4


#: Short runs repeat until this many seconds have passed: one call at B takes about
#: 10 ms, and the best of two such calls was mostly the machine's noise.
MIN_SECONDS = 1.0


def best_time(run, repeats: int) -> float:
    """The fastest of at least `repeats` runs, and of as many as fit in MIN_SECONDS."""
    run()  # warm-up
    best, runs, began = float("inf"), 0, time.perf_counter()
    while runs < repeats or time.perf_counter() - began < MIN_SECONDS:
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        runs += 1
    return best


def tinylm_side(cfg: ModelConfig, repeats: int, threads: int, dtype: str) -> dict:
    import tinylm

    tinylm.set_num_threads(threads)
    model = tinylm.Transformer(
        tinylm.Config(
            vocab_size=cfg.vocab,
            d_model=cfg.d_model,
            n_layers=cfg.n_layers,
            n_heads=cfg.n_heads,
            max_seq_len=cfg.context,
        ),
        seed=0,
    ).to(dtype)
    new = cfg.context - 1
    result = {"new_tokens": new}
    seconds = best_time(lambda: model.beam_search([1], new, num_beams=BEAMS), repeats)
    result["beam"] = new / seconds
    for n in BATCHES:
        seconds = best_time(
            lambda n=n: model.generate_many(
                [1], new, num_samples=n, temperature=0.8, top_k=40, seed=0
            ),
            repeats,
        )
        result[f"batch{n}"] = n * new / seconds
    return result


def torch_side(cfg: ModelConfig, repeats: int, threads: int, dtype: str) -> dict:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=cfg.vocab,
        n_positions=cfg.context,
        n_embd=cfg.d_model,
        n_layer=cfg.n_layers,
        n_head=cfg.n_heads,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    model = GPT2LMHeadModel(config).eval().to(getattr(torch, dtype))
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    new = cfg.context - 1
    prompt = torch.tensor([[1]])
    fixed = {"max_new_tokens": new, "min_new_tokens": new, "use_cache": True}
    result = {"new_tokens": new}
    with torch.inference_mode():
        seconds = best_time(
            lambda: model.generate(prompt, num_beams=BEAMS, do_sample=False, **fixed), repeats
        )
        result["beam"] = new / seconds
        for n in BATCHES:
            seconds = best_time(
                lambda n=n: model.generate(
                    prompt,
                    do_sample=True,
                    temperature=0.8,
                    top_k=40,
                    num_return_sequences=n,
                    **fixed,
                ),
                repeats,
            )
            result[f"batch{n}"] = n * new / seconds
    return result


def torch_python() -> str:
    python = HERE / ".torch-venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(python.parent.parent)], check=True)
    probe = subprocess.run([str(python), "-c", "import torch, transformers"], check=False)
    if probe.returncode != 0:
        install = [str(python), "-m", "pip", "install", "-q", "torch", "numpy", "transformers"]
        subprocess.run(install, check=True)
    return str(python)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="B,D")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    parser.add_argument("--side", choices=("tinylm", "torch"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    names = args.configs.split(",")
    if args.side:  # one side of one configuration, as JSON (run by the main process)
        side = tinylm_side if args.side == "tinylm" else torch_side
        print(json.dumps(side(CONFIGS[names[0]], args.repeats, args.threads, args.dtype)))
        return
    peer = torch_python()
    for name in names:
        results = {}
        for side, python in (("tinylm", sys.executable), ("torch", peer)):
            command = [python, __file__, "--side", side, "--configs", name]
            command += ["--repeats", str(args.repeats), "--threads", str(args.threads)]
            command += ["--dtype", args.dtype]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            results[side] = json.loads(out.stdout.strip().splitlines()[-1])
        ours, theirs = results["tinylm"], results["torch"]
        print(
            f"config {name} ({ours['new_tokens']} new tokens, {args.threads} threads, "
            f"{args.dtype} weights)"
        )
        print(f"  {'':<22}{'tinylm tok/s':>14}{'transformers':>14}{'ratio':>9}")
        rows = [(f"beam search, width {BEAMS}", "beam")]
        rows += [(f"sampling, batch {n}", f"batch{n}") for n in BATCHES]
        for label, key in rows:
            ratio = ours[key] / theirs[key]
            print(f"  {label:<22}{ours[key]:>14,.0f}{theirs[key]:>14,.0f}{ratio:>8.1f}x")


if __name__ == "__main__":
    main()
