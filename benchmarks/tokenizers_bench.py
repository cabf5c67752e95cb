"""BPE tokenizers side by side: tinylm against tiktoken and Hugging Face `tokenizers`.

    .venv/bin/python benchmarks/tokenizers_bench.py               # the full run (minutes)
    .venv/bin/python benchmarks/tokenizers_bench.py --write-docs  # ... and into docs/performance.md
    .venv/bin/python benchmarks/tokenizers_bench.py --tiny        # a check that it runs

Measures, on the same text with the same ranks:
- encoding MB/s on 1 thread (one call on the whole text) and on 2 (the text's paragraphs
  through each library's batch call), with GPT-4's cl100k_base and with a vocabulary of
  4096 trained here on the text;
- training time for vocab sizes 512, 4096 and 32768 against HF's BpeTrainer (and
  `rustbpe`, if it is installed), each in a fresh process; tinylm both from the string and
  streamed from the file. Memory is the peak RSS of the process minus its RSS just before
  training (Linux's VmHWM, reset first, so the interpreter and libraries do not count),
  and the vocabulary size reached is shown (Shakespeare runs out of pairs before 32768
  with GPT-4's pattern).

`--write-docs` replaces the section between the `tokenizers-bench` markers in
docs/performance.md (added at its end the first time) with the tables printed.

Needs `tiktoken` and `tokenizers` (both in tinylm's `test` extra: pip install
".[test]"); `rustbpe` is optional (pip install rustbpe). OpenAI's cl100k file comes from
the tiktoken-rs crate via `cargo metadata`, as in tests/test_bpe.py. Ratios are
tinylm / other for speed (> 1 is faster) and other / tinylm for time (> 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "performance.md"
START = "<!-- tokenizers-bench:start -->"
END = "<!-- tokenizers-bench:end -->"
CORPUS = REPO.parent / "shared" / "data" / "tinyshakespeare.txt"
GPT4_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
# HF's Oniguruma reads {1,3}+ as a repetition; this form splits the same way.
GPT4_PATTERN_HF = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)


def cl100k_path() -> Path:
    out = subprocess.run(
        [shutil.which("cargo") or "cargo", "metadata", "--format-version", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    for package in json.loads(out.stdout)["packages"]:
        if package["name"] == "tiktoken-rs":
            return Path(package["manifest_path"]).parent / "assets" / "cl100k_base.tiktoken"
    raise SystemExit("tiktoken-rs is not a dev-dependency in Cargo.toml")


def best_seconds(f, repeats: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - start)
    return best


# ----------------------------------------------------------------------------- workers


def worker_encode(args: argparse.Namespace) -> dict:
    """One library, one vocabulary, one thread count: MB/s. Run in its own process so
    that thread pools are sized by the environment before the libraries start."""
    text = Path(args.text).read_text(encoding="utf-8")
    paragraphs = text.split("\n\n")
    megabytes = len(text.encode()) / 1e6
    threads = args.threads
    if args.library == "tinylm":
        import tinylm

        tinylm.set_num_threads(threads)
        if args.vocab == "cl100k":
            tok = tinylm.Tokenizer.from_tiktoken(args.ranks, "gpt4")
        else:
            tok = tinylm.Tokenizer.from_hf_json(args.hf_json)
        run = (
            (lambda: tok.encode_ordinary(text))
            if threads == 1
            else (lambda: tok.encode_batch(paragraphs))
        )
    elif args.library == "tiktoken":
        import tiktoken
        import tiktoken.load

        enc = tiktoken.Encoding(
            "bench",
            pat_str=GPT4_PATTERN,
            mergeable_ranks=tiktoken.load.load_tiktoken_bpe(args.ranks),
            special_tokens={},
        )
        run = (
            (lambda: enc.encode_ordinary(text))
            if threads == 1
            else (lambda: enc.encode_ordinary_batch(paragraphs, num_threads=threads))
        )
    else:
        import tokenizers

        tok = tokenizers.Tokenizer.from_file(args.hf_json)
        run = (lambda: tok.encode(text)) if threads == 1 else (lambda: tok.encode_batch(paragraphs))
    run()
    seconds = best_seconds(run, args.repeats)
    return {"mb_per_s": megabytes / seconds}


def status_mb(field: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_memory() -> float:
    """Resets the process's peak RSS to its current RSS (Linux's clear_refs), and returns
    it: the peak read after the work is then the work's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return status_mb("VmRSS")


def worker_train(args: argparse.Namespace) -> dict:
    text = "" if args.library == "tinylm-file" else Path(args.text).read_text(encoding="utf-8")
    if args.library.startswith("tinylm"):
        import tinylm

        source = Path(args.text) if args.library == "tinylm-file" else text
        before = start_memory()
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # ran out of pairs
            vocab = tinylm.Tokenizer.bpe(source, args.vocab_size, "gpt4", progress=False)
        reached = vocab.vocab_size
    elif args.library == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

        before = start_memory()
        start = time.perf_counter()
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(GPT4_PATTERN_HF), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
        trainer = trainers.BpeTrainer(
            vocab_size=args.vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
            min_frequency=0,
        )
        tok.train_from_iterator([text], trainer=trainer)
        reached = tok.get_vocab_size()
    else:
        import rustbpe

        before = start_memory()
        start = time.perf_counter()
        tok = rustbpe.Tokenizer()
        tok.train_from_iterator([text], args.vocab_size, pattern=GPT4_PATTERN)
        reached = len(tok.get_mergeable_ranks())
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "memory_mb": status_mb("VmHWM") - before, "vocab": reached}


