"""The command line: ``python -m tinylm {generate,train,info,demo}`` (also ``tinylm ...``)."""

from __future__ import annotations

import argparse
import hashlib
import os
import stat
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinylm import _core
from tinylm.model import BUNDLED_MODELS, Config, Transformer, bundled_weights
from tinylm.tokenizer import Tokenizer
from tinylm.train import (
    CHECKPOINT_NAME,
    TrainConfig,
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
BACKEND_HELP = "fast kernels, or the plain reference implementation (slow, every option)"


class CliError(Exception):
    """A user error the CLI reports in one line."""


def _load_model(weights: str | None, backend: str = "fast") -> Transformer:
    path = Path(weights) if weights else bundled_weights("shakespeare")
    return Transformer.load(path, backend=backend)


# ------------------------------------------------------------------------------ generate


def cmd_generate(args: argparse.Namespace) -> int:
    model = _load_model(args.weights, args.backend)
    tok = model.tokenizer
    if tok is None:
        raise CliError(
            f"{args.weights}: this model file holds no tokenizer, so it cannot read text"
        )
    prompt = args.prompt
    if prompt is None:
        prompt = _default_prompt(tok)
    if prompt == "":
        raise CliError("the prompt is empty: give at least one word or character with --prompt")
    ids = model.generate(
        tok.encode(prompt),
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
    )
    text = tok.decode(ids)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


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


def _split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(ids) * (1.0 - val_fraction))
    return ids[:n_train], ids[n_train:]


