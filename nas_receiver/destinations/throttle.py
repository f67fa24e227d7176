"""A bandwidth limit shared by every upload thread: a token bucket whose rate may change
with the time of day (``bandwidth_schedule``), else ``bandwidth``, else unlimited."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from ..config import BandwidthWindow


def rate_for(default: int | None, windows: Sequence[BandwidthWindow], now: datetime) -> int | None:
    """Bytes per second allowed at local time ``now``: the first window holding it wins."""
    clock = now.strftime("%H:%M")
    for window in windows:
        inside = (
            window.start <= clock < window.end
            if window.start <= window.end
            else clock >= window.start or clock < window.end  # wraps past midnight
        )
        if inside:
            return window.limit
    return default


class Throttle:
    """``take(n)`` returns once ``n`` more bytes fit in the current rate."""

    def __init__(
        self,
        default: int | None,
        windows: Sequence[BandwidthWindow] = (),
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._default = default
        self._windows = list(windows)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_free = clock()  # when the bytes taken so far will have been sent

    @property
    def limited(self) -> bool:
        return self._default is not None or bool(self._windows)

    def take(self, count: int) -> None:
        if self._default is None and not self._windows:
            return  # unlimited: called for every few KiB sent, so return at once
        rate = rate_for(self._default, self._windows, datetime.now())
        if not rate:
            return
        with self._lock:
            now = self._clock()
            start = max(self._next_free, now - 1.0)  # at most one second of burst saved up
            self._next_free = start + count / rate
            wait = self._next_free - now
        if wait > 0:
            self._sleep(wait)
