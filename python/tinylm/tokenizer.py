"""Tokenizers: text to token ids and back.

Three kinds, all implemented in the Rust core:

- **word level**, with the Go TinyLM's rules: split on any whitespace, case-sensitive, no
  unknown token (an unknown word is an error that names it); decode joins with spaces;
- **character level**: one token per character, the vocabulary being the sorted set of
  characters of a training text (as nanoGPT's Shakespeare example);
- **byte-level BPE**, GPT-2's and GPT-4's tokenizer, with tiktoken's algorithm and its
  results: trained with :meth:`Tokenizer.bpe`, or read from OpenAI's and Hugging Face's
  files (:meth:`Tokenizer.from_tiktoken`, :meth:`Tokenizer.from_gpt2_files`,
  :meth:`Tokenizer.from_hf_json`).

BPE in four lines (ids of GPT-4's ``cl100k_base``)::

    tok = Tokenizer.from_tiktoken("cl100k_base.tiktoken", pattern="gpt4")
    tok.encode("Hello world")              # [9906, 1917]
    tok.decode([9906, 1917])               # 'Hello world'
    [tok.token_bytes(i) for i in [9906, 1917]]   # [b'Hello', b' world']
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import ClassVar, Literal, Union

import numpy as np

from tinylm import _core
from tinylm._checks import MAX_ID, ids_arg, int_arg
from tinylm._io import write_text_atomic
from tinylm._progress import Progress

#: ``"all"``, or the names of the special tokens that ``encode`` may turn into their ids.
AllowedSpecial = Union[Literal["all"], Collection[str]]

#: What :meth:`Tokenizer.bpe` trains on: a text, a file (``pathlib.Path``), or a list of them.
TrainingText = Union[str, "os.PathLike[str]", Sequence[Union[str, "os.PathLike[str]"]]]

#: The named pre-split patterns (any other string is a regex).
PATTERNS = ("gpt2", "gpt4", "o200k")


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def _core_text_call(call, *args):  # type: ignore[no-untyped-def]
    """Runs a core call on text; a lone surrogate (not valid Unicode) is a TokenizerError."""
    try:
        return call(*args)
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end] if isinstance(e.object, str) else ""
        raise _core.TokenizerError(
            f"the text holds a lone surrogate {bad!r} at index {e.start}: it is not valid "
            "Unicode, so it has no UTF-8 bytes to encode"
        ) from None


def _allowed(allowed_special: AllowedSpecial) -> tuple[bool, set[str]]:
    if allowed_special == "all":
        return True, set()
    if isinstance(allowed_special, str) or not isinstance(allowed_special, Collection):
        raise TypeError(
            f'allowed_special must be "all" or a collection of special token names, '
            f"got {allowed_special!r}"
        )
    names = set(allowed_special)
    if not all(isinstance(n, str) for n in names):
        raise TypeError("allowed_special must hold special token names (str)")
    return False, names


def _path(name: str, value: object) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return os.fspath(value)  # type: ignore[arg-type]


def _training_text(text_or_texts: object, files: object) -> tuple[list[str], list[str]]:
    """The texts and the file paths to train on."""
    items = [text_or_texts] if isinstance(text_or_texts, (str, os.PathLike)) else text_or_texts
    if not isinstance(items, (list, tuple)):
        raise TypeError(
            "text_or_texts must be a str, a pathlib.Path, or a list of them, "
            f"got {type(text_or_texts).__name__}"
        )
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    if not isinstance(files, (list, tuple)):
        raise TypeError(f"files must be a list of paths, got {type(files).__name__}")
    texts = [t for t in items if isinstance(t, str)]
    paths = [_path("a training file", p) for p in items if not isinstance(p, str)]
    paths += [_path("a training file", p) for p in files]
    if not texts and not paths:
        raise ValueError("nothing to train on: give a text, a list of texts, or files")
    return texts, paths


class _TrainingBars:
    """Progress bars for BPE training, one per stage, fed by the core's reports."""

    LABELS: ClassVar[dict[str, str]] = {"counting": "BPE counting kB", "merging": "BPE merges"}

    def __init__(self, enabled: bool | None) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()
        self.bars: dict[str, Progress] = {}

    def update(self, stage: str, done: int, total: int) -> None:
        if stage == "counting":
            done, total = done // 1024, max(total // 1024, 1)
        bar = self.bars.get(stage)
        if bar is None:
            if self.enabled is None and time.perf_counter() - self.start < 1.0:
                return
            for other in self.bars.values():
                other.close()
            bar = self.bars[stage] = Progress(total, label=self.LABELS[stage])
        bar.total = total
        bar.update(done)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _pattern(pattern: object) -> str:
    if not isinstance(pattern, str):
        raise TypeError(
            f"pattern must be a str ({', '.join(PATTERNS)} or a regex), "
            f"got {type(pattern).__name__}"
        )
    return pattern


