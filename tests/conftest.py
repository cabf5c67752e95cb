"""Shared fixtures: the Go seed file, random models, small corpora."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinylm

sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("TINYLM_SHARED", REPO.parent / "shared"))
SEED_WEIGHTS = SHARED / "seed" / "tiny_gpt_weights.json"
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"


def default_sigint() -> None:
    """For ``Popen(preexec_fn=default_sigint)``: Ctrl-C's default action in the child, as at
    a terminal. A suite started in the background by a script (``pytest ... &``) inherits
    SIGINT ignored, and a Python child then keeps ignoring it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def seed_path() -> Path:
    if not SEED_WEIGHTS.exists():
        pytest.skip(
            f"the Go TinyLM's seed weights are not at {SEED_WEIGHTS}: ../shared is absent "
            "(see the README, 'Test data')"
        )
    return SEED_WEIGHTS


@pytest.fixture
def shakespeare_path() -> Path:
    if not SHAKESPEARE.exists():
        pytest.skip(
            f"the Tiny Shakespeare corpus is not at {SHAKESPEARE}: ../shared is absent (see the "
            "README, 'Test data', for its URL)"
        )
    return SHAKESPEARE


@pytest.fixture(scope="session")
def assets() -> Path:
    """tiktoken-rs's assets/ folder; `cargo metadata` fetches the crate from crates.io."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.skip("cargo is missing: OpenAI's vocabulary files come from the tiktoken-rs crate")
    out = subprocess.run(
        [cargo, "metadata", "--format-version", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    for package in json.loads(out.stdout)["packages"]:
        if package["name"] == "tiktoken-rs":
            return Path(package["manifest_path"]).parent / "assets"
    raise AssertionError("tiktoken-rs is not among the dev-dependencies in Cargo.toml")


#: The bundled Go TinyLM model's shape (weights/tiny_gpt_weights.json): d_model 4, one
#: block, two heads, d_ff 4, six positions, nine words, no attention biases, untied head.
GO_CONFIG = tinylm.Config(
    vocab_size=9,
    d_model=4,
    n_layers=1,
    n_heads=2,
    d_ff=4,
    max_seq_len=6,
    attn_bias=False,
    tie_embeddings=False,
)


def randomize(model: tinylm.Transformer, seed: int, scale: float = 0.5) -> dict[str, np.ndarray]:
    """Gives every parameter (biases and norms too) random values; returns them."""
    rng = np.random.default_rng(seed)
    state = {
        name: (rng.standard_normal(v.shape) * scale).astype(np.float32)
        for name, v in model.state_dict().items()
    }
    model.load_state_dict(state)
    return state


def random_model(config: tinylm.Config, seed: int = 0, scale: float = 0.5) -> tinylm.Transformer:
    model = tinylm.Transformer(config, seed=seed)
    randomize(model, seed, scale)
    return model
