"""The model: a configuration and a GPT-style transformer whose arithmetic runs in Rust.

>>> from tinylm import Config, Transformer
>>> model = Transformer(Config(vocab_size=65, d_model=64, n_layers=2, n_heads=4), seed=0)
>>> model.logits([[1, 2, 3]]).shape
(1, 3, 65)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import os
import secrets
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Union

import numpy as np

from tinylm import _core
from tinylm._checks import MAX_ID, float_arg, ids_arg, int_arg
from tinylm.tokenizer import Tokenizer

if TYPE_CHECKING:
    from tinylm.optim import AdamW

IdsLike = Union[Sequence[int], Sequence[Sequence[int]], np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]

#: Models shipped in the package, by short name.
BUNDLED_MODELS = {
    "shakespeare": "shakespeare_char.safetensors",
    "shakespeare-bpe": "shakespeare_bpe.safetensors",
    "tiny": "tiny_gpt_weights.json",
}

#: The one default sampling rule, shared by :meth:`Transformer.generate`, ``stream_ids``,
#: ``stream``, ``generate_text`` and the command line: nanoGPT's temperature 0.8 with
#: GPT-2's top-k of 40, 200 new tokens (a paragraph of the Shakespeare model).
#: ``temperature=0`` is greedy.
DEFAULT_MAX_NEW_TOKENS = 200
DEFAULT_TEMPERATURE = 0.8
DEFAULT_TOP_K: int | None = 40

#: The safetensors metadata entry holding :attr:`Transformer.default_stop` (a JSON list).
STOP_IDS_KEY = "stop_ids"


def _stored_stop(path: Path, vocab_size: int) -> list[int]:
    """The ids that end generation stored in a tinylm safetensors file (none if absent)."""
    from tinylm.interop import _safetensors

    _, metadata = _safetensors.read_header(path)
    raw = metadata.get(STOP_IDS_KEY)
    if raw is None:
        return []
    try:
        ids = json.loads(raw)
    except json.JSONDecodeError:
        ids = None
    if not (
        isinstance(ids, list)
        and all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in ids)
    ):
        raise _core.FormatError(
            f"{path}: metadata {STOP_IDS_KEY!r} = {raw!r} is not a list of ids below {vocab_size}"
        )
    return ids


#: The Go TinyLM's end-of-sentence word: generation from a Go-format model stops after it.
GO_END_TOKEN = "END"


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of the transformer.

    Defaults are nanoGPT's CPU Shakespeare model (GPT-2 style: attention biases, tied output
    head, ``d_ff = 4 * d_model``). The Go TinyLM format has ``attn_bias=False`` and
    ``tie_embeddings=False``. :meth:`llama` gives Llama's block (RMSNorm, RoPE, SwiGLU, no
    biases, untied head). Both backends run every option.
    """

    vocab_size: int
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    #: Width of the feed-forward layer; ``None`` means ``4 * d_model``.
    d_ff: int | None = None
    #: Context length: the number of learned position rows.
    max_seq_len: int = 64
    eps: float = 1e-5
    attn_bias: bool = True
    tie_embeddings: bool = True
    #: Feed-forward non-linearity: ``"gelu_tanh"`` (GPT-2), ``"gelu"`` (exact), ``"relu"``,
    #: ``"relu2"`` (squared), ``"silu"``, or gated ``"swiglu"``, ``"geglu"`` (a third
    #: matrix, the gate; ``d_ff`` is the hidden width).
    activation: str = "gelu_tanh"
    #: ``"layernorm"`` (GPT-2) or ``"rmsnorm"`` (Llama).
    norm: str = "layernorm"
    #: Whether the feed-forward matrices have biases.
    mlp_bias: bool = True
    #: ``"learned"`` (a position table of ``max_seq_len`` rows) or ``"rope"`` (rotary).
    position: str = "learned"
    #: Base of RoPE's frequencies.
    rope_theta: float = 10000.0
    #: Key/value heads for grouped-query attention; ``None`` means ``n_heads``.
    n_kv_heads: int | None = None
    #: Dropout probability of training passes (nanoGPT's ``dropout``), ``0 <= p < 1``:
    #: inverted dropout (kept values scaled by ``1 / (1 - p)``) of the embedding sum, of
    #: each block's attention probabilities (after the softmax, nanoGPT's ``attn_dropout``)
    #: and of its attention-projection and feed-forward outputs. Evaluation, scoring and
    #: generation never drop.
    dropout: float = 0.0

    @classmethod
    def llama(cls, vocab_size: int, d_model: int = 128, **overrides: Any) -> Config:
        """Llama's block: RMSNorm, rotary positions, SwiGLU with ``d_ff`` about
        ``8 / 3 * d_model`` (as many weights as GPT-2's ``4 * d_model`` in two matrices),
        no biases, untied head. Any field can be overridden."""
        fields: dict[str, Any] = {
            "d_ff": math.ceil(8 * d_model / 3 / 8) * 8,
            "norm": "rmsnorm",
            "position": "rope",
            "activation": "swiglu",
            "attn_bias": False,
            "mlp_bias": False,
            "tie_embeddings": False,
        }
        return cls(vocab_size=vocab_size, d_model=d_model, **{**fields, **overrides})

    def __post_init__(self) -> None:
        for field in ("vocab_size", "d_model", "n_layers", "n_heads", "max_seq_len"):
            _check_positive_int(field, getattr(self, field))
            object.__setattr__(self, field, int(getattr(self, field)))  # NumPy ints too
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        _check_positive_int("d_ff", self.d_ff)
        object.__setattr__(self, "d_ff", int(self.d_ff))
        if not isinstance(self.eps, (int, float)) or isinstance(self.eps, bool):
            raise TypeError(f"eps must be a number, got {type(self.eps).__name__}")
        object.__setattr__(self, "eps", float(self.eps))
        for field in ("attn_bias", "tie_embeddings", "mlp_bias"):
            if not isinstance(getattr(self, field), bool):
                raise TypeError(f"{field} must be a bool, got {getattr(self, field)!r}")
        for field in ("activation", "norm", "position"):
            if not isinstance(getattr(self, field), str):
                raise TypeError(f"{field} must be a str, got {getattr(self, field)!r}")
        if not isinstance(self.rope_theta, (int, float)) or isinstance(self.rope_theta, bool):
            raise TypeError(f"rope_theta must be a number, got {type(self.rope_theta).__name__}")
        object.__setattr__(self, "rope_theta", float(self.rope_theta))
        if not isinstance(self.dropout, (int, float)) or isinstance(self.dropout, bool):
            raise TypeError(f"dropout must be a number, got {type(self.dropout).__name__}")
        object.__setattr__(self, "dropout", float(self.dropout))
        if not 0.0 <= self.dropout < 1.0:
            raise _core.ConfigError(
                f"invalid config: dropout must be a probability in [0, 1), got {self.dropout}"
            )
        if self.n_kv_heads is not None:
            _check_positive_int("n_kv_heads", self.n_kv_heads)
            object.__setattr__(self, "n_kv_heads", int(self.n_kv_heads))
        # What JSON cannot carry to the core, which checks the rest (eps > 0, theta > 1).
        for field in ("eps", "rope_theta"):
            value = getattr(self, field)
            if not (math.isfinite(value) and abs(value) < 3.4e38):
                raise _core.ConfigError(
                    f"invalid config: {field} must be a finite number within float32's "
                    f"range, got {value}"
                )

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls(**json.loads(text))


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if value < 1:
        raise _core.ConfigError(f"invalid config: {name} must be positive, got {value}")


