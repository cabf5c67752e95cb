"""Hugging Face interop checked by transformers itself (PyTorch, CPU, float32):

    .venv/bin/python scripts/check_hf_interop.py                 # GPT-2 124M and Llama shapes
    .venv/bin/python scripts/check_hf_interop.py --size tiny     # seconds, to try it out

For random models of both presets, in both directions:
1. tinylm -> transformers: ``save_pretrained`` of a tinylm model, loaded with
   ``AutoModelForCausalLM.from_pretrained``, gives tinylm's logits (relative error <= 1e-4)
   and greedy ids;
2. transformers -> tinylm: a random ``GPT2LMHeadModel`` / ``LlamaForCausalLM`` saved with
   ``save_pretrained`` and read by ``Transformer.from_pretrained`` gives transformers'
   logits and greedy ids.

tinylm runs under this interpreter; transformers under ``--torch-python`` (default
``benchmarks/.torch-venv/bin/python``, created with ``pip install torch transformers
safetensors numpy`` when missing: PyTorch is never a dependency of tinylm). Each side writes
its logits and ids to ``.npz`` files that the other compares. Exit code 1 if any check fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import tinylm

REPO = Path(__file__).resolve().parent.parent
TORCH_VENV = REPO / "benchmarks" / ".torch-venv"
TOLERANCE = 1e-4
#: Llama 3's RoPE base, not the default 10000, so that a base read from the wrong field
#: (transformers 5 writes only ``rope_parameters.rope_theta``) changes the logits.
ROPE_THETA = 500000.0
TEXT = "First Citizen: Before we proceed any further, hear me speak. 'Tis 42, isn't it?\n"

SIZES = {
    # (vocab, d_model, layers, heads, kv heads, context)
    "tiny": {"gpt2": (97, 64, 2, 4, 4, 32), "llama": (97, 64, 2, 4, 2, 32)},
    "real": {"gpt2": (50257, 768, 12, 12, 12, 1024), "llama": (32000, 288, 6, 6, 6, 256)},
}

#: The transformers side: run under the PyTorch interpreter with a JSON job on argv.
TORCH_SIDE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(2)
    job = json.loads(sys.argv[1])

    def greedy(model, prompt, n):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            for _ in range(n):
                nxt = model(ids).logits[0, -1].argmax()
                ids = torch.cat([ids, nxt.view(1, 1)], dim=1)
        return ids[0].tolist()

    def run(model, out):
        model.eval()
        ids = torch.tensor(job["ids"])
        with torch.no_grad():
            logits = model(ids).logits.numpy()
        np.savez(out, logits=logits, greedy=np.array(greedy(model, job["prompt"], job["new"])))

    if job.get("tokenizer"):
        from transformers import AutoTokenizer

        directory, text = job["tokenizer"]
        ids = AutoTokenizer.from_pretrained(directory)(text)["input_ids"]
        np.savez(directory + "/tokenizer.npz", ids=np.array(ids))
    for directory in job["load"]:
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
        run(model, directory + "/torch.npz")
    for kind, directory, sizes in job["make"]:
        v, c, n_layers, h, kv, ctx = sizes
        torch.manual_seed(0)
        if kind == "gpt2":
            config = GPT2Config(
                vocab_size=v, n_embd=c, n_layer=n_layers, n_head=h, n_positions=ctx,
                bos_token_id=0, eos_token_id=0,
            )
            model = GPT2LMHeadModel(config)
        else:
            config = LlamaConfig(
                vocab_size=v, hidden_size=c, intermediate_size=(8 * c // 3 + 7) // 8 * 8,
                num_hidden_layers=n_layers, num_attention_heads=h, num_key_value_heads=kv,
                max_position_embeddings=ctx, rms_norm_eps=1e-5, tie_word_embeddings=False,
                rope_theta=job["rope_theta"],
            )
            model = LlamaForCausalLM(config)
        with torch.no_grad():  # random weights big enough to matter (norms around 1)
            for name, p in model.named_parameters():
                if p.dim() == 1 and name.endswith("weight") and ("norm" in name or "ln_" in name):
                    p.copy_(1.0 + 0.1 * torch.randn_like(p))
                else:
                    p.copy_(0.02 * torch.randn_like(p))
        model.save_pretrained(directory)
        run(model, directory + "/torch.npz")
    """
)


def torch_python(path: str | None) -> str:
    if path:
        return path
    python = TORCH_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {TORCH_VENV} with PyTorch and transformers (a large download, once)")
        subprocess.run([sys.executable, "-m", "venv", str(TORCH_VENV)], check=True)
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "-q",
                "torch",
                "transformers",
                "safetensors",
                "numpy",
            ],
            check=True,
        )
    return str(python)


