"""Tokenizers: the Go word-level rules and the character level."""

from __future__ import annotations

from pathlib import Path

import pytest

import tinylm

GO_VOCAB = ["the", "cat", "sat", "on", "mat", "big", "dog", "ate", "END"]


@pytest.fixture
def words() -> tinylm.Tokenizer:
    return tinylm.Tokenizer.word_level(GO_VOCAB)


def test_word_level_splits_on_any_whitespace(words: tinylm.Tokenizer) -> None:
    assert words.encode("the  cat\tsat\non \r\n mat") == [0, 1, 2, 3, 4]


def test_word_level_is_case_sensitive(words: tinylm.Tokenizer) -> None:
    with pytest.raises(tinylm.TokenizerError, match="word not in vocabulary: The"):
        words.encode("The cat")


def test_unknown_word_error_names_the_word(words: tinylm.Tokenizer) -> None:
    with pytest.raises(tinylm.TokenizerError, match="word not in vocabulary: zebra"):
        words.encode("the zebra sat")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_word_level_empty_text_is_an_error(words: tinylm.Tokenizer, text: str) -> None:
    with pytest.raises(tinylm.TokenizerError, match="empty"):
        words.encode(text)


def test_word_level_decode_joins_with_single_spaces(words: tinylm.Tokenizer) -> None:
    assert words.decode([0, 6, 7, 8]) == "the dog ate END"


@pytest.mark.parametrize("bad", [9, 100, -1])
def test_decoding_an_id_outside_the_vocabulary_is_an_error(words, bad: int) -> None:
    with pytest.raises(ValueError, match=str(bad)):
        words.decode([0, bad])


def test_duplicate_words_are_refused() -> None:
    with pytest.raises(tinylm.TokenizerError, match="twice"):
        tinylm.Tokenizer.word_level(["a", "b", "a"])


def test_words_with_spaces_are_refused() -> None:
    with pytest.raises(tinylm.TokenizerError, match="whitespace"):
        tinylm.Tokenizer.word_level(["a b"])


def test_char_level_vocabulary_is_the_sorted_characters_of_the_text() -> None:
    tok = tinylm.Tokenizer.char_level("hello, world")
    assert tok.vocab == sorted(set("hello, world"))
    assert tok.vocab_size == len(set("hello, world"))


def test_char_level_round_trip_including_unicode_and_newlines() -> None:
    text = "Ünïcödé — ok?\nyes ✓"
    tok = tinylm.Tokenizer.char_level(text)
    assert tok.decode(tok.encode(text)) == text
    assert len(tok.encode(text)) == len(text)


def test_unknown_character_error_names_it() -> None:
    tok = tinylm.Tokenizer.char_level("abc")
    with pytest.raises(tinylm.TokenizerError, match="'z'"):
        tok.encode("abz")


def test_char_level_from_empty_text_is_an_error() -> None:
    with pytest.raises(tinylm.TokenizerError, match="empty"):
        tinylm.Tokenizer.char_level("")


@pytest.mark.parametrize("kind", ["word", "char"])
def test_save_and_load_round_trip(tmp_path: Path, kind: str) -> None:
    tok = (
        tinylm.Tokenizer.word_level(GO_VOCAB)
        if kind == "word"
        else tinylm.Tokenizer.char_level("some text\n")
    )
    path = tmp_path / "tok.json"
    tok.save(path)
    again = tinylm.Tokenizer.load(path)
    assert again == tok
    assert again.kind == kind


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"type": "bpe", "vocab": ["a"]}',
        '{"type": "char", "vocab": ["ab"]}',
        '{"type": "word"}',
        '{"type": "word", "vocab": []}',
    ],
)
def test_invalid_tokenizer_json_is_an_error(text: str) -> None:
    with pytest.raises(tinylm.TokenizerError):
        tinylm.Tokenizer.from_json(text)