def _dropout_key(key: object) -> tuple[int, int] | None:
    """A dropout key (seed, step) of two integers in [0, 2**64), or None."""
    if key is None:
        return None
    if not isinstance(key, tuple) or len(key) != 2:
        raise TypeError(f"dropout_key must be a (seed, step) tuple or None, got {key!r}")
    return (
        int_arg("dropout_key seed", key[0], 0, 2**64 - 1),
        int_arg("dropout_key step", key[1], 0, 2**64 - 1),
    )


def _backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    return backend


def _check_dtype(dtype: object) -> str:
    """``dtype``'s name ("float32" or "bfloat16"), else the error saying which are known."""
    if not isinstance(dtype, str):
        raise TypeError(f"dtype must be a str such as 'bfloat16', got {type(dtype).__name__}")
    return _core.dtype_name(dtype)


def bundled_weights(name: str = "shakespeare") -> Path:
    """Path of a model shipped with tinylm: ``"shakespeare"`` (character level, trained on
    Tiny Shakespeare) or ``"tiny"`` (the Go TinyLM word model, trained by tinylm)."""
    if name not in BUNDLED_MODELS:
        raise ValueError(f"unknown bundled model {name!r}; choose from {sorted(BUNDLED_MODELS)}")
    path = Path(str(resources.files("tinylm") / "weights" / BUNDLED_MODELS[name]))
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the bundled model {name!r} is missing from this install")
    return path


def as_ids(ids: IdsLike, what: str = "input ids") -> tuple[np.ndarray, bool]:
    """Token ids as a C-contiguous int64 array of shape (B, T), and whether the input was 1-D."""
    if isinstance(ids, np.ndarray):
        arr = ids
    else:
        try:
            arr = np.asarray(ids)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(
                f"{what} must be a list of ids or a rectangular batch: {exc}"
            ) from None
    if arr.dtype == object:
        raise ValueError(f"{what} must be a list of ids or a rectangular batch of them")
    if arr.size == 0:
        raise ValueError(f"{what} is empty: it needs at least one token")
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{what} must be integers, got an array of {arr.dtype}")
    if arr.ndim not in (1, 2):
        raise ValueError(f"{what} must be 1-D (T,) or 2-D (B, T), got shape {arr.shape}")
    if arr.dtype.kind == "u" and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{what}: token id {arr.max()} is out of range")
    was_1d = arr.ndim == 1
    arr2 = np.ascontiguousarray(arr.reshape(1, -1) if was_1d else arr, dtype=np.int64)
    return arr2, was_1d


class StepStats(NamedTuple):
    """What one :meth:`Transformer.train_step` did."""

    #: Mean training loss of the batch, before the update.
    loss: float
    #: Global L2 norm of the gradient, before clipping.
    grad_norm: float


@dataclass(frozen=True)
class TraceStep:
    """One activation of a forward pass (see :meth:`Transformer.trace_steps`)."""

    #: Its name, e.g. ``"blocks.0.att"``.
    name: str
    #: Its values, float32.
    value: np.ndarray
    #: How it is computed, e.g. ``"S = q k^T / sqrt(D), before the causal mask"``.
    formula: str
    #: The reference function that computed it: ``"rust/src/reference/<file>.rs: <name>"``.
    source: str


@dataclass(frozen=True)
class Score:
    """What :meth:`Transformer.score` finds: per-token log-probabilities (natural logs)
    and the usual summaries of them."""

    #: log p(token i + 1 | tokens 0..i), float32, one per token after the first.
    token_logprobs: np.ndarray
    #: Characters and UTF-8 bytes of the predicted text (None when scoring ids).
    n_chars: int | None = None
    n_bytes: int | None = None

    @property
    def total_logprob(self) -> float:
        """The log-likelihood of the predicted tokens (nats)."""
        return float(np.sum(self.token_logprobs, dtype=np.float64))

    @property
    def loss(self) -> float:
        """Mean cross-entropy per token (nats), as training reports it."""
        return -self.total_logprob / len(self.token_logprobs)

    @property
    def perplexity(self) -> float:
        return math.exp(self.loss)

    @property
    def bits_per_token(self) -> float:
        return self.loss / math.log(2)

    @property
    def bits_per_char(self) -> float | None:
        """Total bits over the predicted characters: comparable across tokenizers."""
        if not self.n_chars:
            return None
        return -self.total_logprob / math.log(2) / self.n_chars

    @property
    def bits_per_byte(self) -> float | None:
        if not self.n_bytes:
            return None
        return -self.total_logprob / math.log(2) / self.n_bytes


@dataclass(frozen=True)
class Beam:
    """One result of :meth:`Transformer.beam_search`."""

    #: The prompt followed by the new ids.
    ids: list[int]
    #: Sum of the new ids' log-probabilities (natural logs).
    logprob: float
    #: ``logprob / (number of new ids) ** length_penalty``: what the beams are ranked by.
    score: float


