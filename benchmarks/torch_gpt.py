"""The PyTorch side of the benchmarks: nanoGPT's model (attention biases, GELU tanh,
tied head, no dropout) plus greedy decoding with a key/value cache."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.c_attn = nn.Linear(d_model, 3 * d_model)
        self.c_proj = nn.Linear(d_model, d_model)
        self.n_heads = n_heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_heads, c // self.n_heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))

    def step(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor], pos: int):
        """One position (x is (1, 1, C)), its key and value written into the cache."""
        c = x.shape[-1]
        q, k, v = self.c_attn(x).split(c, dim=2)
        hd = c // self.n_heads
        q, k, v = (z.view(1, 1, self.n_heads, hd).transpose(1, 2) for z in (q, k, v))
        k_cache, v_cache = cache
        k_cache[:, :, pos : pos + 1] = k
        v_cache[:, :, pos : pos + 1] = v
        y = F.scaled_dot_product_attention(q, k_cache[:, :, : pos + 1], v_cache[:, :, : pos + 1])
        return self.c_proj(y.transpose(1, 2).reshape(1, 1, c))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = CausalSelfAttention(d_model, n_heads)
        self.ln_2 = nn.LayerNorm(d_model)
        self.c_fc = nn.Linear(d_model, 4 * d_model)
        self.c_proj = nn.Linear(4 * d_model, d_model)

    def mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def step(self, x: torch.Tensor, cache, pos: int) -> torch.Tensor:
        x = x + self.attn.step(self.ln_1(x), cache, pos)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_layers: int, n_heads: int, context: int):
        super().__init__()
        self.wte = nn.Embedding(vocab, d_model)
        self.wpe = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.context = context
        self.n_heads = n_heads
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * n_layers) if name.endswith("c_proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        t = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(t))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))
        return logits, loss

    def generate_greedy(self, prompt: list[int], max_new_tokens: int) -> list[int]:
        return generate_greedy(self, prompt, max_new_tokens)

    def _step(self, tok: int, pos: int, caches) -> torch.Tensor:
        x = self.wte.weight[tok].view(1, 1, -1) + self.wpe.weight[pos].view(1, 1, -1)
        for block, cache in zip(self.blocks, caches):
            x = block.step(x, cache, pos)
        return self.lm_head(self.ln_f(x)).view(-1)


@torch.inference_mode()
def generate_greedy(model: nn.Module, prompt: list[int], max_new_tokens: int) -> list[int]:
    """Greedy decoding, batch 1, with a key/value cache (one (K, V) pair of (1, H, T, D)
    per block), through the model's ``_step(token, position, caches)``, which returns the
    logits of that position only. Shared by the GPT-2 and the Llama block."""
    hd = model.wte.weight.shape[1] // model.n_heads
    dtype = model.wte.weight.dtype  # bfloat16 for a model moved there
    caches = [
        (
            torch.zeros(1, model.n_heads, model.context, hd, dtype=dtype),
            torch.zeros(1, model.n_heads, model.context, hd, dtype=dtype),
        )
        for _ in model.blocks
    ]
    tokens = list(prompt)
    logits = None
    for pos, tok in enumerate(tokens):
        logits = model._step(tok, pos, caches)
    while len(tokens) - len(prompt) < max_new_tokens and len(tokens) < model.context:
        nxt = int(torch.argmax(logits))
        tokens.append(nxt)
        if len(tokens) - len(prompt) == max_new_tokens or len(tokens) == model.context:
            break
        logits = model._step(nxt, len(tokens) - 1, caches)
    return tokens
