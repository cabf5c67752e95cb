"""Type stubs for the Rust extension module ``tinylm._core``."""

from collections.abc import Mapping
from os import PathLike
from typing import Literal

import numpy as np
import numpy.typing as npt

__version__: str

class TinyLMError(Exception):
    """Base class of tinylm's errors."""

class ConfigError(TinyLMError, ValueError):
    """An invalid model configuration."""

class ShapeError(TinyLMError, ValueError):
    """A tensor or array of the wrong shape."""

class FormatError(TinyLMError, ValueError):
    """A malformed weights, checkpoint or tokenizer file."""

class TokenizerError(TinyLMError, ValueError):
    """Text that cannot be encoded or ids that cannot be decoded."""

class NonFiniteError(TinyLMError, ValueError):
    """NaN or infinite numbers where finite ones are needed."""

_Path = str | PathLike[str]
_Ids = npt.NDArray[np.int64]

class Tokenizer:
    @staticmethod
    def word_level(vocab: list[str]) -> Tokenizer: ...
    @staticmethod
    def char_level(text: str) -> Tokenizer: ...
    @staticmethod
    def from_json(json: str) -> Tokenizer: ...
    def to_json(self) -> str: ...
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def vocab(self) -> list[str]: ...
    @property
    def kind(self) -> Literal["word", "char"]: ...

class AdamW:
    def __init__(
        self,
        model: Model,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None: ...
    @property
    def step(self) -> int: ...
    @property
    def hyperparameters(self) -> tuple[float, float, float, float]: ...

class Model:
    def __init__(self, config_json: str, seed: int, backend: str = "fast") -> None: ...
    @staticmethod
    def load(
        path: _Path, backend: str = "fast"
    ) -> tuple[Model, Tokenizer | None, Literal["safetensors", "go-json"]]: ...
    def save(self, path: _Path, tokenizer: Tokenizer | None, format: str) -> None: ...
    def save_checkpoint(
        self,
        path: _Path,
        optimizer: AdamW,
        tokenizer: Tokenizer | None,
        metadata: Mapping[str, str],
    ) -> None: ...
    @staticmethod
    def load_checkpoint(
        path: _Path, backend: str = "fast"
    ) -> tuple[Model, AdamW, Tokenizer | None, dict[str, str]]: ...
    def config_json(self) -> str: ...
    def backend(self) -> Literal["fast", "reference"]: ...
    def num_parameters(self) -> int: ...
    def logits(self, ids: _Ids) -> npt.NDArray[np.float32]: ...
    def loss(self, inputs: _Ids, targets: _Ids) -> float: ...
    def gradients(
        self, inputs: _Ids, targets: _Ids
    ) -> tuple[float, list[tuple[str, npt.NDArray[np.float32]]]]: ...
    def train_step(
        self,
        optimizer: AdamW,
        inputs: _Ids,
        targets: _Ids,
        lr: float,
        grad_clip: float | None = None,
    ) -> tuple[float, float]: ...
    def sgd_step(self, inputs: _Ids, targets: _Ids, lr: float) -> float: ...
    def start_generation(
        self,
        prompt: list[int],
        max_new_tokens: int,
        temperature: float = 0.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        stop: list[int] = ...,
    ) -> Generation: ...
    def state_dict(self) -> list[tuple[str, npt.NDArray[np.float32]]]: ...
    def load_state_dict(self, state: Mapping[str, npt.NDArray[np.float32]]) -> None: ...

class Generation:
    """A generation under way; each call produces the next ids (empty when done)."""

    def next_chunk(self, max_ids: int, budget_seconds: float) -> list[int]: ...
    @property
    def done(self) -> bool: ...

def set_num_threads(n: int) -> None: ...
def get_num_threads() -> int: ...
def detect_format(path: _Path) -> Literal["safetensors", "go-json"]: ...
def matmul(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
def time_matmul(m: int, k: int, n: int, iters: int, transpose_a: bool = False) -> float: ...
def _panic_for_tests(message: str) -> None: ...