class Transformer:
    """A GPT-style decoder-only transformer.

    Create one from a :class:`Config` (GPT-2 initialisation from ``seed``), or load one with
    :meth:`load`; the tokenizer stored with the weights is :attr:`tokenizer`.
    """

    def __init__(
        self,
        config: Config,
        *,
        seed: int = 0,
        tokenizer: Tokenizer | None = None,
        backend: str = "fast",
    ) -> None:
        """``backend`` is ``"fast"`` (blocked, threaded kernels and a key/value cache for
        generation) or ``"reference"`` (the plain implementation in ``rust/src/reference/``,
        slow); both run every option."""
        if not isinstance(config, Config):
            raise TypeError(f"config must be a tinylm.Config, got {type(config).__name__}")
        self._core = _core.Model(config.to_json(), _seed(seed), _backend(backend))
        self._config = config
        self.tokenizer = tokenizer
        #: The format the model was loaded from ("safetensors", "go-json"), or None.
        self.source_format: str | None = None
        #: Ids that end generation when ``stop`` is not given (a Hugging Face eos_token_id;
        #: kept by :meth:`save` in a safetensors file and read back by :meth:`load`).
        self.default_stop: list[int] = []

    @classmethod
    def _from_core(
        cls, core: _core.Model, tokenizer: Tokenizer | None, source_format: str | None
    ) -> Transformer:
        self = cls.__new__(cls)
        self._core = core
        self._config = Config.from_json(core.config_json())
        self.tokenizer = tokenizer
        self.source_format = source_format
        self.default_stop = []
        return self

    # ----------------------------------------------------------------------------- files

    @classmethod
    def load(
        cls,
        path: PathLike,
        *,
        backend: str = "fast",
        format: str | None = None,
        tokenizer: Tokenizer | PathLike | None = None,
        dtype: str = "float32",
    ) -> Transformer:
        """Loads a model file or folder. ``format`` is detected when None: a folder is a
        Hugging Face directory (see :meth:`from_pretrained`), a file tinylm safetensors or
        Go TinyLM JSON from its contents. ``"llama2c"`` reads llama2.c's ``model.bin``
        (version 0, or version 1 with the ``ak42`` magic), whose tokenizer lives in another
        file. ``tokenizer`` (a :class:`Tokenizer`, or a path :meth:`Tokenizer.load` reads)
        replaces the stored one; a llama2.c ``tokenizer.bin`` is read by
        :class:`tinylm.interop.llama2c.Llama2cTokenizer` instead. ``backend`` as in
        :class:`Transformer`; ``dtype`` as in :meth:`to`."""
        _check_dtype(dtype)
        if format is None and Path(path).is_dir():
            if not (Path(path) / "config.json").is_file():
                raise IsADirectoryError(
                    f"{os.fspath(path)}: is a directory, not a weights file (nor a Hugging "
                    "Face folder: it has no config.json)"
                )
            format = "hf"
        if format == "hf":
            model = cls.from_pretrained(path, backend=backend, dtype=dtype)
        elif format == "llama2c":
            from tinylm.interop import llama2c

            model = llama2c.load(Path(path), _backend(backend))
        elif format in (None, "safetensors", "go-json"):
            core, tok, fmt = _core.Model.load(os.fspath(path), _backend(backend))
            if format is not None and fmt != format:
                raise _core.FormatError(f"{os.fspath(path)}: is a {fmt} file, not {format}")
            model = cls._from_core(core, Tokenizer(tok) if tok is not None else None, fmt)
            if fmt == "safetensors":
                model.default_stop = _stored_stop(Path(path), model.config.vocab_size)
        else:
            raise ValueError(
                f'format must be None, "safetensors", "go-json", "hf" or "llama2c", got {format!r}'
            )
        if tokenizer is not None:
            if not isinstance(tokenizer, Tokenizer):
                if format == "llama2c" and not os.fspath(tokenizer).endswith(".json"):
                    raise ValueError(
                        f"{os.fspath(tokenizer)}: a llama2.c tokenizer.bin holds SentencePiece "
                        "pieces, not a tinylm tokenizer: read it with tinylm.interop.llama2c."
                        "Llama2cTokenizer.load(path, vocab_size) and generate text with "
                        "llama2c.generate_text(model, tokenizer, prompt, max_new_tokens)"
                    )
                tokenizer = Tokenizer.load(tokenizer)
            model.tokenizer = tokenizer
        return model.to(dtype)

    @classmethod
    def from_pretrained(
        cls, directory: PathLike, *, backend: str = "fast", dtype: str = "float32"
    ) -> Transformer:
        """Loads a Hugging Face directory holding a ``GPT2LMHeadModel`` or a Llama-family
        model (``LlamaForCausalLM``, Mistral without a sliding window): ``config.json``,
        ``model.safetensors`` or the shards ``model.safetensors.index.json`` lists (F32, F16
        or BF16, read as float32), and the tokenizer from ``tokenizer.json`` or
        ``vocab.json`` + ``merges.txt`` when tinylm can read it (a warning otherwise).
        Every tensor's name and shape is checked against config.json before any is read:
        a mismatch is a ``FormatError`` naming the file and the field or tensor. ``dtype``
        as in :meth:`to`."""
        from tinylm.interop import hf

        _check_dtype(dtype)
        return hf.load(Path(directory), _backend(backend)).to(dtype)

    def save_pretrained(self, directory: PathLike, *, max_shard_size: int | None = None) -> None:
        """Writes a Hugging Face directory that ``transformers``' ``from_pretrained`` loads:
        a GPT-2 style model as ``GPT2LMHeadModel``, a :meth:`Config.llama` style one as
        ``LlamaForCausalLM`` (``config.json``, float32 ``model.safetensors``,
        ``generation_config.json`` and the tokenizer: ``tokenizer.json``, ``vocab.json`` and
        ``merges.txt`` for BPE, ``tinylm_tokenizer.json`` for word and character ones).
        Weights above ``max_shard_size`` bytes (default: Hugging Face's 5 GB) are split into
        shards with an index. A config neither class can hold is a ``ConfigError`` naming
        the field, raised before anything is written. Tokenizer files an earlier save left
        in ``directory`` that this one does not write (all of them, for a model without a
        tokenizer) are removed before the new weights are written."""
        from tinylm.interop import hf

        limit = hf.DEFAULT_MAX_SHARD_BYTES if max_shard_size is None else max_shard_size
        hf.save(self, Path(directory), int_arg("max_shard_size", limit, 1, 2**62))

    def export_onnx(self, path: PathLike) -> tuple[Path, Path]:
        """Writes two ONNX graphs (opset 17, float32, checked with ``onnx.checker``): the
        forward pass at ``path`` (``input_ids`` (batch, sequence) int64 -> ``logits``
        (batch, sequence, V)), and beside it ``<stem>_with_past.onnx``, a decoder that also
        takes and returns each layer's keys and values (``past_key_values.<l>.key``
        (batch, K, past, D) -> ``present.<l>.key``, the same for values), so onnxruntime
        can generate. Needs the ``onnx`` package. Returns both paths."""
        from tinylm.interop import onnx_graph

        return onnx_graph.export(self, Path(path))

    @classmethod
    def from_bundled(cls, name: str = "shakespeare", *, dtype: str = "float32") -> Transformer:
        """Loads a model shipped with tinylm (see :func:`bundled_weights`); ``dtype`` as in
        :meth:`to`."""
        return cls.load(bundled_weights(name), dtype=dtype)

    def save(self, path: PathLike, format: str | None = None) -> None:
        """Saves atomically. ``format`` is ``"safetensors"`` (tinylm's format: weights,
        config and tokenizer in one file), ``"go-json"`` (the Go TinyLM format),
        ``"llama2c"`` (llama2.c's version-0 ``model.bin``, which ``run.c`` reads; its
        ``tokenizer.bin`` is :func:`tinylm.interop.llama2c.save_tokenizer`'s) or ``"hf"``
        (a folder: :meth:`save_pretrained`); by default a ``.json`` name means go-json and
        anything else safetensors."""
        path = os.fspath(path)
        if format == "hf":
            self.save_pretrained(path)
            return
        if format == "llama2c":
            from tinylm.interop import llama2c

            llama2c.save(self, Path(path))
            return
        if format is None:
            format = "go-json" if path.lower().endswith(".json") else "safetensors"
        core_tok = self.tokenizer._core if self.tokenizer is not None else None
        metadata = {}
        if self.default_stop and format == "safetensors":
            stop = ids_arg("default_stop", self.default_stop)
            metadata[STOP_IDS_KEY] = json.dumps(stop)
        elif self.default_stop:
            warnings.warn(
                f"{path}: the {format} format cannot hold the ids that end generation "
                f"({self.default_stop}); pass stop=... when generating from it",
                stacklevel=2,
            )
        self._core.save(path, core_tok, format, metadata)

    # ----------------------------------------------------------------------------- facts

    @property
    def config(self) -> Config:
        return self._config

    @property
    def backend(self) -> str:
        """``"fast"`` or ``"reference"``: which implementation runs this model."""
        return self._core.backend()

    @property
    def tokenizer(self) -> Tokenizer | None:
        """The tokenizer saved with the model (None if it has none)."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: Tokenizer | None) -> None:
        if tokenizer is not None:
            if not isinstance(tokenizer, Tokenizer):
                raise TypeError(
                    f"tokenizer must be a tinylm.Tokenizer, got {type(tokenizer).__name__}"
                )
            if tokenizer.vocab_size != self._config.vocab_size:
                raise _core.ConfigError(
                    f"invalid config: the tokenizer has {tokenizer.vocab_size} tokens "
                    f"but the model's vocab_size is {self._config.vocab_size}"
                )
        self._tokenizer = tokenizer

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"bfloat16"``: how generation stores the weights (see :meth:`to`)."""
        return self._core.dtype()

    def to(self, dtype: str) -> Transformer:
        """Sets how generation stores the weights, in place, and returns the model.

        ``"bfloat16"`` (or ``"bf16"``) rounds every parameter to the nearest bfloat16 (ties
        to even, as PyTorch's ``.to(torch.bfloat16)``) and keeps it as a float32, so
        :meth:`logits`, :meth:`score` and generation all compute with the rounded values,
        in float32 arithmetic. Generation then reads 2 bytes per weight instead of 4: at
        batch size one it waits on memory, and a model larger than the caches generates
        up to twice as fast. The logits move by about bfloat16's precision (8 bits of
        mantissa, ~0.4% per weight), so greedy text can differ from the float32 model's.
        A bfloat16 model does not train (updates would be rounded away): ``to("float32")``
        first, which keeps the rounded values. Saved files hold the rounded values in
        float32."""
        self._core.set_dtype(_check_dtype(dtype))
        return self

    @property
    def num_parameters(self) -> int:
        """Number of scalar parameters (a tied head counts once)."""
        return self._core.num_parameters()

    def __repr__(self) -> str:
        c = self._config
        return (
            f"Transformer(vocab_size={c.vocab_size}, d_model={c.d_model}, "
            f"n_layers={c.n_layers}, n_heads={c.n_heads}, d_ff={c.d_ff}, "
            f"max_seq_len={c.max_seq_len}, parameters={self.num_parameters:,}"
            + (f", dtype={self.dtype!r})" if self.dtype != "float32" else ")")
        )

    # ----------------------------------------------------------------------------- maths

    def logits(self, ids: IdsLike) -> np.ndarray:
        """Next-token logits, float32: (T, V) for one sequence of T ids, (B, T, V) for a
        batch. T may not exceed ``config.max_seq_len``."""
        arr, was_1d = as_ids(ids)
        out = self._core.logits(arr)
        return out[0] if was_1d else out

    def loss(self, inputs: IdsLike, targets: IdsLike) -> float:
        """Mean cross-entropy of predicting ``targets`` from ``inputs`` (same shape)."""
        x, _ = as_ids(inputs, "inputs")
        y, _ = as_ids(targets, "targets")
        return float(self._core.loss(x, y))

    def gradients(self, inputs: IdsLike, targets: IdsLike) -> tuple[float, dict[str, np.ndarray]]:
        """The loss and its gradient with respect to every parameter, keyed like
        :meth:`state_dict`."""
        x, _ = as_ids(inputs, "inputs")
        y, _ = as_ids(targets, "targets")
        loss, grads = self._core.gradients(x, y)
        return float(loss), dict(grads)

    # ----------------------------------------------------------------------------- training

    def forward_backward(
        self,
        inputs: IdsLike,
        targets: IdsLike,
        *,
        scale: float = 1.0,
        accumulate: bool = False,
        dropout_key: tuple[int, int] | None = None,
    ) -> float:
        """Forward and backward pass over a batch: returns its mean loss and keeps the
        gradient in the model (see :attr:`grad`) for :meth:`clip_grad_norm` and
        :meth:`tinylm.AdamW.step`. With ``accumulate``, ``scale`` times the gradient is
        added to the held one instead of replacing it: micro-batches of one step each pass
        ``scale=1 / micro_batches`` (nanoGPT's ``loss / gradient_accumulation_steps``).
        A non-finite loss raises :class:`~tinylm.NonFiniteError` and drops the gradient.
        ``dropout_key=(seed, step)`` turns on the config's dropout with the masks of that
        key (see the README); without it the pass does not drop."""
        x, _ = as_ids(inputs, "inputs")
        y, _ = as_ids(targets, "targets")
        scale = float_arg("scale", scale, -math.inf, math.inf)
        key = _dropout_key(dropout_key)
        return float(self._core.backward(x, y, scale, bool(accumulate), key))

    def clip_grad_norm(self, max_norm: float | None) -> float:
        """Scales the held gradient so its global L2 norm is at most ``max_norm`` (``None``
        or 0: only measures it); returns the norm before clipping."""
        if max_norm is not None:
            max_norm = float_arg("max_norm", max_norm, 0.0, math.inf)
        return float(self._core.clip_grad_norm(max_norm or None))

    def zero_grad(self) -> None:
        """Forgets the held gradient."""
        self._core.zero_grad()

    @property
    def grad(self) -> dict[str, np.ndarray] | None:
        """Copies of the held gradient, keyed like :meth:`state_dict` (None before the
        first :meth:`forward_backward`, after :meth:`zero_grad` or a failed pass)."""
        held = self._core.held_gradient()
        return None if held is None else dict(held)

    def train_step(
        self,
        optimizer: AdamW,
        inputs: IdsLike,
        targets: IdsLike,
        *,
        grad_clip: float | None = 1.0,
        micro_batches: int = 1,
        dropout_key: tuple[int, int] | None = None,
    ) -> StepStats:
        """One optimizer step in one call: :meth:`forward_backward` over ``micro_batches``
        equal parts of the batch, :meth:`clip_grad_norm` to ``grad_clip``, then
        ``optimizer.step()`` at ``optimizer.lr``. Exactly those three steps, so it gives
        the same parameters, bit for bit, as calling them one by one. ``dropout_key`` as in
        :meth:`forward_backward` (the micro-batches continue one mask)."""
        from tinylm.optim import AdamW

        if not isinstance(optimizer, AdamW):
            raise TypeError(f"optimizer must be a tinylm.AdamW, got {type(optimizer).__name__}")
        if optimizer.model is not self:
            raise ValueError("this optimizer was made for another model")
        x, _ = as_ids(inputs, "inputs")
        y, _ = as_ids(targets, "targets")
        clip = None if grad_clip is None else float_arg("grad_clip", grad_clip, 0.0, math.inf)
        micro = int_arg("micro_batches", micro_batches, 1, 2**31)
        key = _dropout_key(dropout_key)
        loss, norm = self._core.train_step(
            optimizer._core, x, y, optimizer.lr, clip or None, micro, key
        )
        return StepStats(float(loss), float(norm))

    # ------------------------------------------------------------------------- looking in

    def trace_steps(self, ids: IdsLike) -> list[TraceStep]:
        """Every intermediate activation of one forward pass, in the order it is computed,
        each with its formula and the reference function that computed it (see
        :meth:`trace` for the names)."""
        arr, was_1d = as_ids(ids)
        return [
            TraceStep(name, value[0] if was_1d else value, formula, f"{file}: {function}")
            for name, value, formula, file, function in self._core.trace(arr)
        ]

    def trace(self, ids: IdsLike) -> dict[str, np.ndarray]:
        """Every intermediate activation of one forward pass by name, float32 NumPy
        arrays, from the reference path (``rust/src/reference``, whatever the backend).

        For one sequence of T ids the shapes are those below without B; for a batch (B, T)
        they start with B. l is the block, C ``d_model``, H heads, K key/value heads,
        D = C / H, F ``d_ff``, V the vocabulary:

        - ``embed.token`` (T, C), ``embed.position`` (T, C; learned positions only)
        - ``blocks.l.x`` (T, C): the residual stream entering block l
        - ``blocks.l.norm1`` (T, C) with ``.mean`` (layer norm only) and ``.rstd`` (T)
        - ``blocks.l.q`` (T, H, D), ``.k``, ``.v`` (T, K, D); with RoPE also ``.q_lin``,
          ``.k_lin``, the projections before the rotation
        - ``blocks.l.att_scores`` (H, T, T): q k^T / sqrt(D) before the causal mask;
          ``blocks.l.att`` (H, T, T): the probabilities, zero above the diagonal
        - ``blocks.l.y`` (T, C): the heads' outputs side by side; ``.attn_out`` = y W_o + b_o;
          ``.x_mid`` = x + attn_out
        - ``blocks.l.norm2`` (with ``.mean``, ``.rstd``), ``.gate`` (gated activations only),
          ``.up``, ``.hidden`` (T, F), ``.ff_out`` (T, C)
        - ``x_final``, ``norm_f`` (with ``.mean``, ``.rstd``), ``logits`` (T, V) and
          ``probs`` (T, V), the softmax of the logits

        T may not exceed ``config.max_seq_len``.
        """
        return {step.name: step.value for step in self.trace_steps(ids)}

    def attention(self, ids: IdsLike) -> np.ndarray:
        """The attention probabilities of every layer and head, from the reference path:
        (L, H, T, T) for one sequence of T ids, (B, L, H, T, T) for a batch. Row t is how
        much position t attends to each position s <= t: it sums to 1 and is zero above
        the diagonal."""
        arr, was_1d = as_ids(ids)
        traced = dict((name, value) for name, value, *_ in self._core.trace(arr))
        att = np.stack(
            [traced[f"blocks.{layer}.att"] for layer in range(self._config.n_layers)], axis=1
        )
        return att[0] if was_1d else att

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter as float32 arrays, in a fixed order. Projections are
        stored [in][out] (used as ``x @ W``), as in the Go TinyLM format."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replaces every parameter. The mapping must have exactly the names and shapes of
        :meth:`state_dict`; nothing changes if any entry is wrong."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"load_state_dict needs a mapping of name -> array, got {type(state).__name__}"
            )
        converted = {}
        for name, value in state.items():
            try:
                with np.errstate(over="ignore"):  # named below as the value it was
                    converted[name] = np.ascontiguousarray(value, dtype=np.float32)
            except (TypeError, ValueError) as exc:
                raise type(exc)(
                    f"state_dict[{name!r}] must be an array of numbers, "
                    f"got {type(value).__name__}: {exc}"
                ) from None
            _check_narrowed(f"state_dict[{name!r}]", value, converted[name])
        self._core.load_state_dict(converted)

    def score(self, text_or_ids: str | Sequence[int] | np.ndarray) -> Score:
        """How likely the model finds a text (through :attr:`tokenizer`) or a sequence of
        ids: the log-probability of each token after the first, and what follows from them.

        A sequence longer than the context is scored in windows of ``max_seq_len`` tokens
        that advance by half of it; each window scores only the tokens the previous one did
        not, so every token is predicted from at least half a context before it.
        """
        text = text_or_ids if isinstance(text_or_ids, str) else None
        if text is not None:
            ids = self._require_tokenizer().encode(text)
        else:
            ids = ids_arg("ids", text_or_ids)
        if len(ids) < 2:
            raise ValueError(
                f"scoring needs at least 2 tokens (the first is only context), got {len(ids)}"
            )
        logprobs = self._core.score(ids)
        n_chars = None
        n_bytes = None
        if text is not None:
            # The characters and bytes being predicted: all but the first token's.
            rest = self._require_tokenizer().decode(ids[1:])
            n_chars, n_bytes = len(rest), len(rest.encode("utf-8"))
        return Score(logprobs, n_chars, n_bytes)

    # ----------------------------------------------------------------------------- text

    def generate(
        self,
        ids: Sequence[int] | np.ndarray,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int | None = DEFAULT_TOP_K,
        top_p: float | None = None,
        seed: int | None = None,
        stop: int | Iterable[int] | None = None,
        *,
        min_p: float | None = None,
        repetition_penalty: float = 1.0,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        penalty_last_n: int = 64,
        logit_bias: Mapping[int, float] | None = None,
        window: str = "shift",
    ) -> list[int]:
        """Continues a sequence; returns the prompt followed by the new ids.

        The defaults are tinylm's one sampling rule (:data:`DEFAULT_TEMPERATURE`,
        :data:`DEFAULT_TOP_K`, :data:`DEFAULT_MAX_NEW_TOKENS`, the command line's too): a
        fresh sample each call unless ``seed`` is given; ``temperature=0`` is greedy and
        ``top_k=None`` keeps every id.

        Each id comes from the sampler chain, in this order: penalties over the last
        ``penalty_last_n`` ids (prompt included): ``repetition_penalty`` (CTRL's: a positive
        logit divided by it, a negative one multiplied), then ``frequency_penalty`` times
        the id's count plus ``presence_penalty`` subtracted; ``logit_bias`` ({id: bias}
        added; ``-inf`` bans an id); greedy argmax if ``temperature`` is 0; otherwise
        ``softmax(logits / temperature)`` cut to the ``top_k`` most likely ids, to the
        smallest set whose probability reaches ``top_p``, and to the ids at least ``min_p``
        times as likely as the most likely one, and a draw from what is left. The same
        ``seed`` gives the same sample.

        Generation ends after ``max_new_tokens`` ids or right after emitting an id in
        ``stop``; by default a model loaded from the Go format stops after ``END``, one loaded
        from a Hugging Face folder after its ``eos_token_id`` (:attr:`default_stop`). Past the
        context (P = ``max_seq_len``), ``window="shift"`` (the default) keeps decoding from
        the key/value cache: when it is full, the last P/2 ids are kept and re-encoded at
        positions 0..P/2, so the model sees between P/2 and P ids and a token costs about
        two cached steps; ``window="sliding"`` is nanoGPT's rule, exactly the last P ids, at
        the cost of a forward pass over them per token. Ctrl-C interrupts it within a
        fraction of a second (``KeyboardInterrupt``); :meth:`stream_ids` keeps what was
        produced until then.
        """
        prompt = ids_arg("ids", ids)
        options = self._generation_options(
            prompt,
            max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=stop,
            min_p=min_p,
            repetition_penalty=repetition_penalty,
            frequency_penalty=frequency_penalty,
            presence_penalty=presence_penalty,
            penalty_last_n=penalty_last_n,
            logit_bias=logit_bias,
            window=window,
        )
        return prompt + self._core.generate(prompt, options)

    def generate_many(
        self,
        prompts: Sequence[Sequence[int]] | Sequence[int] | np.ndarray,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        num_samples: int = 1,
        **options: object,
    ) -> list[list[int]]:
        """Many continuations side by side: ``num_samples`` for each prompt (one prompt of
        ids, or a list of them), decoded as a batch that reads the weights once per step for
        all sequences. Returns prompt + new ids per sequence, prompt by prompt; sample j of
        prompt i uses the seed ``seed + i * num_samples + j``, so it is what
        :meth:`generate` gives with that seed. Other keyword arguments are
        :meth:`generate`'s. In a batch of more than one sequence each prompt must fit in
        the context (``config.max_seq_len`` ids); a longer one is a ``ValueError``.
        """
        if isinstance(prompts, np.ndarray) and prompts.ndim == 2:
            prompt_list = [ids_arg(f"prompts[{i}]", row) for i, row in enumerate(prompts)]
        elif (
            isinstance(prompts, (list, tuple))
            and prompts
            and all(isinstance(p, (list, tuple, np.ndarray, range)) for p in prompts)
        ):
            prompt_list = [ids_arg(f"prompts[{i}]", p) for i, p in enumerate(prompts)]
        else:
            prompt_list = [ids_arg("prompts", prompts)]
        if not prompt_list:
            raise ValueError("prompts holds no prompt: give at least one")
        samples = int_arg("num_samples", num_samples, 1, 4096)
        if len(prompt_list) * samples > 4096:
            raise ValueError(
                f"{len(prompt_list)} prompts x {samples} samples is more than 4096 sequences"
            )
        checked = self._generation_options(prompt_list[0], max_new_tokens, **options)
        new = self._core.generate_many(prompt_list, samples, checked)
        return [prompt_list[k // samples] + list(n) for k, n in enumerate(new)]

    def beam_search(
        self,
        ids: Sequence[int] | np.ndarray,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        num_beams: int = 4,
        *,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        no_repeat_ngram_size: int = 0,
        num_return_sequences: int = 1,
        stop: int | Iterable[int] | None = None,
    ) -> list[Beam]:
        """The most likely continuations by beam search, best first, with Hugging Face's
        rules (``rust/src/beam.rs`` says them in full): ``num_beams`` running beams ranked by
        the sum of their log-probabilities; a beam that emits a ``stop`` id is finished,
        scored ``sum / (new tokens) ** length_penalty``; ``early_stopping`` is ``True``
        (stop when ``num_beams`` are finished), ``False`` (stop when no running beam can
        beat them, by the current length) or ``"never"`` (by the longest possible length);
        ``no_repeat_ngram_size`` n bans repeating any n-gram (beams it leaves no token to
        follow end there). The prompt's cache is computed once and forked between beams.
        Ctrl-C stops the search within 50 ms (``KeyboardInterrupt``).
        """
        prompt = ids_arg("ids", ids)
        if not prompt:
            raise ValueError("the prompt is empty: generation needs at least one token")
        if early_stopping not in (True, False, "never"):
            raise ValueError(
                f'early_stopping must be True, False or "never", got {early_stopping!r}'
            )
        beams = int_arg("num_beams", num_beams, 1, 1024)
        found = self._core.beam_search(
            prompt,
            beams,
            int_arg("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS),
            float_arg("length_penalty", length_penalty, -math.inf, math.inf, float32=False),
            str(early_stopping).lower(),
            int_arg("no_repeat_ngram_size", no_repeat_ngram_size, 0, 2**20),
            int_arg("num_return_sequences", num_return_sequences, 1, beams),
            self._stop_ids(stop),
        )
        return [Beam(prompt + list(t), lp, score) for t, lp, score in found]

    def stream_ids(
        self,
        ids: Sequence[int] | np.ndarray,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        **options: object,
    ) -> Iterator[int]:
        """:meth:`generate`, yielding each new id as soon as it is decoded (the prompt is
        not repeated); the keyword arguments are :meth:`generate`'s. They are checked at
        once, before the first id."""
        prompt = ids_arg("ids", ids)
        checked = self._generation_options(prompt, max_new_tokens, **options)
        return _ids_of(self._core.start_generation(prompt, checked))

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        *,
        stop: str | int | Iterable[str | int] | None = None,
        **options: object,
    ) -> Iterator[str]:
        """The text generated after ``prompt``, as pieces while they are decoded (the
        prompt is not repeated; ``"".join`` of the pieces is the continuation).

        ``stop`` may hold strings, matched on the decoded text even across token
        boundaries (the text ends right after the first stop string), and ids. Other
        keyword arguments are those of :meth:`generate`.
        """
        tok = self._require_tokenizer()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        stop_texts, stop_ids = _split_stops(stop)
        prompt_ids = tok.encode(prompt)
        checked = self._generation_options(prompt_ids, max_new_tokens, stop=stop_ids, **options)
        run = self._core.start_generation(prompt_ids, checked)
        return _text_of(tok, prompt_ids, run, stop_texts)

    def generate_text(
        self, prompt: str, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, **kwargs: object
    ) -> str:
        """:meth:`generate` on text, through :attr:`tokenizer`: the prompt followed by its
        continuation. ``stop`` may hold strings (see :meth:`stream`)."""
        tok = self._require_tokenizer()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        pieces = self.stream(prompt, max_new_tokens, **kwargs)  # type: ignore[arg-type]
        return tok.decode(tok.encode(prompt)) + "".join(pieces)

    def _generation_options(
        self, prompt: list[int], max_new_tokens: object, **options: object
    ) -> dict[str, object]:
        """:meth:`_checked_options`, once every keyword is known: a misspelled one is a
        ``TypeError`` naming it (with the option it is closest to), not one naming this
        private method."""
        known = [
            name
            for name in inspect.signature(self._checked_options).parameters
            if name not in ("prompt", "max_new_tokens")
        ]
        for name in options:
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise TypeError(
                    f"unknown generation option {name!r}{hint} (the options: {', '.join(known)})"
                )
        return self._checked_options(prompt, max_new_tokens, **options)

    def _checked_options(
        self,
        prompt: list[int],
        max_new_tokens: object,
        *,
        temperature: object = DEFAULT_TEMPERATURE,
        top_k: object = DEFAULT_TOP_K,
        top_p: object = None,
        seed: object = None,
        stop: object = None,
        min_p: object = None,
        repetition_penalty: object = 1.0,
        frequency_penalty: object = 0.0,
        presence_penalty: object = 0.0,
        penalty_last_n: object = 64,
        logit_bias: object = None,
        window: object = "shift",
    ) -> dict[str, object]:
        """The core's generation options, each checked (the one place they are)."""
        if not prompt:
            raise ValueError("the prompt is empty: generation needs at least one token")
        return {
            "max_new_tokens": int_arg("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS),
            "temperature": float_arg("temperature", temperature, 0.0, math.inf),
            "top_k": None if top_k is None else int_arg("top_k", top_k, 1, MAX_ID),
            "top_p": None if top_p is None else float_arg("top_p", top_p, 0.0, 1.0, low_open=True),
            "min_p": None if min_p is None else float_arg("min_p", min_p, 0.0, 1.0),
            "repetition_penalty": float_arg(
                "repetition_penalty", repetition_penalty, 0.0, math.inf, low_open=True
            ),
            "frequency_penalty": float_arg(
                "frequency_penalty", frequency_penalty, -math.inf, math.inf
            ),
            "presence_penalty": float_arg(
                "presence_penalty", presence_penalty, -math.inf, math.inf
            ),
            "penalty_last_n": int_arg("penalty_last_n", penalty_last_n, 0, 2**20),
            "logit_bias": self._logit_bias(logit_bias),
            "seed": _seed(seed),  # type: ignore[arg-type]
            "stop": self._stop_ids(stop),
            "window": _window(window),
        }

    def _logit_bias(self, bias: object) -> dict[int, float]:
        if bias is None:
            return {}
        if not isinstance(bias, Mapping):
            raise TypeError(f"logit_bias must be a dict of id -> bias, got {type(bias).__name__}")
        out = {}
        for key, value in bias.items():
            (token,) = ids_arg("logit_bias", [key])
            if token >= self._config.vocab_size:
                raise ValueError(
                    f"logit_bias: id {token} is out of range for vocab_size "
                    f"{self._config.vocab_size}"
                )
            if not isinstance(value, (int, float, np.integer, np.floating)) or isinstance(
                value, bool
            ):
                raise TypeError(f"logit_bias[{token}] must be a number, got {value!r}")
            number = float(value)
            if math.isnan(number) or number == math.inf:
                raise ValueError(f"logit_bias[{token}] must be finite or -inf, got {number}")
            with np.errstate(over="ignore"):
                narrowed = float(np.float32(number))  # what the core keeps
            if narrowed == math.inf:
                raise ValueError(
                    f"logit_bias[{token}] must be finite or -inf in float32, got {number} "
                    "(inf in float32)"
                )
            out[token] = number
        return out

    def _stop_ids(self, stop: object) -> list[int]:
        if stop is None:
            if self.default_stop:
                return list(self.default_stop)
            if (
                self.source_format == "go-json"
                and self.tokenizer is not None
                and GO_END_TOKEN in self.tokenizer.vocab
            ):
                return [self.tokenizer.vocab.index(GO_END_TOKEN)]
            return []
        if isinstance(stop, (int, np.integer)) and not isinstance(stop, bool):
            return ids_arg("stop", [stop])
        if isinstance(stop, str):
            raise TypeError(
                "stop strings are matched on text: use generate_text() or stream(); "
                "generate() takes stop ids"
            )
        return ids_arg("stop", list(stop) if isinstance(stop, (set, frozenset)) else stop)

    def _require_tokenizer(self) -> Tokenizer:
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass token ids instead of text")
        return self.tokenizer


#: (max ids, seconds) per core call of a stream: it hands over ids at least every 20 ms,
#: and Python sees Ctrl-C between calls.
_STREAM_CHUNK = (64, 0.02)
#: The most new ids one call may ask for.
MAX_NEW_TOKENS = 2**48


def _ids_of(run: _core.Generation) -> Iterator[int]:
    """The ids of a core generation, one chunk per core call."""
    while True:
        ids = run.next_chunk(*_STREAM_CHUNK)
        if not ids:
            return
        yield from ids


def _split_stops(stop: object) -> tuple[list[str], list[int] | None]:
    """Stop strings and stop ids (None: the model's default) from ``stop``."""
    if stop is None:
        return [], None
    items = [stop] if isinstance(stop, (str, int, np.integer)) else list(stop)  # type: ignore[call-overload]
    texts = [s for s in items if isinstance(s, str)]
    if any(s == "" for s in texts):
        raise ValueError("stop strings must not be empty")
    ids = [s for s in items if not isinstance(s, str)]
    return texts, ids_arg("stop", ids)


def _text_of(
    tok: Tokenizer, prompt_ids: list[int], run: _core.Generation, stops: list[str]
) -> Iterator[str]:
    """Text pieces of a generation, one per core chunk, cut right after a stop string.

    A byte-level BPE tokenizer's stream decoder holds back the bytes of a character cut
    between tokens until it is whole. For word and character tokenizers each chunk is
    decoded with the token before it, and that token's own text taken off the front, so
    word spacing comes out as in one decode of the whole sequence.
    """
    if tok.kind == "bpe":
        decoder = tok.decoder()

        def decode(ids: list[int]) -> str:
            return "".join(decoder.push(i) for i in ids)

    else:
        context = prompt_ids[-1:]

        def decode(ids: list[int]) -> str:
            nonlocal context
            piece = tok.decode(context + ids)[len(tok.decode(context)) :]
            context = ids[-1:]
            return piece

    keep = max((len(s) for s in stops), default=1) - 1
    tail = ""  # the end of the text so far, where a stop string may have begun
    while True:
        ids = run.next_chunk(*_STREAM_CHUNK)
        piece = decode(ids) if ids else (decoder.finish() if tok.kind == "bpe" else "")
        if stops and piece:
            window = tail + piece
            ends = [window.find(s) + len(s) for s in stops if s in window]
            if ends:
                yield piece[: min(ends) - len(tail)]
                return
            tail = window[-keep:] if keep else ""
        if piece:
            yield piece
        if not ids:
            return


def _window(window: object) -> str:
    if window not in ("shift", "sliding"):
        raise ValueError(f'window must be "shift" or "sliding", got {window!r}')
    return window  # type: ignore[return-value]


def _seed(seed: int | None) -> int:
    """A 64-bit seed; ``None`` draws a fresh one."""
    if seed is None:
        return secrets.randbits(64)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed) % (1 << 64)


def _check_narrowed(name: str, given: object, narrowed: np.ndarray) -> None:
    """A ValueError if a finite value of ``given`` became infinite as float32 (1e39 in a
    float64 array): said as itself, not as the infinity the core would see."""
    if np.isfinite(narrowed).all():
        return
    with np.errstate(over="ignore", invalid="ignore"):
        source = np.asarray(given)
        if not np.issubdtype(source.dtype, np.number):
            return
        overflowed = np.isfinite(source).reshape(-1) & ~np.isfinite(narrowed).reshape(-1)
    if overflowed.any():
        index = int(np.argmax(overflowed))
        raise ValueError(
            f"{name} holds {float(source.reshape(-1)[index]):g} at flat index {index}, beyond "
            f"float32's range (largest {float(np.finfo(np.float32).max):.4g})"
        )
