"""The training report: what ``tinylm train`` writes beside ``loss.png`` as
``report.html``, one self-contained page (its dashboard PNG embedded as base64).

A :class:`TrainingReport` is fed by the training loop (:func:`tinylm.train`'s ``report``
argument): after each step the loss, learning rate, gradient norm (in all and per layer)
and tokens per second, and at each evaluation the validation loss and a short sample,
which it also returns so that the loop can print it. A resumed run's report covers the
steps of that run.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from tinylm._io import write_text_atomic
from tinylm.model import Transformer

#: New tokens of the sample taken at each evaluation.
SAMPLE_TOKENS = 120

_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def layer_of(name: str) -> str:
    """The group a parameter's gradient norm is reported in: ``"block l"``,
    ``"embeddings"`` or ``"head"`` (the final norm and the output head)."""
    match = _BLOCK.match(name)
    if match:
        return f"block {match.group(1)}"
    return "embeddings" if name.endswith("embed.weight") else "head"


@dataclass
class Evaluation:
    step: int
    train_loss: float
    val_loss: float | None
    sample: str


@dataclass
class TrainingReport:
    """Metrics of a training run, step by step; :meth:`write_html` draws them."""

    #: The ids a sample starts from at each evaluation.
    prompt: Sequence[int]
    #: Tokens one optimizer step trains on (batch x grad_accum x seq_len).
    tokens_per_step: int
    seed: int = 0
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    grad_norms: list[float] = field(default_factory=list)
    #: Gradient norm (before clipping) of each group of :func:`layer_of`, per step.
    layer_norms: dict[str, list[float]] = field(default_factory=dict)
    tokens_per_second: list[float] = field(default_factory=list)
    evaluations: list[Evaluation] = field(default_factory=list)

    def record_step(
        self,
        model: Transformer,
        step: int,
        loss: float,
        lr: float,
        grad_norm: float,
        seconds: float,
    ) -> None:
        """Records a finished optimizer step (``step`` counts the steps done with it):
        ``grad_norm`` is the norm before clipping,
        as the step returned it; the per-layer norms come from the core's record of the
        step's gradient, scaled back to before clipping."""
        norms = model._core.grad_norms()
        groups: dict[str, float] = {}
        for name, norm in norms:
            groups[layer_of(name)] = groups.get(layer_of(name), 0.0) + norm * norm
        applied = math.sqrt(sum(groups.values()))
        scale = grad_norm / applied if applied > 0 else 1.0
        for group, squares in groups.items():
            self.layer_norms.setdefault(group, []).append(math.sqrt(squares) * scale)
        self.steps.append(step)
        self.losses.append(float(loss))
        self.lrs.append(float(lr))
        self.grad_norms.append(float(grad_norm))
        self.tokens_per_second.append(self.tokens_per_step / max(seconds, 1e-9))

    def record_evaluation(
        self, model: Transformer, step: int, train_loss: float, val_loss: float | None
    ) -> str:
        """Records an evaluation with a sample of :data:`SAMPLE_TOKENS` new tokens
        (the default sampling rule, the run's seed); returns the sample's text."""
        tok = model.tokenizer
        if tok is None:
            sample = ""
        else:
            ids = model.generate(list(self.prompt), max_new_tokens=SAMPLE_TOKENS, seed=self.seed)
            sample = tok.decode(ids)
        self.evaluations.append(Evaluation(step, float(train_loss), val_loss, sample))
        return sample

    def dashboard_png(self) -> bytes:
        """The four panels (losses, learning rate, gradient norms, tokens/s) as a PNG."""
        from tinylm.viz import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), dpi=100, constrained_layout=True)
        steps = np.asarray(self.steps)
        (loss_ax, lr_ax), (norm_ax, speed_ax) = axes
        loss_ax.plot(steps, self.losses, lw=0.8, alpha=0.7, label="train (per step)")
        vals = [(e.step, e.val_loss) for e in self.evaluations if e.val_loss is not None]
        if vals:
            loss_ax.plot(*zip(*vals), "o-", ms=3, label="validation")
        loss_ax.set(title="loss", xlabel="step", ylabel="cross-entropy (nats)")
        loss_ax.legend()
        lr_ax.plot(steps, self.lrs)
        lr_ax.set(title="learning rate", xlabel="step")
        norm_ax.plot(steps, self.grad_norms, color="black", lw=1.2, label="all")
        for group, norms in self.layer_norms.items():
            norm_ax.plot(steps, norms, lw=0.8, label=group)
        norm_ax.set(title="gradient norm before clipping", xlabel="step", yscale="log")
        norm_ax.legend(fontsize=7, ncol=2)
        speed_ax.plot(steps, self.tokens_per_second, lw=0.6, alpha=0.5)
        if len(steps) >= 10:
            k = max(len(steps) // 20, 5)
            smooth = np.convolve(self.tokens_per_second, np.ones(k) / k, mode="valid")
            speed_ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"{k}-step mean")
            speed_ax.legend()
        speed_ax.set(title="training tokens / s", xlabel="step")
        for ax in axes.flat:
            ax.grid(alpha=0.3)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return buf.getvalue()

    def write_html(self, path: Path, title: str = "tinylm training report") -> None:
        """Writes the report as one HTML page (atomically): the dashboard, then each
        evaluation's losses and sample."""
        png = base64.b64encode(self.dashboard_png()).decode("ascii")
        rows = "\n".join(
            f"<tr><td>{e.step}</td><td>{e.train_loss:.4f}</td>"
            f"<td>{'' if e.val_loss is None else f'{e.val_loss:.4f}'}</td>"
            f"<td><pre>{html.escape(e.sample)}</pre></td></tr>"
            for e in self.evaluations
        )
        last = (
            f"{len(self.steps)} steps (steps {self.steps[0]} to {self.steps[-1]}), last loss "
            f"{self.losses[-1]:.4f}"
            if self.steps
            else "no steps"
        )
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1150px;margin:1em auto}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px;vertical-align:top}}
pre{{margin:0;white-space:pre-wrap}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{last}; {self.tokens_per_step:,} tokens per step.</p>
<img alt="loss, learning rate, gradient norm per layer and tokens/s against steps"
 src="data:image/png;base64,{png}" style="max-width:100%">
<h2>Evaluations</h2>
<table><tr><th>step</th><th>train loss</th><th>validation loss</th><th>sample</th></tr>
{rows}
</table></body></html>
"""
        write_text_atomic(Path(path), page)
