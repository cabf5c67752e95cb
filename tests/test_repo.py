"""The repository keeps its promises: CI runs the README's test command, and the bundled
models are where the package finds them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import tinylm

REPO = Path(__file__).resolve().parent.parent


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci_lines = (REPO / ".ci" / "run").read_text().strip().splitlines()
    command = ci_lines[-1]
    assert command.startswith("python3 -m venv")
    readme = (REPO / "README.md").read_text()
    assert f"```bash\n{command}\n```" in readme


def test_bundled_models_are_found_and_load() -> None:
    for name in ("shakespeare", "shakespeare-bpe", "tiny"):
        path = tinylm.bundled_weights(name)
        assert path.is_file()
        model = tinylm.Transformer.load(path)
        assert model.tokenizer is not None
    assert tinylm.Transformer.from_bundled("tiny").source_format == "go-json"


def test_bundled_shakespeare_model_reaches_the_promised_validation_loss(shakespeare_path) -> None:
    """The README's number: validation loss <= 1.88 (nanoGPT's, for this configuration) on
    the last 10% of the corpus, the split `python -m tinylm train` holds out."""
    from tinylm.train import evaluate

    model = tinylm.Transformer.from_bundled("shakespeare")
    ids = np.asarray(model.tokenizer.encode(shakespeare_path.read_text("utf-8")))
    val = ids[int(len(ids) * 0.9) :]
    assert len(val) == 111_540
    assert evaluate(model, val) <= 1.88


def test_bundled_bpe_model_has_fewer_bits_per_character_than_the_character_model(
    shakespeare_path,
) -> None:
    """The README's table: bits per character of both bundled Shakespeare models on the
    validation split (the last 10% of the characters, which both runs held out)."""
    text = shakespeare_path.read_text("utf-8")
    val = text[int(len(text) * 0.9) :]
    char = tinylm.Transformer.from_bundled("shakespeare").score(val).bits_per_char
    bpe = tinylm.Transformer.from_bundled("shakespeare-bpe")
    assert bpe.tokenizer is not None and bpe.tokenizer.kind == "bpe"
    assert bpe.tokenizer.vocab_size == 1024
    assert abs(char - 2.666) < 1e-3
    assert abs(bpe.score(val).bits_per_char - 2.312) < 1e-3
