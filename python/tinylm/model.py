"""The model: a configuration and a GPT-style transformer whose arithmetic runs in Rust.

>>> from tinylm import Config, Transformer
>>> model = Transformer(Config(vocab_size=65, d_model=64, n_layers=2, n_heads=4), seed=0)
>>> model.logits([[1, 2, 3]]).shape
(1, 3, 65)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Union

import numpy as np

from tinylm import _core
from tinylm._checks import MAX_ID, float_arg, ids_arg, int_arg
from tinylm.tokenizer import Tokenizer

IdsLike = Union[Sequence[int], Sequence[Sequence[int]], np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]

#: Models shipped in the package, by short name.
BUNDLED_MODELS = {
    "shakespeare": "shakespeare_char.safetensors",
    "tiny": "tiny_gpt_weights.json",
}

#: The Go TinyLM's end-of-sentence word: generation from a Go-format model stops after it.
GO_END_TOKEN = "END"


@dataclass(frozen=True)
class Config:
    """Hyper-parameters of the transformer.

    Defaults are nanoGPT's CPU Shakespeare model (GPT-2 style: attention biases, tied output
    head, ``d_ff = 4 * d_model``). The Go TinyLM format has ``attn_bias=False`` and
    ``tie_embeddings=False``. :meth:`llama` gives Llama's block (RMSNorm, RoPE, SwiGLU, no
    biases, untied head); the fast backend runs GPT-2 style blocks only, for now, so a model
    with other options needs ``backend="reference"``.
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
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", 4 * self.d_model)
        _check_positive_int("d_ff", self.d_ff)
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
        if self.n_kv_heads is not None:
            _check_positive_int("n_kv_heads", self.n_kv_heads)

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


