"""Progress of long operations: a live line on a terminal, nothing when not on one.

Under DSM Task Scheduler or journald, stderr is not a terminal, and progress stays silent so
logs hold only what happened.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def human_bytes(count: float) -> str:
    """Return ``count`` bytes as a short human size (``1.5 GiB``)."""
    for unit in _UNITS:
        if abs(count) < 1024 or unit == _UNITS[-1]:
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Count bytes done of ``total`` and redraw one line at most every ``interval`` s."""

    def __init__(
        self,
        label: str,
        total: int,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        interval: float = 0.25,
    ) -> None:
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._label = label
        self._total = total
        self._done = 0
        self._interval = interval
        self._started = time.monotonic()
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        self._done += count
        now = time.monotonic()
        if self._enabled and now - self._drawn >= self._interval:
            self._drawn = now
            self._draw(now)

    def close(self) -> None:
        if self._enabled and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def line(self, now: float | None = None) -> str:
        """Return the progress line: label, bytes, rate and ETA."""
        elapsed = max((now or time.monotonic()) - self._started, 1e-6)
        rate = self._done / elapsed
        text = f"{self._label}: {human_bytes(self._done)}"
        if self._total:
            text += f" / {human_bytes(self._total)} ({100 * self._done / self._total:.0f}%)"
        text += f"  {human_bytes(rate)}/s"
        if self._total and rate > 0:
            left = max(self._total - self._done, 0) / rate
            text += f"  ETA {int(left // 60)}:{int(left % 60):02d}"
        return text

    def _draw(self, now: float) -> None:
        self._stream.write("\r\x1b[K" + self.line(now))
        self._stream.flush()
