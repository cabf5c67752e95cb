"""The optimizer: AdamW over a model's parameters, with its moments kept in the Rust core.

A training step in its parts, as nanoGPT writes it::

    optimizer = AdamW(model, lr=1e-3)
    loss = model.forward_backward(x, y)   # forward and backward: the gradient is held
    norm = model.clip_grad_norm(1.0)      # clip its global norm
    optimizer.step()                      # update the parameters

or all three in one call: ``model.train_step(optimizer, x, y, grad_clip=1.0)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tinylm import _core
from tinylm._checks import FLOAT32_MAX, float_arg

if TYPE_CHECKING:
    from tinylm.model import Transformer

#: The defaults of :class:`AdamW`, which :class:`tinylm.TrainConfig` reads too: nanoGPT's
#: Shakespeare run.
LR = 1e-3
BETAS = (0.9, 0.99)
EPS = 1e-8
WEIGHT_DECAY = 0.1


class AdamW:
    """AdamW (decoupled weight decay) for one :class:`~tinylm.Transformer`.

    ``lr`` is the learning rate of the next :meth:`step`; a schedule sets it before each
    step (``optimizer.lr = schedule(step)``), as ``param_group["lr"]`` does in PyTorch.
    Weight decay applies to the matrices (the embedding tables too), not to biases or
    norms' gains.
    Defaults are nanoGPT's Shakespeare run (betas 0.9 and 0.99, weight decay 0.1).
    """

    def __init__(
        self,
        model: Transformer,
        lr: float = LR,
        betas: tuple[float, float] = BETAS,
        eps: float = EPS,
        weight_decay: float = WEIGHT_DECAY,
    ) -> None:
        from tinylm.model import Transformer

        if not isinstance(model, Transformer):
            raise TypeError(f"AdamW needs a tinylm.Transformer, got {type(model).__name__}")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise TypeError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        beta1, beta2 = betas  # each value is checked by the core
        self.model = model
        self.lr = lr
        self._core = _core.AdamW(model._core, beta1, beta2, eps, weight_decay)

    @classmethod
    def _from_core(cls, model: Transformer, core: _core.AdamW, lr: float) -> AdamW:
        """An optimizer around moments loaded from a checkpoint."""
        self = cls.__new__(cls)
        self.model, self.lr, self._core = model, lr, core
        return self

    @property
    def lr(self) -> float:
        """The learning rate of the next step."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = float_arg("lr", value, 0.0, FLOAT32_MAX)

    @property
    def steps_taken(self) -> int:
        """Updates made so far (AdamW's bias correction counts them)."""
        return self._core.step

    @property
    def hyperparameters(self) -> dict[str, float]:
        beta1, beta2, eps, weight_decay = self._core.hyperparameters
        return {"beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay}

    def step(self) -> float:
        """Updates the parameters from the gradient the model holds (from
        :meth:`Transformer.forward_backward`); returns that gradient's norm. Without a
        gradient, or with a non-finite one, it raises and changes nothing."""
        return float(self.model._core.adamw_step(self._core, self._lr))

    def zero_grad(self) -> None:
        """Forgets the model's held gradient (as ``optimizer.zero_grad()`` in PyTorch)."""
        self.model.zero_grad()

    def __repr__(self) -> str:
        h = self.hyperparameters
        return (
            f"AdamW(lr={self._lr:g}, betas=({h['beta1']:g}, {h['beta2']:g}), eps={h['eps']:g}, "
            f"weight_decay={h['weight_decay']:g}, steps_taken={self.steps_taken})"
        )
