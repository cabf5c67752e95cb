"""`tinylm explain` and `tinylm attention`, run as a user runs them (a subprocess), on the
bundled models and on a tiny trained BPE model; the numbers explain prints against the
float64 reference of tests/reference.py."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import reference
import tinylm

REPO = Path(__file__).resolve().parent.parent
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small BPE model trained for a few steps on a made-up text."""
    words = "the cat sat on the mat while a big dog ate the cake and the bird sang".split()
    rng = np.random.default_rng(0)
    text = " ".join(words[i] for i in rng.integers(0, len(words), size=3000))
    tok = tinylm.Tokenizer.bpe(text, 280)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=16, n_layers=2, n_heads=2, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=0)
    model.tokenizer = tok
    data = np.array(tok.encode(text))
    model, _ = tinylm.train(
        model,
        data,
        None,
        tinylm.TrainConfig(steps=20, batch_size=4, warmup_steps=2),
        progress=False,
    )
    path = tmp_path_factory.mktemp("bpe") / "bpe.safetensors"
    model.save(path)
    return path


def _demo() -> tuple[tinylm.Transformer, dict[str, np.ndarray]]:
    model = tinylm.Transformer.from_bundled("tiny")
    ids = np.array([model.tokenizer.encode("the cat")])  # type: ignore[union-attr]
    return model, reference.trace(model.state_dict(), model.config, ids)


def test_explain_walks_through_every_step_with_shapes_and_sources(tmp_path: Path) -> None:
    out = run("explain", cwd=tmp_path).stdout
    for title in (
        "Token ids",
        "Token embedding",
        "Position embedding",
        "Layer norm 1",
        "Queries, keys and values, per head",
        "Attention scores",
        "Causal mask",
        "Softmax of each row",
        "Residual connection",
        "Layer norm 2",
        "Feed-forward",
        "Final layer norm",
        "Logits",
        "Next-token probabilities",
    ):
        assert title in out, title
    assert "blocks.0.att_scores      (H, T, T) = (2 x 2 x 2)" in out
    assert "logits                   (T, V) = (2 x 9)" in out
    sources = re.findall(r"(rust/src/reference/\w+\.rs): (\w+)", out)
    assert len(set(sources)) >= 8
    for file, function in sources:
        assert re.search(rf"\bfn {function}\b", (REPO / file).read_text()), (file, function)


def test_explain_prints_the_numbers_of_the_float64_reference(tmp_path: Path) -> None:
    out = run("explain", "--prompt", "the cat", cwd=tmp_path).stdout
    model, expected = _demo()
    vocab = model.tokenizer.vocab  # type: ignore[union-attr]
    # The next-token table: token, probability.
    section = out.split("Next-token probabilities")[1]
    shown = dict(re.findall(r"^    (\w+)\s+(\d\.\d{4})", section, flags=re.M))
    assert set(shown) == set(vocab)
    for i, word in enumerate(vocab):
        assert float(shown[word]) == pytest.approx(expected["probs"][0, -1, i], abs=6e-5), word
    # The embedding rows, the residual stream and the logits, whole.
    for title, name in (
        ("Token embedding", "embed.token"),
        ("Residual stream into block 0", "blocks.0.x"),
        ("Logits", "logits"),
    ):
        block = out.split(title)[1]
        for t, word in enumerate(("the", "cat")):
            row = re.search(rf"^    {word}\s+(.*)$", block, flags=re.M)
            assert row is not None, (title, word)
            numbers = [float(x) for x in row.group(1).split()]
            np.testing.assert_allclose(numbers, expected[name][0, t], atol=6e-5, err_msg=title)
    # The attention probabilities of head 1, row "cat".
    block = out.split("Softmax of each row")[1].split("head 1 probabilities")[1]
    row = re.search(r"^      cat\s+(.*)$", block, flags=re.M)
    assert row is not None
    np.testing.assert_allclose(
        [float(x) for x in row.group(1).split()], expected["blocks.0.att"][0, 1, 1], atol=6e-5
    )
    # The masked scores show -inf above the diagonal.
    masked = out.split("Causal mask")[1].split("Softmax")[0]
    assert re.search(r"^      the\s+-?\d\.\d{4}\s+-inf$", masked, flags=re.M)


