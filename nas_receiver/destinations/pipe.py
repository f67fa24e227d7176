"""A producer thread writing into a bounded in-memory pipe that an upload reads: how an
archive is encrypted on its way out without a temporary file."""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, cast

CHUNKS_IN_FLIGHT = 4  # x the writer's chunk size (tarfile writes <= 1 MiB at a time)


class _Closed(Exception):
    """The reading side went away; the producer stops."""


class _Pipe:
    def __init__(self) -> None:
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(CHUNKS_IN_FLIGHT)
        self._written = 0
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = False
        self.closed = threading.Event()

    # the producer's side: what tarfile needs of a file
    def write(self, data: bytes) -> int:
        while True:
            if self.closed.is_set():
                raise _Closed
            try:
                self._queue.put(bytes(data), timeout=0.2)
                break
            except queue.Full:
                continue
        self._written += len(data)
        return len(data)

    def tell(self) -> int:
        return self._written

    def flush(self) -> None:
        """Nothing is buffered on this side."""

    def finish(self, error: BaseException | None) -> None:
        while not self.closed.is_set():
            try:
                self._queue.put(error, timeout=0.2)
                return
            except queue.Full:
                continue

    # the reader's side
    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (all, when negative); fewer only at the end.  Chunks are
        joined once, so a 16 MiB read costs 16 MiB, not a series of growing copies."""
        while not self._done and (size < 0 or self._buffered < size):
            item = self._queue.get()
            if item is None:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                self._chunks.append(item)
                self._buffered += len(item)
        wanted = self._buffered if size < 0 else min(size, self._buffered)
        taken: list[bytes] = []
        count = 0
        while count < wanted:
            chunk = self._chunks.popleft()
            if count + len(chunk) > wanted:  # split the last one; keep its rest
                cut = wanted - count
                self._chunks.appendleft(chunk[cut:])
                chunk = chunk[:cut]
            taken.append(chunk)
            count += len(chunk)
        self._buffered -= count
        return b"".join(taken)


@contextlib.contextmanager
def produced(producer: Callable[[BinaryIO], None], name: str = "producer") -> Iterator[BinaryIO]:
    """Run ``producer(sink)`` on a thread; yield a readable stream of what it writes.

    An error of the producer is raised by ``read``; leaving the block early stops it."""
    pipe = _Pipe()

    def run() -> None:
        try:
            producer(cast(BinaryIO, pipe))
        except _Closed:
            return
        except BaseException as err:  # handed to the reader, raised there
            pipe.finish(err)
            return
        pipe.finish(None)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    try:
        yield cast(BinaryIO, pipe)
    finally:
        pipe.closed.set()
        thread.join(timeout=30)
