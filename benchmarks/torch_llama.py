"""The PyTorch side of the llama-style benchmark: Llama's block as in llama2.c (RMSNorm,
rotary positions on pairs of adjacent dimensions, SwiGLU with three FFN matrices, no
biases, untied head, no dropout), the same block tinylm's ``Config.llama`` builds, plus
greedy decoding with a key/value cache (the keys cached rotated)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from torch_gpt import generate_greedy


def rope_angles(context: int, head_dim: int, theta: float = 10000.0):
    """cos and sin (T, D / 2) of the angle t * theta^(-2i / D) of pair i at position t."""
    freqs = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(context, dtype=torch.float64), freqs)
    return angles.cos().float(), angles.sin().float()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (B, H, T, D) with its pairs (2i, 2i + 1) rotated by cos, sin (T, D / 2)."""
    pairs = x.unflatten(-1, (-1, 2))
    a, b = pairs[..., 0], pairs[..., 1]
    return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(-2)


class Attention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.wq = nn.Linear(d_model, d_model, bias=False)
        self.wk = nn.Linear(d_model, d_model, bias=False)
        self.wv = nn.Linear(d_model, d_model, bias=False)
        self.wo = nn.Linear(d_model, d_model, bias=False)
        self.n_heads = n_heads

    def heads(self, x: torch.Tensor):
        b, t, c = x.shape
        return (
            w(x).view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2)
            for w in (self.wq, self.wk, self.wv)
        )

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.heads(x)
        q, k = rotate(q, cos[:t], sin[:t]), rotate(k, cos[:t], sin[:t])
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.wo(y.transpose(1, 2).contiguous().view(b, t, c))

    def step(self, x: torch.Tensor, cache, pos: int, cos, sin) -> torch.Tensor:
        """One position (x is (1, 1, C)); its rotated key and its value into the cache."""
        c = x.shape[-1]
        q, k, v = self.heads(x)
        q, k = (
            rotate(q, cos[pos : pos + 1], sin[pos : pos + 1]),
            rotate(k, cos[pos : pos + 1], sin[pos : pos + 1]),
        )
        k_cache, v_cache = cache
        k_cache[:, :, pos : pos + 1] = k
        v_cache[:, :, pos : pos + 1] = v
        y = F.scaled_dot_product_attention(q, k_cache[:, :, : pos + 1], v_cache[:, :, : pos + 1])
        return self.wo(y.transpose(1, 2).reshape(1, 1, c))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int) -> None:
        super().__init__()
        self.norm1 = nn.RMSNorm(d_model, eps=1e-5)
        self.attn = Attention(d_model, n_heads)
        self.norm2 = nn.RMSNorm(d_model, eps=1e-5)
        self.w_gate = nn.Linear(d_model, d_ff, bias=False)
        self.w_up = nn.Linear(d_model, d_ff, bias=False)
        self.w_down = nn.Linear(d_ff, d_model, bias=False)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))

    def forward(self, x: torch.Tensor, cos, sin) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), cos, sin)
        return x + self.mlp(self.norm2(x))

    def step(self, x: torch.Tensor, cache, pos: int, cos, sin) -> torch.Tensor:
        x = x + self.attn.step(self.norm1(x), cache, pos, cos, sin)
        return x + self.mlp(self.norm2(x))


class Llama(nn.Module):
    def __init__(
        self, vocab: int, d_model: int, n_layers: int, n_heads: int, context: int, d_ff: int
    ):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff) for _ in range(n_layers))
        self.norm_f = nn.RMSNorm(d_model, eps=1e-5)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)  # untied
        self.context = context
        self.n_heads = n_heads
        cos, sin = rope_angles(context, d_model // n_heads)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                proj = name.endswith(("wo.weight", "w_down.weight"))
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * n_layers) if proj else 0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, self.cos, self.sin)
        logits = self.lm_head(self.norm_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def generate_greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        return generate_greedy(self, prompt, max_new_tokens)

    def _step(self, tok: int, pos: int, caches) -> torch.Tensor:
        x = self.wte.weight[tok].view(1, 1, -1)
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cache, pos, self.cos, self.sin)
        return self.lm_head(self.norm_f(x)).view(-1)
