"""ONNX graphs of a tinylm model, built with the ``onnx`` package's helpers.

Two graphs (opset 17, float32), each checked with ``onnx.checker``:

- the forward pass: ``input_ids`` (batch, sequence) int64 -> ``logits`` (batch, sequence, V);
- a decoder with a key/value cache: also ``past_key_values.<l>.key`` and ``.value``
  (batch, K, past_sequence, D) in and ``present.<l>.key`` / ``.value`` (batch, K,
  past_sequence + sequence, D) out. The new ids sit at positions past_sequence onwards, so
  one graph runs the prompt (with a past of length 0) and then one id at a time.

The graph is the reference model's maths, node by node: embeddings (plus learned positions),
then per block ``x += attn(norm1(x))``, ``x += ff(norm2(x))``, then ``norm(x) @ head^T``.
Attention groups the H query heads by their key/value head (H = K * G): q is
(B, K, G, T, D) and k, v are (B, K, 1, S, D), so one broadcasting MatMul serves plain and
grouped-query attention. RoPE rotates adjacent pairs as ``rust/src/reference/rope.rs``.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinylm._io import write_bytes_atomic, write_target

if TYPE_CHECKING:
    from tinylm.model import Config, Transformer

OPSET = 17
#: Largest model kept in one protobuf file (the format's limit is 2 GiB); larger ones put
#: their weights in a ``.data`` file beside it.
MAX_INLINE_BYTES = 1 << 30


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("exporting to ONNX needs the onnx package: pip install onnx") from None
    return onnx


class _Graph:
    """Nodes and initializers, each value named once."""

    def __init__(self, onnx: Any) -> None:
        self.onnx, self.nodes, self.inits, self.count = onnx, [], [], 0

    def const(self, array: Any, name: str | None = None) -> str:
        name = name or self._name("c")
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(array), name))
        return name

    def ints(self, *values: int) -> str:
        return self.const(np.array(values, dtype=np.int64))

    def op(self, op_type: str, *inputs: str, **attrs: Any) -> str:
        out = self._name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def _name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}_{self.count}"


def _norm(g: _Graph, x: str, config: Config, state: dict, prefix: str) -> str:
    """Layer norm or RMSNorm over the last axis: x is (B, T, C)."""
    w = g.const(state[f"{prefix}.weight"], prefix + ".weight")
    if config.norm == "layernorm":
        b = g.const(state[f"{prefix}.bias"], prefix + ".bias")
        return g.op("LayerNormalization", x, w, b, axis=-1, epsilon=config.eps)
    # x / sqrt(mean(x^2) + eps) * w
    mean_square = g.op("ReduceMean", g.op("Mul", x, x), axes=[-1], keepdims=1)
    eps = g.const(np.array(config.eps, dtype=np.float32))
    rstd = g.op("Reciprocal", g.op("Sqrt", g.op("Add", mean_square, eps)))
    return g.op("Mul", g.op("Mul", x, rstd), w)


def _activation(g: _Graph, x: str, name: str) -> str:
    """The feed-forward non-linearity (for gated ones: of the gate)."""
    half, one = g.const(np.float32(0.5)), g.const(np.float32(1.0))
    if name == "gelu_tanh":
        # 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))
        cube = g.op("Mul", g.op("Mul", x, x), x)
        inner = g.op("Add", x, g.op("Mul", cube, g.const(np.float32(0.044715))))
        t = g.op("Tanh", g.op("Mul", inner, g.const(np.float32(math.sqrt(2 / math.pi)))))
        return g.op("Mul", g.op("Mul", x, half), g.op("Add", t, one))
    if name in ("gelu", "geglu"):
        erf = g.op("Erf", g.op("Mul", x, g.const(np.float32(1 / math.sqrt(2)))))
        return g.op("Mul", g.op("Mul", x, half), g.op("Add", erf, one))
    if name == "relu":
        return g.op("Relu", x)
    if name == "relu2":
        r = g.op("Relu", x)
        return g.op("Mul", r, r)
    if name in ("silu", "swiglu"):
        return g.op("Mul", x, g.op("Sigmoid", x))
    raise ValueError(f"no ONNX form for activation {name!r}")


def _linear(g: _Graph, x: str, state: dict, name: str, bias: bool) -> str:
    """x @ W (+ b), W stored [in, out] as tinylm's."""
    y = g.op("MatMul", x, g.const(state[f"{name}.weight"], name + ".weight"))
    return g.op("Add", y, g.const(state[f"{name}.bias"], name + ".bias")) if bias else y


