"""A small progress bar for long work (no dependency): one line redrawn in place on a
terminal, a line every few seconds elsewhere (logs, CI).

Writes never stop the work: when the reader of the stream goes away (``train ... 2>&1 |
head -3``), the first failed write sends the stream to ``os.devnull`` and the run goes on
silently (:class:`PipeSafe`)."""

from __future__ import annotations

import io
import os
import sys
import time
from typing import TextIO


def _duration(seconds: float) -> str:
    seconds = max(int(seconds), 0)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _rate(tokens_per_second: float) -> str:
    if tokens_per_second >= 1e6:
        return f"{tokens_per_second / 1e6:.2f}M tok/s"
    if tokens_per_second >= 1e3:
        return f"{tokens_per_second / 1e3:.1f}k tok/s"
    return f"{tokens_per_second:.0f} tok/s"


class PipeSafe(io.TextIOBase):
    """A text stream whose writes never raise for a closed pipe or file: the first failure
    points the file descriptor at ``os.devnull`` (so that later writes, and Python's own
    flush at exit, succeed) and everything written afterwards is dropped."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        #: True once the reader has gone away.
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                self._stream.write(text)
            except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
                self._silence()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError):
                self._silence()

    def isatty(self) -> bool:
        try:
            return bool(self._stream.isatty())
        except (ValueError, AttributeError):
            return False

    def fileno(self) -> int:
        return self._stream.fileno()

    def _silence(self) -> None:
        self.broken = True
        try:
            fd = self._stream.fileno()
            devnull = os.open(os.devnull, os.O_WRONLY)
        except (OSError, ValueError, io.UnsupportedOperation, AttributeError):
            return
        try:
            os.dup2(devnull, fd)
        except OSError:
            pass
        finally:
            os.close(devnull)


class Progress:
    """``label step/total [bar] loss, val loss, tokens/s, time left`` (the parts given)."""

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        initial: int = 0,
        stream: TextIO | None = None,
        width: int = 24,
        log_every: float = 5.0,
        label: str = "",
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = PipeSafe(stream or sys.stderr)
        self.width = width
        self.log_every = log_every
        self.label = f"{label} " if label else ""
        self.start = time.perf_counter()
        self.initial = initial
        self.interactive = self.stream.isatty()
        self._last_draw = 0.0
        self._line = ""
        self._open = False

    def update(
        self,
        step: int,
        loss: float | None = None,
        val: float | None = None,
        rate: float | None = None,
    ) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        last = step >= self.total
        interval = 0.1 if self.interactive else self.log_every
        if not last and now - self._last_draw < interval:
            return
        self._last_draw = now
        done = step - self.initial
        left = (self.total - step) * (now - self.start) / done if done > 0 else 0.0
        filled = int(self.width * step / max(self.total, 1))
        bar = "#" * filled + "." * (self.width - filled)
        parts = [f"{self.label}{step:>{len(str(self.total))}}/{self.total} [{bar}]"]
        if loss is not None:
            parts[0] += f" loss {loss:.4f}"
        if val is not None:
            parts.append(f"val {val:.4f}")
        if rate is not None:
            parts.append(_rate(rate))
        parts.append(f"{_duration(now - self.start)} elapsed, {_duration(left)} left")
        self._line = " | ".join(parts)
        if self.interactive:
            self.stream.write("\r\x1b[2K" + self._line)
            self._open = True
        else:
            self.stream.write(self._line + "\n")
        self.stream.flush()

    def note(self, message: str, always: bool = False) -> None:
        """Prints a message on its own line without breaking the bar; with `always`, even
        when the bar is disabled."""
        if not (self.enabled or always):
            return
        if self.interactive and self._open:
            self.stream.write("\r\x1b[2K")
        self.stream.write(message + "\n")
        if self.interactive and self._open:
            self.stream.write(self._line)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.interactive and self._open:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False