def cmd_train(args: argparse.Namespace) -> int:
    out = Path(args.out)
    text = _read_text(Path(args.data))
    if len(text) < 2:
        raise CliError(f"{args.data}: the training text must hold at least 2 characters")
    ckpt = out / CHECKPOINT_NAME
    val_fraction = args.val_fraction
    sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if args.resume:
        if not ckpt.exists():
            raise CliError(f"--resume: there is no checkpoint at {ckpt}")
        model, _, state = load_checkpoint(ckpt, args.backend or "fast")
        config = TrainConfig(**state["train_config"])
        if state.get("data"):
            if state["data"]["sha256"] != sha256:
                raise CliError(
                    f"--resume: the training data differs from the checkpoint's ({args.data} "
                    f"has sha256 {sha256[:12]}..., the run was trained on "
                    f"{state['data']['sha256'][:12]}...)"
                )
            val_fraction = state["data"]["val_fraction"]
        tok = model.tokenizer
        if tok is None:
            raise CliError(f"{ckpt}: the checkpoint holds no tokenizer")
        print(f"resuming from {ckpt} at step {state['step']} of {config.steps}", file=sys.stderr)
    else:
        tok = _new_tokenizer(args, text, val_fraction)
        sizes = {
            "vocab_size": tok.vocab_size,
            "d_model": args.d_model,
            "n_layers": args.n_layers,
            "n_heads": args.n_heads,
            "max_seq_len": args.context,
        }
        if args.d_ff is not None:
            sizes["d_ff"] = args.d_ff
        if args.arch == "llama":
            model_config = Config.llama(**sizes)
        else:
            model_config = Config(
                **sizes, attn_bias=not args.no_attn_bias, tie_embeddings=not args.untied
            )
        # The fast backend runs GPT-2 style blocks only, for now.
        backend = args.backend or ("reference" if args.arch == "llama" else "fast")
        model = Transformer(model_config, seed=args.seed, tokenizer=tok, backend=backend)
        config = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            min_lr=args.min_lr,
            warmup_steps=args.warmup,
            weight_decay=args.weight_decay,
            beta1=args.beta1,
            beta2=args.beta2,
            grad_clip=args.grad_clip,
            eval_interval=args.eval_interval,
            eval_batches=args.eval_batches,
            seed=args.seed,
        )
    if not 0.0 < val_fraction < 1.0:
        raise CliError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    data_info = {"sha256": sha256, "val_fraction": val_fraction}
    if tok.kind == "bpe":
        # Split the text, not the ids: the BPE vocabulary was learnt on the training part.
        train_text, val_text = _split_text(text, val_fraction)
        train_ids = np.asarray(tok.encode_ordinary(train_text), dtype=np.int64)
        val_ids = np.asarray(tok.encode_ordinary(val_text), dtype=np.int64)
    else:
        ids = np.asarray(tok.encode(text), dtype=np.int64)
        train_ids, val_ids = _split(ids, val_fraction)
    context = model.config.max_seq_len
    for name, part in (("training split", train_ids), ("validation split", val_ids)):
        if len(part) <= context:
            raise CliError(
                f"{args.data}: the {name} has {len(part)} tokens, too few for a context of "
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
    model, result = train(
        model,
        train_ids,
        val_ids,
        config,
        out_dir=out,
        resume=args.resume,
        progress=not args.quiet,
        data_info=data_info,
    )
    wall = time.perf_counter() - started
    save_history(out / "losses.json", result)
    if plot_history(out / "loss.png", result):
        print(f"loss curve: {out / 'loss.png'}", file=sys.stderr)
    else:
        print(
            "matplotlib is not installed: no loss-curve PNG (pip install 'tinylm[plot]')",
            file=sys.stderr,
        )
    if result.interrupted:
        print(
            f"interrupted at step {result.steps_done}; continue with --resume --out {out}",
            file=sys.stderr,
        )
        return 130
    model_path = out / "model.safetensors"
    model.save(model_path)
    val_loss = evaluate(model, val_ids)
    print(
        f"trained {result.steps_done} steps in {wall:.1f}s "
        f"({result.tokens_per_second:,.0f} tokens/s); full validation loss {val_loss:.4f}"
    )
    print(f"model: {model_path}")
    prompt = _default_prompt(tok)
    sample = model.generate(
        tok.encode(prompt), max_new_tokens=200, temperature=0.8, top_k=40, seed=config.seed
    )
    print("sample:")
    print(tok.decode(sample))
    return 0


def _default_prompt(tok: Tokenizer) -> str:
    """A newline for character models that know one (as nanoGPT) and BPE models, else the
    first token."""
    if tok.kind == "bpe" or (tok.kind == "char" and "\n" in tok.vocab):
        return "\n"
    return tok.vocab[0]


def _split_text(text: str, val_fraction: float) -> tuple[str, str]:
    n_train = int(len(text) * (1.0 - val_fraction))
    return text[:n_train], text[n_train:]


def _new_tokenizer(args: argparse.Namespace, text: str, val_fraction: float) -> Tokenizer:
    if args.tokenizer == "char":
        return Tokenizer.char_level(text)
    if args.tokenizer == "word":
        return _word_tokenizer(text)
    train_text, _ = _split_text(text, val_fraction)
    return Tokenizer.bpe(train_text, args.vocab_size, pattern=args.bpe_pattern)


def _word_tokenizer(text: str) -> Tokenizer:
    words = sorted(set(text.split()))
    if not words:
        raise CliError("the training text holds no words")
    return Tokenizer.word_level(words)


# ------------------------------------------------------------------------------ info


def cmd_info(args: argparse.Namespace) -> int:
    path = Path(args.weights) if args.weights else bundled_weights("shakespeare")
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
    if tok is None:
        print("tokenizer:   none")
    else:
        preview = " ".join(repr(t) for t in tok.vocab[:12])
        more = " ..." if tok.vocab_size > 12 else ""
        print(f"tokenizer:   {tok.kind} level, {tok.vocab_size} tokens: {preview}{more}")
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
        raise CliError(f"{args.weights}: this model file holds no tokenizer")
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
    path = Path(args.weights) if args.weights else bundled_weights("tiny")
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
        out = model.generate(tok.encode(prompt), max_new_tokens=5, stop=end)
        print(tok.decode(out))
    return 0


# ------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tinylm",
        description="A tiny GPT-style language model: generate, train, inspect.",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for the Rust kernels (default: TINYLM_NUM_THREADS or all CPUs)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="print a sample (default: the bundled Shakespeare model)")
    g.add_argument("--weights", help="model file (.safetensors or Go .json); default: bundled")
    g.add_argument("--prompt", help="text to continue (default: a newline for character models)")
    g.add_argument("--max-new-tokens", type=int, default=500)
    g.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default 0.8)")
    g.add_argument("--top-k", type=int, default=None)
    g.add_argument("--top-p", type=float, default=None)
    g.add_argument("--seed", type=int, default=None, help="for a reproducible sample")
    g.add_argument("--backend", choices=BACKENDS, default="fast", help=BACKEND_HELP)
    g.set_defaults(func=cmd_generate)

    t = sub.add_parser("train", help="train a model on a text file")
    t.add_argument("--data", required=True, help="UTF-8 text file")
    t.add_argument("--out", default="runs/tinylm", help="output folder (default runs/tinylm)")
    t.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/ckpt.safetensors with its saved settings",
    )
    t.add_argument("--tokenizer", choices=("char", "word", "bpe"), default="char")
    t.add_argument(
        "--vocab-size",
        type=int,
        default=1024,
        help="BPE vocabulary size, learnt on the training split (default 1024)",
    )
    t.add_argument(
        "--bpe-pattern",
        default="gpt4",
        help="BPE pre-split pattern: gpt2, gpt4, o200k or a regex (default gpt4)",
    )
    t.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="last fraction of the text used for validation (default 0.1)",
    )
    t.add_argument(
        "--arch",
        choices=("gpt2", "llama"),
        default="gpt2",
        help="block style: gpt2 (default) or llama (RMSNorm, RoPE, SwiGLU, no biases, untied)",
    )
    t.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help=BACKEND_HELP + " (default: fast for gpt2, reference for llama)",
    )
    t.add_argument("--d-model", type=int, default=128)
    t.add_argument("--n-layers", type=int, default=4)
    t.add_argument("--n-heads", type=int, default=4)
    t.add_argument(
        "--d-ff", type=int, default=None, help="default 4 * d_model (llama: 8 / 3 * d_model)"
    )
    t.add_argument("--context", type=int, default=64, help="sequence length (default 64)")
    t.add_argument("--no-attn-bias", action="store_true", help="no q/k/v/o biases")
    t.add_argument("--untied", action="store_true", help="separate output head")
    t.add_argument("--steps", type=int, default=2000)
    t.add_argument("--batch-size", type=int, default=12)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", type=float, default=1e-4)
    t.add_argument("--warmup", type=int, default=100)
    t.add_argument("--weight-decay", type=float, default=0.1)
    t.add_argument("--beta1", type=float, default=0.9)
    t.add_argument("--beta2", type=float, default=0.99)
    t.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    t.add_argument("--eval-interval", type=int, default=250)
    t.add_argument("--eval-batches", type=int, default=20)
    t.add_argument("--seed", type=int, default=1337)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    k = sub.add_parser("tokenize", help="show how a model's tokenizer cuts a text")
    k.add_argument("--weights", help="model file; default: the bundled Shakespeare model")
    k.add_argument("--text", required=True, help="the text to tokenize")
    k.set_defaults(func=cmd_tokenize)

    i = sub.add_parser("info", help="describe a model file")
    i.add_argument("weights", nargs="?", help="model file; default: the bundled Shakespeare model")
    i.set_defaults(func=cmd_info)

    d = sub.add_parser("demo", help="the Go TinyLM's program: train on one sentence, generate")
    d.add_argument("--weights", help=f"Go-format model (default: bundled {BUNDLED_MODELS['tiny']})")
    d.add_argument("--steps", type=int, default=50)
    d.add_argument("--lr", type=float, default=0.01)
    d.add_argument("--backend", choices=BACKENDS, default="fast", help=BACKEND_HELP)
    d.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        if args.threads is not None:
            _core.set_num_threads(args.threads)
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
