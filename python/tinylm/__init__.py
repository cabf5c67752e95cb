"""tinylm: a tiny GPT-style language model from first principles.

A Rust core (tensor kernels, forward and hand-written backward passes, AdamW) with this
thin Python facade::

    import tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    print(model.generate_text("ROMEO:", max_new_tokens=200, temperature=0.8, seed=1))
"""

from tinylm._core import (
    ConfigError,
    FormatError,
    NonFiniteError,
    ShapeError,
    TinyLMError,
    TokenizerError,
    __version__,
    get_num_threads,
    set_num_threads,
)
from tinylm.gradient_check import GradCheck, TensorCheck, gradcheck
from tinylm.model import Beam, Config, Score, StepStats, TraceStep, Transformer, bundled_weights
from tinylm.optim import AdamW
from tinylm.tokenizer import Tokenizer
from tinylm.train import (
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
    evaluate,
    get_batch,
    train,
)

__all__ = [
    "AdamW",
    "Beam",
    "Config",
    "ConfigError",
    "FormatError",
    "GradCheck",
    "NonFiniteError",
    "Score",
    "ShapeError",
    "StepStats",
    "TensorCheck",
    "TinyLMError",
    "Tokenizer",
    "TokenizerError",
    "TraceStep",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "Transformer",
    "__version__",
    "bundled_weights",
    "evaluate",
    "get_batch",
    "get_num_threads",
    "gradcheck",
    "set_num_threads",
    "train",
]
