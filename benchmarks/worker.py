"""One measurement in a fresh process, so that its peak RSS is its own:

    python benchmarks/worker.py --side tinylm|torch --config B --task train|generate|sgemm

Prints one JSON object. `bench.py` runs this under the project's Python (tinylm side) and
under a separate interpreter that has PyTorch (torch side).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np

from configs import CONFIGS, ModelConfig, batches, corpus_ids


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def timed(step, seconds: float, warmup: int, min_steps: int = 3) -> tuple[float, int]:
    """Runs `step` warmup times, then for at least `seconds` (and min_steps); returns
    (elapsed seconds, steps timed)."""
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    n = 0
    while n < min_steps or time.perf_counter() - start < seconds:
        step()
        n += 1
    return time.perf_counter() - start, n


# --------------------------------------------------------------------------------- tinylm


def tinylm_model(cfg: ModelConfig):
    """The benchmark's model on tinylm's fast backend."""
    import tinylm

    sizes = {"n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "max_seq_len": cfg.context}
    if cfg.llama:
        config = tinylm.Config.llama(cfg.vocab, d_model=cfg.d_model, d_ff=cfg.ff, **sizes)
    else:
        config = tinylm.Config(vocab_size=cfg.vocab, d_model=cfg.d_model, d_ff=cfg.ff, **sizes)
    return tinylm.Transformer(config, seed=0)


def tinylm_train(cfg: ModelConfig, seconds: float, threads: int) -> dict:
    import tinylm
    from tinylm import _core

    tinylm.set_num_threads(threads)
    model = tinylm_model(cfg)
    opt = _core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.1)
    data = batches(corpus_ids(cfg.vocab), cfg.batch, cfg.context)
    losses = []

    def step() -> None:
        x, y = next(data)
        loss, _ = model._core.train_step(opt, x, y, 1e-3, 1.0)
        losses.append(loss)

    elapsed, n = timed(step, seconds, warmup=3)
    return {
        "tokens_per_second": n * cfg.batch * cfg.context / elapsed,
        "steps": n,
        "params": model.num_parameters,
        "last_loss": losses[-1],
    }


def tinylm_generate(cfg: ModelConfig, seconds: float, threads: int) -> dict:
    import tinylm

    tinylm.set_num_threads(threads)
    model = tinylm_model(cfg)
    new = cfg.context - 1

    def step() -> None:
        model.generate([1], max_new_tokens=new, stop=[], temperature=0.0)

    elapsed, n = timed(step, seconds, warmup=2)
    return {"tokens_per_second": n * new / elapsed, "params": model.num_parameters}


def tinylm_sgemm(cfg: ModelConfig, seconds: float, threads: int) -> dict:
    """tinylm's matmul and NumPy's at the model's shapes, best round of each.

    tinylm is timed inside the core (no Python in the loop); NumPy with out= (no
    allocation). OpenBLAS's threads keep spinning for a while after each call and would
    steal a core from tinylm, so each round times every tinylm product first, after a
    pause, and then every NumPy product."""
    import tinylm
    from tinylm import _core

    tinylm.set_num_threads(threads)
    shapes = cfg.matmul_shapes()
    operands = []
    for _, m, k, n, transpose_a in shapes:
        a = (
            np.random.rand(k, m).astype(np.float32).T
            if transpose_a
            else np.random.rand(m, k).astype(np.float32)
        )
        operands.append((a, np.random.rand(k, n).astype(np.float32), np.empty((m, n), np.float32)))
    best_t = [float("inf")] * len(shapes)
    best_np = [float("inf")] * len(shapes)
    rounds = max(3, int(seconds / 1.5))
    for _ in range(rounds):
        time.sleep(0.5)
        for i, (_, m, k, n, transpose_a) in enumerate(shapes):
            iters = max(3, int(0.05 * 150e9 / (2.0 * m * k * n)))
            best_t[i] = min(best_t[i], _core.time_matmul(m, k, n, iters, transpose_a))
        for i, (a, b, out) in enumerate(operands):
            _, m, k, n, _ = shapes[i]
            iters = max(3, int(0.05 * 150e9 / (2.0 * m * k * n)))
            start = time.perf_counter()
            for _ in range(iters):
                np.matmul(a, b, out=out)
            best_np[i] = min(best_np[i], (time.perf_counter() - start) / iters)
    rows = []
    for (label, m, k, n, _), tt, tn in zip(shapes, best_t, best_np):
        flops = 2.0 * m * k * n
        rows.append(
            {
                "shape": label,
                "m": m,
                "k": k,
                "n": n,
                "tinylm_gflops": flops / tt / 1e9,
                "numpy_gflops": flops / tn / 1e9,
            }
        )
    return {"rows": rows}


# --------------------------------------------------------------------------------- torch


def torch_model(cfg: ModelConfig):
    """The benchmark's model in PyTorch: nanoGPT's, or the Llama block of torch_llama.py."""
    if cfg.llama:
        from torch_llama import Llama

        return Llama(cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.context, cfg.ff)
    from torch_gpt import GPT

    return GPT(cfg.vocab, cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.context)


def torch_trainer(cfg: ModelConfig, threads: int):
    """(step function, parameter count, losses list) of a PyTorch training run."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(cfg)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
        betas=(0.9, 0.99),
        eps=1e-8,
    )
    data = batches(corpus_ids(cfg.vocab), cfg.batch, cfg.context)
    losses = []

    def step() -> None:
        x, y = next(data)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())

    return step, sum(p.numel() for p in model.parameters()), losses


def torch_train(cfg: ModelConfig, seconds: float, threads: int) -> dict:
    step, params, losses = torch_trainer(cfg, threads)
    elapsed, n = timed(step, seconds, warmup=3)
    return {
        "tokens_per_second": n * cfg.batch * cfg.context / elapsed,
        "steps": n,
        "params": params,
        "last_loss": losses[-1],
    }


def torch_train_steps(cfg: ModelConfig, steps: int, threads: int) -> None:
    """Runs `steps` PyTorch training steps (for the full Shakespeare comparison)."""
    step, _, _ = torch_trainer(cfg, threads)
    for _ in range(steps):
        step()


def torch_generate(cfg: ModelConfig, seconds: float, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = torch_model(cfg).eval()
    new = cfg.context - 1

    def step() -> None:
        model.generate_greedy([1], new)

    elapsed, n = timed(step, seconds, warmup=2)
    return {
        "tokens_per_second": n * new / elapsed,
        "params": sum(p.numel() for p in model.parameters()),
    }


TASKS = {
    ("tinylm", "train"): tinylm_train,
    ("tinylm", "generate"): tinylm_generate,
    ("tinylm", "sgemm"): tinylm_sgemm,
    ("torch", "train"): torch_train,
    ("torch", "generate"): torch_generate,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--side", choices=("tinylm", "torch"), required=True)
    parser.add_argument("--config", choices=sorted(CONFIGS), required=True)
    parser.add_argument("--task", choices=("train", "generate", "sgemm"), required=True)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    result = TASKS[(args.side, args.task)](CONFIGS[args.config], args.seconds, args.threads)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
