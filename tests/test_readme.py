"""The README's Python example runs as written, on a small text of its own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tinylm

REPO = Path(__file__).resolve().parent.parent


def readme_python_example() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Use it from Python", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "no Python example under 'Use it from Python'"
    return found.group(1)


def test_the_readme_python_example_runs_as_written(tmp_path: Path) -> None:
    lines = [f"{who}: to be, or not to be, that is the question.\n" for who in ("HAMLET", "ROMEO")]
    (tmp_path / "input.txt").write_text("".join(lines) * 60, encoding="utf-8")
    (tmp_path / "example.py").write_text(readme_python_example(), encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ROMEO:")  # the bundled model's sample
    model = tinylm.Transformer.load(tmp_path / "mine.safetensors")
    assert model.config.d_model == 128 and model.tokenizer.kind == "char"
    assert (tmp_path / "runs" / "mine" / "ckpt.safetensors").exists()
