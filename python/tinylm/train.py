"""The training loop, linear and boring on purpose (as nanoGPT's ``train.py``):

get batch -> forward and backward (per micro-batch) -> clip -> AdamW step -> log ->
evaluate every ``eval_interval`` steps -> checkpoint. Each arrow is one call into the Rust
core (:meth:`Transformer.forward_backward`, :meth:`Transformer.clip_grad_norm`,
:meth:`tinylm.AdamW.step`); :meth:`Transformer.train_step` is the same step in one call.

Everything a step depends on is a function of the step number (the batch comes from a
generator seeded with ``(seed, step)``, the learning rate from the schedule) or lives in
the checkpoint (parameters, AdamW moments), so a resumed run continues with exactly the
losses an uninterrupted run would have had. Ctrl-C or SIGTERM finishes the current step,
writes a checkpoint and raises :class:`TrainingInterrupted` (a ``KeyboardInterrupt``); a
NaN or infinite loss stops training and names the last good checkpoint of this run.

A resumed run may be given more ``steps`` than it started with: the learning-rate
schedule stays the one the run started with (``lr_decay_steps`` is kept at the first
``steps``), so the extra steps run at ``min_lr``, where the cosine had already arrived.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tinylm import _core, optim
from tinylm._checks import FLOAT32_MAX, MAX_ID, float_arg, int_arg
from tinylm._io import write_text_atomic
from tinylm._progress import Progress
from tinylm.model import Config, Transformer
from tinylm.optim import AdamW
from tinylm.report import TrainingReport
from tinylm.tokenizer import Tokenizer

CHECKPOINT_NAME = "ckpt.safetensors"
#: Bounds of the training settings: steps (and intervals), and sequences in one step.
MAX_STEPS, MAX_SEQUENCES = 2**40, 2**20


@dataclass
class TrainConfig:
    """Training settings. Defaults are nanoGPT's CPU Shakespeare run."""

    steps: int = 2000
    #: Sequences per micro-batch: what one forward and backward pass holds in memory.
    batch_size: int = 12
    #: Micro-batches whose gradients add up to one optimizer step (nanoGPT's
    #: ``gradient_accumulation_steps``): a step sees ``batch_size * grad_accum`` sequences.
    grad_accum: int = 1
    #: Tokens per training sequence; ``None`` means the model's context.
    seq_len: int | None = None
    lr: float = optim.LR
    min_lr: float = 1e-4
    warmup_steps: int = 100
    #: Steps over which the learning rate decays (cosine) to ``min_lr``; ``None`` = ``steps``.
    lr_decay_steps: int | None = None
    weight_decay: float = optim.WEIGHT_DECAY
    beta1: float = optim.BETAS[0]
    beta2: float = optim.BETAS[1]
    #: Clip the global gradient norm to this; ``None`` or 0 disables clipping.
    grad_clip: float | None = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    #: Steps between checkpoints (besides the end and interruptions); ``None`` = ``eval_interval``.
    checkpoint_interval: int | None = None
    seed: int = 1337

    def __post_init__(self) -> None:
        # Each setting as its kind and in its range (a TypeError or ValueError naming it),
        # floats within float32's range since the core computes in float32.
        for name, low, high in (
            ("steps", 1, MAX_STEPS),
            ("batch_size", 1, MAX_SEQUENCES),
            ("grad_accum", 1, MAX_SEQUENCES),
            ("eval_interval", 1, MAX_STEPS),
            ("eval_batches", 1, MAX_STEPS),
            ("warmup_steps", 0, MAX_STEPS),
            ("seed", 0, 2**64 - 1),
        ):
            setattr(self, name, int_arg(name, getattr(self, name), low, high))
        for name, high in (
            ("seq_len", 2**31),
            ("lr_decay_steps", MAX_STEPS),
            ("checkpoint_interval", MAX_STEPS),
        ):
            if getattr(self, name) is not None:
                setattr(self, name, int_arg(name, getattr(self, name), 1, high))
        for name in ("lr", "min_lr", "weight_decay"):
            setattr(self, name, float_arg(name, getattr(self, name), 0.0, FLOAT32_MAX))
        for name in ("beta1", "beta2"):
            setattr(self, name, float_arg(name, getattr(self, name), 0.0, 1.0))
        if self.grad_clip is not None:
            self.grad_clip = float_arg("grad_clip", self.grad_clip, 0.0, FLOAT32_MAX)
        if self.batch_size * self.grad_accum > MAX_SEQUENCES:
            raise ValueError(
                f"batch_size x grad_accum = {self.batch_size * self.grad_accum} sequences a "
                f"step, more than {MAX_SEQUENCES}"
            )

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine decay to ``min_lr`` (nanoGPT's ``get_lr``)."""
        decay_steps = self.lr_decay_steps or self.steps
        if step < self.warmup_steps:
            return self.lr * (step + 1) / (self.warmup_steps + 1)
        if step > decay_steps:
            return self.min_lr
        span = max(decay_steps - self.warmup_steps, 1)
        ratio = (step - self.warmup_steps) / span
        coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))
        return self.min_lr + coeff * (self.lr - self.min_lr)