def _rope(g: _Graph, x: str, heads: int, d: int, cos: str, sin: str) -> str:
    """x is (B, T, heads * D); pairs (2i, 2i + 1) of each head rotated by the angles whose
    cos and sin are (T, 1, D / 2)."""
    pairs = g.op("Reshape", x, g.ints(0, 0, heads, d // 2, 2))
    x0 = g.op("Gather", pairs, g.ints(0), axis=4)
    x1 = g.op("Gather", pairs, g.ints(1), axis=4)
    x0, x1 = g.op("Squeeze", x0, g.ints(4)), g.op("Squeeze", x1, g.ints(4))
    y0 = g.op("Sub", g.op("Mul", x0, cos), g.op("Mul", x1, sin))
    y1 = g.op("Add", g.op("Mul", x0, sin), g.op("Mul", x1, cos))
    both = g.op(
        "Concat", g.op("Unsqueeze", y0, g.ints(4)), g.op("Unsqueeze", y1, g.ints(4)), axis=4
    )
    return g.op("Reshape", both, g.ints(0, 0, heads * d))


def _graph(model: Transformer, with_past: bool) -> Any:
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    config, state = model.config, model.state_dict()
    c, h, layers = config.d_model, config.n_heads, config.n_layers
    k = config.n_kv_heads or h
    d, groups = c // h, h // k
    g = _Graph(onnx)

    inputs = [helper.make_tensor_value_info("input_ids", tp.INT64, ["batch", "sequence"])]
    outputs = [
        helper.make_tensor_value_info("logits", tp.FLOAT, ["batch", "sequence", config.vocab_size])
    ]
    past_shape = ["batch", k, "past_sequence", d]
    if with_past:
        for layer in range(layers):
            for kind in ("key", "value"):
                inputs.append(
                    helper.make_tensor_value_info(
                        f"past_key_values.{layer}.{kind}", tp.FLOAT, past_shape
                    )
                )
                outputs.append(
                    helper.make_tensor_value_info(
                        f"present.{layer}.{kind}", tp.FLOAT, ["batch", k, "total_sequence", d]
                    )
                )

    # Positions past .. past + T - 1 of the new ids, and the causal mask over all S keys.
    zero, one_i = g.const(np.int64(0)), g.const(np.int64(1))
    seq = g.op(
        "Squeeze", g.op("Slice", g.op("Shape", "input_ids"), g.ints(1), g.ints(2)), g.ints(0)
    )
    if with_past:
        past_dims = g.op("Shape", "past_key_values.0.key")
        past = g.op("Squeeze", g.op("Slice", past_dims, g.ints(2), g.ints(3)), g.ints(0))
    else:
        past = zero
    total = g.op("Add", past, seq)
    positions = g.op("Range", past, total, one_i)  # (T,)
    rows = g.op("Unsqueeze", positions, g.ints(1))  # (T, 1)
    cols = g.op("Unsqueeze", g.op("Range", zero, total, one_i), g.ints(0))  # (1, S)
    allowed = g.op("LessOrEqual", cols, rows)  # (T, S): key s <= query t
    minus_inf = g.const(np.float32(-np.inf))

    x = g.op("Gather", g.const(state["token_embed.weight"], "token_embed.weight"), "input_ids")
    if config.position == "learned":
        pos = g.const(state["pos_embed.weight"], "pos_embed.weight")
        x = g.op("Add", x, g.op("Gather", pos, positions))
    else:
        freqs = config.rope_theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
        angles = np.arange(config.max_seq_len, dtype=np.float64)[:, None] * freqs[None, :]
        cos_table = g.const(np.cos(angles).astype(np.float32), "rope.cos")
        sin_table = g.const(np.sin(angles).astype(np.float32), "rope.sin")
        cos = g.op("Unsqueeze", g.op("Gather", cos_table, positions), g.ints(1))  # (T, 1, D/2)
        sin = g.op("Unsqueeze", g.op("Gather", sin_table, positions), g.ints(1))

    scale = g.const(np.float32(1 / math.sqrt(d)))
    gated = config.activation in ("swiglu", "geglu")
    for layer in range(layers):
        b = f"blocks.{layer}"
        a = _norm(g, x, config, state, f"{b}.norm1")
        q = _linear(g, a, state, f"{b}.attn.W_q", config.attn_bias)
        kk = _linear(g, a, state, f"{b}.attn.W_k", config.attn_bias)
        v = _linear(g, a, state, f"{b}.attn.W_v", config.attn_bias)
        if config.position == "rope":
            q, kk = _rope(g, q, h, d, cos, sin), _rope(g, kk, k, d, cos, sin)
        # (B, T, C) -> (B, K, G, T, D); keys and values (B, T, K D) -> (B, K, T, D)
        q = g.op("Transpose", g.op("Reshape", q, g.ints(0, 0, k, groups, d)), perm=[0, 2, 3, 1, 4])
        kk = g.op("Transpose", g.op("Reshape", kk, g.ints(0, 0, k, d)), perm=[0, 2, 1, 3])
        v = g.op("Transpose", g.op("Reshape", v, g.ints(0, 0, k, d)), perm=[0, 2, 1, 3])
        if with_past:
            kk = g.op("Concat", f"past_key_values.{layer}.key", kk, axis=2)
            v = g.op("Concat", f"past_key_values.{layer}.value", v, axis=2)
            g.nodes.append(helper.make_node("Identity", [kk], [f"present.{layer}.key"]))
            g.nodes.append(helper.make_node("Identity", [v], [f"present.{layer}.value"]))
        k5 = g.op("Unsqueeze", kk, g.ints(2))  # (B, K, 1, S, D)
        v5 = g.op("Unsqueeze", v, g.ints(2))
        scores = g.op("Mul", g.op("MatMul", q, g.op("Transpose", k5, perm=[0, 1, 2, 4, 3])), scale)
        probs = g.op("Softmax", g.op("Where", allowed, scores, minus_inf), axis=-1)
        y = g.op("MatMul", probs, v5)  # (B, K, G, T, D)
        y = g.op("Reshape", g.op("Transpose", y, perm=[0, 3, 1, 2, 4]), g.ints(0, 0, c))
        x = g.op("Add", x, _linear(g, y, state, f"{b}.attn.W_o", config.attn_bias))

        m = _norm(g, x, config, state, f"{b}.norm2")
        up = _linear(g, m, state, f"{b}.ff.linear1", config.mlp_bias)
        if gated:
            gate = _linear(g, m, state, f"{b}.ff.gate", config.mlp_bias)
            hidden = g.op("Mul", _activation(g, gate, config.activation), up)
        else:
            hidden = _activation(g, up, config.activation)
        x = g.op("Add", x, _linear(g, hidden, state, f"{b}.ff.linear2", config.mlp_bias))

    x = _norm(g, x, config, state, "ln_f")
    if config.tie_embeddings:
        head = g.op("Transpose", "token_embed.weight", perm=[1, 0])
    else:
        head = g.const(np.ascontiguousarray(state["lm_head.weight"].T), "lm_head.weight")
    g.nodes.append(helper.make_node("MatMul", [x, head], ["logits"]))
    name = "tinylm_decoder_with_past" if with_past else "tinylm_forward"
    graph = helper.make_graph(g.nodes, name, inputs, outputs, g.inits)
    model_proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tinylm"
    )
    model_proto.ir_version = 8
    return model_proto


def with_past_path(path: Path) -> Path:
    """Where :func:`export` writes the decoder graph beside the forward graph at ``path``."""
    return path.with_name(f"{path.stem}_with_past.onnx")


def _save_external(onnx: Any, proto: Any, target: Path) -> None:
    """Writes ``target`` and its weights ``target.data`` in a hidden folder beside it, checks
    them there, then renames both into place (the data first): a failure leaves neither."""
    target = write_target(target)  # a symbolic link is followed, as the inline save does
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        data = target.name + ".data"
        onnx.save_model(
            proto, str(staging / target.name), save_as_external_data=True, location=data
        )
        onnx.checker.check_model(str(staging / target.name))
        os.replace(staging / data, target.parent / data)
        os.replace(staging / target.name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def export(model: Transformer, path: Path) -> tuple[Path, Path]:
    """Writes the forward graph at ``path`` and the decoder at :func:`with_past_path`."""
    onnx = _onnx()
    path = Path(path)
    targets = [(path, False), (with_past_path(path), True)]
    for target, _ in targets:  # each file either save may write, checked before any is
        write_target(target)
        write_target(target.parent / (target.name + ".data"))
    for target, with_past in targets:
        proto = _graph(model, with_past)
        big = proto.ByteSize() > MAX_INLINE_BYTES
        if big:
            _save_external(onnx, proto, target)
        else:
            onnx.checker.check_model(proto)
            write_bytes_atomic(target, proto.SerializeToString())
    return targets[0][0], targets[1][0]
