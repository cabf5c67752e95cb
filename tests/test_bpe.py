"""Byte-level BPE against the real thing: OpenAI's tiktoken (with OpenAI's own vocabulary
files, from the tiktoken-rs crate, checked against tiktoken's pinned hashes) and Hugging
Face ``tokenizers``; training against a plain minbpe-style trainer written here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinylm
from tinylm import Tokenizer, TokenizerError

tiktoken = pytest.importorskip("tiktoken")
hf = pytest.importorskip("tokenizers")
regex = pytest.importorskip("regex")  # tiktoken's own dependency; minbpe's splitter

ROOT = Path(__file__).resolve().parent.parent
SHAKESPEARE = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
NAMES = {"r50k": "r50k_base", "cl100k": "cl100k_base", "o200k": "o200k_base"}
PATTERN_OF = {"r50k": "gpt2", "cl100k": "gpt4", "o200k": "o200k"}


@pytest.fixture(scope="session")
def openai(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """tiktoken's own encoding definitions (pattern, ranks, specials), its downloads
    answered from the local files; tiktoken checks their SHA-256 against its pins."""
    import tiktoken.load
    from tiktoken_ext import openai_public

    mp = pytest.MonkeyPatch()
    mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken-cache")))
    mp.setattr(
        tiktoken.load, "read_file", lambda url: (assets / url.rsplit("/", 1)[1]).read_bytes()
    )
    try:
        defs = {short: getattr(openai_public, name)() for short, name in NAMES.items()}
    finally:
        mp.undo()
    return defs


def reference(defs: dict):
    return tiktoken.Encoding(
        defs["name"],
        pat_str=defs["pat_str"],
        mergeable_ranks=defs["mergeable_ranks"],
        special_tokens=defs["special_tokens"],
    )


@pytest.fixture(scope="session")
def pairs(openai: dict, assets: Path) -> dict:
    """(tinylm, tiktoken) for each encoding."""
    out = {}
    for short, name in NAMES.items():
        ours = Tokenizer.from_tiktoken(
            assets / f"{name}.tiktoken", PATTERN_OF[short], openai[short]["special_tokens"]
        )
        out[short] = (ours, reference(openai[short]))
    return out


def shakespeare() -> str:
    if not SHAKESPEARE.exists():
        pytest.skip(f"{SHAKESPEARE} is absent")
    return SHAKESPEARE.read_text(encoding="utf-8")


def test_known_vectors(pairs: dict) -> None:
    gpt2, _ = pairs["r50k"]
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" Hello world") == [18435, 995]
    gpt4, _ = pairs["cl100k"]
    assert gpt4.encode("Hello world") == [9906, 1917]
    assert gpt4.kind == "bpe"


def test_the_patterns_are_tiktokens(pairs: dict) -> None:
    for ours, theirs in pairs.values():
        assert ours.pattern == theirs._pat_str


@pytest.mark.parametrize("name", list(NAMES))
def test_all_of_shakespeare_encodes_as_tiktoken(pairs: dict, name: str) -> None:
    text = shakespeare()
    ours, theirs = pairs[name]
    ids = ours.encode(text)
    assert ids == theirs.encode_ordinary(text)
    assert ours.decode(ids) == text


# Text that exercises the patterns: contractions in both cases, digit runs, whitespace
# runs with CR/LF, combining marks, CJK, emoji with modifiers and joiners, other scripts.
PIECES = st.sampled_from(
    ["'s", "'T", "'ll", "'VE", "'re", "'d", "'M", "\u017f", " ", "   ", "\t", "\n", "\r\n", "\n\n",
     "\u00a0", "\u3000", "1", "42", "12345", "٣٤", "Ⅻ", "e\u0301", "\u0301", "中文", "日本語",
     "한국어", "😀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "Ωμέγα", "Привет", "مرحبا", "ǅ", "ß", "...", "?!",
     "//", "(x)", "$5", "<|", "|>", "Hello", " world", "can't", "DON'T"]
)  # fmt: skip
TEXT = st.one_of(
    st.lists(st.one_of(PIECES, st.text(max_size=3)), max_size=30).map("".join),
    st.text(max_size=40),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
def test_unicode_text_encodes_as_tiktoken_and_round_trips(pairs: dict, text: str) -> None:
    for ours, theirs in pairs.values():
        ids = ours.encode_ordinary(text)
        assert ids == theirs.encode_ordinary(text)
        assert ours.decode(ids, errors="strict") == text


def test_every_special_token_as_tiktoken(pairs: dict) -> None:
    for ours, theirs in pairs.values():
        assert ours.special_tokens == theirs._special_tokens
        for name, id_ in ours.special_tokens.items():
            text = f"before{name} after {name}"
            assert ours.encode(text, allowed_special="all") == theirs.encode(
                text, allowed_special="all"
            )
            assert ours.encode(text, allowed_special={name}) == theirs.encode(
                text, allowed_special={name}
            )
            assert ours.encode_ordinary(text) == theirs.encode_ordinary(text)
            assert id_ in ours.encode(text, allowed_special={name})
            assert ours.token_bytes(id_) == name.encode()
            # tiktoken refuses a disallowed special token; so does tinylm.
            with pytest.raises(ValueError):
                theirs.encode(text)
            with pytest.raises(TokenizerError, match="special token"):
                ours.encode(text)


def test_encode_batch_equals_tiktoken(pairs: dict) -> None:
    ours, theirs = pairs["cl100k"]
    texts = shakespeare()[:200_000].split("\n\n")
    assert ours.encode_batch(texts) == theirs.encode_ordinary_batch(texts)


def test_gpt2_files_equal_r50k_and_hf_tokenizers(pairs: dict, assets: Path) -> None:
    tok = Tokenizer.from_gpt2_files(assets / "encoder.json", assets / "vocab.bpe")
    r50k, theirs = pairs["r50k"]
    assert tok == r50k
    model = hf.models.BPE.from_file(str(assets / "encoder.json"), str(assets / "vocab.bpe"))
    hf_tok = hf.Tokenizer(model)
    hf_tok.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    text = shakespeare()[:100_000]
    assert tok.encode(text) == hf_tok.encode(text).ids == theirs.encode_ordinary(text)


@pytest.fixture(scope="module")
def trained() -> Tokenizer:
    return Tokenizer.bpe(shakespeare()[:300_000], 1024, "gpt4", ["<|endoftext|>"])


def test_trained_ranks_encode_the_same_in_tiktoken(trained: Tokenizer, tmp_path: Path) -> None:
    import tiktoken.load

    trained.save_tiktoken(tmp_path / "s.tiktoken")
    enc = tiktoken.Encoding(
        "shakespeare",
        pat_str=trained.pattern,
        mergeable_ranks=tiktoken.load.load_tiktoken_bpe(str(tmp_path / "s.tiktoken")),
        special_tokens=trained.special_tokens,
    )
    text = shakespeare()
    assert trained.encode(text) == enc.encode_ordinary(text)
    back = Tokenizer.from_tiktoken(tmp_path / "s.tiktoken", "gpt4", trained.special_tokens)
    assert back == trained


def test_trained_tokenizer_json_encodes_the_same_in_hf_tokenizers(
    trained: Tokenizer, tmp_path: Path
) -> None:
    trained.save_hf_json(tmp_path / "tokenizer.json")
    theirs = hf.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = shakespeare()[:300_000] + "\n<|endoftext|> naïve 😀 中文 it's 12345"
    assert trained.encode(text, allowed_special="all") == theirs.encode(text).ids
    assert (
        theirs.decode(trained.encode(text, allowed_special="all"), skip_special_tokens=False)
        == text
    )
    assert Tokenizer.from_hf_json(tmp_path / "tokenizer.json") == trained


def test_trained_gpt2_files_round_trip_and_load_in_hf(trained: Tokenizer, tmp_path: Path) -> None:
    enc, merges = tmp_path / "vocab.json", tmp_path / "merges.txt"
    trained.save_gpt2_files(enc, merges)
    assert Tokenizer.from_gpt2_files(enc, merges, pattern="gpt4") == trained
    theirs = hf.Tokenizer(hf.models.BPE.from_file(str(enc), str(merges)))
    theirs.pre_tokenizer = hf.pre_tokenizers.ByteLevel(add_prefix_space=False)
    # HF's ByteLevel splits with GPT-2's pattern; so does a gpt2-pattern tokenizer.
    gpt2_view = Tokenizer.from_gpt2_files(enc, merges, pattern="gpt2")
    text = shakespeare()[:50_000]
    assert gpt2_view.encode(text) == theirs.encode(text).ids


def minbpe_train(texts: list[str], vocab_size: int, pattern: str) -> list[bytes]:
    """minbpe's RegexTokenizer.train, plainly: recount all pairs for every merge. Ties go
    to the smallest pair; a pair whose bytes already are a token merges into it."""
    chunks = [list(c.encode()) for text in texts for c in regex.findall(pattern, text)]
    vocab = [bytes([b]) for b in range(256)]
    while len(vocab) < vocab_size:
        stats: Counter[tuple[int, int]] = Counter()
        for ids in chunks:
            stats.update(zip(ids, ids[1:]))
        if not stats:
            break
        pair = min(stats, key=lambda p: (-stats[p], p))
        joined = vocab[pair[0]] + vocab[pair[1]]
        if joined in vocab:
            new = vocab.index(joined)
        else:
            new = len(vocab)
            vocab.append(joined)
        merged = []
        for ids in chunks:
            out, i = [], 0
            while i < len(ids):
                if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            merged.append(out)
        chunks = merged
    return vocab


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "o200k"])
def test_training_equals_minbpe_merge_for_merge(pattern: str) -> None:
    text = shakespeare()[:8_000] + " naïve café 😀😀 中文中文 it's IT'S 1234567"
    tok = Tokenizer.bpe(text, 420, pattern)
    reference_vocab = minbpe_train([text], 420, tok.pattern)
    assert [tok.token_bytes(i) for i in range(tok.vocab_size)] == reference_vocab


def test_training_on_several_texts_counts_them_all() -> None:
    texts = ["the cat sat", "the cat ate", "a cat"]
    assert Tokenizer.bpe(texts, 262) == Tokenizer.bpe(texts[::-1], 262)
    tok = Tokenizer.bpe(texts, 262)
    assert [tok.token_bytes(i) for i in range(262)] == minbpe_train(texts, 262, tok.pattern)


def test_training_limits() -> None:
    with pytest.raises(TokenizerError, match="vocab_size 256"):
        Tokenizer.bpe("hello", 256, special_tokens=["<|endoftext|>"])
    with pytest.warns(RuntimeWarning, match="ran out of pairs"):
        small = Tokenizer.bpe("abab", 1000)
    assert small.vocab_size == 258
    with pytest.raises(TokenizerError, match="invalid pre-split regex"):
        Tokenizer.bpe("hello", 300, pattern="(unclosed")


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A file of 2.6 MB, several of the trainer's 1 MiB chunks, with multi-byte
    characters and long runs of spaces and digits across the chunk boundaries."""
    text = shakespeare()
    text = text + " naïve café 😀 中文 it's IT'S 1234567 " * 3000 + "  " * 40_000 + text
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    assert path.stat().st_size > 2 * 2**20
    return path, text