def run_worker(mode: str, threads: int, **kw: object) -> dict | None:
    env = dict(os.environ)
    env.update(
        {
            "TINYLM_NUM_THREADS": str(threads),
            "RAYON_NUM_THREADS": str(threads),
            "TOKENIZERS_PARALLELISM": "true" if threads > 1 else "false",
        }
    )
    argv = [sys.executable, __file__, "--worker", mode, "--threads", str(threads)]
    for key, value in kw.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        print(f"  ({mode} {kw.get('library')} failed: {out.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="50 kB of text, small vocabularies")
    p.add_argument("--text", default=str(CORPUS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument(
        "--write-docs", action="store_true", help="put the tables into docs/performance.md"
    )
    p.add_argument("--worker", choices=("encode", "train"), help=argparse.SUPPRESS)
    p.add_argument("--library", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--vocab", help=argparse.SUPPRESS)
    p.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    p.add_argument("--ranks", help=argparse.SUPPRESS)
    p.add_argument("--hf-json", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        fn = worker_encode if args.worker == "encode" else worker_train
        print(json.dumps(fn(args)))
        return 0

    import tinylm

    text = Path(args.text).read_text(encoding="utf-8")
    if args.tiny:
        text = text[:50_000]
        args.repeats = 1
    work = Path(tempfile.mkdtemp(prefix="tinylm-tokbench-"))
    corpus = work / "text.txt"
    corpus.write_text(text, encoding="utf-8")
    print(
        f"text: {len(text.encode()) / 1e6:.2f} MB ({args.text}"
        f"{', first 50 kB' if args.tiny else ''})"
    )

    # The vocabularies: cl100k, and one trained here, in each library's format.
    cl100k = tinylm.Tokenizer.from_tiktoken(cl100k_path(), "gpt4")
    trained = tinylm.Tokenizer.bpe(text, 512 if args.tiny else 4096, "gpt4")
    vocabs = {}
    for name, tok in (("cl100k", cl100k), (f"trained {trained.vocab_size}", trained)):
        ranks, hf_json = work / f"{name[:6]}.tiktoken", work / f"{name[:6]}.json"
        tok.save_tiktoken(ranks)
        tok.save_hf_json(hf_json)
        vocabs[name] = {"ranks": ranks, "hf_json": hf_json, "vocab": name[:6]}

    lines = [
        f"Text: {len(text.encode()) / 1e6:.2f} MB of tinyshakespeare"
        f"{' (first 50 kB: --tiny)' if args.tiny else ''}; best of {args.repeats}.",
        "",
        "Encoding, MB/s (1 thread: one call on the whole text; 2 threads: the paragraphs "
        "through each library's batch call). Ratios are tinylm / other.",
        "",
        "| vocabulary | threads | tinylm | tiktoken | HF tokenizers | vs tiktoken | vs HF |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, files in vocabs.items():
        for threads in (1, 2):
            row = {}
            for library in ("tinylm", "tiktoken", "hf"):
                r = run_worker(
                    "encode", threads, library=library, text=corpus, repeats=args.repeats, **files
                )
                row[library] = r["mb_per_s"] if r else float("nan")
            lines.append(
                f"| {name} | {threads} | {row['tinylm']:.1f} | {row['tiktoken']:.1f}"
                f" | {row['hf']:.1f} | **{row['tinylm'] / row['tiktoken']:.2f}x**"
                f" | {row['tinylm'] / row['hf']:.2f}x |"
            )
            print(lines[-1], flush=True)

    try:
        import rustbpe  # noqa: F401

        trainers = ("tinylm", "tinylm-file", "hf", "rustbpe")
    except ImportError:
        trainers = ("tinylm", "tinylm-file", "hf")
        print("(rustbpe is not installed: pip install rustbpe to compare with it)")
    lines += [
        "",
        "Training with GPT-4's pattern, seconds (2 threads; each in a fresh process), and the "
        "memory training added (peak RSS minus RSS before). `tinylm-file` streams the text "
        "from the file. Ratio: the fastest other / tinylm (> 1: tinylm is faster).",
        "",
        "| vocab asked (reached) | " + " | ".join(trainers) + " | ratio |",
        "|---|" + "---|" * len(trainers) + "---|",
    ]
    sizes = (300, 512) if args.tiny else (512, 4096, 32768)
    for size in sizes:
        results = {
            lib: run_worker("train", 2, library=lib, text=corpus, vocab_size=size)
            for lib in trainers
        }
        cells = " | ".join(
            f"{r['seconds']:.2f} s, {r['memory_mb']:.0f} MB" if r else "failed"
            for r in results.values()
        )
        reached = sorted({r["vocab"] for r in results.values() if r})
        others = [r["seconds"] for lib, r in results.items() if not lib.startswith("tinylm") and r]
        ours = results["tinylm"]
        ratio = f"**{min(others) / ours['seconds']:.2f}x**" if others and ours else "n/a"
        lines.append(f"| {size} ({', '.join(map(str, reached))}) | {cells} | {ratio} |")
        print(lines[-1], flush=True)
    shutil.rmtree(work)

    command = "python benchmarks/tokenizers_bench.py" + (" --tiny" if args.tiny else "")
    table = "\n".join(lines)
    print("\n" + table)
    if args.write_docs:
        write_docs(f"{START}\n## BPE tokenizers (`{command}`)\n\n{table}\n{END}")
        print(f"\nwritten into {DOCS}")
    return 0


def write_docs(section: str) -> None:
    """Replaces the marked section of docs/performance.md, or appends it."""
    from tinylm._io import write_text_atomic

    doc = DOCS.read_text(encoding="utf-8")
    if START in doc and END in doc:
        head, rest = doc.split(START, 1)
        doc = head + section + rest.split(END, 1)[1]
    else:
        doc = doc.rstrip("\n") + "\n\n" + section + "\n"
    write_text_atomic(DOCS, doc)


if __name__ == "__main__":
    sys.exit(main())
