"""docs/how-it-works.md is true: its commands and Python examples run as shown, the output
it quotes is what `tinylm explain` prints, and its links name functions that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "how-it-works.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def run_command(line: str, cwd: Path) -> str:
    args = shlex.split(line)
    assert args[0] == "python", line
    proc = subprocess.run(
        [sys.executable, *args[1:]], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{line}\n{proc.stderr}"
    return proc.stdout


def test_every_command_runs_as_shown(tmp_path: Path) -> None:
    commands = [
        line[2:]
        for block in blocks("console")
        for line in block.splitlines()
        if line.startswith("$ ")
    ]
    assert len(commands) >= 2
    for command in commands:
        run_command(command, tmp_path)
    png = tmp_path / "attention_shakespeare.png"
    assert png.read_bytes().startswith(b"\x89PNG")


def test_the_quoted_output_is_what_explain_prints(tmp_path: Path) -> None:
    out = run_command('python -m tinylm explain --prompt "the cat"', tmp_path)
    quoted = blocks("text")
    assert len(quoted) >= 8
    for block in quoted:
        for part in block.rstrip("\n").split("\n\n"):
            assert part in out, part


def test_every_python_example_runs(tmp_path: Path) -> None:
    examples = blocks("python")
    assert examples
    for i, code in enumerate(examples):
        script = tmp_path / f"example{i}.py"
        script.write_text(code, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"{code}\n{proc.stderr}"


def test_every_link_names_a_function_of_an_existing_file() -> None:
    text = DOC.read_text(encoding="utf-8")
    links = re.findall(r"\[`(\w+)`\]\((\.\./rust/src/[\w/]+\.rs)\)", text)
    assert len(links) >= 20
    for function, target in links:
        source = (DOC.parent / target).resolve().read_text(encoding="utf-8")
        assert re.search(rf"\bfn {function}\b", source), (function, target)
    for target in re.findall(r"\]\(([^)#:]+)\)", text):
        assert (DOC.parent / target).exists(), target
    assert (DOC.parent / "attention_shakespeare.png").read_bytes().startswith(b"\x89PNG")
