"""Helpers shared by the interop tests: models of every preset."""

from __future__ import annotations

import numpy as np

import tinylm
from conftest import randomize

#: Text to train a small byte-level BPE on.
BPE_TEXT = "the quick brown fox jumps over the lazy dog; " * 20 + "ROMEO: wherefore art thou?\n"


def model_of(config: tinylm.Config, seed: int = 0, scale: float = 0.3) -> tinylm.Transformer:
    """A model whose every parameter is random (norms around 1), so that no tensor can be
    dropped or mixed up without changing the logits."""
    model = tinylm.Transformer(config, seed=seed)
    state = randomize(model, seed, scale)
    for name in state:
        if ".norm" in name or name.startswith("ln_f"):
            if name.endswith(".weight"):
                state[name] = state[name] + 1.0
    model.load_state_dict(state)
    return model


def rel_err(found: np.ndarray, want: np.ndarray) -> float:
    """max |found - want| / max |want|."""
    return float(np.max(np.abs(found - want)) / np.max(np.abs(want)))


def gpt2_config(**overrides: object) -> tinylm.Config:
    fields: dict = {
        "vocab_size": 61,
        "d_model": 32,
        "n_layers": 2,
        "n_heads": 4,
        "max_seq_len": 16,
    }
    return tinylm.Config(**{**fields, **overrides})


def llama_config(**overrides: object) -> tinylm.Config:
    fields: dict = {"n_layers": 2, "n_heads": 4, "max_seq_len": 16, "n_kv_heads": 2}
    return tinylm.Config.llama(61, d_model=32, **{**fields, **overrides})
