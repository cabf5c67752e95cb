"""BPE tokenizers side by side: tinylm against tiktoken and Hugging Face `tokenizers`.

    .venv/bin/python benchmarks/tokenizers_bench.py            # the full run (minutes)
    .venv/bin/python benchmarks/tokenizers_bench.py --tiny     # a check that it runs

Measures, on the same text with the same ranks:
- encoding MB/s on 1 thread (one call on the whole text) and on 2 (the text's paragraphs
  through each library's batch call), with GPT-4's cl100k_base and with a vocabulary of
  4096 trained here on the text;
- training time for vocab sizes 512, 4096 and 32768 against HF's BpeTrainer (and
  `rustbpe`, if it is installed), each in a fresh process whose peak RSS is reported.

Needs `tiktoken` and `tokenizers` (both in tinylm's `test` extra: pip install
".[test]"); `rustbpe` is optional (pip install rustbpe). OpenAI's cl100k file comes from
the tiktoken-rs crate via `cargo metadata`, as in tests/test_bpe.py. Ratios are
tinylm / other for speed (> 1 is faster) and other / tinylm for time (> 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
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


def worker_train(args: argparse.Namespace) -> dict:
    text = Path(args.text).read_text(encoding="utf-8")
    if args.library == "tinylm":
        import tinylm

        start = time.perf_counter()
        tinylm.Tokenizer.bpe(text, args.vocab_size, "gpt4")
    elif args.library == "hf":
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

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
    else:
        import rustbpe

        start = time.perf_counter()
        rustbpe.Tokenizer().train_from_iterator([text], args.vocab_size, pattern=GPT4_PATTERN)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"seconds": seconds, "peak_mb": peak_mb}


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

    print("\nencoding, MB/s (ratio = tinylm / other)")
    print(
        f"{'vocabulary':<14} {'threads':>7} {'tinylm':>8} {'tiktoken':>9} {'HF':>8}"
        f" {'vs tiktoken':>12} {'vs HF':>7}"
    )
    for name, files in vocabs.items():
        for threads in (1, 2):
            row = {}
            for library in ("tinylm", "tiktoken", "hf"):
                r = run_worker(
                    "encode", threads, library=library, text=corpus, repeats=args.repeats, **files
                )
                row[library] = r["mb_per_s"] if r else float("nan")
            print(
                f"{name:<14} {threads:>7} {row['tinylm']:>8.1f} {row['tiktoken']:>9.1f}"
                f" {row['hf']:>8.1f}"
                f" {row['tinylm'] / row['tiktoken']:>11.2f}x {row['tinylm'] / row['hf']:>6.2f}x"
            )

    try:
        import rustbpe  # noqa: F401

        trainers = ("tinylm", "hf", "rustbpe")
    except ImportError:
        trainers = ("tinylm", "hf")
        print("\n(rustbpe is not installed: pip install rustbpe to compare with it)")
    print("\ntraining, seconds and peak RSS (ratio = fastest other / tinylm)")
    sizes = (300, 512) if args.tiny else (512, 4096, 32768)
    for size in sizes:
        results = {
            lib: run_worker("train", 2, library=lib, text=corpus, vocab_size=size)
            for lib in trainers
        }
        cells = "  ".join(
            f"{lib} {r['seconds']:.2f}s {r['peak_mb']:.0f}MB" if r else f"{lib} failed"
            for lib, r in results.items()
        )
        others = [r["seconds"] for lib, r in results.items() if lib != "tinylm" and r]
        ours = results["tinylm"]
        ratio = f"{min(others) / ours['seconds']:.2f}x" if others and ours else "n/a"
        print(f"vocab {size:>6}: {cells}  ratio {ratio}")
    shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
