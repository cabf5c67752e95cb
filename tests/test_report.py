"""The training report: per-step metrics from the loop, report.html from `tinylm train`."""

from __future__ import annotations

import base64
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import tinylm
from tinylm.report import TrainingReport, layer_of

TEXT = " ".join(["the quick brown fox jumps over the lazy dog."] * 200)


def test_the_report_records_every_step_and_the_layer_norms_add_up() -> None:
    tok = tinylm.Tokenizer.char_level(TEXT)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=16, n_layers=2, n_heads=2, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=0)
    model.tokenizer = tok
    data = np.array(tok.encode(TEXT))
    report = TrainingReport(prompt=tok.encode("the"), tokens_per_step=4 * 16)
    train = tinylm.TrainConfig(
        steps=12, batch_size=4, eval_interval=6, eval_batches=2, grad_clip=0.5
    )
    _, result = tinylm.train(model, data, data, train, progress=False, report=report)
    assert report.steps == list(range(1, 13))
    assert report.losses == result.train_losses
    assert report.lrs == [train.lr_at(s) for s in range(12)]
    assert set(report.layer_norms) == {"embeddings", "block 0", "block 1", "head"}
    for i, total in enumerate(report.grad_norms):
        # Clipping at 0.5 does not change the norms reported: they are those before it.
        assert total > 0.5
        groups = math.sqrt(sum(norms[i] ** 2 for norms in report.layer_norms.values()))
        assert abs(groups - total) < 1e-4 * total
    assert [e.step for e in report.evaluations] == [6, 12]
    assert [e.val_loss for e in report.evaluations] == [v for _, v in result.val_losses]
    assert all(e.sample.startswith("the") and len(e.sample) > 50 for e in report.evaluations)
    assert all(s > 0 for s in report.tokens_per_second)


def test_parameters_are_grouped_by_layer() -> None:
    assert layer_of("blocks.3.attn.W_q.weight") == "block 3"
    assert layer_of("token_embed.weight") == layer_of("pos_embed.weight") == "embeddings"
    assert layer_of("ln_f.bias") == layer_of("lm_head.weight") == "head"


def test_train_writes_a_self_contained_html_report_beside_the_loss_curve(tmp_path: Path) -> None:
    data = tmp_path / "data.txt"
    data.write_text(TEXT)
    out = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm",
            "train",
            "--data",
            str(data),
            "--out",
            str(out),
            "--steps",
            "30",
            "--eval-interval",
            "10",
            "--eval-batches",
            "2",
            "--d-model",
            "16",
            "--n-layers",
            "2",
            "--n-heads",
            "2",
            "--context",
            "16",
            "--batch-size",
            "4",
            "--final-eval",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "loss.png").exists()
    page = (out / "report.html").read_text()
    assert "training report" in proc.stderr
    assert re.search(r"src=\"(?!data:)", page) is None  # nothing outside the page
    png = base64.b64decode(re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", page).group(1))
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    rows = re.findall(r"<tr><td>(\d+)</td>", page)
    assert rows == ["10", "20", "30"]
    assert page.count("<pre>") == 3
    # The samples were printed at each evaluation too.
    assert proc.stderr.count("sample at step") == 3
