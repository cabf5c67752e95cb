"""llama2.c's files, both ways: ``model.bin`` and ``tokenizer.bin``.

``model.bin``, version 0 (the "legacy" layout ``run.c`` reads): seven int32 (dim,
hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len; a negative vocab_size means
the classifier is stored, not shared with the embedding), then float32 arrays:
token_embedding (V, dim), rms_att (L, dim), wq (L, dim, dim), wk (L, kv_dim, dim),
wv (L, kv_dim, dim), wo (L, dim, dim), rms_ffn (L, dim), w1 (L, hidden, dim),
w2 (L, dim, hidden), w3 (L, hidden, dim), rms_final (dim), two RoPE tables of
(seq_len, head_size / 2) that run.c skips, then wcls (V, dim) if not shared.

Version 1 (``export.py --version 1``): a 256-byte header (uint32 magic ``0x616b3432``,
"ak42"; int32 version 1; the seven int32; a uint8 shared-classifier flag; zeros), then the
norms first (rms_att, rms_ffn, rms_final), token_embedding, wq, wk, wv, wo, w1, w2, w3 and
wcls if not shared; no RoPE tables.

Matrices are PyTorch's [out, in] (tinylm's transpose). w1 is the gate, w3 the up projection:
``w2 (silu(w1 x) * w3 x)``. llama2.c rotates adjacent pairs (2i, 2i + 1) by
``pos * 10000^(-2i / head_size)``, as tinylm does, so no permutation is needed; its RMSNorm
epsilon is 1e-5 and its RoPE base 10000, fixed.

``tokenizer.bin``: int32 max_token_length, then per token float32 score, int32 length and
the piece's bytes. run.c prints pieces (``<0xNN>`` is a raw byte) and merges prompt
characters by score, SentencePiece's way; token 1 is BOS and ends generation when sampled.
"""

from __future__ import annotations

import os
import re
import stat
import struct
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tinylm import _core
from tinylm._io import write_bytes_atomic
from tinylm.interop._safetensors import check_finite, format_error

if TYPE_CHECKING:
    from tinylm.model import Config, Transformer
    from tinylm.tokenizer import Tokenizer

MAGIC = 0x616B3432
V1_HEADER_BYTES = 256
HEADER_FIELDS = ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "seq_len")
#: Said when a byte-level BPE tokenizer is exported for run.c (see :func:`export`).
BPE_RUN_C_WARNING = (
    "llama2.c export: run.c reads and prints this byte-level BPE tokenizer's tokens like "
    "tinylm for ASCII text only (its byte fallback is id byte+3 and it skips unprintable "
    "one-byte pieces); non-ASCII prompts and outputs will differ"
)

#: The fixed constants of run.c.
EPS = 1e-5
ROPE_THETA = 10000.0
#: Longest token piece accepted in a tokenizer.bin.
MAX_PIECE_BYTES = 1 << 16


def check_config(config: Config) -> None:
    """A ConfigError naming the first field llama2.c's format cannot hold."""
    wanted = {
        "norm": "rmsnorm",
        "position": "rope",
        "activation": "swiglu",
        "attn_bias": False,
        "mlp_bias": False,
        "rope_theta": ROPE_THETA,
        "eps": EPS,
    }
    for field, value in wanted.items():
        have = getattr(config, field)
        same = abs(have - value) <= 1e-9 * value if isinstance(value, float) else have == value
        if not same:
            raise _core.ConfigError(
                f"invalid config: llama2.c's model.bin holds only Llama blocks with "
                f"{field} = {value!r}, this model has {field} = {have!r}"
            )