def _backend(backend: object) -> str:
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    return backend


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
        """``backend`` is ``"fast"`` (blocked, threaded kernels; GPT-2 style blocks only)
        or ``"reference"`` (the plain implementation in ``rust/src/reference/``, every
        option, slow)."""
        if not isinstance(config, Config):
            raise TypeError(f"config must be a tinylm.Config, got {type(config).__name__}")
        self._core = _core.Model(config.to_json(), _seed(seed), _backend(backend))
        self._config = config
        self.tokenizer = tokenizer
        #: The format the model was loaded from ("safetensors", "go-json"), or None.
        self.source_format: str | None = None

    @classmethod
    def _from_core(
        cls, core: _core.Model, tokenizer: Tokenizer | None, source_format: str | None
    ) -> Transformer:
        self = cls.__new__(cls)
        self._core = core
        self._config = Config.from_json(core.config_json())
        self.tokenizer = tokenizer
        self.source_format = source_format
        return self

    # ----------------------------------------------------------------------------- files

    @classmethod
    def load(cls, path: PathLike, *, backend: str = "fast") -> Transformer:
        """Loads a model file; the format (tinylm safetensors or Go TinyLM JSON) is
        detected from the file's contents. ``backend`` as in :class:`Transformer`."""
        core, tok, fmt = _core.Model.load(os.fspath(path), _backend(backend))
        return cls._from_core(core, Tokenizer(tok) if tok is not None else None, fmt)

    @classmethod
    def from_bundled(cls, name: str = "shakespeare") -> Transformer:
        """Loads a model shipped with tinylm (see :func:`bundled_weights`)."""
        return cls.load(bundled_weights(name))

    def save(self, path: PathLike, format: str | None = None) -> None:
        """Saves atomically. ``format`` is ``"safetensors"`` (tinylm's format: weights,
        config and tokenizer in one file) or ``"go-json"`` (the Go TinyLM format); by
        default a ``.json`` name means go-json and anything else safetensors."""
        path = os.fspath(path)
        if format is None:
            format = "go-json" if path.lower().endswith(".json") else "safetensors"
        core_tok = self.tokenizer._core if self.tokenizer is not None else None
        self._core.save(path, core_tok, format)

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
    def num_parameters(self) -> int:
        """Number of scalar parameters (a tied head counts once)."""
        return self._core.num_parameters()

    def __repr__(self) -> str:
        c = self._config
        return (
            f"Transformer(vocab_size={c.vocab_size}, d_model={c.d_model}, "
            f"n_layers={c.n_layers}, n_heads={c.n_heads}, d_ff={c.d_ff}, "
            f"max_seq_len={c.max_seq_len}, parameters={self.num_parameters:,})"
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

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter as float32 arrays, in a fixed order. Projections are
        stored [in][out] (used as ``x @ W``), as in the Go TinyLM format."""
        return dict(self._core.state_dict())

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> None:
        """Replaces every parameter. The mapping must have exactly the names and shapes of
        :meth:`state_dict`; nothing changes if any entry is wrong."""
        converted = {
            name: np.ascontiguousarray(value, dtype=np.float32) for name, value in state.items()
        }
        self._core.load_state_dict(converted)

    # ----------------------------------------------------------------------------- text

    def generate(
        self,
        ids: Sequence[int] | np.ndarray,
        max_new_tokens: int = 100,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: int | Iterable[int] | None = None,
    ) -> list[int]:
        """Continues a sequence; returns the prompt followed by the new ids.

        ``temperature=0`` is greedy (argmax); above 0 the next id is sampled from
        ``softmax(logits / temperature)``, restricted to the ``top_k`` most likely ids and/or
        to the smallest set whose probability reaches ``top_p``. The same ``seed`` gives the
        same sample. Generation ends after ``max_new_tokens`` ids or right after emitting an
        id in ``stop``; a model loaded from the Go format stops after ``END`` by default.
        Past the context the model sees the last ``max_seq_len`` ids. Ctrl-C interrupts it
        within a fraction of a second (``KeyboardInterrupt``); :meth:`stream_ids` keeps what
        was produced until then.
        """
        prompt = ids_arg("ids", ids)
        run = self._start(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
        return prompt + list(_ids_of(run, _GENERATE_CHUNK))

    def stream_ids(
        self,
        ids: Sequence[int] | np.ndarray,
        max_new_tokens: int = 100,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: int | Iterable[int] | None = None,
    ) -> Iterator[int]:
        """:meth:`generate`, yielding each new id as soon as it is decoded (the prompt is
        not repeated). Arguments are checked at once, before the first id."""
        prompt = ids_arg("ids", ids)
        run = self._start(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop)
        return _ids_of(run, _STREAM_CHUNK)

    def stream(
        self,
        prompt: str,
        max_new_tokens: int = 100,
        *,
        stop: str | int | Iterable[str | int] | None = None,
        **sampling: object,
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
        run = self._start(
            prompt_ids,
            max_new_tokens,
            sampling.pop("temperature", 0.0),  # type: ignore[arg-type]
            sampling.pop("top_k", None),  # type: ignore[arg-type]
            sampling.pop("top_p", None),  # type: ignore[arg-type]
            sampling.pop("seed", None),  # type: ignore[arg-type]
            stop_ids,
        )
        if sampling:
            raise TypeError(f"unexpected keyword argument {next(iter(sampling))!r}")
        return _text_of(tok, prompt_ids, run, stop_texts)

    def generate_text(self, prompt: str, max_new_tokens: int = 100, **kwargs: object) -> str:
        """:meth:`generate` on text, through :attr:`tokenizer`: the prompt followed by its
        continuation. ``stop`` may hold strings (see :meth:`stream`)."""
        tok = self._require_tokenizer()
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        pieces = self.stream(prompt, max_new_tokens, **kwargs)  # type: ignore[arg-type]
        return tok.decode(tok.encode(prompt)) + "".join(pieces)

    def _start(
        self,
        prompt: list[int],
        max_new_tokens: object,
        temperature: object,
        top_k: object,
        top_p: object,
        seed: object,
        stop: object,
    ) -> _core.Generation:
        """Checks every argument, then starts a generation in the core."""
        if not prompt:
            raise ValueError("the prompt is empty: generation needs at least one token")
        return self._core.start_generation(
            prompt,
            int_arg("max_new_tokens", max_new_tokens, 0, MAX_NEW_TOKENS),
            float_arg("temperature", temperature, 0.0, math.inf),
            None if top_k is None else int_arg("top_k", top_k, 1, MAX_ID),
            None if top_p is None else float_arg("top_p", top_p, 0.0, 1.0, low_open=True),
            _seed(seed),  # type: ignore[arg-type]
            self._stop_ids(stop),
        )

    def _stop_ids(self, stop: object) -> list[int]:
        if stop is None:
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


#: (max ids, seconds) per core call: generate() returns to Python (so that Ctrl-C is seen)
#: at least every 50 ms; a stream hands over ids at least every 20 ms.
_GENERATE_CHUNK = (4096, 0.05)
_STREAM_CHUNK = (64, 0.02)
#: The most new ids one call may ask for.
MAX_NEW_TOKENS = 2**48


def _ids_of(run: _core.Generation, chunk: tuple[int, float]) -> Iterator[int]:
    """The ids of a core generation, one chunk per core call."""
    max_ids, seconds = chunk
    while True:
        ids = run.next_chunk(max_ids, seconds)
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

    Each chunk is decoded together with the token before it, and the text of that token
    alone is taken off the front, so word spacing and (for byte-level tokenizers) pieces of
    characters come out as in one decode of the whole sequence.
    """
    context = prompt_ids[-1:]
    context_text = tok.decode(context)
    keep = max((len(s) for s in stops), default=1) - 1
    tail = ""  # the end of the text so far, where a stop string may have begun
    while True:
        ids = run.next_chunk(*_STREAM_CHUNK)
        if not ids:
            return
        piece = tok.decode(context + ids)[len(context_text) :]
        context = ids[-1:]
        context_text = tok.decode(context)
        if stops:
            window = tail + piece
            ends = [window.find(s) + len(s) for s in stops if s in window]
            if ends:
                yield piece[: min(ends) - len(tail)]
                return
            tail = window[-keep:] if keep else ""
        yield piece


def _seed(seed: int | None) -> int:
    """A 64-bit seed; ``None`` draws a fresh one."""
    if seed is None:
        return secrets.randbits(64)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return int(seed) % (1 << 64)