@pytest.mark.parametrize("pattern", ["gpt2", "gpt4", "o200k"])
def test_training_on_a_file_equals_training_on_its_text(
    big_corpus: tuple[Path, str], pattern: str
) -> None:
    path, text = big_corpus
    from_text = Tokenizer.bpe(text, 3000, pattern, progress=False)
    # Equal tokenizers hold the same tokens in the same order: the same merges.
    assert Tokenizer.bpe(path, 3000, pattern) == from_text
    assert Tokenizer.bpe(files=[str(path)], vocab_size=3000, pattern=pattern) == from_text


def test_training_on_files_and_texts_is_training_on_the_list_of_their_texts(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("the cat sat on the mat\n", encoding="utf-8")
    b.write_text("a cat ate the rat", encoding="utf-8")
    texts = ["the cat sat on the mat\n", "a cat ate the rat", "the end"]
    tokenizers = [
        Tokenizer.bpe([a, b, "the end"], 275),
        Tokenizer.bpe("the end", 275, files=[a, str(b)]),
    ]
    expected = minbpe_train(texts, 275, tokenizers[0].pattern or "")
    for tok in tokenizers:
        assert [tok.token_bytes(i) for i in range(tok.vocab_size)] == expected


def test_max_bytes_trains_on_the_start_of_each_file(big_corpus: tuple[Path, str]) -> None:
    path, text = big_corpus
    data = text.encode()
    cut = data.index("😀".encode()) + 2  # inside the emoji: cut back before it
    head = data[: data.index("😀".encode())].decode()
    assert Tokenizer.bpe(path, 1000, max_bytes=cut) == Tokenizer.bpe(head, 1000)


def test_long_training_shows_a_progress_bar_on_stderr(
    big_corpus: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = big_corpus
    Tokenizer.bpe(path, 2000)  # under a second: no bar by default
    assert capsys.readouterr().err == ""
    Tokenizer.bpe(path, 2000, progress=True)
    err = capsys.readouterr().err
    size_kb = path.stat().st_size // 1024
    assert f"BPE counting kB {size_kb}/{size_kb} [" in err
    assert "BPE merges 1744/1744 [########################]" in err
    assert "elapsed" in err


def test_bad_training_files_are_clear_errors_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("fine", encoding="utf-8")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(FileNotFoundError, match=r"missing\.txt: no such file"):
        Tokenizer.bpe([good, tmp_path / "missing.txt"], 300)
    with pytest.raises(IsADirectoryError, match="is a directory"):
        Tokenizer.bpe(files=[tmp_path], vocab_size=300)
    with pytest.raises(tinylm.FormatError, match="/dev/zero: not a regular file"):
        Tokenizer.bpe(files=["/dev/zero"], vocab_size=300)
    with pytest.raises(
        tinylm.FormatError, match=r"latin1\.txt: not UTF-8 text \(invalid byte 0xe9 at offset 3"
    ):
        Tokenizer.bpe(latin1, 300)
    with pytest.raises(TypeError, match="a training file must be a path"):
        Tokenizer.bpe(files=[3], vocab_size=300)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="nothing to train on"):
        Tokenizer.bpe([], 300)
    with pytest.raises(TokenizerError, match="vocab_size 100"):
        Tokenizer.bpe(files=["/nonexistent"], vocab_size=100)  # checked before the files


def test_lone_surrogates_are_a_clear_error(pairs: dict) -> None:
    ours, _ = pairs["cl100k"]
    with pytest.raises(TokenizerError, match="lone surrogate '\\\\ud800' at index 2"):
        ours.encode("ab\ud800cd")
    with pytest.raises(TokenizerError, match="lone surrogate"):
        Tokenizer.bpe("ab\udfffcd", 300)


@settings(max_examples=100, deadline=None)
@given(text=TEXT, cut=st.integers(0, 5))
def test_stream_decoder_joins_to_the_full_decode(pairs: dict, text: str, cut: int) -> None:
    ours, _ = pairs["cl100k"]
    ids = ours.encode_ordinary(text)
    # Byte-level ids too, which cut every multi-byte character.
    byte_ids = [ours.encode_ordinary(chr(b))[0] if b < 128 else None for b in text.encode()]
    streams = [ids] if None in byte_ids else [ids, byte_ids]
    streams.append(ids[cut:])  # may start inside a character
    for stream in streams:
        dec = ours.decoder()
        pieces = [dec.push(i) for i in stream] + [dec.finish()]
        assert "".join(pieces) == ours.decode(stream)


def test_decode_replace_and_strict(pairs: dict) -> None:
    ours, theirs = pairs["cl100k"]
    ids = ours.encode("😀")
    assert len(ids) > 1
    cut = ids[:-1]
    assert ours.decode(cut) == theirs.decode(cut)
    assert ours.decode_bytes(cut) == theirs.decode_bytes(cut)
    with pytest.raises(TokenizerError, match="UTF-8"):
        ours.decode(cut, errors="strict")
    with pytest.raises(TokenizerError, match="unused"):
        ours.decode([100261])


def test_vocab_is_readable(pairs: dict) -> None:
    ours, theirs = pairs["cl100k"]
    vocab = ours.vocab
    assert len(vocab) == ours.vocab_size == theirs.n_vocab
    assert vocab[9906] == "Hello"
    assert vocab[100257] == "<|endoftext|>"
    assert "\\x" in vocab[ours.encode("😀")[0]]


def test_a_bpe_model_is_one_file(trained: Tokenizer, tmp_path: Path) -> None:
    config = tinylm.Config(
        vocab_size=trained.vocab_size, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_seq_len=8
    )
    model = tinylm.Transformer(config, tokenizer=trained)
    model.save(tmp_path / "m.safetensors")
    back = tinylm.Transformer.load(tmp_path / "m.safetensors")
    assert back.tokenizer == trained
    assert back.tokenizer.encode("ROMEO: it's") == trained.encode("ROMEO: it's")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("IQ== 0\nIg== 0\n", "rank 0 appears twice"),
        ("IQ== 0\nIg== 2\n", "rank 1 is missing"),
        ("IQ=! 0\n", "not a base64 character"),
        ("IQ== 0\nIg", "line 2"),
    ],
)
def test_malformed_rank_files_name_file_and_problem(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "bad.tiktoken"
    path.write_text(content)
    with pytest.raises(tinylm.FormatError, match=problem) as info:
        Tokenizer.from_tiktoken(path)
    assert "bad.tiktoken" in str(info.value)


def test_malformed_hf_and_gpt2_files_name_file_and_problem(
    trained: Tokenizer, tmp_path: Path
) -> None:
    path = tmp_path / "tokenizer.json"
    trained.save_hf_json(path)
    good = path.read_text()
    path.write_text(good[: len(good) // 3])
    with pytest.raises(tinylm.FormatError, match=r"tokenizer\.json.*not valid JSON"):
        Tokenizer.from_hf_json(path)
    doc = json.loads(good)
    doc["model"]["merges"][5] = "Ġzzzq Ġqqq"
    path.write_text(json.dumps(doc))
    with pytest.raises(tinylm.FormatError, match=r"merge 5 .*not in model\.vocab"):
        Tokenizer.from_hf_json(path)
    enc, merges = tmp_path / "encoder.json", tmp_path / "vocab.bpe"
    trained.save_gpt2_files(enc, merges)
    enc.write_text("not json")
    with pytest.raises(tinylm.FormatError, match=r"encoder\.json"):
        Tokenizer.from_gpt2_files(enc, merges)


def test_word_and_char_tokenizers_refuse_bpe_only_calls() -> None:
    tok = Tokenizer.char_level("abc")
    assert tok.encode("cab") == [2, 0, 1]
    with pytest.raises(ValueError, match="BPE"):
        tok.encode_ordinary("abc")
    with pytest.raises(ValueError, match="BPE"):
        tok.encode("abc", allowed_special="all")


def test_cli_trains_a_bpe_model_on_the_training_split_and_shows_tokens(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinylm.cli import main

    corpus = tmp_path / "corpus.txt"
    train_text = "to be or not to be, that is the question.\n" * 60
    corpus.write_text(train_text + "zebra quagga xylophone.\n" * 30, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--out", str(out), "--tokenizer", "bpe"]
    argv += ["--vocab-size", "270", "--d-model", "16", "--n-layers", "1", "--n-heads", "2"]
    argv += ["--context", "8", "--steps", "3", "--eval-interval", "2", "--quiet"]
    argv += ["--val-fraction", str(1 - len(train_text) / corpus.stat().st_size)]
    assert main(argv) == 0
    tok = tinylm.Transformer.load(out / "model.safetensors").tokenizer
    assert tok is not None and tok.kind == "bpe"
    # Learnt on the training split only: the validation words are bytes, not merges.
    assert tok == Tokenizer.bpe(train_text, 270)
    capsys.readouterr()
    text = "to be 😀"
    assert main(["tokenize", "--weights", str(out / "model.safetensors"), "--text", text]) == 0
    ids_line, shown = capsys.readouterr().out.splitlines()
    ids = tok.encode(text)
    assert str(ids) in ids_line
    # Piped: brackets around each token; the emoji's four byte tokens are one group.
    assert shown == "".join(f"[{tok.decode([i])}]" for i in ids[:-4]) + "[😀]"


def test_cli_streams_bpe_training_from_the_file_and_warns_when_the_text_is_too_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tinylm.cli import _split_text, main

    corpus = tmp_path / "corpus.txt"
    text = "naïve café 😀 über straße " * 40 + "中文 validation text 😀\n" * 10
    corpus.write_text(text, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--data", str(corpus), "--out", str(out), "--tokenizer", "bpe"]
    argv += ["--vocab-size", "5000", "--d-model", "16", "--n-layers", "1", "--n-heads", "2"]
    argv += ["--context", "8", "--steps", "2", "--eval-interval", "2", "--quiet"]
    assert main(argv) == 0
    assert "warning: BPE training ran out of pairs" in capsys.readouterr().err
    tok = tinylm.Transformer.load(out / "model.safetensors").tokenizer
    train_text, _ = _split_text(text, 0.1)
    with pytest.warns(RuntimeWarning):
        assert tok == Tokenizer.bpe(train_text, 5000)
    assert tok is not None and tok.vocab_size < 5000


@pytest.mark.parametrize("kind", ["char", "word"])
def test_char_and_word_streams_join_to_the_generated_text_on_emoji_and_cjk(kind) -> None:
    words = ["naïve", "😀", "中文", "👩\u200d👩\u200d👧", "日本語", "e\u0301"]
    if kind == "char":
        tok = Tokenizer.char_level(" ".join(words) + " ")
    else:
        tok = Tokenizer.word_level(words)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=5, tokenizer=tok)
    prompt = "中文" if kind == "char" else "中文 😀"
    for seed in range(3):
        text = model.generate_text(prompt, 60, temperature=1.0, seed=seed)
        pieces = list(model.stream(prompt, 60, temperature=1.0, seed=seed))
        assert prompt + "".join(pieces) == text
        assert any(ord(ch) > 0xFFFF or "\u4e00" <= ch <= "\u9fff" for ch in text[len(prompt) :])


def test_streamed_generation_equals_the_decode_of_the_generated_ids() -> None:
    # An untrained model over byte tokens samples pieces of characters: the stream must
    # hold them back until whole, and end as the full decode does.
    tok = Tokenizer.bpe("naïve 😀 中文 " * 20, 272)
    config = tinylm.Config(
        vocab_size=tok.vocab_size, d_model=8, n_layers=1, n_heads=2, d_ff=16, max_seq_len=16
    )
    model = tinylm.Transformer(config, seed=3, tokenizer=tok)
    prompt = "naïve"
    for seed in range(3):
        ids = model.generate(tok.encode(prompt), 150, temperature=1.0, seed=seed)
        pieces = list(model.stream(prompt, 150, temperature=1.0, seed=seed))
        assert "".join(pieces) == tok.decode(ids)[len(prompt) :]