def _tensors(config: Config, version: int) -> list[tuple[str, tuple[int, ...]]]:
    """(llama2.c name, shape) of every array of a model.bin, in file order."""
    c, f, n, v, p = (
        config.d_model,
        config.d_ff,
        config.n_layers,
        config.vocab_size,
        config.max_seq_len,
    )
    d = c // config.n_heads
    kd = (config.n_kv_heads or config.n_heads) * d
    norms = [("rms_att", (n, c)), ("rms_ffn", (n, c)), ("rms_final", (c,))]
    weights = [
        ("wq", (n, c, c)),
        ("wk", (n, kd, c)),
        ("wv", (n, kd, c)),
        ("wo", (n, c, c)),
        ("w1", (n, f, c)),
        ("w2", (n, c, f)),
        ("w3", (n, f, c)),
    ]
    head = [] if config.tie_embeddings else [("wcls", (v, c))]
    if version == 1:
        return [*norms, ("token_embedding", (v, c)), *weights, *head]
    return [
        ("token_embedding", (v, c)),
        norms[0],
        *weights[:4],
        norms[1],
        *weights[4:],
        norms[2],
        ("freq_cis_real", (p, d // 2)),
        ("freq_cis_imag", (p, d // 2)),
        *head,
    ]


def _layer_pairs(config: Config) -> list[tuple[str, str, bool]]:
    """(llama2.c name, tinylm name with {l} for the layer, transposed) of each array."""
    return [
        ("rms_att", "blocks.{l}.norm1.weight", False),
        ("wq", "blocks.{l}.attn.W_q.weight", True),
        ("wk", "blocks.{l}.attn.W_k.weight", True),
        ("wv", "blocks.{l}.attn.W_v.weight", True),
        ("wo", "blocks.{l}.attn.W_o.weight", True),
        ("rms_ffn", "blocks.{l}.norm2.weight", False),
        ("w1", "blocks.{l}.ff.gate.weight", True),
        ("w2", "blocks.{l}.ff.linear2.weight", True),
        ("w3", "blocks.{l}.ff.linear1.weight", True),
    ]


def _rope_tables(p: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """llama2.c's freq_cis_real and freq_cis_imag: cos and sin of pos * theta^(-2i / D)."""
    freqs = ROPE_THETA ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    angles = np.arange(p, dtype=np.float64)[:, None] * freqs[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


# ----------------------------------------------------------------------------- model.bin


def save(model: Transformer, path: Path, version: int = 0) -> None:
    """Writes ``model`` as a llama2.c model.bin (atomically)."""
    config = model.config
    check_config(config)
    if version not in (0, 1):
        raise ValueError(f"version must be 0 or 1, got {version!r}")
    state = model.state_dict()
    arrays = {"token_embedding": state["token_embed.weight"], "rms_final": state["ln_f.weight"]}
    for ours, theirs, transposed in _layer_pairs(config):
        layers = [state[theirs.format(l=i)] for i in range(config.n_layers)]
        arrays[ours] = np.stack([w.T if transposed else w for w in layers])
    if not config.tie_embeddings:
        arrays["wcls"] = state["lm_head.weight"]
    arrays["freq_cis_real"], arrays["freq_cis_imag"] = _rope_tables(
        config.max_seq_len, config.d_model // config.n_heads
    )
    sizes = [
        config.d_model,
        config.d_ff,
        config.n_layers,
        config.n_heads,
        config.n_kv_heads or config.n_heads,
        config.vocab_size,
        config.max_seq_len,
    ]
    if version == 0:
        if not config.tie_embeddings:
            sizes[5] = -sizes[5]
        header = struct.pack("<7i", *sizes)
    else:
        header = struct.pack("<Ii7iB", MAGIC, 1, *sizes, int(config.tie_embeddings))
        header += b"\0" * (V1_HEADER_BYTES - len(header))
    for name, w in arrays.items():
        check_finite(path, name, w)
    body = [
        np.ascontiguousarray(arrays[name], dtype="<f4").tobytes()
        for name, _ in _tensors(config, version)
    ]
    write_bytes_atomic(path, header + b"".join(body))


def load(path: Path, backend: str) -> Transformer:
    """A Transformer from a llama2.c model.bin of version 0 or 1 (no tokenizer)."""
    from tinylm.model import Config, Transformer

    path = Path(path)
    size = _regular_size(path)
    with open(path, "rb") as f:
        head = f.read(V1_HEADER_BYTES)
    if len(head) >= 8 and struct.unpack("<I", head[:4])[0] == MAGIC:
        version = struct.unpack("<i", head[4:8])[0]
        if version != 1:
            raise format_error(path, f"field 'version' = {version}: only version 1 is float32")
        if len(head) < V1_HEADER_BYTES:
            raise format_error(path, f"truncated header: {len(head)} of {V1_HEADER_BYTES} bytes")
        sizes = list(struct.unpack("<7i", head[8:36]))
        shared = head[36] == 1
        if head[36] not in (0, 1):
            raise format_error(path, f"field 'shared_classifier' = {head[36]} is not 0 or 1")
        offset = V1_HEADER_BYTES
    else:
        version = 0
        if len(head) < 28:
            raise format_error(path, f"truncated header: {len(head)} of 28 bytes")
        sizes = list(struct.unpack("<7i", head[:28]))
        shared = sizes[5] > 0
        sizes[5] = abs(sizes[5])
        offset = 28
    fields = dict(zip(HEADER_FIELDS, sizes))
    for name, value in fields.items():
        if value < 1:
            raise format_error(path, f"header field {name!r} = {value} must be positive")
    if fields["dim"] % fields["n_heads"] or fields["n_heads"] % fields["n_kv_heads"]:
        raise format_error(
            path,
            f"header fields 'n_heads' = {fields['n_heads']} and 'n_kv_heads' = "
            f"{fields['n_kv_heads']} do not divide 'dim' = {fields['dim']} and 'n_heads'",
        )
    config = Config.llama(
        fields["vocab_size"],
        d_model=fields["dim"],
        n_layers=fields["n_layers"],
        n_heads=fields["n_heads"],
        n_kv_heads=None if fields["n_kv_heads"] == fields["n_heads"] else fields["n_kv_heads"],
        d_ff=fields["hidden_dim"],
        max_seq_len=fields["seq_len"],
        tie_embeddings=shared,
        eps=EPS,
        rope_theta=ROPE_THETA,
    )
    # The body is checked against the header before the model is allocated.
    layout, end = {}, offset
    for name, shape in _tensors(config, version):
        count = int(np.prod(shape, dtype=object))
        if end + 4 * count > size:
            raise format_error(
                path,
                f"truncated body: array {name!r} {list(shape)} (from the header's "
                f"{', '.join(f'{k} = {v}' for k, v in fields.items())}) needs bytes "
                f"{end}..{end + 4 * count}, the file has {size}",
            )
        layout[name] = (end, shape)
        end += 4 * count
    if end != size:
        raise format_error(path, f"{size - end} bytes follow the last array the header describes")
    try:
        model = Transformer(config, seed=0, backend=backend)
    except _core.ConfigError as exc:
        raise format_error(path, f"the header describes an invalid model: {exc}") from None

    def read(name: str) -> np.ndarray:
        start, shape = layout[name]
        data = np.fromfile(path, dtype="<f4", count=int(np.prod(shape)), offset=start)
        if not np.all(np.isfinite(data)):
            raise format_error(path, f"array {name!r} holds NaN or infinite values")
        return data.reshape(shape)

    state = {"token_embed.weight": read("token_embedding"), "ln_f.weight": read("rms_final")}
    for ours, theirs, transposed in _layer_pairs(config):
        stacked = read(ours)
        for i in range(config.n_layers):
            state[theirs.format(l=i)] = stacked[i].T if transposed else stacked[i]
    if not shared:
        state["lm_head.weight"] = read("wcls")
    model.load_state_dict(state)
    model.source_format = "llama2c"
    return model


def _regular_size(path: Path) -> int:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise format_error(path, "no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise format_error(path, "not a regular file")
    return info.st_size


# ----------------------------------------------------------------------------- tokenizer.bin


def tokenizer_pieces(tokenizer: Tokenizer) -> tuple[list[bytes], list[float]]:
    """The pieces and scores of a tinylm tokenizer for a tokenizer.bin: BPE tokens' bytes
    scored by merge rank (earlier merges score higher, as run.c merges the best score
    first), characters as they are, words with a leading space (run.c drops it after BOS)."""
    n = tokenizer.vocab_size
    if tokenizer.kind == "bpe":
        pieces = [tokenizer.token_bytes(i) for i in range(n)]
    elif tokenizer.kind == "char":
        pieces = [ch.encode() for ch in tokenizer.vocab]
    else:
        pieces = [b" " + w.encode() for w in tokenizer.vocab]
    return pieces, [-float(i) for i in range(n)]


def save_tokenizer(path: Path, pieces: Sequence[bytes], scores: Sequence[float]) -> None:
    """Writes a tokenizer.bin (atomically)."""
    if len(pieces) != len(scores):
        raise ValueError(f"{len(pieces)} pieces but {len(scores)} scores")
    longest = max((len(p) for p in pieces), default=1)
    out = [struct.pack("<i", max(longest, 1))]
    for piece, score in zip(pieces, scores):
        out.append(struct.pack("<fi", score, len(piece)) + bytes(piece))
    write_bytes_atomic(Path(path), b"".join(out))


def read_tokenizer(path: Path, vocab_size: int) -> tuple[list[bytes], list[float]]:
    """The pieces and scores of a tokenizer.bin of ``vocab_size`` tokens (the model.bin's
    header says how many: the file does not)."""
    path = Path(path)
    size = _regular_size(path)
    data = path.read_bytes() if size <= 64 << 20 else b""
    if len(data) != size:
        raise format_error(path, f"file of {size} bytes is too large for a tokenizer.bin")
    if size < 4:
        raise format_error(path, "truncated: no max_token_length field")
    (longest,) = struct.unpack("<i", data[:4])
    if not 1 <= longest <= MAX_PIECE_BYTES:
        raise format_error(path, f"field 'max_token_length' = {longest} is out of range")
    pieces, scores, at = [], [], 4
    for i in range(vocab_size):
        if at + 8 > size:
            raise format_error(path, f"truncated at token {i} of {vocab_size}: no score/length")
        score, length = struct.unpack("<fi", data[at : at + 8])
        if not 0 <= length <= longest:
            raise format_error(
                path, f"token {i}: field 'len' = {length} is outside 0..max_token_length"
            )
        if at + 8 + length > size:
            raise format_error(path, f"truncated at token {i} of {vocab_size}: piece cut short")
        pieces.append(data[at + 8 : at + 8 + length])
        scores.append(score)
        at += 8 + length
    return pieces, scores


class Llama2cTokenizer:
    """A tokenizer.bin's vocabulary with run.c's own encode and decode (tinylm's tokenizers
    are byte-level BPE, words or characters; Llama 2's is SentencePiece's BPE over
    characters with byte fallback, which this ports from run.c line by line):

    - encode: BOS (1), a dummy-prefix " " token when the text is not empty, then each UTF-8
      character's piece, or its bytes as the tokens ``<0xNN>`` = byte + 3; then, while any
      adjacent pair's concatenation is a piece, merge the pair whose piece scores highest
      (the first such pair on ties);
    - decode: the pieces' bytes, ``<0xNN>`` as the raw byte, the leading space of the piece
      after BOS dropped.

    >>> tok = Llama2cTokenizer.load("tokenizer.bin", 32000)          # doctest: +SKIP
    >>> tok.decode(tok.encode("Once upon a time"))                    # doctest: +SKIP
    'Once upon a time'
    """

    BOS = 1

    def __init__(self, pieces: Sequence[bytes], scores: Sequence[float]) -> None:
        self.pieces, self.scores = list(pieces), list(scores)
        self._ids: dict[bytes, int] = {}
        for i, piece in enumerate(self.pieces):
            self._ids.setdefault(piece, i)

    @classmethod
    def load(cls, path: Path | str, vocab_size: int) -> Llama2cTokenizer:
        """Reads a tokenizer.bin of ``vocab_size`` tokens (the model.bin header's)."""
        return cls(*read_tokenizer(Path(path), vocab_size))

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def encode(self, text: str, bos: bool = True) -> list[int]:
        """run.c's ``encode`` (without EOS)."""
        tokens = [self.BOS] if bos else []
        if text:
            if b" " not in self._ids:
                raise _core.TokenizerError("the vocabulary has no ' ' piece for the dummy prefix")
            tokens.append(self._ids[b" "])
        for ch in text:
            raw = ch.encode("utf-8", errors="surrogatepass")
            if raw in self._ids:
                tokens.append(self._ids[raw])
            else:
                tokens.extend(byte + 3 for byte in raw)
        if max(tokens, default=0) >= self.vocab_size:
            raise _core.TokenizerError("byte fallback needs ids 3..258, the vocabulary is smaller")
        while True:
            best_score, best_id, best_at = -1e10, -1, -1
            for i in range(len(tokens) - 1):
                merged = self._ids.get(self.pieces[tokens[i]] + self.pieces[tokens[i + 1]])
                if merged is not None and self.scores[merged] > best_score:
                    best_score, best_id, best_at = self.scores[merged], merged, i
            if best_at < 0:
                return tokens
            tokens[best_at : best_at + 2] = [best_id]

    def decode_bytes(self, ids: Sequence[int], prev: int | None = None) -> bytes:
        """The bytes run.c's ``decode`` gives for each id after the one before it."""
        out = []
        for token in ids:
            if not 0 <= token < self.vocab_size:
                raise _core.TokenizerError(f"id {token} is outside the vocabulary")
            piece = self.pieces[token]
            if prev == self.BOS and piece.startswith(b" "):
                piece = piece[1:]
            byte = re.fullmatch(rb"<0x([0-9A-Fa-f]{2})>", piece)
            out.append(bytes([int(byte.group(1), 16)]) if byte else piece)
            prev = token
        return b"".join(out)

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ids that start with BOS (as :meth:`encode` gives), BOS not printed."""
        ids = list(ids)
        if ids and ids[0] == self.BOS:
            return self.decode_bytes(ids[1:], prev=self.BOS).decode("utf-8", errors="replace")
        return self.decode_bytes(ids).decode("utf-8", errors="replace")


def generate_text(
    model: Transformer,
    tokenizer: Llama2cTokenizer,
    prompt: str,
    max_new_tokens: int,
    **options: object,
) -> str:
    """run.c's ``generate`` with tinylm's sampler: the prompt after BOS and its continuation,
    which ends before a sampled BOS. Keyword arguments are :meth:`Transformer.generate`'s."""
    ids = tokenizer.encode(prompt)
    out = model.generate(ids, max_new_tokens, stop=[tokenizer.BOS], **options)
    if tokenizer.BOS in out[len(ids) :]:
        out = out[: len(ids) + out[len(ids) :].index(tokenizer.BOS)]
    return tokenizer.decode(out)


def export(model: Transformer, directory: Path, version: int = 0) -> tuple[Path, Path | None]:
    """Writes ``model.bin`` and (if the model has a tokenizer) ``tokenizer.bin``; without
    a tokenizer, a ``tokenizer.bin`` an earlier export left in ``directory`` is removed.

    With a byte-level BPE tokenizer, run.c reproduces tinylm's tokens for ASCII text only
    (a warning says so). run.c's tokenizer is SentencePiece's: a UTF-8 character that is
    not a whole piece falls back to the ids ``byte + 3`` (Llama 2's ``<0xNN>`` tokens after
    ``<unk>``, ``<s>``, ``</s>``), while tinylm's byte tokens are the ids ``0..255``, so a
    non-ASCII prompt is read as other tokens; and run.c's ``safe_printf`` drops every
    one-byte piece that is not printable ASCII, so a non-ASCII character tinylm emits as
    byte tokens is not printed. The model itself is exact (same logits for the same ids)."""
    directory = Path(directory)
    check_config(model.config)
    if model.tokenizer is not None and model.tokenizer.kind == "bpe":
        warnings.warn(BPE_RUN_C_WARNING, stacklevel=2)
    directory.mkdir(parents=True, exist_ok=True)
    if model.tokenizer is None:
        # An earlier export's tokenizer.bin goes before the new model.bin is in place, so
        # run.c never reads the new model with another model's vocabulary.
        (directory / "tokenizer.bin").unlink(missing_ok=True)
        save(model, directory / "model.bin", version)
        return directory / "model.bin", None
    save(model, directory / "model.bin", version)
    save_tokenizer(directory / "tokenizer.bin", *tokenizer_pieces(model.tokenizer))
    return directory / "model.bin", directory / "tokenizer.bin"
