"""Byte sources the tar walker reads from: a seeking file (quick checks) and a read-ahead
file that hashes every byte on a second thread (full checks: one read of the file does both).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import BinaryIO

CHUNK = 1 << 20
READ_AHEAD_CHUNKS = 8


class SeekingFileSource:
    """Read a file; ``skip`` seeks instead of reading (never past the file's end)."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file = file
        self._size = size

    def read(self, size: int, /) -> bytes:
        return self._file.read(size)

    def skip(self, size: int) -> int:
        """Move ``size`` bytes forward; return how far that really went."""
        position = self._file.tell()
        target = min(position + size, self._size)
        self._file.seek(target)
        return target - position


class HashingReadAhead:
    """Read a file from start to end on a worker thread, hashing each chunk as it is read.

    The consumer's ``read`` takes bytes from a bounded queue of chunks, so memory stays at
    ``READ_AHEAD_CHUNKS * CHUNK`` whatever the file's size.  SHA-256 and the disk read overlap
    with whatever the consumer does with the bytes (hashlib releases the GIL on big buffers).
    ``finish`` reads whatever the consumer left and returns the whole file's SHA-256.
    """

    def __init__(
        self, path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None
    ) -> None:
        self._path = path
        self._on_bytes = on_bytes
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(READ_AHEAD_CHUNKS)
        self._stop = threading.Event()
        self._sha = hashlib.sha256()
        self._chunk = memoryview(b"")
        self._eof = False
        self.consumed = 0
        self._thread = threading.Thread(target=self._produce, name="read-ahead", daemon=True)

    def __enter__(self) -> HashingReadAhead:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        while self._thread.is_alive():
            with contextlib.suppress(queue.Empty):
                self._queue.get(timeout=0.05)
        self._thread.join()

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes, never more than the rest of the current chunk (one
        copy, no joins); ``b""`` only at the end of the file."""
        if not self._chunk and not self._next_chunk():
            return b""
        data = bytes(self._chunk[:size])
        self._chunk = self._chunk[len(data) :]
        self.consumed += len(data)
        return data

    def skip(self, size: int) -> int:
        """Consume ``size`` bytes without copying them; return how many there were."""
        skipped = 0
        while skipped < size:
            if not self._chunk and not self._next_chunk():
                break
            take = min(size - skipped, len(self._chunk))
            self._chunk = self._chunk[take:]
            skipped += take
        self.consumed += skipped
        return skipped

    def finish(self) -> str:
        """Read to the end of the file and return the SHA-256 of all of it (hex)."""
        self.skip(1 << 62)
        return self._sha.hexdigest()

    def _next_chunk(self) -> bool:
        if self._eof:
            return False
        item = self._queue.get()
        if item is None:
            self._eof = True
            return False
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        self._chunk = memoryview(item)
        if self._on_bytes is not None:
            self._on_bytes(len(item))
        return True

    def _produce(self) -> None:
        try:
            with open(self._path, "rb", buffering=0) as file:
                while not self._stop.is_set():
                    chunk = file.read(CHUNK)
                    if not chunk:
                        break
                    self._sha.update(chunk)
                    self._put(chunk)
            self._put(None)
        except OSError as err:
            self._put(err)

    def _put(self, item: bytes | BaseException | None) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
