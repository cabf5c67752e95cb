"""The reference model configurations and the data both sides of a benchmark use."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"


@dataclass(frozen=True)
class ModelConfig:
    """A GPT-2 style model: attention biases, d_ff = 4 d_model, tied head, float32."""

    name: str
    vocab: int
    d_model: int
    n_layers: int
    n_heads: int
    context: int
    batch: int

    @property
    def params(self) -> int:
        """Parameters (tied head counted once), the same on both sides."""
        c, v, t = self.d_model, self.vocab, self.context
        per_block = 4 * c + (4 * c * c + 4 * c) + (c * 4 * c + 4 * c) + (4 * c * c + c)
        return v * c + t * c + self.n_layers * per_block + 2 * c

    def train_flops_per_token(self) -> float:
        """Multiply-adds x 2 of a training step, per token: forward + backward = 3 x forward.

        Forward per token: 12 L C^2 (projections and MLP) + V C (head) multiply-adds, plus
        causal attention, which averages T / 2 keys per query for both Q K^T and P V:
        L T C multiply-adds. So 6 (12 L C^2 + V C + L T C) FLOPs per trained token.
        """
        c, v, t, n_layers = self.d_model, self.vocab, self.context, self.n_layers
        return 6.0 * (12 * n_layers * c * c + v * c + n_layers * t * c)

    def matmul_shapes(self) -> list[tuple[str, int, int, int, bool]]:
        """(label, M, K, N, A transposed) of the products of a training step."""
        n, c, v = self.batch * self.context, self.d_model, self.vocab
        return [
            ("x W (C->C)", n, c, c, False),
            ("x W1 (C->4C)", n, c, 4 * c, False),
            ("h W2 (4C->C)", n, 4 * c, c, False),
            ("x E^T (head)", n, c, v, False),
            ("dW = x^T dy (C,C)", c, n, c, True),
            ("dW1 = x^T dy (C,4C)", c, n, 4 * c, True),
        ]


CONFIGS = {
    "A": ModelConfig("A", 65, 64, 2, 4, 32, 16),
    "B": ModelConfig("B", 65, 128, 4, 4, 64, 12),
    "C": ModelConfig("C", 256, 256, 4, 4, 128, 16),
    "D": ModelConfig("D", 65, 384, 6, 6, 256, 8),
}

#: tinylm / PyTorch ratios the performance issue asks for.
TARGETS = {
    "train": {"A": 2.0, "B": 1.5, "C": 1.2, "D": 1.0},
    "generate": {"A": 10.0, "B": 10.0, "C": 5.0, "D": 5.0},
    "rss": {"A": 0.5, "B": 0.5, "C": 0.5, "D": 0.5},
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
