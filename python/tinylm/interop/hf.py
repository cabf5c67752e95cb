"""Hugging Face directories, both ways: ``GPT2LMHeadModel`` and ``LlamaForCausalLM``.

What a directory holds (``save_pretrained`` writes, ``from_pretrained`` reads):

- ``config.json``: the architecture's hyper-parameters under Hugging Face's names;
- ``model.safetensors``, or shards ``model-00001-of-0000N.safetensors`` listed in
  ``model.safetensors.index.json`` (``{"weight_map": {tensor: shard file}}``);
- the tokenizer: ``tokenizer.json`` (and GPT-2's ``vocab.json`` + ``merges.txt``) for a
  byte-level BPE; tinylm's own JSON as ``tinylm_tokenizer.json`` for word and character
  tokenizers, which Hugging Face's files do not describe;
- ``generation_config.json``: tinylm's default sampling rule.

The conventions that differ from tinylm's (tinylm stores every projection [in][out] and
rotates adjacent pairs, as llama2.c):

- GPT-2's ``Conv1D`` weights are [in, out] like tinylm's; ``attn.c_attn`` holds W_q | W_k |
  W_v side by side ([C, 3C]); the head is tied to ``wte`` and not stored. The hub's files
  name tensors ``h.0...``, ``save_pretrained`` writes ``transformer.h.0...``: both are read.
  ``attn.bias`` / ``attn.masked_bias`` are causal-mask buffers, not parameters: ignored.
- Llama's ``nn.Linear`` weights are [out, in] (transposed). Its rotary embedding rotates
  dimension i with i + D/2 of each head (``rotate_half``), at the frequency tinylm uses for
  the pair (2i, 2i + 1); so the rows of ``q_proj`` and ``k_proj`` (and their biases) are
  permuted per head: Hugging Face's dimension i is tinylm's 2i, i + D/2 is 2i + 1. The
  scores q . k are unchanged because q and k get the same permutation.
- Dropout: tinylm has one probability p (``Config.dropout``) for the embedding sum, the
  attention probabilities and the residual branches. GPT-2 is written with ``embd_pdrop``
  = ``attn_pdrop`` = ``resid_pdrop`` = p; read back, p is ``resid_pdrop`` (0 if absent),
  with a warning if ``embd_pdrop`` or ``attn_pdrop`` differ from it. Llama's only dropout
  is ``attention_dropout`` (on the attention probabilities): written as p and read as p,
  which tinylm's training then also applies to the embeddings and residual branches.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tinylm import _core
from tinylm._io import write_text_atomic
from tinylm.interop import _safetensors as st
from tinylm.interop._safetensors import format_error
from tinylm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from tinylm.model import Config, Transformer

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
TINYLM_TOKENIZER = "tinylm_tokenizer.json"
#: Hugging Face's default shard size.
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9

#: tinylm activation -> GPT-2's ``activation_function`` (Hugging Face's ACT2FN names).
GPT2_ACTIVATIONS = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
#: tinylm gated activation -> Llama's ``hidden_act`` (the gate's non-linearity).
LLAMA_ACTIVATIONS = {"swiglu": "silu", "geglu": "gelu"}
#: Another name Hugging Face has for the tanh GELU.
GPT2_ACTIVATION_ALIASES = {"gelu_pytorch_tanh": "gelu_tanh"}
#: Buffers some files hold beside the parameters.
IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias", ".rotary_emb.inv_freq")


# ----------------------------------------------------------------------------- configs


def architecture(config: Config) -> str:
    """``"gpt2"`` or ``"llama"``: which Hugging Face class holds this config. A config
    neither can hold is a ConfigError naming the field."""

    def refuse(field: str, value: object, why: str) -> _core.ConfigError:
        return _core.ConfigError(
            f"invalid config: Hugging Face has no model for {field} = {value!r}: {why}"
        )

    if config.position == "learned":
        why = "GPT2LMHeadModel (learned positions) has "
        if config.norm != "layernorm":
            raise refuse("norm", config.norm, why + "layer norms only")
        if config.activation not in GPT2_ACTIVATIONS:
            raise refuse("activation", config.activation, why + ", ".join(sorted(GPT2_ACTIVATIONS)))
        if not config.attn_bias:
            raise refuse("attn_bias", False, why + "attention biases always")
        if not config.mlp_bias:
            raise refuse("mlp_bias", False, why + "feed-forward biases always")
        if config.n_kv_heads not in (None, config.n_heads):
            raise refuse("n_kv_heads", config.n_kv_heads, why + "no grouped-query attention")
        return "gpt2"
    why = "LlamaForCausalLM (rotary positions) has "
    if config.norm != "rmsnorm":
        raise refuse("norm", config.norm, why + "RMSNorm only")
    if config.activation not in LLAMA_ACTIVATIONS:
        raise refuse("activation", config.activation, why + "gated " + ", ".join(LLAMA_ACTIVATIONS))
    return "llama"


def hf_config(
    config: Config, tokenizer: Tokenizer | None, default_stop: list[int] | None = None
) -> dict[str, Any]:
    """config.json for this tinylm config (``default_stop``: see :func:`_special_ids`)."""
    ids = _special_ids(tokenizer, default_stop)
    if architecture(config) == "gpt2":
        return {
            "architectures": ["GPT2LMHeadModel"],
            "model_type": "gpt2",
            "vocab_size": config.vocab_size,
            "n_positions": config.max_seq_len,
            "n_ctx": config.max_seq_len,
            "n_embd": config.d_model,
            "n_layer": config.n_layers,
            "n_head": config.n_heads,
            "n_inner": config.d_ff,
            "activation_function": GPT2_ACTIVATIONS[config.activation],
            "layer_norm_epsilon": config.eps,
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": config.dropout,
            "initializer_range": 0.02,
            "scale_attn_weights": True,
            "tie_word_embeddings": config.tie_embeddings,
            "use_cache": True,
            "torch_dtype": "float32",
            **ids,
        }
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.d_model,
        "intermediate_size": config.d_ff,
        "num_hidden_layers": config.n_layers,
        "num_attention_heads": config.n_heads,
        "num_key_value_heads": config.n_kv_heads or config.n_heads,
        "head_dim": config.d_model // config.n_heads,
        "hidden_act": LLAMA_ACTIVATIONS[config.activation],
        "max_position_embeddings": config.max_seq_len,
        "rms_norm_eps": config.eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "attention_bias": config.attn_bias,
        "attention_dropout": config.dropout,
        "mlp_bias": config.mlp_bias,
        "tie_word_embeddings": config.tie_embeddings,
        "initializer_range": 0.02,
        "use_cache": True,
        "torch_dtype": "float32",
        **ids,
    }


def _special_ids(
    tokenizer: Tokenizer | None, default_stop: list[int] | None = None
) -> dict[str, Any]:
    """bos_token_id and eos_token_id from the tokenizer's end-of-text token; else the
    model's ``default_stop`` as eos_token_id (a folder read without a usable tokenizer keeps
    its eos_token_id when saved again); else None (GPT2Config would otherwise assume GPT-2's
    50256)."""
    specials = {} if tokenizer is None else tokenizer.special_tokens
    for name in ("<|endoftext|>", "</s>", "<|end_of_text|>"):
        if name in specials:
            bos = specials.get("<s>", specials.get("<|begin_of_text|>", specials[name]))
            return {"bos_token_id": bos, "eos_token_id": specials[name]}
    if default_stop:
        eos = default_stop[0] if len(default_stop) == 1 else list(default_stop)
        return {"bos_token_id": None, "eos_token_id": eos}
    return {"bos_token_id": None, "eos_token_id": None}


_KINDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
_KINDS[dict] = "an object"


class _Fields:
    """config.json's values, each read with the file and field named in any error."""

    def __init__(self, path: Path, raw: Mapping[str, Any]) -> None:
        self.path, self.raw = path, raw

    def get(self, key: str, kind: type, default: Any = None, required: bool = False) -> Any:
        if key not in self.raw or self.raw[key] is None:
            if required:
                raise format_error(self.path, f"missing field {key!r}")
            return default
        value = self.raw[key]
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise format_error(self.path, f"field {key!r} must be {_KINDS[kind]}, got {value!r}")
        return value

    def size(self, key: str, *, default: int | None = None) -> int:
        value = self.get(key, int, default, required=default is None)
        if value < 1:
            raise format_error(self.path, f"field {key!r} must be positive, got {value}")
        return value


