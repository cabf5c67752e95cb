"""Finite-difference checks of the hand-written backward pass: :func:`gradcheck`.

For each parameter entry p the analytic gradient a (from the backward pass) is compared
with the central difference of the loss,

    n = (L(p + eps) - L(p - eps)) / ((p + eps) - (p - eps)),

computed in float64. The denominator uses the perturbed values as stored, so the rounding
of a float32 parameter does not bias n. An entry's relative error is
``|a - n| / max(|a|, |n|, atol / rtol)``: near zero the absolute error counts, elsewhere
the relative one, and an entry passes when it is at most ``rtol``.

By default L is the model's own loss, in float32: its rounding (about 1e-7 of L) divided
by 2 eps is the noise of n, so eps must be large (1e-2) and the tolerances loose (rtol
1e-2, atol 1e-4). Given ``loss_fn``, a float64 reimplementation of the loss (as the tests
do with ``tests/reference.py``), the differences are taken in float64 with eps 1e-5 and
checked to rtol 1e-3, atol 2e-6.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from tinylm.model import IdsLike, Transformer, as_ids

#: Default (eps, rtol, atol) for the model's float32 loss and for a float64 ``loss_fn``.
FLOAT32_SETTINGS = (1e-2, 1e-2, 1e-4)
FLOAT64_SETTINGS = (1e-5, 1e-3, 2e-6)


@dataclass(frozen=True)
class TensorCheck:
    """The check of one parameter tensor's gradient."""

    name: str
    shape: tuple[int, ...]
    #: Entries compared (all of them, or a sample of a large tensor).
    checked: int
    #: The largest |analytic gradient| of the tensor (all entries).
    max_grad: float
    #: The largest |a - n| and relative error among the entries checked.
    max_abs_error: float
    max_rel_error: float
    #: The entry with the largest relative error, and its two gradients.
    worst_index: tuple[int, ...]
    analytic: float
    numeric: float
    #: Whether every entry checked has a relative error of at most rtol.
    ok: bool


@dataclass(frozen=True)
class GradCheck:
    """What :func:`gradcheck` found; ``str()`` gives the readable report."""

    tensors: list[TensorCheck]
    loss: float
    eps: float
    rtol: float
    atol: float
    #: "the model's float32 loss" or "loss_fn (float64)".
    method: str

    @property
    def ok(self) -> bool:
        """True when every tensor's gradient agrees with the finite differences."""
        return all(t.ok for t in self.tensors)

    @property
    def failed(self) -> list[str]:
        """Names of the tensors whose gradient disagrees."""
        return [t.name for t in self.tensors if not t.ok]

    @property
    def worst(self) -> TensorCheck:
        """The tensor with the largest relative error."""
        return max(self.tensors, key=lambda t: t.max_rel_error)

    def __str__(self) -> str:
        entries = sum(t.checked for t in self.tensors)
        lines = [
            f"gradient check: {len(self.tensors)} tensors, {entries} entries; central "
            f"differences (eps {self.eps:g}) of {self.method}, loss {self.loss:.6f}",
            f"relative error = |analytic - numeric| / max(|analytic|, |numeric|, "
            f"{self.atol / self.rtol:.0e}); an entry passes at <= {self.rtol:g}",
            "",
        ]
        width = max(len("tensor"), *(len(t.name) for t in self.tensors))
        lines.append(
            f"{'tensor':<{width}}  {'shape':>11}  {'checked':>7}  {'max |grad|':>10}  "
            f"{'max abs err':>11}  {'worst rel err':>13}"
        )
        for t in self.tensors:
            shape = " x ".join(map(str, t.shape))
            verdict = "ok" if t.ok else "WRONG"
            lines.append(
                f"{t.name:<{width}}  {shape:>11}  {t.checked:>7}  {t.max_grad:10.2e}  "
                f"{t.max_abs_error:11.2e}  {t.max_rel_error:13.2e}  {verdict}"
            )
        worst = self.worst
        lines.append("")
        lines.append(
            f"worst entry: {worst.name}{list(worst.worst_index)}: analytic {worst.analytic:.6g}, "
            f"numeric {worst.numeric:.6g} (relative error {worst.max_rel_error:.2e})"
        )
        if self.ok:
            lines.append(f"every gradient agrees with the finite differences (rtol {self.rtol:g})")
        else:
            lines.append(
                f"WRONG gradient in {len(self.failed)} tensor(s): {', '.join(self.failed)}"
            )
        return "\n".join(lines)


def _entries(
    size: int, grad: np.ndarray, samples: int | None, rng: np.random.Generator
) -> np.ndarray:
    """Flat indices to check: all, or ``samples`` of them including the largest gradient."""
    if samples is None or size <= samples:
        return np.arange(size)
    largest = int(np.argmax(np.abs(grad)))
    others = rng.choice(np.delete(np.arange(size), largest), size=samples - 1, replace=False)
    return np.sort(np.concatenate([[largest], others]))


