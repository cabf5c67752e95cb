"""Hugging Face's GPT2LMHeadModel and LlamaForCausalLM in float64 NumPy, written from
transformers' documented semantics (modeling_gpt2.py, modeling_llama.py), reading a
directory with the ``safetensors`` package's own reader. Nothing here uses tinylm's names
or conventions: it is the other side of the format.

- GPT-2: ``Conv1D`` computes ``x @ W + b`` with W [in, out]; ``c_attn`` gives q | k | v;
  the head is tied to ``wte``; ``gelu_new`` is the tanh GELU.
- Llama: ``nn.Linear`` computes ``x @ W.T``; rotary embedding with ``rotate_half`` (dimension
  i paired with i + D/2, frequency ``theta^(-2i/D)``); ``repeat_kv`` repeats each key/value
  head for ``num_attention_heads / num_key_value_heads`` consecutive query heads; RMSNorm
  ``x / sqrt(mean(x^2) + eps) * w``; MLP ``down(act(gate(x)) * up(x))``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file


def load_weights(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint as float64, single file or sharded."""
    index = directory / "model.safetensors.index.json"
    files = (
        sorted(set(json.loads(index.read_text())["weight_map"].values()))
        if index.exists()
        else ["model.safetensors"]
    )
    out: dict[str, np.ndarray] = {}
    for name in files:
        out.update({k: v.astype(np.float64) for k, v in load_file(directory / name).items()})
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """q, k, v (heads, T, D) -> (T, heads * D), causal."""
    t, d = q.shape[1], q.shape[2]
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(d)
    scores = np.where(np.tril(np.ones((t, t), dtype=bool)), scores, -np.inf)
    y = _softmax(scores) @ v
    return np.swapaxes(y, 0, 1).reshape(t, -1)


ACT = {
    "gelu_new": lambda x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3))),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2))),
    "relu": lambda x: np.maximum(x, 0),
    "silu": lambda x: x / (1 + np.exp(-x)),
}


def gpt2_logits(directory: Path, ids: list[int]) -> np.ndarray:
    cfg = json.loads((directory / "config.json").read_text())
    w = load_weights(directory)
    w = {k.removeprefix("transformer."): v for k, v in w.items()}
    # Defaults are GPT2Config's.
    c, h, eps = cfg["n_embd"], cfg["n_head"], cfg.get("layer_norm_epsilon", 1e-5)
    act = ACT[cfg.get("activation_function", "gelu_new")]

    def ln(x: np.ndarray, name: str) -> np.ndarray:
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + eps) * w[f"{name}.weight"] + w[f"{name}.bias"]

    def conv1d(x: np.ndarray, name: str) -> np.ndarray:
        return x @ w[f"{name}.weight"] + w[f"{name}.bias"]

    t = len(ids)
    x = w["wte.weight"][ids] + w["wpe.weight"][np.arange(t)]
    for i in range(cfg["n_layer"]):
        qkv = conv1d(ln(x, f"h.{i}.ln_1"), f"h.{i}.attn.c_attn")
        q, k, v = (part.reshape(t, h, c // h).transpose(1, 0, 2) for part in np.split(qkv, 3, -1))
        x = x + conv1d(_attention(q, k, v), f"h.{i}.attn.c_proj")
        x = x + conv1d(act(conv1d(ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc")), f"h.{i}.mlp.c_proj")
    x = ln(x, "ln_f")
    head = w["wte.weight"] if cfg.get("tie_word_embeddings", True) else w["lm_head.weight"]
    return x @ head.T


def llama_logits(directory: Path, ids: list[int]) -> np.ndarray:
    cfg = json.loads((directory / "config.json").read_text())
    w = load_weights(directory)
    c, h = cfg["hidden_size"], cfg["num_attention_heads"]
    kv = cfg.get("num_key_value_heads") or h
    # Defaults are LlamaConfig's.
    # transformers 5 writes the base only as rope_parameters.rope_theta.
    theta = cfg.get("rope_theta") or (cfg.get("rope_parameters") or {}).get("rope_theta", 1e4)
    d, eps = c // h, cfg.get("rms_norm_eps", 1e-6)
    act = ACT[cfg.get("hidden_act", "silu")]

    def rms(x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * w[name]

    def linear(x: np.ndarray, name: str) -> np.ndarray:
        y = x @ w[f"{name}.weight"].T
        return y + w[f"{name}.bias"] if f"{name}.bias" in w else y

    t = len(ids)
    inv_freq = 1.0 / theta ** (np.arange(0, d, 2) / d)
    freqs = np.outer(np.arange(t), inv_freq)
    emb = np.concatenate([freqs, freqs], axis=-1)  # (T, D)
    cos, sin = np.cos(emb), np.sin(emb)

    def rotate_half(x: np.ndarray) -> np.ndarray:
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
        return np.concatenate([-x2, x1], axis=-1)

    x = w["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}"
        a = rms(x, f"{p}.input_layernorm.weight")
        q = linear(a, f"{p}.self_attn.q_proj").reshape(t, h, d).transpose(1, 0, 2)
        k = linear(a, f"{p}.self_attn.k_proj").reshape(t, kv, d).transpose(1, 0, 2)
        v = linear(a, f"{p}.self_attn.v_proj").reshape(t, kv, d).transpose(1, 0, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = np.repeat(k, h // kv, axis=0), np.repeat(v, h // kv, axis=0)  # repeat_kv
        x = x + linear(_attention(q, k, v), f"{p}.self_attn.o_proj")
        m = rms(x, f"{p}.post_attention_layernorm.weight")
        gate, up = linear(m, f"{p}.mlp.gate_proj"), linear(m, f"{p}.mlp.up_proj")
        x = x + linear(act(gate) * up, f"{p}.mlp.down_proj")
    x = rms(x, "model.norm.weight")
    tied = cfg.get("tie_word_embeddings", False)
    head = w["model.embed_tokens.weight"] if tied else w["lm_head.weight"]
    return x @ head.T
