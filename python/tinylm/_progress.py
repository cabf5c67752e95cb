"""A small progress bar for long work (no dependency): one line redrawn in place on a
terminal, a line every few seconds elsewhere (logs, CI)."""

from __future__ import annotations

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


class Progress:
    """``step/total [bar] loss, val loss, tokens/s, time left``."""

    def __init__(
        self,
        total: int,
        enabled: bool = True,
        initial: int = 0,
        stream: TextIO | None = None,
        width: int = 24,
        log_every: float = 5.0,
    ) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.width = width
        self.log_every = log_every
        self.start = time.perf_counter()
        self.initial = initial
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0
        self._line = ""
        self._open = False

    def update(self, step: int, loss: float, val: float | None, rate: float) -> None:
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
        val_text = f" | val {val:.4f}" if val is not None else ""
        self._line = (
            f"{step:>{len(str(self.total))}}/{self.total} [{bar}] loss {loss:.4f}{val_text}"
            f" | {_rate(rate)} | {_duration(now - self.start)} elapsed, {_duration(left)} left"
        )
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
