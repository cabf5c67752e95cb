"""Tokenizers: text to token ids and back.

Two kinds, both implemented in the Rust core:

- **word level**, with the Go TinyLM's rules: split on any whitespace, case-sensitive, no
  unknown token (an unknown word is an error that names it); decode joins with spaces;
- **character level**: one token per character, the vocabulary being the sorted set of
  characters of a training text (as nanoGPT's Shakespeare example).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tinylm import _core
from tinylm._checks import ids_arg
from tinylm._io import write_text_atomic


class Tokenizer:
    """Maps text to token ids and back.

    Build one with :meth:`word_level`, :meth:`char_level` or :meth:`load`.

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
    def from_json(cls, text: str) -> Tokenizer:
        """A tokenizer from its JSON form (see :meth:`to_json`)."""
        return cls(_core.Tokenizer.from_json(text))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """Reads a tokenizer saved with :meth:`save`."""
        return cls.from_json(Path(path).read_text(encoding="utf-8"))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the tokenizer as JSON (atomically)."""
        write_text_atomic(Path(path), self.to_json())

    def to_json(self) -> str:
        """The JSON form: ``{"type": "word" | "char", "vocab": [...]}``."""
        return self._core.to_json()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; an unknown word or character raises ``TokenizerError``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._core.encode(text)

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of token ids; an id outside the vocabulary raises ``TokenizerError``."""
        return self._core.decode(ids_arg("ids", ids))

    @property
    def vocab_size(self) -> int:
        """Number of tokens."""
        return self._core.vocab_size

    @property
    def vocab(self) -> list[str]:
        """The token strings; index = id."""
        return self._core.vocab

    @property
    def kind(self) -> str:
        """``"word"`` or ``"char"``."""
        return self._core.kind

    def __len__(self) -> int:
        return self.vocab_size

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"
