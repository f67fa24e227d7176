"""Byte sources the tar walker reads from: a seeking file (quick checks) and a reader of
the whole file whose SHA-256 a second thread makes meanwhile (full checks)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO

from zlib_ng import zlib_ng

if TYPE_CHECKING:
    from .tarstream import ByteSource

CHUNK = 1 << 20
WINDOW = 256 << 20  # how far the hash may run ahead of the verifier (in the page cache)


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


class FileChanged(Exception):
    """The file was written to while it was being verified (it is not finished).
    ``sha256`` is the hash of what the hashing thread read."""

    def __init__(self, message: str, sha256: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


class HashingReader:
    """The verifier's reader of a whole file, with SHA-256 of all of it made on a second
    thread.

    The two read the same open file each at its own pace (``os.pread``), so neither waits
    for the other: where an archive alternates between parts slow to check (text to
    inflate) and fast ones (media stored as it is), the hash runs ahead through the page
    cache, up to ``WINDOW`` bytes ahead of the verifier, and the whole takes as long as the
    slower of the two, not the sum of the slower parts.  Memory stays at a chunk or two
    each, whatever the file's size.

    Reading twice is safe because a file that changes between the reads is caught: both
    readers take the same 1 MiB chunks and compare their CRC-32s, and the file's size, mtime
    and ctime must be what they were at the start (``finish`` raises FileChanged).
    """

    def __init__(
        self, path: str | os.PathLike[str], on_bytes: Callable[[int], None] | None = None
    ) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._stamp = _stamp(os.fstat(self._fd))
        self._on_bytes = on_bytes
        self._sha = hashlib.sha256()
        self._chunk = memoryview(b"")
        self._position = 0  # where the verifier is
        self._eof = False
        self._hashed = 0
        self._crcs: dict[int, int] = {}  # chunk index -> CRC-32 of the first reader to get it
        self._mismatch: int | None = None
        self._error: OSError | None = None
        self._stop = False
        self._moved = threading.Condition()
        self._thread = threading.Thread(target=self._hash, name="sha256", daemon=True)

    def __enter__(self) -> HashingReader:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._moved:
            self._stop = True
            self._moved.notify_all()
        self._thread.join()
        os.close(self._fd)

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes, never more than the rest of the current chunk (one
        copy, no joins); ``b""`` only at the end of the file."""
        if not self._chunk and not self._next_chunk():
            return b""
        data = _take(self._chunk, size)
        self._chunk = self._chunk[len(data) :]
        self._position += len(data)
        return data

    def skip(self, size: int) -> int:
        """Move ``size`` bytes forward without reading them; return how many there were."""
        skipped = 0
        while skipped < size:
            if not self._chunk and not self._next_chunk():
                break
            take = min(size - skipped, len(self._chunk))
            self._chunk = self._chunk[take:]
            self._position += take
            skipped += take
        return skipped

    def finish(self) -> str:
        """Wait for the hash of the whole file and return it (hex).

        Raise FileChanged when the file was written to meanwhile; OSError on a read error."""
        with self._moved:
            self._position = 1 << 62  # the verifier is done: the hash needs no window now
            self._moved.notify_all()
        self._thread.join()
        if self._error is not None:
            raise self._error
        digest = self._sha.hexdigest()
        if self._mismatch is not None:
            where = self._mismatch * CHUNK
            raise FileChanged(f"bytes at {where} changed between two reads", digest)
        if _stamp(os.fstat(self._fd)) != self._stamp:
            raise FileChanged("its size or modification time changed", digest)
        return digest

    def _next_chunk(self) -> bool:
        """Read the chunk the position is in (chunks are aligned, as the hash's are)."""
        if self._eof:
            return False
        index, offset = divmod(self._position, CHUNK)
        data = os.pread(self._fd, CHUNK, index * CHUNK)
        if len(data) <= offset:
            self._eof = True
            return False
        self._compare(index, data)
        self._chunk = memoryview(data)[offset:]
        if self._on_bytes is not None:
            self._on_bytes(len(data) - offset)
        with self._moved:
            self._moved.notify_all()
        return True

    def _hash(self) -> None:
        index = 0
        try:
            while True:
                with self._moved:
                    while not self._stop and self._hashed - self._position > WINDOW:
                        self._moved.wait(0.5)
                    if self._stop:
                        return
                data = os.pread(self._fd, CHUNK, index * CHUNK)
                if not data:
                    return
                self._sha.update(data)
                self._compare(index, data)
                self._hashed += len(data)
                index += 1
        except OSError as err:
            self._error = err

    def _compare(self, index: int, data: bytes) -> None:
        crc = zlib_ng.crc32(data)
        with self._moved:
            first = self._crcs.pop(index, None)
            if first is None:
                self._crcs[index] = crc
            elif first != crc and self._mismatch is None:
                self._mismatch = index


def _take(chunk: memoryview, size: int) -> bytes:
    """The first ``size`` bytes of ``chunk``: the chunk's own bytes object when all of it
    is wanted (no copy of a megabyte per read), else a copy of the part."""
    whole = chunk.obj
    if size >= len(chunk) and isinstance(whole, bytes) and len(whole) == len(chunk):
        return whole
    return bytes(chunk[:size])


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


class ReaderThread:
    """Read a stream on a thread of its own, a few chunks ahead of the consumer: decryption
    then runs on the second core while the consumer inflates.  An error of the stream is
    raised by the consumer's ``read`` at the place it happened.  Leaving the ``with`` block
    stops and joins the thread, so the stream's own source is the caller's again."""

    def __init__(self, stream: ByteSource, chunk: int = CHUNK, depth: int = 4) -> None:
        self._stream = stream
        self._chunk_size = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._chunk = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="decrypt", daemon=True)

    def __enter__(self) -> ReaderThread:
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
        if not self._chunk:
            if self._ended:
                return b""
            item = self._queue.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            if not item:
                self._ended = True
                return b""
            self._chunk = memoryview(item)
        data = _take(self._chunk, size)
        self._chunk = self._chunk[len(data) :]
        return data

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._stream.read(self._chunk_size)
                self._put(data)
                if not data:
                    return
        except Exception as err:  # handed to the consumer, raised where it reads
            self._put(err)

    def _put(self, item: bytes | BaseException) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
