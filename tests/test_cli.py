"""The command line, run as a user runs it: a subprocess, from another folder."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tinylm
from conftest import default_sigint


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
    assert len(out) > 150  # DEFAULT_MAX_NEW_TOKENS characters after a newline
    words = out.split()
    assert len(words) > 20
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


# ------------------------------------------------------------------------------ first contact
# Issue 14: each bug a new user met, and the options they expected.

TINY = [
    "--d-model",
    "16",
    "--n-layers",
    "1",
    "--n-heads",
    "2",
    "--context",
    "8",
    "--batch-size",
    "2",
    "--eval-interval",
    "5",
    "--eval-batches",
    "1",
    "--warmup",
    "2",
]


def corpus_file(tmp_path: Path, repeat: int = 80) -> Path:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("to sleep, perchance to dream. " * repeat, encoding="utf-8")
    return corpus


def train_args(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "--data", str(corpus), "--out", str(out), *TINY, "--steps", str(steps), *extra]


def test_ctrl_c_during_generate_stops_at_once_and_keeps_the_text(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinylm", "generate", "--max-new-tokens", str(10**9)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=default_sigint,
    )
    try:
        first = proc.stdout.read(40)  # printed as it is sampled
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        rest, stderr = proc.communicate(timeout=30)
        waited = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert stderr.decode() == "\ntinylm generate: interrupted\n"
    text = (first + rest).decode("utf-8")
    assert len(text) >= 40 and sum(ch.isalpha() or ch.isspace() for ch in text) > 0.8 * len(text)
    assert waited < 10, f"generation went on for {waited:.1f}s after Ctrl-C"


def test_generate_prints_what_one_generate_call_returns(tmp_path: Path) -> None:
    """Greedy decoding has one answer, whichever way the text is produced."""
    out = run(
        "generate",
        "--prompt",
        "ROMEO:",
        "--temperature",
        "0",
        "--max-new-tokens",
        "60",
        cwd=tmp_path,
    ).stdout
    model = tinylm.Transformer.from_bundled("shakespeare")
    assert out == model.generate_text("ROMEO:", 60, temperature=0.0) + "\n"


def test_a_closed_pipe_does_not_stop_training(tmp_path: Path) -> None:
    """`train ... 2>&1 | head -3`: the run goes on silently, saves its model, exits 0."""
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinylm", *train_args(corpus_file(tmp_path), out_dir, 300)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    for _ in range(3):
        proc.stdout.readline()
    proc.stdout.close()  # as `head -3` does
    assert proc.wait(timeout=300) == 0
    history = json.loads((out_dir / "losses.json").read_text())
    assert history["steps_done"] == 300 and len(history["train_losses"]) == 300
    assert tinylm.Transformer.load(out_dir / "model.safetensors").config.d_model == 16


def test_a_closed_stderr_alone_does_not_stop_training(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinylm", *train_args(corpus_file(tmp_path), out_dir, 100)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    proc.stderr.close()
    stdout, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert "trained 100 steps" in stdout and (out_dir / "model.safetensors").exists()


def test_divergence_before_any_checkpoint_names_none(tmp_path: Path) -> None:
    out_dir = tmp_path / "div"
    proc = run(
        *train_args(corpus_file(tmp_path), out_dir, 30, "--lr", "1e6"), cwd=tmp_path, check=False
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "diverged" in proc.stderr and "no checkpoint was written" in proc.stderr
    assert not (out_dir / "ckpt.safetensors").exists()


def test_divergence_names_this_runs_last_checkpoint(tmp_path: Path) -> None:
    from tinylm.train import load_checkpoint

    corpus, out_dir = corpus_file(tmp_path), tmp_path / "div"
    run(*train_args(corpus, out_dir, 4, "--quiet"), cwd=tmp_path)  # an earlier run's files
    # Warmup ramps the huge rate up over 20 steps: a few good steps, then NaN.
    args = train_args(corpus, out_dir, 60, "--lr", "1e4", "--warmup", "20")
    proc = run(*args, "--checkpoint-interval", "1", "--force", "--quiet", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    found = re.search(r"last good checkpoint \(step (\d+)\) is kept at (\S+)", proc.stderr)
    assert found, proc.stderr
    _, _, state = load_checkpoint(Path(found.group(2)))
    assert state["step"] == int(found.group(1)) and state["train_config"]["steps"] == 60


def test_interrupt_hint_is_a_command_that_resumes(tmp_path: Path) -> None:
    corpus, out_dir = corpus_file(tmp_path, 200), tmp_path / "int"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tinylm", *train_args(corpus, out_dir, 10**6, "--quiet")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = out_dir / "ckpt.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    hint = stderr.strip().splitlines()[-1].split("continue with: ", 1)[1]
    done = json.loads((out_dir / "losses.json").read_text())["steps_done"]
    # The hint, with a nearer end so that it finishes: no --data, no settings needed.
    resumed = subprocess.run(
        [*shlex.split(hint), "--steps", str(done + 5), "--final-eval", "none"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"trained {done + 5} steps" in resumed.stdout


def test_resume_with_conflicting_options_names_them(tmp_path: Path) -> None:
    corpus, out_dir = corpus_file(tmp_path), tmp_path / "o"
    run(*train_args(corpus, out_dir, 4, "--quiet"), cwd=tmp_path)
    proc = run(
        "train",
        "--resume",
        "--out",
        str(out_dir),
        "--steps",
        "8",
        "--lr",
        "0.01",
        "--d-model",
        "32",
        "--tokenizer",
        "word",
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    for named in (
        "--lr 0.01 (the checkpoint's: 0.001)",
        "--d-model 32 (the checkpoint's: 16)",
        "--tokenizer word (the checkpoint's: char)",
    ):
        assert named in proc.stderr


def test_resuming_a_finished_run_without_more_steps_says_so(tmp_path: Path) -> None:
    corpus, out_dir = corpus_file(tmp_path), tmp_path / "o"
    run(*train_args(corpus, out_dir, 4, "--quiet"), cwd=tmp_path)
    proc = run("train", "--resume", "--out", str(out_dir), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "finished (4 of 4 steps)" in proc.stderr and "--steps N" in proc.stderr


def test_extending_a_run_equals_a_straight_run_with_the_first_schedule(tmp_path: Path) -> None:
    """--resume --steps 30 after 20 steps keeps the schedule of 20 steps: the same losses,
    bit for bit, as one run of 30 steps with --lr-decay-steps 20."""
    corpus = corpus_file(tmp_path)
    run(*train_args(corpus, tmp_path / "a", 20, "--quiet"), cwd=tmp_path)
    run("train", "--resume", "--out", str(tmp_path / "a"), "--steps", "30", "--quiet", cwd=tmp_path)
    run(*train_args(corpus, tmp_path / "b", 30, "--lr-decay-steps", "20", "--quiet"), cwd=tmp_path)
    a = json.loads((tmp_path / "a" / "losses.json").read_text())
    b = json.loads((tmp_path / "b" / "losses.json").read_text())
    assert len(a["train_losses"]) == 30
    assert a["train_losses"] == b["train_losses"] and a["val_losses"] == b["val_losses"]


def test_train_refuses_to_overwrite_a_run_without_force(tmp_path: Path) -> None:
    corpus, out_dir = corpus_file(tmp_path), tmp_path / "o"
    run(*train_args(corpus, out_dir, 4, "--quiet"), cwd=tmp_path)
    before = (out_dir / "model.safetensors").read_bytes()
    proc = run(*train_args(corpus, out_dir, 4, "--quiet"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "already holds a finished model" in proc.stderr
    assert "--force" in proc.stderr and (out_dir / "model.safetensors").read_bytes() == before
    run(*train_args(corpus, out_dir, 4, "--quiet", "--seed", "9", "--force"), cwd=tmp_path)
    assert (out_dir / "model.safetensors").read_bytes() != before


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--threads", "-1", "info"], "--threads"),
        (["generate", "--threads", "0"], "--threads"),
        (["generate", "--max-new-tokens", "99999999999999999999"], "--max-new-tokens"),
        (["generate", "--top-k", str(10**20)], "--top-k"),
        (["generate", "--top-p", "0"], "--top-p"),
        (["generate", "--temperature", "nan"], "--temperature"),
        (["generate", "--seed", "-1"], "--seed"),
        (["train", "--data", "x.txt", "--seed", "-1"], "--seed"),
        (["train", "--data", "x.txt", "--batch-size", "1000000000"], "--batch-size"),
        (["train", "--data", "x.txt", "--steps", "0"], "--steps"),
        (["train", "--data", "x.txt", "--lr", "inf"], "--lr"),
        (["train", "--data", "x.txt", "--d-model", str(1 << 40)], "--d-model"),
        (["train", "--data", "x.txt", "--val-fraction", "1.5"], "--val-fraction"),
        (["train", "--data", "x.txt", "--beta2", "2"], "--beta2"),
        (["demo", "--steps", "-3"], "--steps"),
    ],
)
def test_numeric_options_are_range_checked_by_name(tmp_path, args, option) -> None:
    proc = run(*args, cwd=tmp_path, check=False, timeout=60)
    assert proc.returncode == 2
    assert f"argument {option}:" in proc.stderr and "Traceback" not in proc.stderr


def test_a_batch_too_big_for_memory_is_refused_before_allocating(tmp_path: Path) -> None:
    from tinylm.train import physical_memory_bytes

    if physical_memory_bytes() is None:
        pytest.skip("the OS does not report its memory")
    args = train_args(corpus_file(tmp_path), tmp_path / "o", 4, "--batch-size", str(1 << 20))
    proc = run(*args, "--d-model", "1024", "--context", "1024", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "--batch-size 1048576 with --context 1024" in proc.stderr


def test_files_keep_the_umask_permissions(tmp_path: Path) -> None:
    out_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm", *train_args(corpus_file(tmp_path), out_dir, 5, "--quiet")],
        cwd=tmp_path,
        capture_output=True,
        preexec_fn=lambda: os.umask(0o022),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("losses.json", "loss.png", "model.safetensors", "ckpt.safetensors"):
        assert (out_dir / name).stat().st_mode & 0o777 == 0o644, name


def test_atomic_writes_follow_the_umask(tmp_path: Path) -> None:
    from tinylm._io import write_text_atomic

    old = os.umask(0o027)
    try:
        write_text_atomic(tmp_path / "a.json", "{}")
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]  # no temporary left behind


def test_every_option_shows_its_default_in_help() -> None:
    from tinylm.cli import build_parser

    parser = build_parser()
    for name, sub in [("tinylm", parser), *parser.commands.items()]:
        text = sub.format_help()
        for action in sub._actions:
            flag = not action.option_strings or action.nargs == 0
            if flag or action.default is argparse.SUPPRESS:
                continue
            assert action.help, f"{name} {action.option_strings} has no help"
            help_text = sub._get_formatter()._expand_help(action)
            assert "default" in help_text, f"{name} {action.option_strings}: {help_text!r}"
            assert " ".join(help_text.split()[:2]) in " ".join(text.split())


def test_version_threads_after_the_command_and_bundled_names(tmp_path: Path) -> None:
    assert run("--version", cwd=tmp_path).stdout.strip() == f"tinylm {tinylm.__version__}"
    out = run(
        "generate",
        "--threads",
        "1",
        "--weights",
        "tiny",
        "--prompt",
        "the cat",
        "--temperature",
        "0",
        cwd=tmp_path,
    ).stdout
    assert out == "the cat sat on mat END\n"


def test_a_mistyped_option_suggests_the_right_one_with_the_commands_usage(tmp_path) -> None:
    proc = run("train", "--setps", "3", cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: tinylm train")
    assert "--setps (did you mean --steps?)" in proc.stderr
    proc = run("trian", cwd=tmp_path, check=False)
    assert "did you mean 'train'?" in proc.stderr


def test_models_and_bare_info_list_the_bundled_models(tmp_path: Path) -> None:
    listed = run("models", cwd=tmp_path).stdout
    assert run("info", cwd=tmp_path).stdout == listed
    lines = listed.splitlines()
    assert [line.split()[0] for line in lines] == list(tinylm.model.BUNDLED_MODELS)
    assert "818,176 parameters" in lines[0] and "char level" in lines[0]
    assert "go-json" in run("info", "tiny", cwd=tmp_path).stdout


def test_info_on_a_checkpoint_shows_step_losses_and_settings(tmp_path: Path) -> None:
    corpus, out_dir = corpus_file(tmp_path), tmp_path / "o"
    run(*train_args(corpus, out_dir, 10, "--quiet"), cwd=tmp_path)
    out = run("info", str(out_dir / "ckpt.safetensors"), cwd=tmp_path).stdout
    history = json.loads((out_dir / "losses.json").read_text())
    assert "checkpoint:  step 10 of 10" in out
    assert f"train loss:  {history['train_losses'][-1]:.4f} at step 10" in out
    assert f"val loss:    {history['val_losses'][-1][1]:.4f} at step 10" in out
    assert "batch_size 2" in out and "lr 0.001" in out and str(corpus) in out
    assert "checkpoint:" not in run("info", str(out_dir / "model.safetensors"), cwd=tmp_path).stdout


def test_cli_and_python_share_one_default_sampling_rule() -> None:
    import inspect

    from tinylm.cli import build_parser
    from tinylm.model import DEFAULT_MAX_NEW_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K

    generate = build_parser().commands["generate"].parse_args([])
    params = inspect.signature(tinylm.Transformer.generate).parameters
    for name, value in [
        ("max_new_tokens", DEFAULT_MAX_NEW_TOKENS),
        ("temperature", DEFAULT_TEMPERATURE),
        ("top_k", DEFAULT_TOP_K),
    ]:
        assert params[name].default == value == getattr(generate, name), name
    text_params = inspect.signature(tinylm.Transformer.generate_text).parameters
    assert text_params["max_new_tokens"].default == DEFAULT_MAX_NEW_TOKENS


def test_unknown_prompt_characters_are_an_error_or_skipped(tmp_path: Path) -> None:
    proc = run("generate", "--prompt", "ROMEO§: hi", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "§" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(
        "generate",
        "--prompt",
        "ROMEO§:",
        "--unknown",
        "skip",
        "--temperature",
        "0",
        "--max-new-tokens",
        "20",
        cwd=tmp_path,
    )
    assert proc.stdout.startswith("ROMEO:") and "skipped 1 prompt characters" in proc.stderr
    model = tinylm.Transformer.from_bundled("shakespeare")
    assert proc.stdout == model.generate_text("ROMEO:", 20, temperature=0.0) + "\n"


def test_prompt_file(tmp_path: Path) -> None:
    (tmp_path / "prompt.txt").write_text("JULIET:\nO Romeo", encoding="utf-8")
    out = run(
        "generate",
        "--prompt-file",
        "prompt.txt",
        "--max-new-tokens",
        "5",
        "--seed",
        "1",
        cwd=tmp_path,
    ).stdout
    assert out.startswith("JULIET:\nO Romeo")


@pytest.mark.parametrize(
    ("choice", "says"),
    [("none", "no final validation"), ("sample", "validation loss"), ("full", "full validation")],
)
def test_final_eval_chooses_the_last_validation(tmp_path: Path, choice: str, says: str) -> None:
    corpus, out_dir = corpus_file(tmp_path), tmp_path / "o"
    proc = run(*train_args(corpus, out_dir, 10, "--final-eval", choice), cwd=tmp_path)
    assert says in proc.stdout
    if choice == "sample":
        history = json.loads((out_dir / "losses.json").read_text())
        assert (
            f"validation loss {history['val_losses'][-1][1]:.4f} (estimate at step 10)"
            in proc.stdout
        )
    if choice == "full":
        assert "validation " in proc.stderr and "[####" in proc.stderr  # its progress bar
