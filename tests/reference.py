"""A float64 NumPy reimplementation of the transformer, written from the maths (see the
seed README and GPT-2), independent of the Rust code it checks.

Parameters use tinylm's state_dict names: projections are [in][out] (``x @ W``),
``lm_head.weight`` is [V][C] (``x @ lm_head.T``), tied to the token embedding when absent.
"""

from __future__ import annotations

import math

import numpy as np


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, divide by C
    return (x - mean) / np.sqrt(var + eps) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def forward(params: dict[str, np.ndarray], config, ids: np.ndarray) -> np.ndarray:
    """Logits (B, T, V) for ids (B, T)."""
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    ids = np.asarray(ids)
    _, t = ids.shape
    c, h = config.d_model, config.n_heads
    d = c // h
    x = p["token_embed.weight"][ids] + p["pos_embed.weight"][:t]
    causal = np.tril(np.ones((t, t), dtype=bool))
    for layer in range(config.n_layers):
        pre = f"blocks.{layer}"
        a = layer_norm(x, p[f"{pre}.norm1.weight"], p[f"{pre}.norm1.bias"], config.eps)

        def proj(name: str, inp: np.ndarray, pre: str = pre) -> np.ndarray:
            out = inp @ p[f"{pre}.attn.{name}.weight"]
            if config.attn_bias:
                out = out + p[f"{pre}.attn.{name}.bias"]
            return out

        q, k, v = proj("W_q", a), proj("W_k", a), proj("W_v", a)
        heads = []
        for hh in range(h):
            sl = slice(hh * d, (hh + 1) * d)
            scores = q[..., sl] @ np.swapaxes(k[..., sl], -1, -2) / math.sqrt(d)
            scores = np.where(causal, scores, -np.inf)
            heads.append(softmax(scores) @ v[..., sl])
        x = x + proj("W_o", np.concatenate(heads, axis=-1))
        f = layer_norm(x, p[f"{pre}.norm2.weight"], p[f"{pre}.norm2.bias"], config.eps)
        f = gelu(f @ p[f"{pre}.ff.linear1.weight"] + p[f"{pre}.ff.linear1.bias"])
        x = x + f @ p[f"{pre}.ff.linear2.weight"] + p[f"{pre}.ff.linear2.bias"]
    x = layer_norm(x, p["ln_f.weight"], p["ln_f.bias"], config.eps)
    head = p["token_embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    return x @ head.T


def loss(params: dict[str, np.ndarray], config, ids: np.ndarray, targets: np.ndarray) -> float:
    """Mean cross-entropy of the next-token predictions."""
    logits = forward(params, config, ids)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    targets = np.asarray(targets)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)
    return float(-picked.mean())
