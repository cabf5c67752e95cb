"""The command line, run as a user runs it: a subprocess, from another folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tinylm


def run(*args: str, cwd: Path, timeout: float = 300, check: bool = True):
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def test_generate_with_no_options_prints_shakespeare(tmp_path: Path) -> None:
    out = run("generate", cwd=tmp_path).stdout
    assert len(out) > 300
    words = out.split()
    assert len(words) > 40
    # A trained character model writes mostly lower-case letters and spaces.
    letters = sum(ch.isalpha() or ch.isspace() for ch in out)
    assert letters / len(out) > 0.85


def test_generate_is_reproducible_with_a_seed(tmp_path: Path) -> None:
    a = run(
        "generate", "--seed", "5", "--max-new-tokens", "80", "--prompt", "ROMEO:", cwd=tmp_path
    ).stdout
    b = run(
        "generate", "--seed", "5", "--max-new-tokens", "80", "--prompt", "ROMEO:", cwd=tmp_path
    ).stdout
    assert a == b and a.startswith("ROMEO:")


def test_generate_greedy_from_a_go_model(tmp_path: Path, seed_path: Path) -> None:
    out = run(
        "generate",
        "--weights",
        str(seed_path),
        "--prompt",
        "the cat",
        "--temperature",
        "0",
        cwd=tmp_path,
    ).stdout
    model = tinylm.Transformer.load(seed_path)
    expected = model.tokenizer.decode(
        model.generate(model.tokenizer.encode("the cat"), 500, temperature=0.0)
    )
    assert out.strip() == expected


def test_info_describes_the_model(tmp_path: Path, seed_path: Path) -> None:
    out = run("info", str(seed_path), cwd=tmp_path).stdout
    assert "go-json" in out and "parameters:  224" in out and "word level, 9 tokens" in out
    assert "safetensors" in run("info", cwd=tmp_path).stdout


def test_demo_prints_the_go_programs_sentences(tmp_path: Path) -> None:
    out = run("demo", cwd=tmp_path).stdout
    lines = out.strip().splitlines()
    assert lines[-2:] == ["the cat sat on mat END", "the dog sat on mat END"]
    assert sum("loss" in line for line in lines) >= 5


def test_train_writes_model_history_plot_and_sample(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to be or not to be, that is the question.\n" * 60, encoding="utf-8")
    out_dir = tmp_path / "run"
    proc = run(
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out_dir),
        "--d-model",
        "32",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--context",
        "16",
        "--steps",
        "30",
        "--batch-size",
        "4",
        "--eval-interval",
        "10",
        "--eval-batches",
        "2",
        "--warmup",
        "5",
        cwd=tmp_path,
    )
    assert "full validation loss" in proc.stdout and "sample:" in proc.stdout
    for name in ("model.safetensors", "ckpt.safetensors", "losses.json", "loss.png"):
        assert (out_dir / name).exists(), name
    history = json.loads((out_dir / "losses.json").read_text())
    assert len(history["train_losses"]) == 30 and len(history["val_losses"]) == 3
    assert (out_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model = tinylm.Transformer.load(out_dir / "model.safetensors")
    assert model.tokenizer is not None and model.tokenizer.kind == "char"
    sample = run(
        "generate",
        "--weights",
        str(out_dir / "model.safetensors"),
        "--prompt",
        "to",
        "--max-new-tokens",
        "20",
        "--seed",
        "1",
        cwd=tmp_path,
    ).stdout
    assert sample.startswith("to")


def test_train_with_word_tokenizer(tmp_path: Path) -> None:
    corpus = tmp_path / "words.txt"
    corpus.write_text("the cat sat on the mat . " * 50, encoding="utf-8")
    run(
        "train",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "w"),
        "--tokenizer",
        "word",
        "--d-model",
        "16",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--context",
        "8",
        "--steps",
        "5",
        "--batch-size",
        "2",
        "--eval-interval",
        "5",
        "--eval-batches",
        "1",
        "--quiet",
        cwd=tmp_path,
    )
    assert tinylm.Transformer.load(tmp_path / "w" / "model.safetensors").tokenizer.kind == "word"


def test_ctrl_c_saves_a_checkpoint_and_resume_finishes(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "all the world's a stage, and all the men and women merely players.\n" * 200,
        encoding="utf-8",
    )
    out_dir = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(out_dir),
        "--d-model",
        "64",
        "--n-layers",
        "2",
        "--n-heads",
        "2",
        "--context",
        "32",
        "--steps",
        "100000",
        "--batch-size",
        "8",
        "--eval-interval",
        "50",
        "--eval-batches",
        "1",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinylm", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = out_dir / "ckpt.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert ckpt.exists(), "no checkpoint was written"
    proc.send_signal(signal.SIGINT)
    _stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "checkpoint saved" in stderr and "--resume" in stderr
    model = tinylm.Transformer.load(ckpt)  # a checkpoint loads as a model
    assert model.config.d_model == 64


def test_sigterm_also_saves_a_checkpoint(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("now is the winter of our discontent.\n" * 200, encoding="utf-8")
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tinylm",
            "train",
            "--data",
            str(corpus),
            "--out",
            str(out_dir),
            "--d-model",
            "32",
            "--n-layers",
            "1",
            "--n-heads",
            "2",
            "--context",
            "16",
            "--steps",
            "100000",
            "--batch-size",
            "4",
            "--eval-interval",
            "20",
            "--eval-batches",
            "1",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = out_dir / "ckpt.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.2)
    first = ckpt.stat().st_mtime_ns
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "SIGTERM" in stderr
    assert ckpt.stat().st_mtime_ns >= first


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"\xff\xfe\x00bad", "not UTF-8"), (b"", "at least 2 characters"), (b"a", "at least 2")],
)
def test_train_rejects_bad_text_files(tmp_path: Path, content: bytes, needle: str) -> None:
    corpus = tmp_path / "bad.txt"
    corpus.write_bytes(content)
    proc = run(
        "train", "--data", str(corpus), "--out", str(tmp_path / "o"), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_missing_weights_file_is_a_one_line_error(tmp_path: Path) -> None:
    proc = run("generate", "--weights", "nope.safetensors", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "nope.safetensors" in proc.stderr and "no such file" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / ("tinylm.exe" if os.name == "nt" else "tinylm")
    assert script.exists()
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True)
    assert "generate" in out.stdout and "train" in out.stdout


def test_resume_refuses_other_training_data(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to sleep, perchance to dream. " * 80, encoding="utf-8")
    args = [
        "train",
        "--data",
        str(corpus),
        "--out",
        str(tmp_path / "o"),
        "--d-model",
        "16",
        "--n-layers",
        "1",
        "--n-heads",
        "2",
        "--context",
        "8",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--eval-interval",
        "2",
        "--eval-batches",
        "1",
        "--quiet",
    ]
    run(*args, cwd=tmp_path)
    corpus.write_text("ay, there's the rub. " * 80, encoding="utf-8")
    proc = run(*args, "--resume", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "training data differs" in proc.stderr