def gradcheck(
    model: Transformer,
    inputs: IdsLike,
    targets: IdsLike,
    *,
    eps: float | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    samples: int | None = 64,
    loss_fn: Callable[[Mapping[str, np.ndarray]], float] | None = None,
    seed: int = 0,
) -> GradCheck:
    """Checks every parameter's gradient (from :meth:`Transformer.gradients`) against
    central finite differences of the loss on ``inputs`` and ``targets``; returns a
    :class:`GradCheck` whose ``str()`` is a report with the worst relative error of each
    tensor and whose ``ok`` and ``failed`` say the verdict.

    ``samples`` entries per tensor are checked (all of a smaller tensor, always the one
    with the largest gradient); ``samples=None`` checks every entry. Each entry costs two
    losses, so keep models and batches small. ``loss_fn(params)`` (float64 arrays keyed
    like :meth:`Transformer.state_dict`) replaces the model's own float32 loss by a float64
    one. The model's parameters are the same afterwards (a bfloat16 model is checked in
    float32 on its rounded values). See the module's notes on the method and the defaults
    of ``eps``, ``rtol`` and ``atol``.
    """
    x, _ = as_ids(inputs, "inputs")
    y, _ = as_ids(targets, "targets")
    defaults = FLOAT32_SETTINGS if loss_fn is None else FLOAT64_SETTINGS
    eps = defaults[0] if eps is None else float(eps)
    rtol = defaults[1] if rtol is None else float(rtol)
    atol = defaults[2] if atol is None else float(atol)
    if not (eps > 0 and rtol > 0 and atol > 0):
        raise ValueError(f"eps, rtol and atol must be positive, got {eps}, {rtol}, {atol}")
    if samples is not None and (not isinstance(samples, int) or samples < 1):
        raise ValueError(f"samples must be a positive int or None, got {samples!r}")
    # A bfloat16 model would round each perturbation away: it is checked in float32 on
    # its rounded values, and is bfloat16 again afterwards.
    dtype = model.dtype
    model.to("float32")
    try:
        return _check_in_float32(model, x, y, eps, rtol, atol, samples, loss_fn, seed)
    finally:
        model.to(dtype)


def _check_in_float32(
    model: Transformer,
    x: np.ndarray,
    y: np.ndarray,
    eps: float,
    rtol: float,
    atol: float,
    samples: int | None,
    loss_fn: Callable[[Mapping[str, np.ndarray]], float] | None,
    seed: int,
) -> GradCheck:
    """:func:`gradcheck` on a float32 model, its arguments checked."""
    loss, grads = model.gradients(x, y)
    original = model.state_dict()
    rng = np.random.default_rng(seed)
    if loss_fn is None:
        params = {k: v.copy() for k, v in original.items()}

        def evaluate() -> float:
            model.load_state_dict(params)
            return float(model.loss(x, y))

        method = "the model's float32 loss"
    else:
        params = {k: v.astype(np.float64) for k, v in original.items()}

        def evaluate() -> float:
            return float(loss_fn(params))

        method = "loss_fn (float64)"
        loss = evaluate()
    floor = atol / rtol
    checks = []
    try:
        for name, value in params.items():
            grad = grads[name].astype(np.float64).reshape(-1)
            flat = value.reshape(-1)
            idx = _entries(flat.size, grad, samples, rng)
            numeric = np.empty(len(idx))
            for j, i in enumerate(idx):
                orig = flat[i]
                flat[i] = orig + eps
                up_at, up = float(flat[i]), evaluate()
                flat[i] = orig - eps
                down_at, down = float(flat[i]), evaluate()
                flat[i] = orig
                numeric[j] = (up - down) / (up_at - down_at)
            analytic = grad[idx]
            abs_err = np.abs(analytic - numeric)
            rel_err = abs_err / np.maximum(np.maximum(np.abs(analytic), np.abs(numeric)), floor)
            w = int(np.argmax(rel_err))
            checks.append(
                TensorCheck(
                    name=name,
                    shape=tuple(value.shape),
                    checked=len(idx),
                    max_grad=float(np.abs(grad).max()),
                    max_abs_error=float(abs_err.max()),
                    max_rel_error=float(rel_err[w]),
                    worst_index=tuple(int(k) for k in np.unravel_index(idx[w], value.shape)),
                    analytic=float(analytic[w]),
                    numeric=float(numeric[w]),
                    ok=bool(np.all(rel_err <= rtol)),
                )
            )
    finally:
        if loss_fn is None:
            model.load_state_dict(original)
    return GradCheck(checks, float(loss), eps, rtol, atol, method)