def test_explain_columns_line_up(tmp_path: Path) -> None:
    out = run("explain", cwd=tmp_path).stdout
    block = out.split("Logits")[1].split("\n\n")[0].splitlines()
    table = [line for line in block if re.match(r"^    (\s{3}|the|cat)\s", line)]
    assert len(table) == 3  # header and two rows
    assert len({len(line) for line in table}) == 1


def test_explain_on_a_bigger_model_prints_summaries_not_matrices(tmp_path: Path) -> None:
    prompt = "ROMEO: But soft, what light through yonder window breaks?"
    out = run("explain", "--weights", "shakespeare", "--prompt", prompt, cwd=tmp_path).stdout
    lines = out.splitlines()
    assert "shown as summaries" in out
    assert f"(T, C) = ({len(prompt)} x 128)" in out
    assert len(lines) < 1500
    assert max(len(line) for line in lines[1:]) <= 110  # the first line quotes the prompt
    # No row of 128 numbers: at most a dozen numbers on any line.
    assert max(len(re.findall(r"-?\d+\.\d+", line)) for line in lines) <= 12
    assert "largest |entries|" in out and f"({len(prompt) - 8} rows)" in out
    assert "the most likely next token is" in out


def test_explain_summary_can_be_asked_for_on_a_small_model(tmp_path: Path) -> None:
    out = run("explain", "--matrices", "summary", cwd=tmp_path).stdout
    assert "shown as summaries" in out and "largest |entries|" in out


def test_explain_and_attention_on_a_bpe_model(tmp_path: Path, bpe_model: Path) -> None:
    prompt = "the big cat ate"
    out = run("explain", "--weights", str(bpe_model), "--prompt", prompt, cwd=tmp_path).stdout
    tok = tinylm.Transformer.load(bpe_model).tokenizer
    ids = tok.encode(prompt)  # type: ignore[union-attr]
    assert "tokenizer: bpe level" in out
    assert f"prompt: T = {len(ids)} tokens" in out
    assert "␣ate" in out  # a BPE token with its leading space shown
    png = tmp_path / "bpe.png"
    run(
        "attention",
        "--weights",
        str(bpe_model),
        "--prompt",
        prompt,
        "--out",
        str(png),
        cwd=tmp_path,
    )
    assert png.read_bytes().startswith(PNG_MAGIC) and png.stat().st_size > 10_000


def test_attention_writes_a_heat_map_of_every_layer_and_head(tmp_path: Path) -> None:
    png = tmp_path / "att.png"
    out = run(
        "attention",
        "--weights",
        "shakespeare",
        "--prompt",
        "ROMEO:",
        "--out",
        str(png),
        cwd=tmp_path,
    ).stdout
    assert "4 layers x 4 heads" in out
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 20_000
    default = run("attention", cwd=tmp_path).stdout
    assert "attention.png" in default and (tmp_path / "attention.png").stat().st_size > 5_000


def test_a_prompt_longer_than_the_context_is_a_clear_error(tmp_path: Path) -> None:
    for command in ("explain", "attention"):
        proc = run(command, "--prompt", "the cat sat on mat the cat", cwd=tmp_path, check=False)
        assert proc.returncode == 2
        assert "7 tokens long, more than the model's context of 6" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_an_unknown_word_or_character_is_a_clear_error(tmp_path: Path) -> None:
    proc = run("explain", "--prompt", "the zebra", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "word not in vocabulary: zebra" in proc.stderr
    proc = run(
        "attention", "--weights", "shakespeare", "--prompt", "café", cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "'é'" in proc.stderr and "not in the vocabulary" in proc.stderr
    proc = run("explain", "--prompt", "", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "the prompt is empty" in proc.stderr


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": "world"}')
    for command in ("explain", "attention"):
        proc = run(command, "--weights", str(bad), cwd=tmp_path, check=False)
        assert proc.returncode == 2
        assert "notes.json" in proc.stderr and "Traceback" not in proc.stderr
    missing = run(
        "explain", "--weights", str(tmp_path / "none.safetensors"), cwd=tmp_path, check=False
    )
    assert missing.returncode == 2 and "no such file" in missing.stderr
