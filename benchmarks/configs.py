"""The reference model configurations and the data both sides of a benchmark use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-2 style model (attention biases, d_ff = 4 d_model, tied head, learned
    positions, layer norm, tanh GELU), or with arch = "llama" Llama's block (RMSNorm,
    RoPE, SwiGLU with three FFN matrices of width d_ff, no biases, untied head); float32."""

    name: str
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    context: int
    batch: int
    arch: str = "gpt2"
    #: The FFN's hidden width (None: 4 d_model).
    d_ff: int | None = None

    @property
    def ff(self) -> int:
        return self.d_ff or 4 * self.d_model

    @property
    def llama(self) -> bool:
        return self.arch == "llama"

    @property
    def params(self) -> int:
        """Parameters (a tied head counted once), the same on both sides."""
        c, v, t, f = self.d_model, self.vocab, self.context, self.ff
        if self.llama:
            per_block = 2 * c + 4 * c * c + 3 * c * f
            return v * c + self.n_layers * per_block + c + v * c
        per_block = 4 * c + (4 * c * c + 4 * c) + (c * f + f) + (f * c + c)
        return v * c + t * c + self.n_layers * per_block + 2 * c

    def train_flops_per_token(self) -> float:
        """Multiply-adds x 2 of a training step, per token: forward + backward = 3 x forward.

        Forward per token: 4 L C^2 (projections) + 2 L C F (MLP; 3 L C F with a gate, which
        for Llama's F = 8 C / 3 is the same) + V C (head) multiply-adds, plus causal
        attention, which averages T / 2 keys per query for both Q K^T and P V: L T C
        multiply-adds. For GPT-2 (F = 4 C) that is 6 (12 L C^2 + V C + L T C) FLOPs.
        """
        c, v, t, n_layers, f = self.d_model, self.vocab, self.context, self.n_layers, self.ff
        ff = (3 if self.llama else 2) * c * f
        return 6.0 * (n_layers * (4 * c * c + ff) + v * c + n_layers * t * c)

    def matmul_shapes(self) -> list[tuple[str, int, int, int, bool]]:
        """(label, M, K, N, A transposed) of the products of a training step."""
        n, c, v, f = self.batch * self.context, self.d_model, self.vocab, self.ff
        return [
            ("x W (C->C)", n, c, c, False),
            ("x W1 (C->F)", n, c, f, False),
            ("h W2 (F->C)", n, f, c, False),
            ("x E^T (head)", n, c, v, False),
            ("dW = x^T dy (C,C)", c, n, c, True),
            ("dW1 = x^T dy (C,F)", c, n, f, True),
        ]


CONFIGS = {
    "A": ModelConfig("A", 65, 64, 2, 4, 32, 16),
    "B": ModelConfig("B", 65, 128, 4, 4, 64, 12),
    "C": ModelConfig("C", 256, 256, 4, 4, 128, 16),
    "D": ModelConfig("D", 65, 384, 6, 6, 256, 8),
    # D's sizes with Llama's block; d_ff = 8 / 3 * 384 gives the FFN as many weights as D's.
    "Dllama": ModelConfig("Dllama", 65, 384, 6, 6, 256, 8, arch="llama", d_ff=1024),
}

#: tinylm / PyTorch ratios the performance issues ask for.
TARGETS = {
    "train": {"A": 2.0, "B": 1.5, "C": 1.2, "D": 1.0, "Dllama": 1.2},
    "generate": {"A": 10.0, "B": 10.0, "C": 5.0, "D": 5.0, "Dllama": 5.0},
    "rss": {"A": 0.5, "B": 0.5, "C": 0.5, "D": 0.5, "Dllama": 0.5},
}


def corpus_ids(vocab: int) -> np.ndarray:
    """Tiny Shakespeare as token ids: characters (sorted, 65 of them) or raw bytes (256)."""
    text = CORPUS.read_text(encoding="utf-8")
    if vocab == 256:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    chars = sorted(set(text))
    if len(chars) != vocab:
        raise ValueError(f"the corpus has {len(chars)} characters, the config wants {vocab}")
    index = {ch: i for i, ch in enumerate(chars)}
    return np.array([index[ch] for ch in text], dtype=np.int64)


def batches(data: np.ndarray, batch: int, context: int, seed: int = 0):
    """Endless random (x, y) batches of windows of the data, int64."""
    rng = np.random.default_rng(seed)
    offsets = np.arange(context)
    while True:
        starts = rng.integers(0, len(data) - context - 1, size=batch)
        yield data[starts[:, None] + offsets], data[starts[:, None] + offsets + 1]