@dataclass
class TrainResult:
    """What a training run did."""

    #: Steps completed in total (including those before a resume).
    steps_done: int
    #: Training loss of every step, from step 0.
    train_losses: list[float] = field(default_factory=list)
    #: (step, validation loss) pairs.
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    #: Global gradient norm (before clipping) of every step, from step 0.
    grad_norms: list[float] = field(default_factory=list)
    #: Seconds spent training (summed over resumed runs).
    elapsed: float = 0.0
    #: Training tokens per second of this run.
    tokens_per_second: float = 0.0
    interrupted: bool = False
    checkpoint: Path | None = None


#: Random streams: training batches and evaluation batches never share windows by accident.
TRAIN_STREAM, EVAL_STREAM = 0, 1


def get_batch(
    data: np.ndarray,
    batch_size: int,
    seq_len: int,
    seed: int,
    step: int,
    stream: int = TRAIN_STREAM,
) -> tuple[np.ndarray, np.ndarray]:
    """Random windows of ``data``: inputs (B, T) and the targets one token later. The
    windows depend only on ``(seed, stream, step)``."""
    batch_size = int_arg("batch_size", batch_size, 1, MAX_SEQUENCES)
    seq_len = int_arg("seq_len", seq_len, 1, 2**31)
    _check_data("data", data, seq_len, check_ids=False)
    rng = np.random.default_rng([seed, stream, step])
    starts = rng.integers(0, len(data) - seq_len, size=batch_size)
    offsets = np.arange(seq_len)
    x = data[starts[:, None] + offsets]
    y = data[starts[:, None] + offsets + 1]
    return x.astype(np.int64), y.astype(np.int64)


def estimate_loss(
    model: Transformer, data: np.ndarray, batch_size: int, seq_len: int, batches: int, seed: int
) -> float:
    """Mean loss over ``batches`` random batches; the same batches every call."""
    losses = [
        model._core.loss(*get_batch(data, batch_size, seq_len, seed, k, EVAL_STREAM))
        for k in range(batches)
    ]
    return float(np.mean(losses))