class Tokenizer:
    """Maps text to token ids and back.

    Build one with :meth:`word_level`, :meth:`char_level`, :meth:`bpe` (training),
    :meth:`from_tiktoken`, :meth:`from_gpt2_files`, :meth:`from_hf_json` or :meth:`load`.

    >>> tok = Tokenizer.word_level(["the", "cat", "sat"])
    >>> tok.encode("the cat")
    [0, 1]
    >>> tok.decode([1, 2])
    'cat sat'
    """

    def __init__(self, core: _core.Tokenizer) -> None:
        self._core = core

    @classmethod
    def word_level(cls, vocab: Sequence[str]) -> Tokenizer:
        """A word-level tokenizer; ``vocab[i]`` is the word of id ``i``."""
        if isinstance(vocab, str) or not isinstance(vocab, (list, tuple)):
            raise TypeError(
                f"vocab must be a list of words (str), got {type(vocab).__name__}"
                + (": split the text first, e.g. text.split()" if isinstance(vocab, str) else "")
            )
        if not all(isinstance(w, str) for w in vocab):
            bad = next(w for w in vocab if not isinstance(w, str))
            raise TypeError(f"vocab must hold words (str), got {type(bad).__name__} ({bad!r})")
        return cls(_core.Tokenizer.word_level(list(vocab)))

    @classmethod
    def char_level(cls, text: str) -> Tokenizer:
        """A character-level tokenizer whose vocabulary is the characters of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(_core.Tokenizer.char_level(text))

    @classmethod
    def bpe(
        cls,
        text_or_texts: TrainingText = (),
        vocab_size: int = 1024,
        pattern: str = "gpt4",
        special_tokens: Sequence[str] = (),
        *,
        files: Sequence[str | os.PathLike[str]] = (),
        max_bytes: int | None = None,
        progress: bool | None = None,
    ) -> Tokenizer:
        """Trains a byte-level BPE tokenizer (minbpe's algorithm).

        The text is pre-split with ``pattern`` (``"gpt2"``, ``"gpt4"``, ``"o200k"`` or a
        regex); from the 256 bytes, the most frequent adjacent pair of tokens is merged
        into a new token until there are ``vocab_size`` tokens, ``special_tokens``
        included (they take the last ids). Ties go to the smallest pair of ids. If the
        text runs out of pairs first, the vocabulary is smaller and a ``RuntimeWarning``
        says so.

        The text is a string, a list of strings, or UTF-8 files: ``pathlib.Path`` objects
        in ``text_or_texts`` (a ``str`` there is text) or paths (``str`` or ``Path``) in
        ``files``. Each string and each file is a text of its own: pieces never span two.
        Files are read a chunk at a time, so a corpus larger than memory can be used
        (memory grows with the number of distinct pre-split pieces); training on a file
        gives the same merges as training on its text. ``max_bytes`` reads at most that
        many bytes of each file (cut back to a whole character).

        ``progress``: ``True`` draws a progress bar on stderr, ``False`` none, and
        ``None`` (default) one only when training takes more than a second. The work runs
        with the GIL released, and Ctrl-C stops it (``KeyboardInterrupt``).

        >>> tok = Tokenizer.bpe("low lower lowest " * 50, vocab_size=260)
        >>> tok.vocab[256:]
        ['lo', 'low', ' low', ' lowe']
        """
        texts, paths = _training_text(text_or_texts, files)
        size = int_arg("vocab_size", vocab_size, 1, MAX_ID)
        limit = None if max_bytes is None else int_arg("max_bytes", max_bytes, 0, 2**63 - 1)
        specials = list(special_tokens)
        if not all(isinstance(n, str) for n in specials) or isinstance(special_tokens, str):
            raise TypeError("special_tokens must be a list of str")
        if progress not in (True, False, None):
            raise TypeError(f"progress must be True, False or None, got {progress!r}")
        bars = _TrainingBars(progress)
        try:
            core, exhausted = _core_text_call(
                _core.Tokenizer.bpe_train,
                texts,
                paths,
                size,
                _pattern(pattern),
                specials,
                limit,
                bars.update if progress is not False else None,
            )
        finally:
            bars.close()
        if exhausted:
            warnings.warn(
                f"BPE training ran out of pairs to merge: the vocabulary has "
                f"{core.vocab_size} tokens, not the {size} asked for",
                RuntimeWarning,
                stacklevel=2,
            )
        return cls(core)

    @classmethod
    def from_tiktoken(
        cls,
        path: str | os.PathLike[str],
        pattern: str = "gpt4",
        special_tokens: Mapping[str, int] | None = None,
    ) -> Tokenizer:
        """A BPE tokenizer from a tiktoken ``.tiktoken`` rank file, with its pre-split
        ``pattern`` and special tokens (name -> id), which the file does not hold."""
        specials = dict(special_tokens or {})
        for name, id_ in specials.items():
            _text("special token name", name)
            int_arg(f"the id of special token {name!r}", id_, 0, MAX_ID)
        return cls(_core.Tokenizer.from_tiktoken(_path("path", path), _pattern(pattern), specials))

    @classmethod
    def from_gpt2_files(
        cls,
        encoder_json: str | os.PathLike[str],
        vocab_bpe: str | os.PathLike[str],
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """A BPE tokenizer from GPT-2's ``encoder.json`` and ``vocab.bpe`` (Hugging Face's
        ``vocab.json`` and ``merges.txt``); entries that are neither bytes nor merges
        (``<|endoftext|>``) are special tokens."""
        return cls(
            _core.Tokenizer.from_gpt2_files(
                _path("encoder_json", encoder_json),
                _path("vocab_bpe", vocab_bpe),
                _pattern(pattern),
            )
        )

    @classmethod
    def from_hf_json(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """A BPE tokenizer from a Hugging Face ``tokenizer.json`` holding a byte-level BPE
        model (merges as ``"a b"`` strings or pairs; added tokens become special tokens)."""
        return cls(_core.Tokenizer.from_hf_json(_path("path", path)))

    def save_tiktoken(self, path: str | os.PathLike[str]) -> None:
        """Writes the mergeable tokens as a ``.tiktoken`` rank file (atomically); the
        pattern and special tokens are not part of that format."""
        self._core.save_tiktoken(_path("path", path))

    def save_gpt2_files(
        self, encoder_json: str | os.PathLike[str], vocab_bpe: str | os.PathLike[str]
    ) -> None:
        """Writes GPT-2's ``encoder.json`` and ``vocab.bpe`` (atomically)."""
        self._core.save_gpt2_files(
            _path("encoder_json", encoder_json), _path("vocab_bpe", vocab_bpe)
        )

    def save_hf_json(self, path: str | os.PathLike[str]) -> None:
        """Writes a Hugging Face ``tokenizer.json`` that ``tokenizers.Tokenizer.from_file``
        loads and that encodes as this tokenizer does (atomically)."""
        self._core.save_hf_json(_path("path", path))

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """A tokenizer from its JSON form (see :meth:`to_json`)."""
        return cls(_core.Tokenizer.from_json(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Reads a tokenizer saved with :meth:`save`. A file that is not one (a FIFO or
        device, text that is not UTF-8, JSON that is not a tokenizer's) is an error naming
        it."""
        return cls(_core.Tokenizer.load(_path("path", path)))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the tokenizer as JSON (atomically)."""
        write_text_atomic(Path(path), self.to_json())

    def to_json(self) -> str:
        """The JSON form: ``{"type": "word" | "char", "vocab": [...]}``, or for BPE
        ``{"type": "bpe", "pattern": regex, "tokens": [...], "special_tokens": {...}}``
        with the tokens in GPT-2's byte-to-unicode spelling."""
        return self._core.to_json()

    def encode(self, text: str, allowed_special: AllowedSpecial = ()) -> list[int]:
        """Token ids of ``text``; an unknown word or character raises ``TokenizerError``.

        BPE follows tiktoken: text holding a special token's string raises
        ``TokenizerError`` unless that token is in ``allowed_special`` (or it is
        ``"all"``), and then it is one id. A lone surrogate raises ``TokenizerError``.
        """
        all_, names = _allowed(allowed_special)
        return _core_text_call(self._core.encode, _text("text", text), all_, names)

    def encode_ordinary(self, text: str) -> list[int]:
        """BPE ids of ``text`` with special tokens' strings as ordinary text."""
        return _core_text_call(self._core.encode_ordinary, _text("text", text))

    def encode_batch(
        self, texts: Sequence[str], allowed_special: AllowedSpecial = ()
    ) -> list[list[int]]:
        """:meth:`encode` of each text, in parallel on tinylm's threads (GIL released)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError("texts must be a list of str")
        all_, names = _allowed(allowed_special)
        return _core_text_call(self._core.encode_batch, list(texts), all_, names)

    def decode(
        self, ids: Sequence[int] | np.ndarray, errors: Literal["replace", "strict"] = "replace"
    ) -> str:
        """Text of token ids; an id outside the vocabulary raises ``TokenizerError``.

        BPE ids can cut a character in two: ``errors="replace"`` (tiktoken's default)
        turns such bytes into U+FFFD, ``errors="strict"`` raises ``TokenizerError``.
        """
        if errors not in ("replace", "strict"):
            raise ValueError(f'errors must be "replace" or "strict", got {errors!r}')
        return self._core.decode(ids_arg("ids", ids), errors == "strict")

    def decode_bytes(self, ids: Sequence[int] | np.ndarray) -> bytes:
        """The concatenated bytes of BPE tokens."""
        return self._core.decode_bytes(ids_arg("ids", ids))

    def token_bytes(self, id: int) -> bytes:
        """The bytes of one BPE token (a special token's: its UTF-8 name)."""
        return self._core.token_bytes(int_arg("id", id, 0, MAX_ID))

    def decoder(self) -> StreamDecoder:
        """An incremental decoder for BPE ids, for streaming generated text."""
        return StreamDecoder(self)

    @property
    def special_tokens(self) -> dict[str, int]:
        """BPE special tokens, name -> id (empty for other kinds)."""
        return self._core.special_tokens

    @property
    def pattern(self) -> str | None:
        """The pre-split regex of a BPE tokenizer (None for other kinds)."""
        return self._core.pattern

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return self._core.vocab_size

    @property
    def vocab(self) -> list[str]:
        """The token strings; index = id. BPE tokens that are not valid UTF-8 on their own
        show their bytes as ``\\xNN``; unused ids between tokens show as ``<unused id>``."""
        return self._core.vocab

    @property
    def kind(self) -> str:
        """``"word"``, ``"char"`` or ``"bpe"``."""
        return self._core.kind

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


class StreamDecoder:
    """Decodes BPE ids one at a time into complete characters.

    :meth:`push` returns the text a new id completes (maybe ``""`` while a character's
    bytes are split across tokens); :meth:`finish` ends the stream. Joined, the pieces
    equal ``tokenizer.decode(all_ids)``, U+FFFD replacements included.

    >>> dec = tok.decoder()                                       # doctest: +SKIP
    >>> "".join(dec.push(i) for i in ids) + dec.finish() == tok.decode(ids)   # doctest: +SKIP
    True
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._core = _core.BpeDecoder(tokenizer._core)

    def push(self, id: int) -> str:
        """The text completed by token ``id``."""
        return self._core.push(int_arg("id", id, 0, MAX_ID))

    def finish(self) -> str:
        """The end of the stream: an unfinished character comes out as U+FFFD."""
        return self._core.finish()