def config_from_hf(path: Path, raw: Mapping[str, Any]) -> Config:
    """The tinylm config of a GPT-2 or Llama-family config.json; anything tinylm cannot run
    the same way is a FormatError naming the field."""
    from tinylm.model import Config

    f = _Fields(path, raw)
    model_type = f.get("model_type", str, required=True)
    if model_type == "gpt2":
        act = f.get("activation_function", str, "gelu_new")
        tinylm_act = {v: k for k, v in GPT2_ACTIVATIONS.items()}.get(act)
        tinylm_act = tinylm_act or GPT2_ACTIVATION_ALIASES.get(act)
        if tinylm_act is None:
            raise format_error(path, f"field 'activation_function' = {act!r} is not supported")
        for key, ok in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False)):
            if f.get(key, bool, ok) != ok:
                raise format_error(path, f"field {key!r} = {not ok} is not supported")
        c = f.size("n_embd")
        positions = f.size("n_positions", default=f.get("n_ctx", int, 0) or None)
        return Config(
            vocab_size=f.size("vocab_size"),
            d_model=c,
            n_layers=f.size("n_layer"),
            n_heads=f.size("n_head"),
            d_ff=f.get("n_inner", int, 4 * c),
            max_seq_len=positions,
            eps=f.get("layer_norm_epsilon", float, 1e-5),
            tie_embeddings=f.get("tie_word_embeddings", bool, True),
            activation=tinylm_act,
            dropout=_gpt2_dropout(f),
        )
    if model_type in ("llama", "mistral"):
        act = f.get("hidden_act", str, "silu")
        gated = {v: k for k, v in LLAMA_ACTIVATIONS.items()}.get(act)
        if gated is None:
            raise format_error(path, f"field 'hidden_act' = {act!r} is not supported")
        theta = _rope_theta(f)
        c, heads = f.size("hidden_size"), f.size("num_attention_heads")
        head_dim = f.get("head_dim", int, c // heads)
        if head_dim * heads != c:
            raise format_error(
                path, f"field 'head_dim' = {head_dim} is not hidden_size / num_attention_heads"
            )
        positions = f.size("max_position_embeddings")
        window = f.get("sliding_window", int)
        if window is not None and window < positions:
            raise format_error(path, f"field 'sliding_window' = {window} is not supported")
        kv = f.size("num_key_value_heads", default=heads)
        return Config(
            vocab_size=f.size("vocab_size"),
            d_model=c,
            n_layers=f.size("num_hidden_layers"),
            n_heads=heads,
            n_kv_heads=None if kv == heads else kv,
            d_ff=f.size("intermediate_size"),
            max_seq_len=positions,
            eps=f.get("rms_norm_eps", float, 1e-6),
            rope_theta=theta,
            attn_bias=f.get("attention_bias", bool, False),
            mlp_bias=f.get("mlp_bias", bool, False),
            tie_embeddings=f.get("tie_word_embeddings", bool, False),
            norm="rmsnorm",
            position="rope",
            activation=gated,
            dropout=_llama_dropout(f),
        )
    raise format_error(
        path, f"field 'model_type' = {model_type!r} is not supported (gpt2, llama, mistral)"
    )


def _probability(f: _Fields, key: str) -> float:
    """A dropout probability of config.json, 0 if absent; outside [0, 1) a FormatError."""
    p = f.get(key, float, 0.0)
    if not 0.0 <= p < 1.0:
        raise format_error(f.path, f"field {key!r} = {p} is not a probability in [0, 1)")
    return p


def _gpt2_dropout(f: _Fields) -> float:
    """tinylm's one dropout p of a GPT-2 config.json: ``resid_pdrop``, with a warning when
    ``embd_pdrop`` or ``attn_pdrop`` differ (tinylm drops every site with the same p)."""
    p = _probability(f, "resid_pdrop")
    others = {key: _probability(f, key) for key in ("embd_pdrop", "attn_pdrop")}
    differ = [f"{key} = {v:g}" for key, v in others.items() if v != p]
    if differ:
        warnings.warn(
            f"{f.path}: {', '.join(differ)} differ from resid_pdrop = {p:g}; tinylm has one "
            f"dropout probability for every site and uses resid_pdrop's {p:g}",
            stacklevel=2,
        )
    return p


def _llama_dropout(f: _Fields) -> float:
    """tinylm's dropout p of a Llama config.json: ``attention_dropout`` (which tinylm, in
    training, applies to the embedding sum and the residual branches as well)."""
    return _probability(f, "attention_dropout")


def _rope_theta(f: _Fields) -> float:
    """The RoPE base of a Llama config.json: ``rope_theta`` (transformers 4) or
    ``rope_parameters.rope_theta`` (transformers 5 writes only this). Any rope type but
    ``"default"`` (linear, dynamic, yarn, llama3 scaling...), in ``rope_scaling`` or
    ``rope_parameters``, is refused: tinylm runs plain RoPE only."""
    theta = f.get("rope_theta", float)
    for key in ("rope_scaling", "rope_parameters"):
        params = f.get(key, dict)
        if params is None:
            continue
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise format_error(
                f.path, f"field {key!r} has rope_type {kind!r}: only plain RoPE is supported"
            )
        inner = _Fields(f.path, params).get("rope_theta", float)
        if inner is not None and theta is not None and inner != theta:
            raise format_error(
                f.path, f"field 'rope_theta' = {theta} disagrees with {key}.rope_theta = {inner}"
            )
        theta = inner if inner is not None else theta
    return 10000.0 if theta is None else theta


# ----------------------------------------------------------------------------- tensors


def _rope_order(heads: int, d: int) -> np.ndarray:
    """Index of tinylm's dimension for each Hugging Face dimension of ``heads`` heads of
    size D: per head [0, 2, 4, ..., D-2, 1, 3, ..., D-1] (HF's i is tinylm's 2i, HF's
    i + D/2 is tinylm's 2i + 1)."""
    one = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    return (np.arange(heads)[:, None] * d + one[None, :]).reshape(-1)


class _Row:
    """One stored tensor: the tinylm tensors it holds (several are concatenated on the last
    axis: GPT-2's c_attn), its Hugging Face name, and whether it is an ``nn.Linear``
    (stored [out, in], tinylm's transpose), with its output rows permuted by ``order``
    (HF row r is tinylm column order[r])."""

    def __init__(
        self, ours: str | list[str], theirs: str, linear: bool = False, order: Any = None
    ) -> None:
        self.ours = [ours] if isinstance(ours, str) else ours
        self.theirs, self.linear, self.order = theirs, linear, order

    def to_hf(self, state: Mapping[str, np.ndarray]) -> np.ndarray:
        w = np.concatenate([state[n] for n in self.ours], axis=-1)
        if self.order is not None:
            w = w[..., self.order]
        return np.ascontiguousarray(w.T if self.linear else w)

    def hf_shape(self, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
        first = shapes[self.ours[0]]
        width = sum(shapes[n][-1] for n in self.ours)
        shape = (*first[:-1], width)
        return tuple(reversed(shape)) if self.linear else shape

    def from_hf(self, w: np.ndarray, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, Any]:
        w = w.T if self.linear else w
        if self.order is not None:
            back = np.empty_like(w)
            back[..., self.order] = w
            w = back
        cuts = np.cumsum([shapes[n][-1] for n in self.ours])[:-1]
        parts = np.split(w, cuts, axis=-1)
        return {n: np.ascontiguousarray(p) for n, p in zip(self.ours, parts)}


def _rows(config: Config) -> list[_Row]:
    """Every tensor a Hugging Face file of this config stores, in Hugging Face's order."""
    if architecture(config) == "gpt2":
        rows = [
            _Row("token_embed.weight", "transformer.wte.weight"),
            _Row("pos_embed.weight", "transformer.wpe.weight"),
        ]
        for i in range(config.n_layers):
            b, h = f"blocks.{i}", f"transformer.h.{i}"
            for part in ("weight", "bias"):
                qkv = [f"{b}.attn.W_{x}.{part}" for x in "qkv"]
                rows += [
                    _Row(f"{b}.norm1.{part}", f"{h}.ln_1.{part}"),
                    _Row(qkv, f"{h}.attn.c_attn.{part}"),
                    _Row(f"{b}.attn.W_o.{part}", f"{h}.attn.c_proj.{part}"),
                    _Row(f"{b}.norm2.{part}", f"{h}.ln_2.{part}"),
                    _Row(f"{b}.ff.linear1.{part}", f"{h}.mlp.c_fc.{part}"),
                    _Row(f"{b}.ff.linear2.{part}", f"{h}.mlp.c_proj.{part}"),
                ]
        rows += [
            _Row("ln_f.weight", "transformer.ln_f.weight"),
            _Row("ln_f.bias", "transformer.ln_f.bias"),
        ]
    else:
        d = config.d_model // config.n_heads
        q_order = _rope_order(config.n_heads, d)
        k_order = _rope_order(config.n_kv_heads or config.n_heads, d)
        rows = [_Row("token_embed.weight", "model.embed_tokens.weight")]
        for i in range(config.n_layers):
            b, h = f"blocks.{i}", f"model.layers.{i}"
            rows.append(_Row(f"{b}.norm1.weight", f"{h}.input_layernorm.weight"))
            attn = [("W_q", "q_proj", q_order), ("W_k", "k_proj", k_order)]
            attn += [("W_v", "v_proj", None), ("W_o", "o_proj", None)]
            for ours, theirs, order in attn:
                for part in ("weight", "bias") if config.attn_bias else ("weight",):
                    name = f"{b}.attn.{ours}.{part}"
                    rows.append(_Row(name, f"{h}.self_attn.{theirs}.{part}", True, order))
            rows.append(_Row(f"{b}.norm2.weight", f"{h}.post_attention_layernorm.weight"))
            mlp = [("gate", "gate_proj"), ("linear1", "up_proj"), ("linear2", "down_proj")]
            for ours, theirs in mlp:
                for part in ("weight", "bias") if config.mlp_bias else ("weight",):
                    rows.append(_Row(f"{b}.ff.{ours}.{part}", f"{h}.mlp.{theirs}.{part}", True))
        rows.append(_Row("ln_f.weight", "model.norm.weight"))
    if not config.tie_embeddings:
        rows.append(_Row("lm_head.weight", "lm_head.weight"))
    return rows


def _shapes(config: Config) -> dict[str, tuple[int, ...]]:
    """tinylm's parameter shapes (as ``rust/src/params.rs`` lays them out) of the tensors
    Hugging Face's files hold, so a checkpoint is checked before a model is allocated;
    ``load_state_dict`` checks them again against the core."""
    c, f, v = config.d_model, config.d_ff, config.vocab_size
    kd = (config.n_kv_heads or config.n_heads) * (c // config.n_heads)
    per_block = {
        "attn.W_q.weight": (c, c),
        "attn.W_q.bias": (c,),
        "attn.W_k.weight": (c, kd),
        "attn.W_k.bias": (kd,),
        "attn.W_v.weight": (c, kd),
        "attn.W_v.bias": (kd,),
        "attn.W_o.weight": (c, c),
        "attn.W_o.bias": (c,),
        "ff.gate.weight": (c, f),
        "ff.gate.bias": (f,),
        "ff.linear1.weight": (c, f),
        "ff.linear1.bias": (f,),
        "ff.linear2.weight": (f, c),
        "ff.linear2.bias": (c,),
    }
    shapes = {}
    for row in _rows(config):
        for name in row.ours:
            if name in ("token_embed.weight", "lm_head.weight"):
                shapes[name] = (v, c)
            elif name == "pos_embed.weight":
                shapes[name] = (config.max_seq_len, c)
            elif name.startswith("blocks."):
                shapes[name] = per_block.get(name.split(".", 2)[2], (c,))  # or a norm
            else:
                shapes[name] = (c,)  # ln_f
    return shapes


def to_hf(config: Config, state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face's tensors (names and layouts) from tinylm's state dict."""
    return {row.theirs: row.to_hf(state) for row in _rows(config)}


def from_hf(
    config: Config, files: Mapping[str, st.TensorInfo], where: Path
) -> dict[str, np.ndarray]:
    """tinylm's state dict from the tensors of a Hugging Face checkpoint (``files``: HF name
    -> where it is stored; GPT-2 names with or without ``transformer.``). Every name and
    shape is checked against the config before any tensor is read; ``where`` names the
    checkpoint in errors."""
    rows, shapes = _rows(config), _shapes(config)
    found: dict[str, st.TensorInfo] = {}
    for name, info in files.items():
        if name.endswith(IGNORED_SUFFIXES):
            continue
        if architecture(config) == "gpt2" and not name.startswith(("transformer.", "lm_head.")):
            name = "transformer." + name
        found[name] = info
    expected = {row.theirs for row in rows}
    tied_head = config.tie_embeddings and "lm_head.weight" in found
    extra = sorted(set(found) - expected - ({"lm_head.weight"} if tied_head else set()))
    if extra:
        raise format_error(
            found[extra[0]].path,
            f"unexpected tensor {extra[0]!r}: config.json's model has no such weight",
        )
    for row in rows:
        info = found.get(row.theirs)
        if info is None:
            raise format_error(where, f"missing tensor {row.theirs!r}")
        want = row.hf_shape(shapes)
        if info.dtype not in st.ITEM_BYTES:
            raise format_error(
                info.path,
                f"tensor {info.name!r} has dtype {info.dtype}, not a float one "
                f"({', '.join(st.ITEM_BYTES)})",
            )
        if info.shape != want:
            raise format_error(
                info.path,
                f"tensor {info.name!r} has shape {list(info.shape)}, but config.json "
                f"implies {list(want)}",
            )
    state: dict[str, np.ndarray] = {}
    for row in rows:
        state.update(row.from_hf(found[row.theirs].read(), shapes))
    return state


# ----------------------------------------------------------------------------- directories


def _json_file(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise format_error(path, "no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise format_error(path, f"not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise format_error(path, "not a JSON object")
    return value


def _checkpoint_files(directory: Path) -> dict[str, st.TensorInfo]:
    """Every tensor of the checkpoint, by name, from one file or the shards an index lists."""
    index = directory / INDEX
    if index.is_file():
        weight_map = _json_file(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise format_error(index, "missing field 'weight_map' (tensor name -> shard file)")
        headers: dict[str, dict[str, st.TensorInfo]] = {}
        files: dict[str, st.TensorInfo] = {}
        for name, shard in weight_map.items():
            if not isinstance(shard, str) or Path(shard).name != shard:
                raise format_error(index, f"weight_map[{name!r}] = {shard!r} is not a file name")
            if shard not in headers:
                if not (directory / shard).is_file():
                    raise format_error(
                        index, f"weight_map[{name!r}] names the shard {shard!r}, which is missing"
                    )
                headers[shard] = st.read_header(directory / shard)[0]
            if name not in headers[shard]:
                raise format_error(
                    directory / shard, f"tensor {name!r}, which {INDEX} puts here, is missing"
                )
            files[name] = headers[shard][name]
        return files
    single = directory / SINGLE
    if single.is_file():
        return st.read_header(single)[0]
    if (directory / "pytorch_model.bin").exists():
        raise format_error(
            directory,
            "holds pytorch_model.bin (a pickle) and no model.safetensors: tinylm reads "
            "safetensors only (convert with transformers: save_pretrained(dir, "
            "safe_serialization=True))",
        )
    raise format_error(directory, f"no {SINGLE} or {INDEX}")


def _read_tokenizer(directory: Path, vocab_size: int) -> Tokenizer | None:
    """The tokenizer of an HF directory: tinylm's own JSON, tokenizer.json, or GPT-2's
    vocab.json + merges.txt, whichever is there first; None (with a warning) if none can be
    read as a tinylm tokenizer of ``vocab_size`` tokens."""
    candidates = []
    if (directory / TINYLM_TOKENIZER).is_file():
        candidates.append(lambda: Tokenizer.load(directory / TINYLM_TOKENIZER))
    if (directory / "tokenizer.json").is_file():
        candidates.append(lambda: Tokenizer.from_hf_json(directory / "tokenizer.json"))
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        candidates.append(
            lambda: Tokenizer.from_gpt2_files(directory / "vocab.json", directory / "merges.txt")
        )
    problems = []
    for make in candidates:
        try:
            tok = make()
        except (_core.TinyLMError, ValueError, OSError) as exc:
            problems.append(str(exc))
            continue
        if tok.vocab_size == vocab_size:
            return tok
        problems.append(f"the tokenizer has {tok.vocab_size} tokens, the model {vocab_size}")
    if candidates:
        warnings.warn(
            f"{directory}: the model is loaded without a tokenizer: " + "; ".join(problems),
            RuntimeWarning,
            stacklevel=3,
        )
    return None


def _eos_ids(directory: Path, vocab_size: int) -> list[int]:
    """The ids that end generation: ``eos_token_id`` (an id or a list of them) of
    generation_config.json, else of config.json; none if neither names one."""
    for name in ("generation_config.json", CONFIG):
        path = directory / name
        if not path.is_file():
            continue
        eos = _json_file(path).get("eos_token_id")
        if eos is None:
            continue
        ids = eos if isinstance(eos, list) else [eos]
        if not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in ids
        ):
            raise format_error(
                path, f"field 'eos_token_id' = {eos!r} is not an id below {vocab_size}"
            )
        return ids
    return []


def load(directory: Path, backend: str) -> Transformer:
    """A Transformer (and its tokenizer) from a Hugging Face directory."""
    from tinylm.model import Transformer

    directory = Path(directory)
    if not directory.is_dir():
        raise format_error(directory, "not a directory (a Hugging Face model is a folder)")
    config = config_from_hf(directory / CONFIG, _json_file(directory / CONFIG))
    state = from_hf(config, _checkpoint_files(directory), directory)
    try:
        model = Transformer(config, seed=0, backend=backend)
    except _core.ConfigError as exc:  # values tinylm rejects, or a backend without an option
        raise _core.ConfigError(f"{directory / CONFIG}: {exc}") from None
    model.load_state_dict(state)
    model.tokenizer = _read_tokenizer(directory, config.vocab_size)
    model.default_stop = _eos_ids(directory, config.vocab_size)
    model.source_format = "hf"
    return model


def save(model: Transformer, directory: Path, max_shard_bytes: int) -> None:
    """Writes ``model`` as a Hugging Face directory (created if needed; each file atomic)."""
    config = model.config
    # Refuses what HF cannot hold, before any write.
    hf = hf_config(config, model.tokenizer, model.default_stop)
    directory = Path(directory)
    tensors = to_hf(config, model.state_dict())
    # Every tensor is checked before anything is written, so a refused model leaves no new
    # folder and the folder's previous checkpoint whole.
    for name, w in tensors.items():
        st.check_finite(directory / SINGLE, name, w)
    directory.mkdir(parents=True, exist_ok=True)
    # Tokenizer files an earlier save left and this one does not write go first: a reader
    # never pairs the new weights with an old model's tokenizer.
    for name in sorted(TOKENIZER_FILES - _tokenizer_files(model.tokenizer)):
        (directory / name).unlink(missing_ok=True)
    _write_weights(directory, tensors, max_shard_bytes)
    write_text_atomic(directory / CONFIG, json.dumps(hf, indent=2) + "\n")
    generation = {
        "do_sample": True,
        "temperature": 0.8,
        "top_k": 40,
        "max_new_tokens": 200,
        **_special_ids(model.tokenizer, model.default_stop),
    }
    write_text_atomic(directory / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    _write_tokenizer(directory, model.tokenizer, config)


def _write_weights(directory: Path, tensors: dict[str, np.ndarray], max_shard_bytes: int) -> None:
    shards: list[dict[str, np.ndarray]] = [{}]
    size = 0
    for name, w in tensors.items():
        if shards[-1] and size + w.nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = w
        size += w.nbytes
    metadata = {"format": "pt"}
    # The files a previous save left and this one does not write are removed only after
    # the new ones are in place.
    stale = {directory / SINGLE, directory / INDEX, *directory.glob("model-*-of-*.safetensors")}
    written = []
    if len(shards) == 1:
        written.append(directory / SINGLE)
        st.write(written[-1], shards[0], metadata)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            name = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            written.append(directory / name)
            st.write(written[-1], shard, metadata)
            weight_map.update(dict.fromkeys(shard, name))
        total = sum(w.nbytes for w in tensors.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        written.append(directory / INDEX)
        write_text_atomic(written[-1], json.dumps(index, indent=2) + "\n")
    # The index goes first: while it exists, readers take it over model.safetensors.
    for path in sorted(stale - set(written), key=lambda p: p != directory / INDEX):
        path.unlink(missing_ok=True)


#: Every tokenizer file :func:`save` may write.
TOKENIZER_FILES = frozenset(
    {TINYLM_TOKENIZER, "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"}
)


def _tokenizer_files(tok: Tokenizer | None) -> frozenset[str]:
    """The tokenizer files a save of ``tok`` may write (vocab.json and merges.txt are
    removed afterwards if GPT-2's two files cannot spell the vocabulary)."""
    if tok is None:
        return frozenset()
    if tok.kind != "bpe":
        return frozenset({TINYLM_TOKENIZER})
    return TOKENIZER_FILES - {TINYLM_TOKENIZER}


def _write_tokenizer(directory: Path, tok: Tokenizer | None, config: Config) -> None:
    if tok is None:
        return
    if tok.kind != "bpe":
        tok.save(directory / TINYLM_TOKENIZER)
        return
    tok.save_hf_json(directory / "tokenizer.json")
    try:
        tok.save_gpt2_files(directory / "vocab.json", directory / "merges.txt")
        gpt2_files = True
    except (_core.TinyLMError, ValueError):
        gpt2_files = False  # a vocabulary GPT-2's two files cannot spell: tokenizer.json has it
        for name in ("vocab.json", "merges.txt"):  # an earlier save's would be stale
            (directory / name).unlink(missing_ok=True)
    specials = _special_ids(tok)
    names = {v: k for k, v in tok.special_tokens.items()}
    slow = gpt2_files and architecture(config) == "gpt2"
    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer" if slow else "PreTrainedTokenizerFast",
        "model_max_length": config.max_seq_len,
        "add_prefix_space": False,
    }
    if specials["eos_token_id"] is not None:
        tokenizer_config["bos_token"] = names[specials["bos_token_id"]]
        tokenizer_config["eos_token"] = names[specials["eos_token_id"]]
    write_text_atomic(
        directory / "tokenizer_config.json", json.dumps(tokenizer_config, indent=2) + "\n"
    )
