"""The command line's generation options (sampler chain, stop texts, beams, batches, the
window) and `eval`, each run as a user would, in a subprocess."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

import tinylm


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tinylm", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_the_sampler_chain_options_give_what_the_api_gives(tmp_path):
    args = [
        "--temperature",
        "0.9",
        "--top-k",
        "20",
        "--min-p",
        "0.05",
        "--repetition-penalty",
        "1.3",
        "--seed",
        "5",
        "--max-new-tokens",
        "80",
    ]
    out = run("generate", "--prompt", "ROMEO:", *args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    model = tinylm.Transformer.from_bundled("shakespeare")
    want = model.generate_text(
        "ROMEO:", 80, temperature=0.9, top_k=20, min_p=0.05, repetition_penalty=1.3, seed=5
    )
    assert out.stdout.rstrip("\n") == want.rstrip("\n")


def test_a_stop_text_ends_the_sample_right_after_it(tmp_path):
    out = run(
        "generate",
        "--prompt",
        "ROMEO:",
        "--seed",
        "1",
        "--max-new-tokens",
        "400",
        "--stop",
        "\n\n",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    body = out.stdout[len("ROMEO:") :]
    assert body.count("\n\n") <= 1 and body.rstrip(" ").endswith("\n")


def test_a_stop_text_typed_with_backslash_n_means_newlines(tmp_path):
    args = ["generate", "--prompt", "ROMEO:", "--seed", "1", "--max-new-tokens", "400"]
    typed = run(*args, "--stop", "\\n\\n", cwd=tmp_path)
    real = run(*args, "--stop", "\n\n", cwd=tmp_path)
    assert typed.returncode == 0, typed.stderr
    assert typed.stdout == real.stdout and len(typed.stdout) < 400


def test_beams_and_samples_print_each_with_a_header(tmp_path):
    beams = run(
        "generate", "--num-beams", "3", "--num-samples", "2", "--max-new-tokens", "20", cwd=tmp_path
    )
    assert beams.returncode == 0, beams.stderr
    assert beams.stdout.count("--- beam ") == 2 and "score" in beams.stdout
    samples = run(
        "generate", "--num-samples", "3", "--max-new-tokens", "20", "--seed", "2", cwd=tmp_path
    )
    assert samples.returncode == 0, samples.stderr
    assert samples.stdout.count("--- sample ") == 3


def test_samples_of_a_prompt_longer_than_the_context_print_the_whole_prompt(tmp_path):
    context = tinylm.Transformer.from_bundled("shakespeare").config.max_seq_len
    prompt = ("ROMEO:\nBut soft, what light through yonder window breaks?\n" * 20)[: 3 * context]
    out = run(
        "generate", "--prompt", prompt, "--num-samples", "2", "--max-new-tokens", "20", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    blocks = out.stdout.split("--- sample ")[1:]
    assert len(blocks) == 2
    for k, block in enumerate(blocks):
        header, text = block.split("\n", 1)
        assert header == str(k + 1) and text.startswith(prompt) and len(text) > len(prompt)


def test_eval_reports_what_score_computes(tmp_path):
    text = "ROMEO:\nBut soft, what light through yonder window breaks?\n" * 40
    path = tmp_path / "val.txt"
    path.write_text(text)
    out = run("eval", "--data", str(path), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    fields = dict(line.split(":", 1) for line in out.stdout.splitlines())
    score = tinylm.Transformer.from_bundled("shakespeare").score(text)
    assert float(fields["perplexity"]) == pytest.approx(score.perplexity, rel=2e-3)
    assert float(fields["bits per char"]) == pytest.approx(score.bits_per_char, rel=2e-3)
    assert float(fields["loss"].split()[0]) == pytest.approx(score.loss, rel=2e-3)
    assert math.isfinite(float(fields["bits per token"]))
    # The progress bar (one line per update when stderr is not a terminal) ends full.
    assert "scoring" in out.stderr
    assert re.search(r"(\d+)/\1 \[#+\]", out.stderr), out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "--min-p", "2"], "--min-p"),
        (["generate", "--num-beams", "0"], "--num-beams"),
        (["generate", "--window", "wide"], "--window"),
        (["eval", "--data", "/nonexistent/file.txt"], "no such file"),
    ],
)
def test_bad_generation_options_are_one_line_errors(tmp_path, args, message):
    out = run(*args, cwd=tmp_path)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_no_stream_prints_the_same_text_at_the_end(tmp_path):
    args = ["generate", "--prompt", "ROMEO:", "--seed", "3", "--max-new-tokens", "60"]
    streamed = run(*args, cwd=tmp_path)
    held = run(*args, "--no-stream", cwd=tmp_path)
    assert streamed.returncode == held.returncode == 0, held.stderr
    assert held.stdout == streamed.stdout
    assert held.stdout.startswith("ROMEO:") and len(held.stdout) > len("ROMEO:") + 30


GREEDY_40 = ("--temperature", "0", "--max-new-tokens", "40")


def test_interactive_continues_each_line_until_end_of_input(tmp_path):
    model = tinylm.Transformer.from_bundled("shakespeare")
    want = [model.generate_text(p, 40, temperature=0) for p in ("ROMEO:", "JULIET:\n")]
    proc = subprocess.run(
        [sys.executable, "-m", "tinylm", "generate", "--interactive", *GREEDY_40],
        input="ROMEO:\n\n€uro\nJULIET:\\n\n",  # a blank line, an unreadable one, a "\n"
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    first, second = want
    assert proc.stdout == first.rstrip("\n") + "\n" + second.rstrip("\n") + "\n"
    assert "error:" in proc.stderr and "€" in proc.stderr
