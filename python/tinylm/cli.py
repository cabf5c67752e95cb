"""The command line: ``python -m tinylm {generate,train,info,models,demo,export,import}``
(also ``tinylm ...``).

Every numeric option is range-checked while the arguments are parsed, so a bad value is
a one-line error naming the option before any work starts; other user errors are one line
too (exit code 2), Ctrl-C is exit code 130.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import hashlib
import math
import os
import re
import shlex
import shutil
import stat
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from tinylm import _core
from tinylm._progress import PipeSafe, Progress
from tinylm.model import (
    BUNDLED_MODELS,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_K,
    Config,
    Score,
    Transformer,
    bundled_weights,
)
from tinylm.report import TrainingReport
from tinylm.tokenizer import Tokenizer
from tinylm.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingInterrupted,
    check_step_memory,
    evaluate,
    load_checkpoint,
    plot_history,
    save_history,
    train,
)

#: The Go TinyLM's training sentence and prompts.
DEMO_SENTENCE = "the cat sat on mat END"
DEMO_PROMPTS = ("the cat", "the dog")


BACKENDS = ("fast", "reference")
BACKEND_HELP = "fast kernels, or the plain reference implementation (slow)"
DTYPES = ("float32", "bfloat16")


class CliError(Exception):
    """A user error the CLI reports in one line."""


def _weights_path(weights: str | None, default: str = "shakespeare") -> Path:
    """A model file, or a bundled model's name (``shakespeare``, ``tiny``) when no file of
    that name exists here."""
    if weights is None:
        return bundled_weights(default)
    path = Path(weights)
    if weights in BUNDLED_MODELS and not path.exists():
        return bundled_weights(weights)
    return path


def _load_model(weights: str | None, backend: str = "fast", dtype: str = "float32") -> Transformer:
    return Transformer.load(_weights_path(weights), backend=backend, dtype=dtype)


def _program() -> str:
    """How this program was started, for hints that must work when pasted: ``tinylm`` if
    that name finds this script, else its path, else ``<python> -m tinylm``."""
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is None or argv0.name in ("__main__.py", "-c") or argv0.suffix == ".py":
        return f"{shlex.quote(sys.executable)} -m tinylm"
    found = shutil.which(argv0.name)
    if found and Path(found).resolve() == argv0.resolve():
        return argv0.name
    return shlex.quote(str(argv0))


# ------------------------------------------------------------------------------ export, import

#: Formats ``export --to`` writes and ``import --from`` reads.
EXPORT_FORMATS = ("hf", "llama2c", "onnx")
IMPORT_FORMATS = ("hf", "llama2c")


def cmd_export(args: argparse.Namespace) -> int:
    """Writes a tinylm model in another project's format (see tinylm.interop)."""
    # Nothing is computed: the reference backend holds every config.
    model = Transformer.load(_weights_path(args.weights), backend="reference")
    out = Path(args.out)
    if args.to == "hf":
        model.save_pretrained(out, max_shard_size=args.max_shard_size)
        written = [out]
    elif args.to == "llama2c":
        from tinylm.interop import llama2c

        written = [p for p in llama2c.export(model, out, args.llama2c_version) if p is not None]
    else:
        written = list(model.export_onnx(out))
    for path in written:
        print(f"wrote {path}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """Reads another project's model and saves it as a tinylm safetensors file."""
    tokenizer = Tokenizer.load(args.tokenizer) if args.tokenizer else None
    model = Transformer.load(
        args.source, backend="reference", format=args.source_format, tokenizer=tokenizer
    )
    model.save(args.out)
    print(f"wrote {args.out} ({model.num_parameters:,} parameters)")
    return 0


def _add_interop_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The ``export`` and ``import`` subcommands."""
    e = command("export", "write a model for Hugging Face, llama2.c or ONNX")
    e.add_argument("--to", required=True, choices=EXPORT_FORMATS, help="the format (no default)")
    e.add_argument("--weights", help="tinylm model file or bundled model (default: shakespeare)")
    e.add_argument(
        "out",
        help="folder (hf, llama2c: model.bin + tokenizer.bin) or .onnx file (onnx: the "
        "decoder graph goes beside it as <stem>_with_past.onnx); no default",
    )
    e.add_argument(
        "--max-shard-size",
        type=_int_in(1, 2**62),
        default=None,
        metavar="BYTES",
        help="hf: split the weights into shards of at most this size (default: 5e9)",
    )
    e.add_argument(
        "--llama2c-version",
        type=int,
        choices=(0, 1),
        default=0,
        help="llama2c: 0, the layout run.c reads, or 1, the 'ak42' header (default: 0)",
    )
    e.set_defaults(func=cmd_export)

    i = command("import", "convert a Hugging Face folder or llama2.c model.bin to tinylm")
    i.add_argument(
        "--from",
        dest="source_format",
        required=True,
        choices=IMPORT_FORMATS,
        help="the format (no default)",
    )
    i.add_argument("source", help="the folder (hf) or model.bin (llama2c); no default")
    i.add_argument("out", help="the tinylm safetensors file to write; no default")
    i.add_argument(
        "--tokenizer",
        help="a tinylm tokenizer JSON file to store with the model (default: the source's, "
        "if tinylm can read it)",
    )
    i.set_defaults(func=cmd_import)


# ------------------------------------------------------------------------------ generate


def _no_tokenizer(path: object, job: str) -> CliError:
    """The error for a model file without a tokenizer, saying how to give it one."""
    return CliError(
        f"{path}: this model file holds no tokenizer, so it cannot {job} (store one in it "
        "with `tinylm import --tokenizer FILE SOURCE OUT`; a llama2.c tokenizer.bin is read "
        "by tinylm.interop.llama2c instead)"
    )


def cmd_generate(args: argparse.Namespace) -> int:
    """Prints the prompt, then each piece of text as it is sampled: Ctrl-C stops between
    two tokens and keeps what was printed."""
    model = _load_model(args.weights, args.backend, args.dtype)
    tok = model.tokenizer
    if tok is None:
        raise _no_tokenizer(args.weights, "read text")
    chain = {
        "temperature": args.temperature,
        "top_k": args.top_k or None,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repetition_penalty": args.repetition_penalty,
        "frequency_penalty": args.frequency_penalty,
        "presence_penalty": args.presence_penalty,
        "penalty_last_n": args.penalty_last_n,
        "seed": args.seed,
        "window": args.window,
    }
    if args.interactive:
        return _interactive(model, tok, args, chain)
    prompt = _prompt(args, tok)
    if args.num_beams > 1 or args.num_samples > 1:
        return _print_many(model, tok, prompt, args, chain)
    _print_continuation(model, tok, prompt, args, chain)
    return 0


def _print_continuation(
    model: Transformer, tok: Tokenizer, prompt: str, args: argparse.Namespace, chain: dict
) -> None:
    """The prompt as the model reads it, then the continuation: piece by piece as it is
    sampled (``--stream``, the default) or all at once at the end (``--no-stream``).
    Ctrl-C stops between two tokens, prints what was sampled and re-raises."""
    pieces = model.stream(  # checks its arguments before the first token
        prompt, max_new_tokens=args.max_new_tokens, stop=args.stop, **chain
    )
    out = sys.stdout
    shown = tok.decode(tok.encode(prompt))  # the prompt as the model reads it
    held: list[str] = []  # with --no-stream: the text, printed at the end
    last = shown[-1:]

    def emit(text: str) -> None:
        if args.stream:
            out.write(text)
            out.flush()
        else:
            held.append(text)

    emit(shown)
    try:
        for piece in pieces:
            emit(piece)
            last = piece[-1:] or last
    except KeyboardInterrupt:
        out.write("".join(held))
        out.flush()
        sys.stderr.write("\n")
        raise
    out.write("".join(held) + ("" if last == "\n" else "\n"))
    out.flush()


def _interactive(model: Transformer, tok: Tokenizer, args: argparse.Namespace, chain: dict) -> int:
    """A prompt loop: each line typed is a prompt whose continuation streams; Ctrl-C stops
    a continuation and asks for the next prompt; Ctrl-D (or Ctrl-C at the prompt) ends."""
    tty = sys.stdin.isatty()
    if tty:
        print("type a prompt and press Enter; Ctrl-C stops a sample, Ctrl-D quits", file=sys.stderr)
    while True:
        try:
            line = input("> " if tty else "")
        except (EOFError, KeyboardInterrupt):
            if tty:
                sys.stderr.write("\n")
            return 0
        prompt = _with_newlines(line)
        if not prompt.strip():
            continue
        try:
            args.prompt, args.prompt_file = prompt, None
            prompt = _prompt(args, tok)
            if args.num_beams > 1 or args.num_samples > 1:
                _print_many(model, tok, prompt, args, chain)
            else:
                _print_continuation(model, tok, prompt, args, chain)
        except KeyboardInterrupt:
            sys.stdout.write("\n")
        except (CliError, ValueError) as exc:  # a prompt the model cannot read
            print(f"error: {exc}", file=sys.stderr)
        sys.stdout.flush()


def _print_many(
    model: Transformer, tok: Tokenizer, prompt: str, args: argparse.Namespace, chain: dict
) -> int:
    """Beam search or several samples: each printed whole when the batch is done, with a
    header line (stop strings cut each text after the first one)."""
    ids = tok.encode(prompt)
    if args.num_beams > 1:
        beams = model.beam_search(
            ids,
            args.max_new_tokens,
            num_beams=args.num_beams,
            num_return_sequences=min(args.num_samples, args.num_beams),
        )
        results = [(f"beam {k + 1} (score {b.score:.3f})", b.ids) for k, b in enumerate(beams)]
    else:
        # A batch needs each prompt to fit in the context: the model sees the last P ids
        # (as when generating one sample), and the text printed keeps the whole prompt.
        unseen = ids[: max(0, len(ids) - model.config.max_seq_len)]
        many = model.generate_many(
            ids[len(unseen) :], args.max_new_tokens, num_samples=args.num_samples, **chain
        )
        results = [(f"sample {k + 1}", unseen + seq) for k, seq in enumerate(many)]
    for k, (title, seq) in enumerate(results):
        text = tok.decode(seq)
        for stop in args.stop or ():
            at = text.find(stop, len(tok.decode(ids)))
            if at >= 0:
                text = text[: at + len(stop)]
        print(("\n" if k else "") + f"--- {title}")
        print(text, end="" if text.endswith("\n") else "\n")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Scores a whole file: loss (nats per token), perplexity, bits per character."""
    model = _load_model(args.weights, args.backend, args.dtype)
    tok = model.tokenizer
    if tok is None:
        raise _no_tokenizer(args.weights, "read text")
    text = _read_text(Path(args.data))
    try:
        ids = tok.encode(text)
    except _core.TokenizerError as exc:
        raise CliError(f"{args.data}: {exc}") from None
    if len(ids) < 2:
        raise CliError(f"{args.data}: the text must hold at least 2 tokens")
    # Scored in pieces of a few thousand tokens (each overlapping the one before by a
    # context), so that a progress bar can follow a long file.
    step = 64 * model.config.max_seq_len
    context = model.config.max_seq_len
    logprobs = []
    starts = range(0, len(ids) - 1, step)
    progress = Progress(len(starts), stream=sys.stderr, label="scoring")
    for k, start in enumerate(starts):
        lo = max(0, start - context // 2)
        piece = model.score(ids[lo : start + step + 1]).token_logprobs
        logprobs.append(piece[start - lo :])
        progress.update(k + 1)
    progress.close()
    score = Score(np.concatenate(logprobs), len(tok.decode(ids[1:])), None)
    print(f"file:            {args.data} ({len(text):,} characters, {len(ids):,} tokens)")
    print(f"loss:            {score.loss:.4f} nats per token")
    print(f"perplexity:      {score.perplexity:.3f}")
    print(f"bits per token:  {score.bits_per_token:.4f}")
    print(f"bits per char:   {score.bits_per_char:.4f}")
    return 0


def _prompt(args: argparse.Namespace, tok: Tokenizer) -> str:
    """The prompt of ``--prompt`` or ``--prompt-file`` (default: :func:`_default_prompt`),
    with the words or characters the vocabulary lacks dropped under ``--unknown skip``."""
    if args.prompt_file is not None:
        prompt = _read_text(Path(args.prompt_file))
    elif args.prompt is not None:
        prompt = args.prompt
    else:
        prompt = _default_prompt(tok)
    if prompt == "":
        raise CliError("the prompt is empty: give at least one word or character with --prompt")
    if args.unknown == "skip":
        prompt, dropped = _drop_unknown(prompt, tok)
        if dropped:
            shown = " ".join(repr(t) for t in sorted(set(dropped))[:10])
            print(
                f"skipped {len(dropped)} prompt {'words' if tok.kind == 'word' else 'characters'}"
                f" the vocabulary lacks: {shown}",
                file=sys.stderr,
            )
        if not prompt:
            raise CliError("the prompt is empty once the unknown characters are skipped")
    return prompt


def _drop_unknown(prompt: str, tok: Tokenizer) -> tuple[str, list[str]]:
    """The prompt without the tokens a word or character vocabulary lacks, and those."""
    known = set(tok.vocab)
    if tok.kind == "word":
        words = prompt.split()
        return " ".join(w for w in words if w in known), [w for w in words if w not in known]
    if tok.kind == "char":
        return "".join(ch for ch in prompt if ch in known), [ch for ch in prompt if ch not in known]
    return prompt, []  # other tokenizers encode any text


# ------------------------------------------------------------------------------ train


#: Largest training text read (a corpus is tokenized in memory).
MAX_TEXT_BYTES = 4 << 30


def _read_text(path: Path) -> str:
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode):
            raise CliError(
                f"{path}: not a regular file (a FIFO, device or socket): give a text file"
            )
        if info.st_size > MAX_TEXT_BYTES:
            raise CliError(
                f"{path}: {info.st_size:,} bytes is more than the limit of {MAX_TEXT_BYTES:,}"
            )
        with open(path, "rb") as f:
            raw = f.read(info.st_size)
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a text file") from None
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CliError(
            f"{path}: not UTF-8 text (invalid byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def _read_training_text(path: Path) -> str:
    text = _read_text(path)
    if len(text) < 2:
        raise CliError(f"{path}: the training text must hold at least 2 characters")
    return text


def _split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


#: What a run writes into ``--out``.
MODEL_NAME = "model.safetensors"
RUN_FILES = (MODEL_NAME, CHECKPOINT_NAME, "losses.json", "loss.png")

#: Options a checkpoint fixes, each with the checkpoint's value: (model config, tokenizer,
#: training config, data info) -> the value the option would have had.
RESUME_SETTINGS: dict[str, Callable[[Config, Tokenizer, TrainConfig, dict], object]] = {
    "tokenizer": lambda c, tok, t, d: tok.kind,
    "vocab_size": lambda c, tok, t, d: tok.vocab_size,
    "d_model": lambda c, tok, t, d: c.d_model,
    "n_layers": lambda c, tok, t, d: c.n_layers,
    "n_heads": lambda c, tok, t, d: c.n_heads,
    "d_ff": lambda c, tok, t, d: c.d_ff,
    "context": lambda c, tok, t, d: c.max_seq_len,
    "no_attn_bias": lambda c, tok, t, d: not c.attn_bias,
    "untied": lambda c, tok, t, d: not c.tie_embeddings,
    "dropout": lambda c, tok, t, d: float(np.float32(c.dropout)),
    "batch_size": lambda c, tok, t, d: t.batch_size,
    "grad_accum": lambda c, tok, t, d: t.grad_accum,
    "lr": lambda c, tok, t, d: t.lr,
    "min_lr": lambda c, tok, t, d: t.min_lr,
    "warmup": lambda c, tok, t, d: t.warmup_steps,
    "lr_decay_steps": lambda c, tok, t, d: t.lr_decay_steps,
    "weight_decay": lambda c, tok, t, d: t.weight_decay,
    "beta1": lambda c, tok, t, d: t.beta1,
    "beta2": lambda c, tok, t, d: t.beta2,
    "grad_clip": lambda c, tok, t, d: t.grad_clip or 0.0,
    "eval_interval": lambda c, tok, t, d: t.eval_interval,
    "eval_batches": lambda c, tok, t, d: t.eval_batches,
    "checkpoint_interval": lambda c, tok, t, d: t.checkpoint_interval,
    "seed": lambda c, tok, t, d: t.seed,
    "val_fraction": lambda c, tok, t, d: d.get("val_fraction"),
}
#: Options that say how to run, not what is trained: free when resuming (``--steps`` and
#: ``--data`` are checked on their own).
RUN_OPTIONS = {
    "data",
    "out",
    "resume",
    "force",
    "quiet",
    "final_eval",
    "threads",
    "steps",
    "backend",
}


@dataclass
class _Run:
    """What ``train`` starts from: a new model or a checkpoint's, and its settings."""

    model: Transformer
    config: TrainConfig
    data: Path
    text: str
    val_fraction: float
    #: The checkpoint's data facts (sha256, ...) when resuming.
    data_info: dict[str, Any] | None = None


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    run = _resumed_run(args, out) if args.resume else _new_run(args, out)
    model, config = run.model, run.config
    tok = model.tokenizer
    assert tok is not None
    text = run.text
    data_info = run.data_info or {
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "val_fraction": run.val_fraction,
        "path": str(run.data.resolve()),
    }
    if tok.kind == "bpe":
        # Split the text, not the ids: the BPE vocabulary was learnt on the training part.
        train_text, val_text = _split_text(text, run.val_fraction)
        train_ids = np.asarray(tok.encode_ordinary(train_text), dtype=np.int64)
        val_ids = np.asarray(tok.encode_ordinary(val_text), dtype=np.int64)
    else:
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        train_ids, val_ids = _split(ids, run.val_fraction)
    context = model.config.max_seq_len
    for name, part in (("training split", train_ids), ("validation split", val_ids)):
        if len(part) <= context:
            raise CliError(
                f"{run.data}: the {name} has {len(part)} tokens, too few for a context of "
                f"{context}; use more text, a shorter --context or another --val-fraction"
            )
    out.mkdir(parents=True, exist_ok=True)
    print(f"{model!r}", file=sys.stderr)
    print(
        f"data: {len(train_ids):,} training and {len(val_ids):,} validation tokens "
        f"({tok.kind} level, vocab {tok.vocab_size}); threads: {_core.get_num_threads()}",
        file=sys.stderr,
    )
    started = time.perf_counter()
    seq_len = config.seq_len or context
    report = TrainingReport(
        prompt=tok.encode(_default_prompt(tok)),
        tokens_per_step=config.batch_size * config.grad_accum * seq_len,
        seed=config.seed,
    )
    try:
        model, result = train(
            model,
            train_ids,
            val_ids,
            config,
            out_dir=out,
            resume=args.resume,
            progress=not args.quiet,
            data_info=data_info,
            report=report,
        )
    except TrainingInterrupted as stop:
        _save_curves(out, stop.result)
        _save_report(out, report)
        print(
            f"interrupted at step {stop.result.steps_done} of {config.steps}; continue with: "
            f"{_program()} train --resume --out {shlex.quote(str(out))}",
            file=sys.stderr,
        )
        return 130
    wall = time.perf_counter() - started
    _save_curves(out, result)
    _save_report(out, report)
    model_path = out / MODEL_NAME
    model.save(model_path)
    print(
        f"trained {result.steps_done} steps in {wall:.1f}s "
        f"({result.tokens_per_second:,.0f} tokens/s); {_final_eval(args, model, val_ids, result)}"
    )
    print(f"model: {model_path}")
    sample = model.generate(tok.encode(_default_prompt(tok)), seed=config.seed)
    print("sample:")
    print(tok.decode(sample))
    return 0


def _new_run(args: argparse.Namespace, out: Path) -> _Run:
    if args.data is None:
        raise CliError("--data FILE is required (the text to train on), unless --resume")
    _claim_out_dir(out, args.force)
    data = Path(args.data)
    text = _read_training_text(data)
    tok = _new_tokenizer(args, data, text, args.val_fraction)
    sizes = {
        "vocab_size": tok.vocab_size,
        "d_model": args.d_model,
        "n_layers": args.n_layers,
        "n_heads": args.n_heads,
        "max_seq_len": args.context,
        "dropout": args.dropout,
    }
    if args.d_ff is not None:
        sizes["d_ff"] = args.d_ff
    if args.arch == "llama":
        model_config = Config.llama(**sizes)
    else:
        model_config = Config(
            **sizes, attn_bias=not args.no_attn_bias, tie_embeddings=not args.untied
        )
    check_step_memory(model_config, args.batch_size, args.context, ("--batch-size", "--context"))
    config = TrainConfig(
        steps=args.steps,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        lr=args.lr,
        min_lr=args.min_lr,
        warmup_steps=args.warmup,
        lr_decay_steps=args.lr_decay_steps,
        weight_decay=args.weight_decay,
        beta1=args.beta1,
        beta2=args.beta2,
        grad_clip=args.grad_clip,
        eval_interval=args.eval_interval,
        eval_batches=args.eval_batches,
        checkpoint_interval=args.checkpoint_interval,
        seed=args.seed,
    )
    model = Transformer(model_config, seed=args.seed, tokenizer=tok, backend=args.backend)
    return _Run(model, config, data, text, args.val_fraction)


def _claim_out_dir(out: Path, force: bool) -> None:
    """Refuses to start a new run over an earlier one unless ``--force``, which deletes
    the earlier run's files (so no message can point at its checkpoint)."""
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not found:
        return
    if not force:
        what = (
            "a finished model"
            if MODEL_NAME in found
            else "an unfinished run"
            if CHECKPOINT_NAME in found
            else "an earlier run's files"
        )
        raise CliError(
            f"{out} already holds {what} ({', '.join(found)}): continue it with --resume, "
            "train into another --out, or start over with --force (deletes those files)"
        )
    for name in found:
        (out / name).unlink()
    print(f"--force: deleted {', '.join(found)} from {out}", file=sys.stderr)


def _resumed_run(args: argparse.Namespace, out: Path) -> _Run:
    """The checkpoint's model and settings; options that contradict them are an error, and
    ``--steps`` may move the end of the run (the learning-rate schedule stays)."""
    ckpt = out / CHECKPOINT_NAME
    if not ckpt.exists():
        raise CliError(f"--resume: there is no checkpoint at {ckpt}")
    model, _, state = load_checkpoint(ckpt, args.backend)
    tok = model.tokenizer
    if tok is None:
        raise CliError(f"{ckpt}: the checkpoint holds no tokenizer")
    saved = TrainConfig(**state["train_config"])
    data_info: dict[str, Any] = state.get("data") or {}
    explicit: set[str] = getattr(args, "explicit", set())
    conflicts = []
    for dest in sorted(explicit - RUN_OPTIONS):
        flag = "--" + dest.replace("_", "-")
        if dest not in RESUME_SETTINGS:
            conflicts.append(f"{flag} (the checkpoint fixes it)")
            continue
        theirs = RESUME_SETTINGS[dest](model.config, tok, saved, data_info)
        mine = getattr(args, dest)
        if dest == "grad_clip":
            mine = mine or 0.0
        if dest == "dropout":  # the model keeps it as a float32
            mine = float(np.float32(mine))
        if mine != theirs:
            conflicts.append(f"{flag} {_show(mine)} (the checkpoint's: {_show(theirs)})")
    if conflicts:
        raise CliError(
            "--resume continues a run with the settings it started with, and these options "
            f"differ: {', '.join(conflicts)}; drop them, or start a new run in another --out"
        )
    if args.data is not None:
        data = Path(args.data)
    elif data_info.get("path"):
        data = Path(data_info["path"])
        if not data.exists():
            raise CliError(
                f"--resume: the run's training text {data} is gone; give its new place with --data"
            )
    else:
        raise CliError(f"--resume: {ckpt} does not record its training text; give --data")
    text = _read_training_text(data)
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if data_info.get("sha256", sha256) != sha256:
        raise CliError(
            f"--resume: the training data differs from the checkpoint's ({data} has "
            f"sha256 {sha256[:12]}..., the run was trained on {data_info['sha256'][:12]}...)"
        )
    done = int(state["step"])
    config = saved
    if "steps" in explicit and args.steps != saved.steps:
        if args.steps <= done:
            raise CliError(
                f"--steps {args.steps}: the run in {out} has already done {done} steps; "
                f"give more than {done} to train further"
            )
        config = dataclasses.replace(
            saved, steps=args.steps, lr_decay_steps=saved.lr_decay_steps or saved.steps
        )
        print(
            f"--steps {args.steps}: the run ends at step {args.steps} instead of {saved.steps}; "
            f"the learning rate keeps its schedule (cosine to --min-lr {saved.min_lr:g} by step "
            f"{config.lr_decay_steps}, then flat)",
            file=sys.stderr,
        )
    elif done >= saved.steps:
        raise CliError(
            f"the run in {out} is finished ({done} of {saved.steps} steps); to train further, "
            f"give --steps N with N > {done}"
        )
    check_step_memory(model.config, config.batch_size, model.config.max_seq_len)
    print(f"resuming from {ckpt} at step {done} of {config.steps}", file=sys.stderr)
    val_fraction = float(data_info.get("val_fraction", 0.1))
    return _Run(model, config, data, text, val_fraction, data_info or None)


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _save_curves(out: Path, result: Any) -> None:
    save_history(out / "losses.json", result)
    if plot_history(out / "loss.png", result):
        print(f"loss curve: {out / 'loss.png'}", file=sys.stderr)
    else:
        print(
            "matplotlib is not installed: no loss-curve PNG (pip install 'tinylm[plot]')",
            file=sys.stderr,
        )


def _save_report(out: Path, report: TrainingReport) -> None:
    """``report.html`` beside ``loss.png`` (nothing without matplotlib: _save_curves says so)."""
    try:
        report.write_html(out / "report.html", title=f"tinylm training report: {out}")
    except ImportError:
        return
    print(f"training report: {out / 'report.html'}", file=sys.stderr)


def _final_eval(
    args: argparse.Namespace, model: Transformer, val_ids: np.ndarray, result: Any
) -> str:
    """The validation loss ``--final-eval`` asks for, as words."""
    if args.final_eval == "full":
        return f"full validation loss {evaluate(model, val_ids, progress=not args.quiet):.4f}"
    if args.final_eval == "sample" and result.val_losses:
        step, loss = result.val_losses[-1]
        return f"validation loss {loss:.4f} (estimate at step {step})"
    return "no final validation"


def _default_prompt(tok: Tokenizer) -> str:
    """A newline for character models that know one (as nanoGPT) and BPE models, else the
    first token."""
    if tok.kind == "bpe" or (tok.kind == "char" and "\n" in tok.vocab):
        return "\n"
    return tok.vocab[0]


def _split_text(text: str, val_fraction: float) -> tuple[str, str]:
    n_train = int(len(text) * (1.0 - val_fraction))
    return text[:n_train], text[n_train:]


def _new_tokenizer(
    args: argparse.Namespace, data: Path, text: str, val_fraction: float
) -> Tokenizer:
    if args.tokenizer == "char":
        return Tokenizer.char_level(text)
    if args.tokenizer == "word":
        return _word_tokenizer(text)
    # BPE learns from the training split only, streamed from the file: its first
    # len(train_text) characters, as bytes.
    train_text, _ = _split_text(text, val_fraction)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        tok = Tokenizer.bpe(
            data,
            args.vocab_size,
            pattern=args.bpe_pattern,
            max_bytes=len(train_text.encode("utf-8")),
            progress=False if args.quiet else None,
        )
    for warning in caught:
        print(f"warning: {warning.message}", file=sys.stderr)
    return tok


def _word_tokenizer(text: str) -> Tokenizer:
    words = sorted(set(text.split()))
    if not words:
        raise CliError("the training text holds no words")
    return Tokenizer.word_level(words)


# ------------------------------------------------------------------------------ info


def cmd_info(args: argparse.Namespace) -> int:
    if args.weights is None:
        return cmd_models(args)
    path = _weights_path(args.weights)
    model = Transformer.load(path)
    c = model.config
    tok = model.tokenizer
    print(f"file:        {path} ({path.stat().st_size:,} bytes)")
    print(f"format:      {model.source_format}")
    print(f"parameters:  {model.num_parameters:,}")
    print(f"vocab_size:  {c.vocab_size}")
    print(f"d_model:     {c.d_model}")
    print(f"n_layers:    {c.n_layers}")
    print(f"n_heads:     {c.n_heads} (head size {c.d_model // c.n_heads})")
    print(f"d_ff:        {c.d_ff}")
    print(f"max_seq_len: {c.max_seq_len}")
    print(f"eps:         {c.eps:g}")
    print(f"attn_bias:   {c.attn_bias}")
    print(f"tied head:   {c.tie_embeddings}")
    if c.dropout:
        print(f"dropout:     {c.dropout:g} (training passes only)")
    if tok is None:
        print("tokenizer:   none")
    else:
        preview = " ".join(repr(t) for t in tok.vocab[:12])
        more = " ..." if tok.vocab_size > 12 else ""
        print(f"tokenizer:   {tok.kind} level, {tok.vocab_size} tokens: {preview}{more}")
    if model.source_format == "safetensors":
        _print_training_state(path)
    return 0


def _print_training_state(path: Path) -> None:
    """A checkpoint's step, losses and training settings (nothing for a plain model)."""
    try:
        _, _, state = load_checkpoint(path)
    except _core.TinyLMError:
        return
    config = state["train_config"]
    print(f"checkpoint:  step {state['step']} of {config['steps']}, {state['elapsed']:.1f}s")
    if state["train_losses"]:
        print(f"train loss:  {state['train_losses'][-1]:.4f} at step {len(state['train_losses'])}")
    if state["val_losses"]:
        step, loss = state["val_losses"][-1]
        print(f"val loss:    {loss:.4f} at step {step}")
    settings = ", ".join(f"{k} {v}" for k, v in config.items() if k != "steps")
    print(f"training:    {settings}")
    data = state.get("data") or {}
    if data:
        where = data.get("path", "(path not recorded)")
        print(
            f"data:        {where} (sha256 {str(data.get('sha256'))[:12]}..., "
            f"val_fraction {data.get('val_fraction')})"
        )


def cmd_models(_args: argparse.Namespace) -> int:
    """The bundled models, by the names ``--weights`` accepts."""
    width = max(map(len, BUNDLED_MODELS)) + 1
    for name in BUNDLED_MODELS:
        path = bundled_weights(name)
        model = Transformer.load(path)
        kind = model.tokenizer.kind if model.tokenizer is not None else "no"
        print(
            f"{name:<{width}} {kind} level, {model.num_parameters:,} parameters, context "
            f"{model.config.max_seq_len}, {model.source_format}: {path}"
        )
    return 0


# ------------------------------------------------------------------------------ tokenize

# Background colours that alternate between neighbouring tokens.
_TOKEN_COLOURS = ("\x1b[30;43m", "\x1b[30;46m", "\x1b[30;45m", "\x1b[30;42m")


def _token_pieces(tok: Tokenizer, ids: list[int]) -> list[tuple[str, list[int]]]:
    """The text of each token; BPE tokens that end inside a character are grouped with
    the next ones until the character is complete."""
    if tok.kind != "bpe":
        sep = " " if tok.kind == "word" else ""
        return [(tok.vocab[i] + sep, [i]) for i in ids]
    decoder = tok.decoder()
    pieces: list[tuple[str, list[int]]] = []
    group: list[int] = []
    for i in ids:
        group.append(i)
        text = decoder.push(i)
        if text:
            pieces.append((text, group))
            group = []
    rest = decoder.finish()
    if group:
        pieces.append((rest, group))
    return pieces


def cmd_tokenize(args: argparse.Namespace) -> int:
    tok = _load_model(args.weights).tokenizer
    if tok is None:
        raise _no_tokenizer(args.weights, "read text")
    ids = (
        tok.encode(args.text, allowed_special="all") if tok.kind == "bpe" else tok.encode(args.text)
    )
    print(f"{len(ids)} tokens ({tok.kind} level, vocab {tok.vocab_size}): {ids}")
    pieces = _token_pieces(tok, ids)
    colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    if colour:
        shown = (
            f"{_TOKEN_COLOURS[k % len(_TOKEN_COLOURS)]}{text}\x1b[0m"
            for k, (text, _) in enumerate(pieces)
        )
    else:
        shown = (f"[{text}]" for text, _ in pieces)
    print("".join(shown))
    return 0


# ------------------------------------------------------------------------------ demo


def cmd_demo(args: argparse.Namespace) -> int:
    path = _weights_path(args.weights, default="tiny")
    model = Transformer.load(path, backend=args.backend)
    tok = model.tokenizer
    if tok is None or tok.kind != "word":
        raise CliError(f"{path}: the demo needs a word-level model (the Go TinyLM format)")
    ids = tok.encode(DEMO_SENTENCE)
    inputs, targets = np.array([ids[:-1]]), np.array([ids[1:]])
    print(f"training on {DEMO_SENTENCE!r}: {args.steps} steps of SGD, lr {args.lr}")
    for step in range(args.steps):
        loss = model._core.sgd_step(inputs, targets, args.lr)
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step:3d}  loss {loss:.6f}")
    end = [tok.vocab.index("END")] if "END" in tok.vocab else []
    for prompt in DEMO_PROMPTS:
        out = model.generate(tok.encode(prompt), max_new_tokens=5, temperature=0.0, stop=end)
        print(tok.decode(out))
    return 0


# ------------------------------------------------------------------------------ explain, attention

#: The prompt of ``explain`` and ``attention``: the Go TinyLM's.
LEARNER_PROMPT = "the cat"


def _learner_inputs(args: argparse.Namespace) -> tuple[Transformer, list[int], str]:
    """The model of ``--weights`` (default: the Go demo model) and the ids of ``--prompt``,
    checked against its context; and the model's file name for titles."""
    path = _weights_path(args.weights, default="tiny")
    model = Transformer.load(path)
    tok = model.tokenizer
    if tok is None:
        raise _no_tokenizer(path, "read a prompt")
    if args.prompt == "":
        raise CliError("the prompt is empty: give at least one word or character with --prompt")
    ids = (
        tok.encode(args.prompt, allowed_special="all")
        if tok.kind == "bpe"
        else tok.encode(args.prompt)
    )
    context = model.config.max_seq_len
    if len(ids) > context:
        raise CliError(
            f"the prompt is {len(ids)} tokens long, more than the model's context of {context} "
            "tokens (max_seq_len): shorten --prompt"
        )
    return model, ids, path.name


def cmd_explain(args: argparse.Namespace) -> int:
    """Prints one forward pass step by step (see :mod:`tinylm.explain`)."""
    from tinylm.explain import explain

    model, ids, name = _learner_inputs(args)
    full = {"auto": None, "full": True, "summary": False}[args.matrices]
    print(f"tinylm explain: one forward pass of {name} on {args.prompt!r}")
    sys.stdout.write(explain(model, ids, full=full))
    return 0


def cmd_attention(args: argparse.Namespace) -> int:
    """Draws the attention probabilities of every layer and head (see :mod:`tinylm.viz`)."""
    from tinylm.explain import token_label
    from tinylm.viz import plot_attention

    model, ids, name = _learner_inputs(args)
    labels = [token_label(model.tokenizer, i) for i in ids]
    try:
        plot_attention(
            model.attention(ids), labels, args.out, title=f"{name}: attention on {args.prompt!r}"
        )
    except ImportError as exc:
        raise CliError(str(exc)) from None
    c = model.config
    print(
        f"wrote {args.out}: {c.n_layers} layer{'s' * (c.n_layers > 1)} x {c.n_heads} "
        f"head{'s' * (c.n_heads > 1)} of attention over {len(ids)} tokens"
    )
    return 0


def _add_learner_commands(
    command: Callable[[str, str], argparse.ArgumentParser], bundled: str
) -> None:
    """The subcommands that show a model at work: ``explain`` and ``attention``."""
    weights_help = f"model file or bundled model ({bundled}); default: tiny (the Go demo model)"
    prompt_help = f"the text to run (default: {LEARNER_PROMPT!r})"
    e = command("explain", "walk through one forward pass, step by step, with every number")
    e.add_argument("--weights", help=weights_help)
    e.add_argument("--prompt", default=LEARNER_PROMPT, help=prompt_help)
    e.add_argument(
        "--matrices",
        choices=("auto", "full", "summary"),
        default="auto",
        help="print whole matrices, or each row's norm and largest entries (default: auto, "
        "whole matrices for a model as small as the Go demo model)",
    )
    e.set_defaults(func=cmd_explain)
    a = command("attention", "draw the attention of every layer and head as heat maps (PNG)")
    a.add_argument("--weights", help=weights_help)
    a.add_argument("--prompt", default=LEARNER_PROMPT, help=prompt_help)
    a.add_argument(
        "--out", default="attention.png", help="the PNG to write (default: attention.png)"
    )
    a.set_defaults(func=cmd_attention)


# ------------------------------------------------------------------------------ main


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, unless the help already says it or the
    option is a flag."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default in (None, False, argparse.SUPPRESS) or not action.option_strings
        if quiet or "default" in text:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class _Parser(argparse.ArgumentParser):
    """argparse with "did you mean" for a mistyped option or choice (Python 3.14's
    ``suggest_on_error``, for every Python), shown with the command's own usage."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        #: The subcommands' parsers, by name.
        self.commands: dict[str, argparse.ArgumentParser] = {}

    def parse_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:  # type: ignore[override]
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self.commands.get(getattr(parsed, "command", None) or "", self)
            owner.error(_unrecognized(extras, owner))
        return parsed

    def error(self, message: str) -> Any:  # type: ignore[override]
        bad = re.search(r"invalid choice: '([^']*)'", message)
        if bad:
            choices = [c for a in self._actions if a.choices for c in a.choices]
            close = difflib.get_close_matches(bad.group(1), [str(c) for c in choices], n=1)
            if close:
                message += f"; did you mean {close[0]!r}?"
        super().error(message)


def _unrecognized(extras: list[str], parser: argparse.ArgumentParser) -> str:
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    parts = []
    for arg in extras:
        close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6)
        parts.append(f"{arg} (did you mean {close[0]}?)" if arg.startswith("-") and close else arg)
    return f"unrecognized arguments: {' '.join(parts)}"


def _add_weights_argument(parser: argparse.ArgumentParser, default: str = "shakespeare") -> None:
    """``--weights``: a model file or the name of a bundled model."""
    bundled = ", ".join(BUNDLED_MODELS)
    parser.add_argument(
        "--weights", help=f"model file or bundled model ({bundled}); default: {default}"
    )


def _add_dtype_argument(parser: argparse.ArgumentParser) -> None:
    """``--dtype``: how the weights are stored (see Transformer.to)."""
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float32",
        help="float32, or bfloat16: every weight rounded to bfloat16 and read as 2 bytes, "
        "which generates up to twice as fast from a model larger than the CPU's caches "
        "(default: %(default)s)",
    )


def _add_backend_argument(parser: argparse.ArgumentParser) -> None:
    """``--backend``: which implementation runs the model."""
    parser.add_argument(
        "--backend", choices=BACKENDS, default="fast", help=BACKEND_HELP + " (default: fast)"
    )


def _default(cls: type, name: str) -> Any:
    """A dataclass field's default: each default lives once, in :class:`Config` or
    :class:`TrainConfig`, and the command line reads it from there."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _with_newlines(text: str) -> str:
    """Text typed on one line, with each ``\\n`` in it a newline."""
    return text.replace("\\n", "\n")


def _int_in(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: an integer in [low, high] (so the message names the option)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _float_in(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [low, high] (or (low, high])."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(
                f"must be a finite number in {bracket}{low:g}, {high:g}], got {text}"
            )
        return value

    return parse


#: Limits of the Rust core (rust/src/config.rs, rust/src/threads.rs): checked here too, so
#: that a value out of range is an error naming its option before any work.
MAX_THREADS = 1024
MAX_D_MODEL, MAX_D_FF, MAX_LAYERS, MAX_HEADS = 1 << 16, 1 << 18, 1 << 10, 1 << 10
MAX_VOCAB, MAX_SEQ_LEN = 1 << 22, 1 << 20
#: Limits of the command line: large enough for any run this library can do on a CPU.
MAX_STEPS, MAX_BATCH, MAX_NEW_TOKENS = 10**9, 1 << 20, 10**9
SEEDS = _int_in(0, (1 << 64) - 1)
STEPS = _int_in(1, MAX_STEPS)
NON_NEGATIVE = _float_in(0.0, math.inf)


def _dropout(text: str) -> float:
    """An argparse type: a dropout probability in [0, 1)."""
    value = _float_in(0.0, 1.0)(text)
    if value == 1.0:
        raise argparse.ArgumentTypeError(f"must be a probability in [0, 1), got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tinylm",
        description="A tiny GPT-style language model: generate, train, inspect.",
    )
    parser.add_argument("--version", action="version", version=f"tinylm {_core.__version__}")
    threads_help = "threads for the Rust kernels (default: TINYLM_NUM_THREADS or all CPUs)"
    parser.add_argument(
        "--threads", type=_int_in(1, MAX_THREADS), default=None, metavar="N", help=threads_help
    )
    # --threads also after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=_int_in(1, MAX_THREADS),
        default=argparse.SUPPRESS,
        metavar="N",
        help=threads_help,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        parser.commands[name] = p
        return p

    bundled = ", ".join(BUNDLED_MODELS)
    g = command("generate", "print a sample (default: the bundled Shakespeare model)")
    _add_weights_argument(g)
    g.add_argument("--prompt", help="text to continue (default: a newline for character models)")
    g.add_argument("--prompt-file", help="read the prompt from this UTF-8 file (default: --prompt)")
    g.add_argument(
        "--unknown",
        choices=("error", "skip"),
        default="error",
        help="prompt words or characters the vocabulary lacks: an error, or skip them",
    )
    g.add_argument(
        "--max-new-tokens",
        type=_int_in(0, MAX_NEW_TOKENS),
        default=DEFAULT_MAX_NEW_TOKENS,
        help="tokens to sample",
    )
    g.add_argument(
        "--temperature", type=_float_in(0.0, 100.0), default=DEFAULT_TEMPERATURE, help="0 = greedy"
    )
    g.add_argument(
        "--top-k",
        type=_int_in(0, MAX_VOCAB),
        default=DEFAULT_TOP_K,
        help="sample among the k likeliest tokens; 0 = all",
    )
    g.add_argument(
        "--top-p",
        type=_float_in(0.0, 1.0, low_open=True),
        default=None,
        help="sample among the likeliest tokens reaching this probability (default: off)",
    )
    g.add_argument(
        "--seed", type=SEEDS, default=None, help="for a reproducible sample (default: random)"
    )
    g.add_argument(
        "--min-p",
        type=_float_in(0.0, 1.0),
        default=None,
        help="drop tokens less likely than this times the likeliest (default: off)",
    )
    g.add_argument(
        "--repetition-penalty",
        type=_float_in(0.0, 100.0, low_open=True),
        default=1.0,
        help="CTRL's penalty on the last --penalty-last-n tokens; 1 = off (default: %(default)s)",
    )
    g.add_argument(
        "--frequency-penalty",
        type=_float_in(-100.0, 100.0),
        default=0.0,
        help="subtracted per repeat (default: %(default)s)",
    )
    g.add_argument(
        "--presence-penalty",
        type=_float_in(-100.0, 100.0),
        default=0.0,
        help="subtracted once per token seen (default: %(default)s)",
    )
    g.add_argument(
        "--penalty-last-n",
        type=_int_in(0, 1 << 20),
        default=64,
        help="tokens the penalties see (default: %(default)s)",
    )
    g.add_argument(
        "--stop",
        action="append",
        default=None,
        metavar="TEXT",
        type=_with_newlines,
        help="end the sample right after this text (repeatable; \\n for a newline; default: none)",
    )
    g.add_argument(
        "--window",
        choices=("shift", "sliding"),
        default="shift",
        help="past the context: keep the last half in the cache (shift) or recompute the "
        "last context exactly for every token (sliding) (default: %(default)s)",
    )
    g.add_argument(
        "--num-samples",
        type=_int_in(1, 4096),
        default=1,
        help="samples, decoded as a batch (default: %(default)s)",
    )
    g.add_argument(
        "--num-beams",
        type=_int_in(1, 1024),
        default=1,
        help="beam search of this width instead of sampling; 1 = sample (default: %(default)s)",
    )
    _add_backend_argument(g)
    _add_dtype_argument(g)
    g.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="print each piece as it is sampled, or (--no-stream) the whole text at the end "
        "(default: stream)",
    )
    g.add_argument(
        "--interactive",
        action="store_true",
        help="a prompt loop: each line typed is a prompt (\\n for a newline); Ctrl-C stops "
        "a sample, Ctrl-D quits (default: off)",
    )
    g.set_defaults(func=cmd_generate)

    e = command("eval", "loss, perplexity and bits per character of a model on a text file")
    _add_weights_argument(e)
    e.add_argument("--data", required=True, help="UTF-8 text file to score (required: no default)")
    _add_backend_argument(e)
    _add_dtype_argument(e)
    e.set_defaults(func=cmd_eval)

    t = command("train", "train a model on a text file")
    t.add_argument("--data", help="UTF-8 text file (default when resuming: the run's own)")
    t.add_argument("--out", default="runs/tinylm", help="output folder")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/ckpt.safetensors with its saved data and settings; "
        "--steps N extends it",
    )
    t.add_argument(
        "--force", action="store_true", help="start over in OUT, deleting an earlier run there"
    )
    t.add_argument(
        "--tokenizer", choices=("char", "word", "bpe"), default="char", help="token kind"
    )
    t.add_argument(
        "--vocab-size",
        type=_int_in(257, MAX_VOCAB),
        default=1024,
        help="BPE vocabulary size, learnt on the training split",
    )
    t.add_argument(
        "--bpe-pattern",
        default="gpt4",
        help="BPE pre-split pattern: gpt2, gpt4, o200k or a regex",
    )
    t.add_argument(
        "--val-fraction",
        type=_float_in(0.0, 1.0, low_open=True),
        default=0.1,
        help="last fraction of the text used for validation",
    )
    t.add_argument(
        "--arch",
        choices=("gpt2", "llama"),
        default="gpt2",
        help="block style: gpt2 (default) or llama (RMSNorm, RoPE, SwiGLU, no biases, untied)",
    )
    _add_backend_argument(t)
    t.add_argument(
        "--d-model",
        type=_int_in(1, MAX_D_MODEL),
        default=_default(Config, "d_model"),
        help="model width",
    )
    t.add_argument(
        "--n-layers",
        type=_int_in(1, MAX_LAYERS),
        default=_default(Config, "n_layers"),
        help="blocks",
    )
    t.add_argument(
        "--n-heads",
        type=_int_in(1, MAX_HEADS),
        default=_default(Config, "n_heads"),
        help="attention heads",
    )
    t.add_argument(
        "--d-ff",
        type=_int_in(1, MAX_D_FF),
        default=None,
        help="default 4 * d_model (llama: 8 / 3 * d_model)",
    )
    t.add_argument(
        "--context",
        type=_int_in(1, MAX_SEQ_LEN),
        default=_default(Config, "max_seq_len"),
        help="sequence length",
    )
    t.add_argument(
        "--dropout",
        type=_dropout,
        default=_default(Config, "dropout"),
        help=(
            "dropout probability of training (embeddings, attention probabilities, residual "
            "branches); default 0: none"
        ),
    )
    t.add_argument("--no-attn-bias", action="store_true", help="no q/k/v/o biases")
    t.add_argument("--untied", action="store_true", help="separate output head")
    t.add_argument(
        "--steps", type=STEPS, default=_default(TrainConfig, "steps"), help="optimizer steps in all"
    )
    t.add_argument(
        "--batch-size",
        type=_int_in(1, MAX_BATCH),
        default=_default(TrainConfig, "batch_size"),
        help="sequences per micro-batch",
    )
    t.add_argument(
        "--grad-accum",
        type=_int_in(1, 1 << 16),
        default=_default(TrainConfig, "grad_accum"),
        help="micro-batches of --batch-size per optimizer step (gradient accumulation)",
    )
    t.add_argument(
        "--lr", type=NON_NEGATIVE, default=_default(TrainConfig, "lr"), help="peak learning rate"
    )
    t.add_argument(
        "--min-lr",
        type=NON_NEGATIVE,
        default=_default(TrainConfig, "min_lr"),
        help="learning rate at the end",
    )
    t.add_argument(
        "--warmup",
        type=_int_in(0, MAX_STEPS),
        default=_default(TrainConfig, "warmup_steps"),
        help="warmup steps",
    )
    t.add_argument(
        "--lr-decay-steps",
        type=STEPS,
        default=None,
        help="steps of the cosine decay to --min-lr (default: --steps)",
    )
    t.add_argument(
        "--weight-decay",
        type=NON_NEGATIVE,
        default=_default(TrainConfig, "weight_decay"),
        help="AdamW decay of the matrices",
    )
    t.add_argument(
        "--beta1",
        type=_float_in(0.0, 1.0),
        default=_default(TrainConfig, "beta1"),
        help="AdamW beta1",
    )
    t.add_argument(
        "--beta2",
        type=_float_in(0.0, 1.0),
        default=_default(TrainConfig, "beta2"),
        help="AdamW beta2",
    )
    t.add_argument(
        "--grad-clip",
        type=NON_NEGATIVE,
        default=_default(TrainConfig, "grad_clip"),
        help="0 disables clipping",
    )
    t.add_argument(
        "--eval-interval",
        type=STEPS,
        default=_default(TrainConfig, "eval_interval"),
        help="steps between evaluations",
    )
    t.add_argument(
        "--eval-batches",
        type=_int_in(1, 10**6),
        default=_default(TrainConfig, "eval_batches"),
        help="batches per evaluation",
    )
    t.add_argument(
        "--checkpoint-interval",
        type=STEPS,
        default=None,
        help="steps between checkpoints (default: --eval-interval)",
    )
    t.add_argument(
        "--final-eval",
        choices=("full", "sample", "none"),
        default="full",
        help="validation loss after training: the whole split (with a progress bar), the "
        "last --eval-batches estimate, or none",
    )
    t.add_argument(
        "--seed",
        type=SEEDS,
        default=_default(TrainConfig, "seed"),
        help="initialisation and batches",
    )
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    k = command("tokenize", "show how a model's tokenizer cuts a text")
    _add_weights_argument(k)
    k.add_argument("--text", required=True, help="the text to tokenize (required: no default)")
    k.set_defaults(func=cmd_tokenize)

    i = command("info", "describe a model file or checkpoint (no file: list the bundled models)")
    i.add_argument("weights", nargs="?", help=f"model file or bundled model ({bundled})")
    i.set_defaults(func=cmd_info)

    _add_interop_commands(command)

    m = command("models", "list the bundled models")
    m.set_defaults(func=cmd_models)

    d = command("demo", "the Go TinyLM's program: train on one sentence, generate")
    d.add_argument("--weights", help="Go-format model file or bundled model (default: tiny)")
    d.add_argument("--steps", type=_int_in(0, 10**6), default=50, help="SGD steps")
    d.add_argument("--lr", type=NON_NEGATIVE, default=0.01, help="SGD learning rate")
    _add_backend_argument(d)
    d.set_defaults(func=cmd_demo)
    _add_learner_commands(command, bundled)
    return parser


def _explicit_options(argv: Sequence[str]) -> set[str]:
    """The destinations of the options given on the command line (not left at defaults)."""
    parser = build_parser()
    assert isinstance(parser, _Parser)
    for p in (parser, *parser.commands.values()):
        for action in p._actions:
            action.default = argparse.SUPPRESS
    parsed, _ = parser.parse_known_args(list(argv))
    return set(vars(parsed)) - {"command", "func"}


@contextlib.contextmanager
def _pipe_safe_stdio() -> Iterator[None]:
    """Training outlives its readers: a closed stdout or stderr (``train ... | head``)
    silences that stream and the run goes on (see :class:`tinylm._progress.PipeSafe`)."""
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = PipeSafe(sys.stdout), PipeSafe(sys.stderr)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout, sys.stderr = saved


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.explicit = _explicit_options(argv)
    try:
        if args.threads is not None:
            _core.set_num_threads(args.threads)
        if args.command == "train":
            with _pipe_safe_stdio():
                return int(args.func(args))
        return int(args.func(args))
    except BrokenPipeError:  # e.g. `tinylm generate | head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CliError, _core.TinyLMError, ValueError, OSError) as exc:
        print(f"tinylm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tinylm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