def evaluate(
    model: Transformer,
    data: np.ndarray,
    seq_len: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> float:
    """Mean next-token loss over all of ``data``, in consecutive windows of ``seq_len``;
    with ``progress``, a bar on stderr."""
    seq_len = seq_len or model.config.max_seq_len
    n_windows = (len(data) - 1) // seq_len
    if n_windows < 1:
        raise ValueError(f"evaluation needs more than {seq_len} tokens, the data has {len(data)}")
    bar = Progress(n_windows, enabled=progress, label="validation")
    total, count = 0.0, 0
    for first in range(0, n_windows, batch_size):
        idx = np.arange(first, min(first + batch_size, n_windows))[:, None] * seq_len
        offsets = np.arange(seq_len)
        x = data[idx + offsets].astype(np.int64)
        y = data[idx + offsets + 1].astype(np.int64)
        total += model._core.loss(x, y) * len(idx)
        count += len(idx)
        bar.update(count)
    bar.close()
    return total / count


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped :func:`train` after a step; the checkpoint is saved.

    A ``KeyboardInterrupt``, so a script stops as it would on Ctrl-C (after the checkpoint
    is written); ``model`` and ``result`` are what training had reached."""

    def __init__(self, message: str, model: Transformer, result: TrainResult, signum: int):
        super().__init__(message)
        self.model = model
        self.result = result
        self.signal = signum


def _schedule(config: TrainConfig) -> dict[str, Any]:
    """The settings that decide every step's batch and learning rate: all but ``steps``
    (where the run stops), with the decay horizon made explicit."""
    settings = dataclasses.asdict(config)
    settings["lr_decay_steps"] = config.lr_decay_steps or config.steps
    del settings["steps"]
    return settings


#: Bytes per float32 / int64.
_F32, _I64 = 4, 8


def step_memory_bytes(config: Config, batch_size: int, seq_len: int) -> int:
    """A rough count of the bytes one training step holds beyond the parameters: the
    activations kept for the backward pass (per layer and row: about ten C-wide vectors,
    two F-wide ones and H attention statistics), the logits and their gradient (2 V per
    row) and the int64 batch."""
    c = config
    rows = batch_size * seq_len
    per_row = c.n_layers * (10 * c.d_model + 2 * (c.d_ff or 4 * c.d_model) + c.n_heads)
    per_row += 2 * c.vocab_size + 4 * c.d_model
    return rows * (per_row * _F32 + 2 * _I64)


def physical_memory_bytes() -> int | None:
    """This machine's RAM, or None where the OS does not say."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None


def check_step_memory(
    config: Config,
    batch_size: int,
    seq_len: int,
    names: tuple[str, str] = ("batch_size", "seq_len"),
) -> None:
    """Refuses a batch whose training step would not fit in half of this machine's RAM,
    before anything is allocated."""
    need = step_memory_bytes(config, batch_size, seq_len)
    have = physical_memory_bytes()
    if have is not None and need > have // 2:
        raise ValueError(
            f"{names[0]} {batch_size} with {names[1]} {seq_len} needs about "
            f"{need / 2**30:,.1f} GiB for one training step, more than half of this "
            f"machine's {have / 2**30:,.1f} GiB; use a smaller {names[0]}"
        )


class _StopFlag:
    """Set by SIGINT/SIGTERM while training, so the loop stops between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, _frame: object) -> None:
        self.signal = signum


@contextmanager
def _catch_stop_signals(flag: _StopFlag) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s in previous:
        signal.signal(s, flag)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _check_data(name: str, data: np.ndarray, seq_len: int, check_ids: bool = True) -> None:
    """Token ids to train on: a 1-D integer array of more than ``seq_len`` ids (each one
    at most ``MAX_ID``, unless ``check_ids`` is False: a pass over the whole array)."""
    if not isinstance(data, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array of token ids, got {type(data).__name__}")
    if data.dtype.kind not in "iu" or data.dtype == np.bool_:
        raise TypeError(f"{name} must hold integer token ids, got an array of {data.dtype}")
    if data.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of token ids, got shape {data.shape}")
    if len(data) < seq_len + 1:
        raise ValueError(
            f"{name} has {len(data)} tokens, too few for a context of {seq_len}: it needs at "
            f"least {seq_len + 1}. Use more text or a shorter context."
        )
    if check_ids and (int(data.min()) < 0 or int(data.max()) > MAX_ID):
        bad = int(data.min()) if int(data.min()) < 0 else int(data.max())
        raise ValueError(f"{name} holds the token id {bad}, outside [0, {MAX_ID}]")


def train(
    model: Transformer,
    train_data: np.ndarray,
    val_data: np.ndarray | None,
    config: TrainConfig,
    out_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_eval: Callable[[int, float, float | None], None] | None = None,
    data_info: dict[str, Any] | None = None,
    report: TrainingReport | None = None,
) -> tuple[Transformer, TrainResult]:
    """Trains ``model`` (or, with ``resume``, the model of the checkpoint in ``out_dir``).

    Returns the trained model (a new object when resuming) and a :class:`TrainResult`.
    Checkpoints go to ``out_dir / "ckpt.safetensors"`` when ``out_dir`` is given.
    ``data_info`` (JSON-able, e.g. a hash of the data) is kept in the checkpoint; resuming
    with different ``data_info`` is refused, since the run could not continue as it was.
    Resuming needs the checkpoint's settings, except that ``steps`` may grow (see the
    module's notes on the schedule). Ctrl-C or SIGTERM saves a checkpoint and raises
    :class:`TrainingInterrupted`. A :class:`tinylm.report.TrainingReport` given as
    ``report`` records every step and evaluation (with a sample, which is printed).
    """
    seq_len = config.seq_len or model.config.max_seq_len
    if seq_len > model.config.max_seq_len:
        raise ValueError(
            f"seq_len {seq_len} is longer than the model's context ({model.config.max_seq_len})"
        )
    train_data = np.asarray(train_data)
    _check_data("training data", train_data, seq_len)
    if val_data is not None:
        val_data = np.asarray(val_data)
        _check_data("validation data", val_data, seq_len)
    check_step_memory(model.config, config.batch_size, seq_len)
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)

    result = TrainResult(steps_done=0, checkpoint=ckpt_path)
    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {ckpt_path}")
        model, optimizer, state = load_checkpoint(ckpt_path, model.backend)
        saved, wanted = _schedule(TrainConfig(**state["train_config"])), _schedule(config)
        if saved != wanted:
            changed = [
                f"{k}: checkpoint's {saved[k]!r}, now {v!r}"
                for k, v in wanted.items()
                if saved[k] != v
            ]
            raise ValueError(
                f"cannot resume with different training settings ({'; '.join(changed)}); "
                "the checkpoint's settings must be used to reproduce the run (only steps "
                "may grow, with lr_decay_steps kept: a longer run passes "
                f"lr_decay_steps={saved['lr_decay_steps']})"
            )
        if config.steps < state["step"]:
            raise ValueError(
                f"cannot resume with steps={config.steps}: the checkpoint has already done "
                f"{state['step']} steps"
            )
        if data_info is not None and state.get("data", data_info) != data_info:
            raise ValueError(
                "cannot resume: the training data differs from the checkpoint's "
                f"(checkpoint: {state['data']}, now: {data_info})"
            )
        result.steps_done = state["step"]
        result.train_losses = list(state["train_losses"])
        result.val_losses = [tuple(p) for p in state["val_losses"]]  # type: ignore[misc]
        result.grad_norms = list(state.get("grad_norms", []))
        result.elapsed = state["elapsed"]
        saved_step: int | None = result.steps_done
    else:
        saved_step = None
        optimizer = AdamW(
            model, config.lr, (config.beta1, config.beta2), weight_decay=config.weight_decay
        )

    model._core.check_trainable()  # a bfloat16 model is refused before any step

    def save(step: int) -> None:
        nonlocal saved_step
        if ckpt_path is None:
            return
        state = {
            "step": step,
            "train_config": dataclasses.asdict(config),
            "train_losses": result.train_losses,
            "val_losses": result.val_losses,
            "grad_norms": result.grad_norms,
            "elapsed": result.elapsed,
            "data": data_info,
        }
        tok = model.tokenizer._core if model.tokenizer is not None else None
        model._core.save_checkpoint(
            str(ckpt_path), optimizer._core, tok, {"train_state": json.dumps(state)}
        )
        saved_step = step

    ckpt_every = config.checkpoint_interval or config.eval_interval
    step_batch = config.batch_size * config.grad_accum
    tokens_per_step = step_batch * seq_len
    flag = _StopFlag()
    bar = Progress(config.steps, enabled=progress, initial=result.steps_done)
    start_step = result.steps_done
    run_start = time.perf_counter()
    last_val: float | None = result.val_losses[-1][1] if result.val_losses else None
    with _catch_stop_signals(flag):
        step = start_step
        while step < config.steps:
            t0 = time.perf_counter()
            optimizer.lr = config.lr_at(step)
            x, y = get_batch(train_data, step_batch, seq_len, config.seed, step)
            try:
                # Forward and backward, one micro-batch at a time: the gradient adds up in
                # the model (each micro-batch's loss scaled by 1 / grad_accum).
                micro_losses = []
                for micro in range(config.grad_accum):
                    rows = slice(micro * config.batch_size, (micro + 1) * config.batch_size)
                    micro_losses.append(
                        model.forward_backward(
                            x[rows],
                            y[rows],
                            scale=1 / config.grad_accum,
                            accumulate=micro > 0,
                            dropout_key=(config.seed, step * config.grad_accum + micro),
                        )
                    )
                loss = sum(micro_losses) / config.grad_accum
                # Clip the gradient's global norm, then one AdamW step.
                grad_norm = model.clip_grad_norm(config.grad_clip)
                optimizer.step()
            except _core.NonFiniteError as exc:
                bar.close()
                if ckpt_path is None:
                    kept = "no out_dir was given, so there is no checkpoint"
                elif saved_step is None:
                    kept = f"no checkpoint was written (the first was due at step {ckpt_every})"
                else:
                    kept = f"the last good checkpoint (step {saved_step}) is kept at {ckpt_path}"
                raise _core.NonFiniteError(
                    f"training diverged at step {step}: {exc}; {kept}"
                ) from None
            result.train_losses.append(float(loss))
            result.grad_norms.append(grad_norm)
            if report is not None:
                seconds = time.perf_counter() - t0
                report.record_step(model, step + 1, loss, config.lr_at(step), grad_norm, seconds)
            step += 1
            result.steps_done = step
            is_last = step == config.steps
            if val_data is not None and (step % config.eval_interval == 0 or is_last):
                last_val = estimate_loss(
                    model, val_data, config.batch_size, seq_len, config.eval_batches, config.seed
                )
                result.val_losses.append((step, last_val))
                bar.note(f"step {step}: train loss {loss:.4f}, val loss {last_val:.4f}")
                if report is not None:
                    sample = report.record_evaluation(model, step, float(loss), last_val)
                    bar.note(f"sample at step {step}: {sample!r}")
                if on_eval is not None:
                    on_eval(step, float(loss), last_val)
            result.elapsed += time.perf_counter() - t0
            if step % ckpt_every == 0 or is_last:
                save(step)
            run_time = time.perf_counter() - run_start
            rate = (step - start_step) * tokens_per_step / max(run_time, 1e-9)
            bar.update(step, loss=float(loss), val=last_val, rate=rate)
            if flag.signal is not None and not is_last:
                save(step)
                result.interrupted = True
                break
    bar.close()
    run_time = time.perf_counter() - run_start
    done = result.steps_done - start_step
    result.tokens_per_second = done * tokens_per_step / run_time if run_time > 0 else 0.0
    if flag.signal is not None and result.interrupted:
        name = "Ctrl-C" if flag.signal == signal.SIGINT else "SIGTERM"
        saved = f"checkpoint saved to {ckpt_path}" if ckpt_path else "no out_dir: nothing saved"
        message = f"{name}: stopped after step {result.steps_done}; {saved}"
        bar.note(message, always=True)
        raise TrainingInterrupted(message, model, result, flag.signal)
    return model, result


def load_checkpoint(path: Path, backend: str = "fast") -> tuple[Transformer, AdamW, dict[str, Any]]:
    """The model (on ``backend``), optimizer and training state stored in a checkpoint."""
    core, moments, tok, meta = _core.Model.load_checkpoint(str(path), backend)
    if "train_state" not in meta:
        raise _core.FormatError(f"{path}: not a training checkpoint (no train_state metadata)")
    try:
        state = json.loads(meta["train_state"])
        for key in ("step", "train_config", "train_losses", "val_losses", "elapsed"):
            state[key]
    except (ValueError, KeyError, TypeError) as exc:
        raise _core.FormatError(f"{path}: invalid train_state metadata: {exc}") from None
    _check_train_state(path, state)
    model = Transformer._from_core(core, Tokenizer(tok) if tok is not None else None, "safetensors")
    settings = TrainConfig(**state["train_config"])
    optimizer = AdamW._from_core(model, moments, settings.lr_at(state["step"]))
    return model, optimizer, state


def _check_train_state(path: Path, state: dict[str, Any]) -> None:
    """The training settings and data record of a checkpoint, checked field by field so
    that a checkpoint from another version is a one-line error, not a traceback."""
    settings = state["train_config"]
    if not isinstance(settings, dict):
        raise _core.FormatError(f"{path}: train_state.train_config must be an object")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise _core.FormatError(
            f"{path}: train_state.train_config has unknown setting(s) {', '.join(unknown)} "
            "(written by another version of tinylm?)"
        )
    try:
        TrainConfig(**settings)
    except (TypeError, ValueError) as exc:
        raise _core.FormatError(f"{path}: train_state.train_config is invalid: {exc}") from None
    data = state.get("data")
    if data is not None:
        if not isinstance(data, dict) or not isinstance(data.get("sha256"), str):
            raise _core.FormatError(
                f"{path}: train_state.data must record the training data's sha256"
            )
        if not isinstance(data.get("val_fraction"), (int, float)):
            raise _core.FormatError(
                f"{path}: train_state.data must record the validation fraction (val_fraction)"
            )


def save_history(path: Path, result: TrainResult) -> None:
    """The loss history as JSON."""
    data = {
        "steps_done": result.steps_done,
        "train_losses": result.train_losses,
        "val_losses": [[s, v] for s, v in result.val_losses],
        "elapsed_seconds": result.elapsed,
    }
    write_text_atomic(Path(path), json.dumps(data, indent=1))


def plot_history(path: Path, result: TrainResult) -> bool:
    """Draws the loss curves to a PNG; returns False (and draws nothing) when matplotlib
    is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    import io

    from tinylm._io import write_bytes_atomic

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = np.arange(1, len(result.train_losses) + 1)
    ax.plot(steps, result.train_losses, lw=0.8, alpha=0.6, label="train (per step)")
    if len(result.train_losses) >= 20:
        k = max(len(result.train_losses) // 50, 5)
        smooth = np.convolve(result.train_losses, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, lw=1.5, label=f"train ({k}-step mean)")
    if result.val_losses:
        vs, vl = zip(*result.val_losses)
        ax.plot(vs, vl, "o-", lw=1.5, ms=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss (nats)")
    ax.set_title("tinylm training")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())
    return True