def tinylm_config(kind: str, sizes: tuple[int, ...]) -> tinylm.Config:
    v, c, n_layers, h, kv, ctx = sizes
    if kind == "gpt2":
        return tinylm.Config(vocab_size=v, d_model=c, n_layers=n_layers, n_heads=h, max_seq_len=ctx)
    return tinylm.Config.llama(
        v,
        d_model=c,
        n_layers=n_layers,
        n_heads=h,
        n_kv_heads=None if kv == h else kv,
        max_seq_len=ctx,
        rope_theta=ROPE_THETA,
    )


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def random_tinylm(config: tinylm.Config, seed: int) -> tinylm.Transformer:
    model = tinylm.Transformer(config, seed=seed)
    rng = np.random.default_rng(seed)
    state = {}
    for name, w in model.state_dict().items():
        noise = rng.standard_normal(w.shape).astype(np.float32)
        is_norm = (
            w.ndim == 1 and ("norm" in name or name.startswith("ln_f")) and name.endswith("weight")
        )
        state[name] = 1.0 + 0.1 * noise if is_norm else 0.02 * noise
    model.load_state_dict(state)
    return model


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="real", help="default: real")
    parser.add_argument(
        "--torch-python",
        help="interpreter with torch + transformers (default: benchmarks/.torch-venv)",
    )
    parser.add_argument(
        "--new-tokens", type=int, default=20, help="greedy ids compared (default: 20)"
    )
    args = parser.parse_args()
    tinylm.set_num_threads(2)
    sizes = SIZES[args.size]
    rng = np.random.default_rng(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        job: dict = {"load": [], "make": [], "new": args.new_tokens, "prompt": [1, 2, 3]}
        job["rope_theta"] = ROPE_THETA
        job["ids"] = rng.integers(0, min(s[0] for s in sizes.values()), size=(2, 24)).tolist()
        ours = {}
        for kind, s in sizes.items():
            model = random_tinylm(tinylm_config(kind, s), seed=1)
            out = Path(tmp) / f"tinylm_{kind}"
            model.save_pretrained(out)
            ours[kind] = model
            job["load"].append(str(out))
            job["make"].append([kind, str(Path(tmp) / f"hf_{kind}"), list(s)])
        # The tokenizer: a byte-level BPE trained here, saved with a small GPT-2.
        tok = tinylm.Tokenizer.bpe(TEXT * 20, 320, pattern="gpt2", special_tokens=["<|endoftext|>"])
        with_tok = random_tinylm(tinylm_config("gpt2", (tok.vocab_size, 32, 1, 2, 2, 64)), 2)
        with_tok.tokenizer = tok
        with_tok.save_pretrained(Path(tmp) / "tokenizer")
        job["tokenizer"] = [str(Path(tmp) / "tokenizer"), TEXT]
        env = dict(os.environ, OMP_NUM_THREADS="2")
        subprocess.run(
            [torch_python(args.torch_python), "-c", TORCH_SIDE, json.dumps(job)],
            check=True,
            env=env,
        )
        ids = np.array(job["ids"])
        for kind, model in ours.items():
            theirs = np.load(Path(tmp) / f"tinylm_{kind}" / "torch.npz")
            err = rel_err(model.logits(ids), theirs["logits"])
            same = (
                model.generate(job["prompt"], args.new_tokens, temperature=0, stop=[])
                == theirs["greedy"].tolist()
            )
            results.append((f"tinylm {kind} -> transformers from_pretrained", err, same))
        for kind in sizes:
            directory = Path(tmp) / f"hf_{kind}"
            theirs = np.load(directory / "torch.npz")
            config = json.loads((directory / "config.json").read_text())
            model = tinylm.Transformer.from_pretrained(directory)
            err = rel_err(model.logits(ids), theirs["logits"])
            same = (
                model.generate(job["prompt"], args.new_tokens, temperature=0, stop=[])
                == theirs["greedy"].tolist()
            )
            results.append((f"transformers {config['architectures'][0]} -> tinylm", err, same))
        theirs_ids = np.load(Path(tmp) / "tokenizer" / "tokenizer.npz")["ids"].tolist()
        same = theirs_ids == tok.encode(TEXT)
        results.append(("tinylm BPE -> transformers AutoTokenizer (ids)", 0.0, same))
    print(f"\n{'check':<52} {'logits rel. err':>16} {'greedy ids':>11}")
    ok = True
    for name, err, same in results:
        passed = err <= TOLERANCE and same
        ok &= passed
        print(
            f"{name:<52} {err:>16.2e} {'same' if same else 'DIFFER':>11}  "
            f"{'ok' if passed else 'FAIL'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
