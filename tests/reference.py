"""A float64 NumPy reimplementation of the transformer, written from the maths (see the
seed README, GPT-2 and Llama), independent of the Rust code it checks.

Parameters use tinylm's state_dict names: projections are [in][out] (``x @ W``),
``lm_head.weight`` is [V][C] (``x @ lm_head.T``), tied to the token embedding when absent.
Every block option of ``Config`` is here: the activations, RMSNorm, biases of the
feed-forward matrices, rotary positions (pairs of adjacent dimensions, rotated as complex
numbers) and grouped-query attention.
"""

from __future__ import annotations

import math

import numpy as np


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)  # biased, divide by C
    return (x - mean) / np.sqrt(var + eps) * w + b


def rms_norm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps) * w


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def gelu_exact(x: np.ndarray) -> np.ndarray:
    """x * Phi(x), Phi the standard normal distribution function."""
    return x * 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


ELEMENTWISE = {
    "gelu_tanh": gelu,
    "gelu": gelu_exact,
    "relu": lambda x: np.maximum(x, 0.0),
    "relu2": lambda x: np.maximum(x, 0.0) ** 2,
    "silu": silu,
}
#: Gated activations: hidden = f(x W_gate) * (x W_up).
GATED = {"swiglu": silu, "geglu": gelu_exact}


def rope(x: np.ndarray, theta: float) -> np.ndarray:
    """Rotary positions for x (B, T, heads, D): dimensions (2i, 2i + 1) as the complex number
    x[2i] + j x[2i + 1], multiplied by exp(j t theta^(-2i / D)) at position t."""
    _, t, _, d = x.shape
    z = x[..., 0::2] + 1j * x[..., 1::2]
    angles = np.arange(t)[:, None] * theta ** (-np.arange(0, d, 2) / d)  # (T, D / 2)
    z = z * np.exp(1j * angles)[None, :, None, :]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = z.real, z.imag
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _get(config, field: str, default):
    """A config field, or its GPT-2 default for configs written before the options."""
    return getattr(config, field, default)


