"""Atomic file writes: a reader sees the old file or the whole new one, never a part."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_target(path: Path) -> Path:
    """The file a write to ``path`` replaces: a symbolic link's target; a folder, FIFO,
    device or socket is an error naming ``path``, raised before anything is written."""
    path = Path(path)
    if path.is_symlink():
        path = path.resolve()
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a directory")
    if path.exists() and not path.is_file():
        raise OSError(
            f"{path}: not a regular file (a FIFO, device or socket): tinylm writes regular "
            "files only"
        )
    return path


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, flushes it, renames it over.

    The file gets the permissions any new file gets (``0o666`` less the umask, so 0644 under
    umask 022), as the Rust core's atomic writes do; ``tempfile.mkstemp`` would make it 0600.
    A symbolic link is followed (the file it names is replaced and the link stays); a FIFO,
    device or socket is refused, as a folder is.
    """
    path = write_target(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(path.parent or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_text_atomic(path: Path, text: str) -> None:
    """:func:`write_bytes_atomic` for UTF-8 text."""
    write_bytes_atomic(path, text.encode("utf-8"))
