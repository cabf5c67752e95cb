"""Safetensors files read and written with NumPy, for the Hugging Face directories.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``), then
the tensors' bytes, offsets counted from the end of the header. The header is read and
checked first, with the checks of the ``safetensors`` crate the core's reader uses
(rust/src/weights/safetensors_file.rs): a header of at most 100 MB holding a JSON object
without repeated names, known dtypes, every tensor's byte count equal to its shape times its
dtype's size, every range inside the data section, and the ranges tiling the data section
exactly (no overlap, no gap, no trailing bytes). So a file claiming huge tensors is an error
before anything is allocated, and no two tensors share bytes.

This parser exists beside the core's because Hugging Face checkpoints need what the core's
does not do: F16 and BF16 tensors, buffers of other dtypes that are skipped, and tensors
read one at a time from (possibly many) shards instead of whole files.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tinylm import _core
from tinylm._io import write_bytes_atomic

#: Largest header read (the safetensors library's own limit).
MAX_HEADER_BYTES = 100 << 20

#: Item sizes of the dtypes read as weights; every one is converted to float32.
ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2}
#: Item sizes of the other whole-byte dtypes a file may hold: their tensors (buffers such
#: as a BOOL causal mask, which are ignored) are checked in the header but never read.
OTHER_ITEM_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "I32": 4,
    "U32": 4,
    "I64": 8,
    "U64": 8,
}


def format_error(path: Path | str, detail: str) -> _core.FormatError:
    """A FormatError in the core's wording: ``<file>: <what is wrong>``."""
    return _core.FormatError(f"{path}: {detail}")


def check_finite(path: Path | str, name: str, array: np.ndarray) -> None:
    """A NonFiniteError, in the core's wording, if a tensor to save holds NaN or infinity."""
    if not np.all(np.isfinite(array)):
        raise _core.NonFiniteError(
            f"cannot save {path}: tensor {name!r} holds NaN or infinite values"
        )


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a safetensors file."""

    path: Path
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # absolute byte offsets in the file
    end: int

    def read(self) -> np.ndarray:
        """The tensor as a float32 array (F64, F16 and BF16 converted)."""
        if self.dtype not in ITEM_BYTES:
            raise format_error(
                self.path,
                f"tensor {self.name!r}: dtype {self.dtype!r} is not read as a weight "
                f"(expected one of {', '.join(ITEM_BYTES)})",
            )
        count = (self.end - self.begin) // ITEM_BYTES[self.dtype]
        with open(self.path, "rb") as f:
            f.seek(self.begin)
            raw = f.read(self.end - self.begin)
        if len(raw) != self.end - self.begin:
            raise format_error(self.path, f"tensor {self.name!r}: the file shrank while reading")
        if self.dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2", count=count).astype(np.uint32) << 16
            data = bits.view(np.float32)
        else:
            kind = {"F64": "<f8", "F32": "<f4", "F16": "<f2"}[self.dtype]
            data = np.frombuffer(raw, dtype=kind, count=count).astype(np.float32)
        if not np.all(np.isfinite(data)):
            raise format_error(self.path, f"tensor {self.name!r} holds NaN or infinite values")
        return data.reshape(self.shape)


def read_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """The tensors (by name) and the string metadata of a safetensors file, checked."""
    path = Path(path)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise format_error(path, "no such file") from None
    if not stat.S_ISREG(info.st_mode):
        raise format_error(path, "not a regular file")
    size = info.st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise format_error(path, f"a safetensors file needs 8 header bytes, found {size}")
        n = int.from_bytes(prefix, "little")
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise format_error(
                path, f"header length {n} does not fit in a file of {size} bytes (or the limit)"
            )
        text = f.read(n)
    try:
        header = json.loads(text, object_pairs_hook=lambda pairs: _unique(path, pairs))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise format_error(path, f"the safetensors header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise format_error(path, "the safetensors header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise format_error(path, "__metadata__ is not an object")
    data_start, data_len = 8 + n, size - 8 - n
    tensors = {}
    for name, entry in header.items():
        tensors[name] = _tensor_info(path, name, entry, data_start, data_len)
    _check_tiling(path, tensors.values(), data_start, data_len)
    return tensors, {str(k): str(v) for k, v in metadata.items()}


def _unique(path: Path, pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object whose keys are all different (json.loads would keep the last one)."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise format_error(path, f"the safetensors header names {key!r} twice")
        out[key] = value
    return out


def _check_tiling(
    path: Path, tensors: Iterable[TensorInfo], data_start: int, data_len: int
) -> None:
    """The tensors' byte ranges, in file order, follow each other from the start of the
    data section to its end: no two overlap, none leaves a gap, no bytes trail."""
    at, previous = data_start, ""
    for t in sorted(tensors, key=lambda t: (t.begin, t.end)):
        span = f"[{t.begin - data_start}, {t.end - data_start}]"
        if t.begin < at:
            raise format_error(
                path, f"tensor {t.name!r}: data_offsets {span} overlap tensor {previous}"
            )
        if t.begin > at:
            raise format_error(
                path,
                f"tensor {t.name!r}: data_offsets {span} leave bytes "
                f"[{at - data_start}, {t.begin - data_start}] of the data section to no tensor",
            )
        at, previous = t.end, f"{t.name!r}'s {span}"
    if at != data_start + data_len:
        raise format_error(
            path,
            f"the tensors end at data byte {at - data_start} but the data section holds "
            f"{data_len} bytes (trailing bytes belong to no tensor)",
        )


def _tensor_info(path: Path, name: str, entry: object, start: int, data_len: int) -> TensorInfo:
    def bad(detail: str) -> _core.FormatError:
        return format_error(path, f"tensor {name!r}: {detail}")

    if not isinstance(entry, dict):
        raise bad("its header entry is not an object")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    item = (
        (ITEM_BYTES.get(dtype) or OTHER_ITEM_BYTES.get(dtype)) if isinstance(dtype, str) else None
    )
    if item is None:
        raise bad(f"dtype {dtype!r} is not read (expected one of {', '.join(ITEM_BYTES)})")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise bad(f"shape {shape!r} is not a list of sizes")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(isinstance(o, int) for o in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data_len
    ):
        raise bad(f"data_offsets {offsets!r} are outside the file's {data_len} data bytes")
    count = int(np.prod(shape, dtype=object))
    if count * item != offsets[1] - offsets[0]:
        raise bad(
            f"shape {shape} of {dtype} needs {count * item} bytes, "
            f"data_offsets give {offsets[1] - offsets[0]}"
        )
    return TensorInfo(path, name, dtype, tuple(shape), start + offsets[0], start + offsets[1])


def write(path: Path, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str]) -> None:
    """Writes float32 tensors (atomically), in the given order, header padded to 8 bytes."""
    header: dict[str, object] = {"__metadata__": dict(metadata)}
    offset, blobs = 0, []
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype="<f4")
        check_finite(path, name, data)
        blobs.append(data.tobytes())
        header[name] = {
            "dtype": "F32",
            "shape": list(data.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        offset += data.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    write_bytes_atomic(path, len(text).to_bytes(8, "little") + text + b"".join(blobs))
