"""Trains the bundled word-level demo model, ``weights/tiny_gpt_weights.json``.

The model has the Go TinyLM's shape and vocabulary (d_model 4, 1 layer, 2 heads, d_ff 4,
6 positions, no attention biases, untied head) and is saved in the Go format. It is
trained from a seeded GPT-2 initialisation with AdamW on four sentences over that
vocabulary, then checked: ``python -m tinylm demo`` (50 SGD steps on "the cat sat on mat
END") must then generate "the cat sat on mat END" and "the dog sat on mat END".

    python scripts/make_tiny_model.py            # writes weights/tiny_gpt_weights.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

import tinylm
from tinylm import _core
from tinylm.cli import DEMO_PROMPTS, DEMO_SENTENCE

VOCAB = ["the", "cat", "sat", "on", "mat", "big", "dog", "ate", "END"]
CORPUS = [
    "the cat sat on mat END",
    "the dog sat on mat END",
    "the big cat ate END",
    "the big dog ate END",
]
EXPECTED = ["the cat sat on mat END", "the dog sat on mat END"]


def demo_outputs(model: tinylm.Transformer, steps: int = 50, lr: float = 0.01) -> list[str]:
    """What ``tinylm demo`` prints for this model (on a copy)."""
    tok = model.tokenizer
    copy = tinylm.Transformer(model.config, tokenizer=tok)
    copy.load_state_dict(model.state_dict())
    copy.source_format = "go-json"
    ids = tok.encode(DEMO_SENTENCE)
    for _ in range(steps):
        copy._core.sgd_step(np.array([ids[:-1]]), np.array([ids[1:]]), lr)
    return [
        tok.decode(copy.generate(tok.encode(p), max_new_tokens=5, temperature=0.0))
        for p in DEMO_PROMPTS
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        default=str(Path(__file__).resolve().parent.parent / "weights" / "tiny_gpt_weights.json"),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=0.02)
    args = parser.parse_args()

    tok = tinylm.Tokenizer.word_level(VOCAB)
    config = tinylm.Config(
        vocab_size=len(VOCAB),
        d_model=4,
        n_layers=1,
        n_heads=2,
        d_ff=4,
        max_seq_len=6,
        attn_bias=False,
        tie_embeddings=False,
    )
    model = tinylm.Transformer(config, seed=args.seed, tokenizer=tok)
    optimizer = _core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.0)
    sentences = [tok.encode(s) for s in CORPUS]
    for step in range(args.steps):
        ids = sentences[step % len(sentences)]
        loss, _ = model._core.train_step(
            optimizer, np.array([ids[:-1]]), np.array([ids[1:]]), args.lr, 1.0
        )
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss:.4f}")
    for s in CORPUS:
        ids = tok.encode(s)
        out = tok.decode(
            model.generate(ids[:2], max_new_tokens=5, stop=[VOCAB.index("END")], temperature=0.0)
        )
        print(f"{s!r:32} -> {out!r}")
    got = demo_outputs(model)
    print("demo prints:", got)
    if got != EXPECTED:
        print(f"error: the demo would print {got}, not {EXPECTED}", file=sys.stderr)
        return 1
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