def trace(
    params: dict[str, np.ndarray], config, ids: np.ndarray, drop=None
) -> dict[str, np.ndarray]:
    """Every activation of the forward pass on ids (B, T), by the names of tinylm's
    ``Transformer.trace`` (see rust/src/reference/trace.rs), in float64. ``drop(x, site)``,
    if given, is the dropout of a training pass: applied to the embedding sum (site 0), the
    attention output of layer l (1 + 2 l), its feed-forward output (2 + 2 l) and its
    attention probabilities (2^32 + l), these given as (B, T, H, T): query position, head,
    key position."""
    if drop is None:

        def drop(x: np.ndarray, site: int) -> np.ndarray:
            return x

    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items()}
    ids = np.asarray(ids)
    b, t = ids.shape
    c, h = config.d_model, config.n_heads
    d = c // h
    kv_heads = _get(config, "n_kv_heads", None) or h
    activation = _get(config, "activation", "gelu_tanh")
    rotary = _get(config, "position", "learned") == "rope"
    mlp_bias = _get(config, "mlp_bias", True)
    rms = _get(config, "norm", "layernorm") == "rmsnorm"
    out: dict[str, np.ndarray] = {}

    def norm(x: np.ndarray, name: str, key: str) -> np.ndarray:
        if rms:
            out[f"{key}.rstd"] = 1.0 / np.sqrt((x**2).mean(axis=-1) + config.eps)
            y = rms_norm(x, p[f"{name}.weight"], config.eps)
        else:
            out[f"{key}.mean"] = x.mean(axis=-1)
            out[f"{key}.rstd"] = 1.0 / np.sqrt(x.var(axis=-1) + config.eps)
            y = layer_norm(x, p[f"{name}.weight"], p[f"{name}.bias"], config.eps)
        out[key] = y
        return y

    x = out["embed.token"] = p["token_embed.weight"][ids]
    if not rotary:
        out["embed.position"] = np.broadcast_to(p["pos_embed.weight"][:t], (b, t, c))
        x = x + out["embed.position"]
    x = drop(x, 0)
    causal = np.tril(np.ones((t, t), dtype=bool))
    for layer in range(config.n_layers):
        pre = f"blocks.{layer}"
        out[f"{pre}.x"] = x
        a = norm(x, f"{pre}.norm1", f"{pre}.norm1")

        def proj(name: str, inp: np.ndarray, pre: str = pre) -> np.ndarray:
            out = inp @ p[f"{pre}.attn.{name}.weight"]
            if config.attn_bias:
                out = out + p[f"{pre}.attn.{name}.bias"]
            return out

        q = proj("W_q", a).reshape(b, t, h, d)
        k = proj("W_k", a).reshape(b, t, kv_heads, d)
        v = proj("W_v", a).reshape(b, t, kv_heads, d)
        if rotary:
            out[f"{pre}.q_lin"], out[f"{pre}.k_lin"] = q, k
            q, k = rope(q, config.rope_theta), rope(k, config.rope_theta)
        out[f"{pre}.q"], out[f"{pre}.k"], out[f"{pre}.v"] = q, k, v
        group = h // kv_heads  # query head hh shares key/value head hh // group
        scores = np.stack(
            [q[:, :, hh] @ np.swapaxes(k[:, :, hh // group], -1, -2) for hh in range(h)], axis=1
        ) / math.sqrt(d)
        out[f"{pre}.att_scores"] = scores  # (B, H, T, T)
        probs = out[f"{pre}.att"] = softmax(np.where(causal, scores, -np.inf))
        dropped = drop(probs.transpose(0, 2, 1, 3), 2**32 + layer).transpose(0, 2, 1, 3)
        heads = [dropped[:, hh] @ v[:, :, hh // group] for hh in range(h)]
        out[f"{pre}.y"] = np.concatenate(heads, axis=-1)
        out[f"{pre}.attn_out"] = drop(proj("W_o", out[f"{pre}.y"]), 1 + 2 * layer)
        x = out[f"{pre}.x_mid"] = x + out[f"{pre}.attn_out"]
        m = norm(x, f"{pre}.norm2", f"{pre}.norm2")

        def ff(name: str, inp: np.ndarray, pre: str = pre) -> np.ndarray:
            out = inp @ p[f"{pre}.ff.{name}.weight"]
            return out + p[f"{pre}.ff.{name}.bias"] if mlp_bias else out

        up = out[f"{pre}.up"] = ff("linear1", m)
        if activation in GATED:
            gate = out[f"{pre}.gate"] = ff("gate", m)
            hidden = GATED[activation](gate) * up
        else:
            hidden = ELEMENTWISE[activation](up)
        out[f"{pre}.hidden"] = hidden
        out[f"{pre}.ff_out"] = drop(ff("linear2", hidden), 2 + 2 * layer)
        x = x + out[f"{pre}.ff_out"]
    out["x_final"] = x
    x = norm(x, "ln_f", "norm_f")
    head = p["token_embed.weight"] if config.tie_embeddings else p["lm_head.weight"]
    out["logits"] = x @ head.T
    out["probs"] = softmax(out["logits"])
    return out


def forward(params: dict[str, np.ndarray], config, ids: np.ndarray, drop=None) -> np.ndarray:
    """Logits (B, T, V) for ids (B, T)."""
    return trace(params, config, ids, drop)["logits"]


def loss(
    params: dict[str, np.ndarray], config, ids: np.ndarray, targets: np.ndarray, drop=None
) -> float:
    """Mean cross-entropy of the next-token predictions."""
    logits = forward(params, config, ids, drop)
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    targets = np.asarray(targets)
    picked = np.take_along_axis(logp, targets[..., None], axis=-1)
    return float(-picked.mean())
