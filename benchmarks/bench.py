"""tinylm against PyTorch (CPU, eager) and NumPy, side by side in one run.

    .venv/bin/python benchmarks/bench.py                  # all configurations, ~10 minutes
    .venv/bin/python benchmarks/bench.py --configs A,B --seconds 3
    .venv/bin/python benchmarks/bench.py --configs D,Dllama   # GPT-2 and Llama blocks at D
    .venv/bin/python benchmarks/bench.py --shakespeare    # also the full 2000-step training

Each measurement runs in a fresh process (benchmarks/worker.py), so its peak RSS is its
own. The tinylm side runs under this interpreter (tinylm installed, e.g. by
`maturin develop --release`); the PyTorch side under `$TINYLM_TORCH_PYTHON`, else
`benchmarks/.torch-venv/bin/python`, which is created (`pip install torch numpy`, a ~3 GB
download) when missing. PyTorch is never a dependency of tinylm itself.

Writes a markdown report (default docs/performance.md) and a plot beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from configs import CONFIGS, CORPUS, REPO, TARGETS

HERE = Path(__file__).resolve().parent
WORKER = HERE / "worker.py"
TORCH_VENV = HERE / ".torch-venv"


def torch_python() -> str:
    env = os.environ.get("TINYLM_TORCH_PYTHON")
    if env:
        return env
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {TORCH_VENV} with PyTorch (a large download, once)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch", "numpy"], check=True)
    return str(python)


def run_worker(
    python: str, side: str, config: str, task: str, seconds: float, threads: int
) -> dict:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TINYLM_NUM_THREADS"):
        env[var] = str(threads)
    cmd = [
        python,
        str(WORKER),
        "--side",
        side,
        "--config",
        config,
        "--task",
        task,
        "--seconds",
        str(seconds),
        "--threads",
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def ratio_text(value: float, target: float, higher_is_better: bool = True) -> str:
    met = value >= target if higher_is_better else value <= target
    sign = ">=" if higher_is_better else "<="
    return f"{value:.2f} ({sign} {target:g}: {'met' if met else 'NOT met'})"


def shakespeare_run(torch_py: str | None, threads: int) -> dict:
    """Wall time of the bundled model's 2000-step training on both sides."""
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TINYLM_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tinylm",
                "train",
                "--data",
                str(CORPUS),
                "--untied",
                "--out",
                tmp,
                "--quiet",
            ],
            check=True,
            env=env,
            capture_output=True,
            text=True,
        )
        result["tinylm_seconds"] = time.perf_counter() - start
        # "trained 2000 steps in 48.2s (...)": the training loop alone (steps, periodic
        # evaluation, checkpoints), without start-up, the full validation and the sample.
        match = re.search(r"trained \d+ steps in ([0-9.]+)s", proc.stdout)
        if match:
            result["tinylm_loop_seconds"] = float(match.group(1))
    if torch_py:
        code = (
            f"import sys, time; sys.path.insert(0, {str(HERE)!r})\n"
            "import worker, configs, torch\n"
            "cfg = configs.CONFIGS['B']\n"
            "t = time.perf_counter()\n"
            f"worker.torch_train_steps(cfg, 2000, {threads})\n"
            "print(time.perf_counter() - t)\n"
        )
        proc = subprocess.run(
            [torch_py, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
        )
        result["torch_seconds"] = float(proc.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="A,B,C,D,Dllama")
    parser.add_argument("--seconds", type=float, default=6.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument(
        "--shakespeare",
        action="store_true",
        help="also time the full 2000-step Shakespeare training on both sides",
    )
    parser.add_argument("--out", default=str(REPO / "docs" / "performance.md"))
    args = parser.parse_args()
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    torch_py = None if args.no_torch else torch_python()
    me = sys.executable
    results: dict[str, dict] = {}
    for name in names:
        cfg = CONFIGS[name]
        r: dict = {"params": cfg.params}
        for task in ("train", "generate"):
            r[f"tinylm_{task}"] = run_worker(me, "tinylm", name, task, args.seconds, args.threads)
            if torch_py:
                r[f"torch_{task}"] = run_worker(
                    torch_py, "torch", name, task, args.seconds, args.threads
                )
            print(
                f"{name} {task}: tinylm {r[f'tinylm_{task}']['tokens_per_second']:,.0f} tok/s"
                + (
                    f", torch {r[f'torch_{task}']['tokens_per_second']:,.0f} tok/s"
                    if torch_py
                    else ""
                ),
                file=sys.stderr,
            )
        r["sgemm"] = run_worker(me, "tinylm", name, "sgemm", args.seconds, args.threads)["rows"]
        results[name] = r
    scaling = {}
    if "D" in names:
        for threads in (1, 2):
            scaling[f"tinylm_{threads}"] = run_worker(
                me, "tinylm", "D", "train", args.seconds, threads
            )["tokens_per_second"]
            if torch_py:
                scaling[f"torch_{threads}"] = run_worker(
                    torch_py, "torch", "D", "train", args.seconds, threads
                )["tokens_per_second"]
    shakespeare = shakespeare_run(torch_py, args.threads) if args.shakespeare else None
    report = render(results, scaling, shakespeare, args, torch_py is not None)
    print(report)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    (out.with_suffix(".json")).write_text(
        json.dumps({"results": results, "scaling": scaling, "shakespeare": shakespeare}, indent=1)
    )
    if plot(results, out.with_suffix(".png"), torch_py is not None):
        print(f"plot: {out.with_suffix('.png')}", file=sys.stderr)
    return 0


def render(results: dict, scaling: dict, shakespeare: dict | None, args, with_torch: bool) -> str:
    lines = [
        "# tinylm performance",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} threads per side, float32. Regenerate with:",
        "",
        "```bash",
        "TINYLM_TORCH_PYTHON=/path/to/python-with-torch .venv/bin/python benchmarks/bench.py"
        + (" --shakespeare" if shakespeare else ""),
        "```",
        "",
        "Every number is one run of one process; the machine is a shared virtual machine, so",
        "repeated runs vary by about 10-20%. Configurations (vocab, d_model, layers, heads, "
        "context, batch): "
        + "; ".join(
            f"{c.name} = ({c.vocab}, {c.d_model}, {c.n_layers}, {c.n_heads}, {c.context}, "
            f"{c.batch})"
            for c in (CONFIGS[n] for n in results)
        )
        + ". Dllama has D's sizes with Llama's block (RMSNorm, RoPE, SwiGLU with d_ff = "
        "1024, no biases, untied head; PyTorch side in benchmarks/torch_llama.py).",
        "",
        "## Training and generation",
        "",
        "| config | params | tinylm train tok/s | PyTorch train tok/s | ratio (target) "
        "| tinylm gen tok/s | PyTorch gen tok/s | ratio (target) | GFLOP/s tinylm / PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        cfg = CONFIGS[name]
        tt = r["tinylm_train"]["tokens_per_second"]
        tg = r["tinylm_generate"]["tokens_per_second"]
        flops = cfg.train_flops_per_token()
        if with_torch:
            pt = r["torch_train"]["tokens_per_second"]
            pg = r["torch_generate"]["tokens_per_second"]
            lines.append(
                f"| {name} | {r['params']:,} | {tt:,.0f} | {pt:,.0f} | "
                f"{ratio_text(tt / pt, TARGETS['train'][name])} | {tg:,.0f} | {pg:,.0f} | "
                f"{ratio_text(tg / pg, TARGETS['generate'][name])} | "
                f"{tt * flops / 1e9:.0f} / {pt * flops / 1e9:.0f} |"
            )
        else:
            lines.append(
                f"| {name} | {r['params']:,} | {tt:,.0f} | - | - | {tg:,.0f} | - | - | "
                f"{tt * flops / 1e9:.0f} / - |"
            )
    lines += [
        "",
        "Training: full steps (forward, backward, gradient clipping at 1.0, AdamW) on random",
        "batches of Tiny Shakespeare. Generation: greedy, batch 1, with a key/value cache,",
        "T - 1 new tokens from a one-token prompt. GFLOP/s counts 6 (12 L C^2 + V C + L T C)",
        "FLOPs per trained token (causal attention counted at its useful half; for Dllama",
        "6 (L (4 C^2 + 3 C F) + V C + L T C), the same with F = 8 C / 3).",
        "",
        "## Peak memory (RSS of the measuring process, MiB)",
        "",
        "| config | tinylm train | PyTorch train | ratio (target) | tinylm gen | PyTorch gen |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        rt = r["tinylm_train"]["peak_rss_mib"]
        rg = r["tinylm_generate"]["peak_rss_mib"]
        if with_torch:
            pt = r["torch_train"]["peak_rss_mib"]
            pg = r["torch_generate"]["peak_rss_mib"]
            lines.append(
                f"| {name} | {rt:.0f} | {pt:.0f} | "
                f"{ratio_text(rt / pt, TARGETS['rss'][name], False)} | {rg:.0f} | {pg:.0f} |"
            )
        else:
            lines.append(f"| {name} | {rt:.0f} | - | - | {rg:.0f} | - |")
    lines += [
        "",
        "## Matrix multiplication at the models' shapes (GFLOP/s, same process)",
        "",
        "| config | product | M x K x N | tinylm | NumPy | ratio (target >= 0.9) |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        for row in r["sgemm"]:
            ratio = row["tinylm_gflops"] / row["numpy_gflops"]
            lines.append(
                f"| {name} | {row['shape']} | {row['m']} x {row['k']} x {row['n']} | "
                f"{row['tinylm_gflops']:.0f} | {row['numpy_gflops']:.0f} | "
                f"{ratio_text(ratio, 0.9)} |"
            )
    if "D" in results:
        cfg = CONFIGS["D"]
        step_rate = results["D"]["tinylm_train"]["tokens_per_second"] * cfg.train_flops_per_token()
        best = max(row["tinylm_gflops"] for row in results["D"]["sgemm"]) * 1e9
        lines += [
            "",
            f"At D a tinylm training step runs at {step_rate / 1e9:.0f} GFLOP/s, "
            f"{ratio_text(step_rate / best, 0.75)} of the best tinylm sgemm rate measured "
            f"above ({best / 1e9:.0f} GFLOP/s).",
        ]
    if "D" in results and "Dllama" in results:
        rate = {
            n: results[n]["tinylm_train"]["tokens_per_second"] * CONFIGS[n].train_flops_per_token()
            for n in ("D", "Dllama")
        }
        lines += [
            "",
            f"The llama block's training step runs at {rate['Dllama'] / 1e9:.0f} GFLOP/s, "
            f"{ratio_text(rate['Dllama'] / rate['D'], 0.9)} of the GPT-2 block's "
            f"({rate['D'] / 1e9:.0f} GFLOP/s) at the same sizes.",
        ]
    if scaling:
        lines += [
            "",
            "## Threads (training at D, tokens/s)",
            "",
            "| side | 1 thread | 2 threads | speed-up |",
            "|---|---|---|---|",
        ]
        for side in ("tinylm", "torch"):
            if f"{side}_1" in scaling:
                one, two = scaling[f"{side}_1"], scaling[f"{side}_2"]
                target = ratio_text(two / one, 1.7) if side == "tinylm" else f"{two / one:.2f}"
                lines.append(f"| {side} | {one:,.0f} | {two:,.0f} | {target} |")
    if shakespeare:
        lines += ["", "## The bundled Shakespeare model: 2000 training steps (config B)", ""]
        whole = shakespeare["tinylm_seconds"]
        loop = shakespeare.get("tinylm_loop_seconds")
        lines.append(
            f"tinylm, the whole `python -m tinylm train` command (start-up, tokenizing, "
            f"2000 steps with 9 evaluations of 20 batches and 9 checkpoints, then the full "
            f"validation loss, the loss plot and a sample): {whole:.1f} s"
            + (f"; its training loop alone: {loop:.1f} s." if loop else ".")
        )
        if "torch_seconds" in shakespeare:
            torch_s = shakespeare["torch_seconds"]
            lines.append("")
            lines.append(
                f"PyTorch, 2000 steps with no evaluation: {torch_s:.1f} s. Time ratio "
                f"tinylm / PyTorch: whole command {ratio_text(whole / torch_s, 0.5, False)}"
                + (f"; training loop {ratio_text(loop / torch_s, 0.5, False)}." if loop else ".")
            )
    lines += ["", "![training and generation tokens/s against model size](performance.png)", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path, with_torch: bool) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot", file=sys.stderr)
        return False
    names = list(results)
    params = [results[n]["params"] for n in names]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    for ax, task, title in (
        (axes[0], "train", "training"),
        (axes[1], "generate", "generation (batch 1)"),
    ):
        ax.plot(
            params,
            [results[n][f"tinylm_{task}"]["tokens_per_second"] for n in names],
            "o-",
            label="tinylm",
        )
        if with_torch:
            ax.plot(
                params,
                [results[n][f"torch_{task}"]["tokens_per_second"] for n in names],
                "s--",
                label="PyTorch (CPU, eager)",
            )
        for n, p, v in zip(
            names, params, [results[n][f"tinylm_{task}"]["tokens_per_second"] for n in names]
        ):
            ax.annotate(n, (p, v), textcoords="offset points", xytext=(5, 5))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("tokens / s")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


if __name__ == "__main__":
    sys.exit(main())
