"""Byte sources the tar walker reads from: a seeking file (quick checks) and a reader of
the whole file whose SHA-256 a second thread makes meanwhile (full checks)."""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import os
import queue
import stat
import sys
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, BinaryIO, NoReturn

from zlib_ng import zlib_ng

from .tarstream import MemberCut, ShortReads, TarTruncated, read_full, take

if TYPE_CHECKING:
    from .tarstream import ByteSource

CHUNK = 1 << 20
FEED_DEPTH = 4  # chunks the hash may hand a range before the range takes one
# How far the hash may run ahead of the slowest reader: what it read for that reader has to
# stay in the page cache until the reader gets there.  A quarter of the memory the kernel
# says is available (the cache included), shared by the HashingReaders open at once (the
# daemon verifies up to ``workers`` archives at a time), at most 1 GiB, at least 64 MiB;
# 256 MiB where that is not known.  It has to hold HA's own archive, which is read slowly
# (its text inflates slowly) and comes first: a hash held back by it has the rest of the
# file still to read once HA's archive is nearly checked, and ends last.
WINDOW_RANGE = (64 << 20, 1 << 30)
WINDOW_UNKNOWN = 256 << 20
# How much lower (nice) the hash's CPU priority is than the verifier's: the hash is the
# fastest stage, so it keeps up while yielding to the slowest chain, HA's own archive,
# which then has a core to itself (see verify.BEHIND_NICE for the later archives).  With a
# window of 256 MiB it changes nothing (the hash waits for HA's archive either way), and a
# larger window alone does not either.  4 GiB bench backups (HA's archive 503 MiB),
# in-process, in turns, 4-5 runs each, v3: 3.06-3.09 s with neither, 3.06-3.16 s with the
# nice alone (later archives at 19 then), 2.94-3.11 s with a 512 MiB window alone,
# 2.90-3.01 s with both.
HASH_NICE = 10
# Seconds a thread waiting for another to move looks again without being woken: the moves
# it waits for wake it sooner (a read inside a chunk, or inside a piece the hash handed on,
# does not: the hash looks again at the next one).
RECHECK = 0.5


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


class Abandoned(Exception):
    """Raised by the reads of a range once the whole reading was given up (an error or a
    cancel elsewhere): its thread ends, and the file can be closed."""


class HashingReader:
    """The verifier's reader of a whole file, with SHA-256 of all of it made on a second
    thread.

    The two read the same open file each at its own pace (``os.pread``), so neither waits
    for the other: where an archive alternates between parts slow to check (text to
    inflate) and fast ones (media stored as it is), the hash runs ahead through the page
    cache, up to a window ahead of the slowest reader (page_cache_window), and the whole
    takes as long as the slower of the two, not the sum of the slower parts.  The hash runs
    at a lower priority (HASH_NICE): it keeps up, and the slowest chain has a core.
    ``range`` gives another reader of a stretch of the file (an inner archive), so several
    can be checked at once on other threads while the verifier walks on; ``skip`` moves on
    without reading (the hash reads every byte anyway).  Memory stays at a chunk or two
    each, whatever the file's size.  ``copy_to``: a file the hash also writes every chunk
    to as it hashes it, so that a copy of the file costs no second read (see ``copied``).

    Where a range is ahead of the hash, the hash hands it the chunks it reads instead (see
    RangeReader): those bytes are read once, so the hash is of the very bytes checked.
    Bytes read twice are safe because a file that changes between the reads is caught:
    every reader checksums the same aligned 1 MiB chunks, each later read of a chunk (the
    walk, the hash, a range: a header chunk has three readers) is compared with the first,
    and the file's size, mtime and ctime must be what they were at the start (``finish``
    raises FileChanged).  The checksum is CRC-32, which no change of up to 32 adjacent
    bits keeps (Adler-32, twice as fast, keeps some small ones).
    """

    # HashingReaders open in this process: they share the page cache (see WINDOW_RANGE).
    _open = 0
    _open_lock = threading.Lock()

    def __init__(self, path: str | os.PathLike[str], *, copy_to: BinaryIO | None = None) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        info = os.fstat(self._fd)
        if stat.S_ISDIR(info.st_mode):  # pread would say "Is a directory" without the name
            os.close(self._fd)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), os.fspath(path))
        self._stamp = _stamp(info)
        self.size = info.st_size
        self._on_bytes: Callable[[int], None] | None = None  # see report_to
        self._sha = hashlib.sha256()
        self._chunk = memoryview(b"")
        self._position = 0  # where the verifier is
        self._eof = False
        self._hashed = 0
        self._sums: dict[int, int] = {}  # chunk -> the CRC-32 of its first read
        self._mismatch: int | None = None
        self._error: BaseException | None = None
        self._stop = False
        self._abandoned = False
        self._cursors: dict[int, tuple[int, int]] = {}  # range id -> (where it is, its end)
        # Bytes the ranges read, for ``on_bytes`` on the caller's thread (appends are atomic).
        self._unreported: collections.deque[int] = collections.deque()
        self._hash_waits = False
        self._ranged = (0, 0)  # the newest range's bytes: the walk skips them uncounted
        # Ranges the hash hands its chunks to (see RangeReader), and the next chunk it reads;
        # ranges are fed only once the hash has started, until it stops, and not while it
        # waits for the window.
        self._feeds: dict[int, _Feed] = {}
        self._next = 0
        self._feeding = False
        self._crowded = False  # see member_waits
        self._copy_to = copy_to  # see copied
        self._copied = 0
        self.copy_error: OSError | None = None
        self._finished = False  # finish returned the hash of the whole file
        with HashingReader._open_lock:
            HashingReader._open += 1
            self._window = page_cache_window(sharing=HashingReader._open)
        self._moved = threading.Condition()
        self._thread = threading.Thread(target=self._hash, name="sha256", daemon=True)

    def start(self) -> HashingReader:
        """Begin hashing (once; ``with`` does it too): a caller may start it while it still
        has other things to do, such as loading the rest of the program."""
        if self._thread.ident is None:
            with self._moved:
                self._feeding = not self._stop
            self._thread.start()
        return self

    def report_to(self, on_bytes: Callable[[int], None] | None) -> None:
        """Pass the bytes verified to ``on_bytes``, on the verifier's thread."""
        self._on_bytes = on_bytes

    def __enter__(self) -> HashingReader:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the hash and close the file."""
        with self._moved:
            self._stop = True
            self._moved.notify_all()
        if self._thread.ident is not None:
            self._thread.join()
        if self._fd >= 0:  # open: counted among the readers open (see __init__)
            os.close(self._fd)
            self._fd = -1
            with HashingReader._open_lock:
                HashingReader._open -= 1

    def read(self, size: int, /) -> bytes:
        """Return up to ``size`` bytes, never more than the rest of the current chunk (one
        copy, no joins); ``b""`` only at the end of the file."""
        if not self._chunk and not self._next_chunk():
            return b""
        data = take(self._chunk, size)
        self._move(len(data))
        self._progress(len(data))
        return data

    def skip(self, size: int) -> int:
        """Move ``size`` bytes forward without reading them (the hash reads them); return
        how many there are (fewer where the file ends: it may have shrunk since opened)."""
        end = max(min(self.size, os.fstat(self._fd).st_size), self._position)
        self._chunk = self._chunk[: end - self._position]  # none the file no longer holds
        target = min(self._position + size, end)
        skipped = target - self._position
        start, end = self._ranged  # bytes a range reads count as it reads them
        self._progress(skipped - max(0, min(end, target) - max(start, self._position)))
        if skipped >= len(self._chunk):
            self._chunk = memoryview(b"")
            self._position = target
            self._wake()
        else:
            self._move(skipped)
        return skipped

    def range(self, start: int, end: int, name: str, claimed: int) -> RangeReader:
        """A reader of bytes ``start`` to ``end`` for another thread: the rest of the member
        ``name`` of ``claimed`` bytes (for the message when the file ends inside it)."""
        self._ranged = (start, end)
        return RangeReader(self, start, end, name, claimed)

    def member_waits(self, waits: bool) -> None:
        """Say whether a member waits for a place to be checked: meanwhile no range waits
        for the hash to reach it (it reads for itself), so that it ends and gives its place
        up as soon as it can."""
        with self._moved:
            self._crowded = waits
            self._moved.notify_all()  # a range waiting for its feed stops (see _fed_piece)

    def report_progress(self) -> None:
        """Pass on what the ranges read to ``on_bytes`` (on the caller's thread: it may raise
        to cancel)."""
        count = 0
        while self._unreported:
            count += self._unreported.popleft()
        self._progress(count)

    def abandon(self) -> None:
        """Make every range's reads raise Abandoned from now on."""
        with self._moved:
            self._abandoned = True
            self._moved.notify_all()

    def finish(self) -> str:
        """Wait for the hash of the whole file and return it (hex).

        Raise FileChanged when the file was written to meanwhile, and what stopped the
        hashing thread (OSError on a read error)."""
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
        if self._hashed != self.size:  # a guard: a hash of part of the file is no hash
            raise RuntimeError(f"the hash stopped at byte {self._hashed} of {self.size}")
        self._finished = True
        return digest

    def copied(self) -> bool:
        """Whether ``copy_to`` was given every byte of the file, each as it was hashed, and
        ``finish`` returned their SHA-256 (the file did not change meanwhile).  A failed
        write (a full disk) ends the copy, never the hash: see ``copy_error``."""
        return (
            self._finished
            and self._copy_to is not None
            and self.copy_error is None
            and self._copied == self._hashed == self.size
        )

    def _copy(self, data: bytes) -> None:
        """Write ``data`` to ``copy_to``, if any, unless an earlier write failed."""
        if self.copy_error is not None or self._copy_to is None:
            return
        view = memoryview(data)
        try:
            while view:  # a write may be short (a signal may cut it)
                view = view[self._copy_to.write(view) :]
        except OSError as err:
            self.copy_error = err
        else:
            self._copied += len(data)

    def _move(self, count: int) -> None:
        self._chunk = self._chunk[count:]
        self._position += count

    def _next_chunk(self) -> bool:
        """Read the chunk the position is in (chunks are aligned, as the hash's are)."""
        if self._eof:
            return False
        index, offset = divmod(self._position, CHUNK)
        data = self._read_chunk(index)
        if len(data) <= offset:
            self._eof = True
            return False
        self._chunk = memoryview(data)[offset:]
        self.report_progress()
        self._wake()
        return True

    def _read_chunk(self, index: int) -> bytes:
        data = os.pread(self._fd, CHUNK, index * CHUNK)
        self._compare(index, data)
        return data

    def _progress(self, count: int) -> None:
        if count and self._on_bytes is not None:
            self._on_bytes(count)

    def _range_read(self, count: int) -> None:
        self._unreported.append(count)

    def _range_pread(self, cursor: int, size: int, position: int, end: int) -> bytes:
        """``size`` bytes at ``position`` for the range ``cursor``, which ends at ``end``."""
        self._range_at(cursor, position, end)
        return os.pread(self._fd, size, position)

    def _range_preadinto(self, cursor: int, buffer: memoryview, position: int, end: int) -> int:
        """Read into ``buffer`` at ``position`` for the range ``cursor`` (see _range_pread)."""
        self._range_at(cursor, position, end)
        return os.preadv(self._fd, [buffer], position)

    def _range_at(self, cursor: int, position: int, end: int) -> None:
        """Note where the range ``cursor`` reads (for the window), unless it was abandoned."""
        if self._abandoned:
            raise Abandoned()
        self._cursors[cursor] = (position, end)
        self._wake()

    def _range_done(self, cursor: int) -> None:
        with self._moved:
            self._close_feed(cursor)
        self._cursors.pop(cursor, None)
        self._wake()

    def _subscribe(
        self, cursor: int, position: int, end: int, check: tuple[int, int] | None
    ) -> _Feed | None:
        """A feed of the hash's chunks from ``position`` on for the range ``cursor``, or
        None when the hash has read that chunk already, or is more than FEED_DEPTH chunks
        behind it (the range would wait long: a slow member after a big fast one would not
        be checked meanwhile), or does not feed now, or a member waits for a place.
        ``check``: (where, CRC-32) of what the range read itself of that chunk, up to
        ``position``.  A check that is dropped (the feed closed before the hash reached the
        chunk) is not lost: the range goes on reading the chunk itself, its checksum with
        it, and compares the whole."""
        with self._moved:
            chunk = position // CHUNK
            if not self._feeding or self._crowded or not 0 <= chunk - self._next <= FEED_DEPTH:
                return None
            feed = self._feeds[cursor] = _Feed(position, end, check)
            return feed

    def _fed_piece(self, cursor: int, feed: _Feed) -> bytes | None:
        """The next piece the hash handed ``feed``, waiting for it; None once the feed was
        closed with nothing left in it."""
        with self._moved:
            while not feed.pieces:
                if self._abandoned:
                    raise Abandoned()
                if self._crowded:  # see member_waits
                    self._close_feed(cursor)
                if feed.closed:
                    return None
                self._moved.wait(RECHECK)
            piece = feed.pieces.popleft()
            self._cursors[cursor] = (feed.taken, feed.end)
            feed.taken += len(piece)
            if self._hash_waits:  # for the window: the range moved (see _wake)
                self._moved.notify_all()
            return piece

    def _hand_out(self, index: int, data: bytes) -> bool:
        """Hand the feeds their part of chunk ``index`` (under the lock); return whether one
        took all of it, which no one else reads then (a range's chunk that holds no header
        is not the walk's), so it needs no checksum.  A feed that already holds FEED_DEPTH
        pieces is closed instead: its range reads the rest for itself (the hash never waits
        for a range: with the other core on something else, a slow range would make it
        late for the rest of the file)."""
        start, stop = index * CHUNK, index * CHUNK + len(data)
        whole = False
        for cursor, feed in list(self._feeds.items()):
            if not start <= feed.position < stop:
                continue
            if len(feed.pieces) >= FEED_DEPTH:
                self._close_feed(cursor)
                continue
            if feed.check is not None:
                where, checksum = feed.check
                feed.check = None
                self._compare_part(index, data[where - start : feed.position - start], checksum)
            until = min(feed.end, stop)
            if feed.position == start and until == stop:
                feed.pieces.append(data)
                whole = len(data) == CHUNK
            else:
                feed.pieces.append(data[feed.position - start : until - start])
            feed.position = until
            if until == feed.end:
                self._close_feed(cursor)
        self._moved.notify_all()
        return whole

    def _close_feed(self, cursor: int) -> None:
        """Hand the range ``cursor`` no more pieces (under the lock): it takes those it has,
        then reads for itself."""
        feed = self._feeds.pop(cursor, None)
        if feed is not None:
            feed.closed = True

    def _stop_feeding(self) -> None:
        """Close every feed and take no new ones (under the lock): ranges read for
        themselves."""
        for cursor in list(self._feeds):
            self._close_feed(cursor)
        self._feeding = False
        self._moved.notify_all()

    def _wake(self) -> None:
        """Wake the hash if it waits for the readers to move (no lock taken otherwise: this
        runs for every chunk).  It says it waits before it looks, under the lock, so a move
        it did not see finds it saying so, and the notify waits for its wait."""
        if self._hash_waits:
            with self._moved:
                self._moved.notify_all()

    def _hash(self) -> None:
        index = 0
        try:
            lower_thread_priority(HASH_NICE)
            while True:
                if not self._stop and self._hashed - self._slowest() > self._window:
                    with self._moved:
                        self._stop_feeding()  # a range waiting for it would wait for the window
                        self._hash_waits = True
                        while not self._stop and self._hashed - self._slowest() > self._window:
                            self._moved.wait(RECHECK)
                        self._hash_waits = False
                        self._feeding = True
                if self._stop:
                    return
                data = os.pread(self._fd, CHUNK, index * CHUNK)
                if not data:
                    return
                with self._moved:
                    self._next = index + 1
                    handed_whole = self._hand_out(index, data) if self._feeds else False
                self._sha.update(data)
                if not handed_whole:
                    self._compare(index, data)
                self._copy(data)
                self._hashed += len(data)
                index += 1
        except BaseException as err:  # raised by finish: a hash of part of the file is no hash
            self._error = err
        finally:
            with self._moved:
                self._stop_feeding()

    def _slowest(self) -> int:
        """Where the slowest reader is that has still to read bytes the hash has not: the
        window keeps those in the page cache (a reader whose whole range the hash has
        passed holds it back no more)."""
        hashed = self._hashed
        ahead = [at for at, end in list(self._cursors.values()) if end > hashed]
        return min(self._position, *ahead) if ahead else self._position

    def _compare(self, index: int, data: bytes) -> None:
        self._compare_sum(index, zlib_ng.crc32(data))

    def _compare_part(self, index: int, part: bytes, checksum: int) -> None:
        """Compare what a range read itself of chunk ``index`` with what the hash read."""
        if zlib_ng.crc32(part) != checksum:
            self._changed(index)

    def _compare_sum(self, index: int, checksum: int) -> None:
        """Compare a read of chunk ``index`` with the first one (no lock: a dict's setdefault
        is atomic).  The first read's checksum is kept for any later one: about 100 bytes a
        chunk checked, 0.4 MiB for 4 GiB."""
        if self._sums.setdefault(index, checksum) != checksum:
            self._changed(index)

    def _changed(self, index: int) -> None:
        """Note that chunk ``index`` read differently twice (the first such chunk is told)."""
        if self._mismatch is None:
            self._mismatch = index


class _Feed:
    """The pieces of a range the hash read and handed on (under the HashingReader's lock):
    ``position`` is where the next piece starts, ``taken`` where the range is, ``check``
    what the range read itself of the first chunk (see HashingReader._subscribe)."""

    def __init__(self, position: int, end: int, check: tuple[int, int] | None) -> None:
        self.position = self.taken = position
        self.end = end
        self.check = check
        self.pieces: collections.deque[bytes] = collections.deque()
        self.closed = False


class RangeReader:
    """Bytes ``start`` to ``end`` of a HashingReader's file, read on a thread of its own.

    Where the range is ahead of the hash, the hash hands it the chunks it reads (a feed, at
    most FEED_DEPTH chunks ahead): each byte is read once, and a chunk the range takes
    whole needs no checksum, for no one else reads it.  Elsewhere each read is one
    ``pread`` of exactly the bytes asked for (no copy to cut or join chunks), and the
    checksum of every aligned chunk the range reads whole is built up across the reads and
    compared with the hash's (see HashingReader).  ``read`` is full (short only at the
    end), ``read_some`` may be short.  Where the file ends before ``end`` (cut short since
    the walk saw the member whole), reads raise MemberCut, as the walker would have.  Call
    ``close`` when done."""

    def __init__(self, reader: HashingReader, start: int, end: int, name: str, claimed: int):
        self._reader = reader
        self._start = start
        self._position = start
        self._end = end
        self._name = name
        self._claimed = claimed
        # The running checksum of what the range read itself since ``_sum_from`` (the start
        # of the current chunk, or of the range).
        self._sum = 0
        self._sum_from = start
        self._feed: _Feed | None = None
        self._piece = memoryview(b"")  # what is left of the piece the hash handed last

    def read(self, size: int, /) -> bytes:
        return read_full(ShortReads(self.read_some), size)

    def read_some(self, size: int, /) -> bytes:
        want = min(size, self._end - self._position)
        if want <= 0:
            return b""
        fed = self._from_hash(want)
        if fed is not None:
            data = take(fed, want)
        else:
            data = self._reader._range_pread(id(self), want, self._position, self._end)
            self._read_itself(data)
        self._advance(len(data))
        return data

    def readinto(self, buffer: memoryview, /) -> int:
        """Fill ``buffer`` as ``read`` would return (short only at the end): the bytes the
        hash handed on are copied in, the rest is read straight into it (no copy of its own).
        """
        filled = 0
        while want := min(len(buffer) - filled, self._end - self._position):
            part = buffer[filled : filled + want]
            fed = self._from_hash(want)
            if fed is not None:
                count = len(fed)
                part[:count] = fed
            else:
                count = self._reader._range_preadinto(id(self), part, self._position, self._end)
                self._read_itself(part[:count])
            self._advance(count)
            filled += count
        return filled

    def _read_itself(self, data: bytes | memoryview) -> None:
        """Check what the range read for itself at its position (see _checksum)."""
        if not data:
            self._cut()
        if self._position == self._start and self._start % CHUNK:
            self._read_head()
        self._checksum(data)
        if self._position + len(data) == self._end and self._end % CHUNK:
            self._read_tail()

    def _advance(self, count: int) -> None:
        self._position += count
        self._reader._range_read(count)

    def _from_hash(self, want: int) -> memoryview | None:
        """Up to ``want`` bytes the hash handed on, or None when the range is to read for
        itself.  Where a feed begins inside a chunk, the hash compares what the range read
        of it itself."""
        if not self._piece:
            if self._feed is None:
                at = self._position
                mid_chunk = (
                    at % CHUNK and self._sum_from < at and self._sum_from // CHUNK == at // CHUNK
                )
                check = (self._sum_from, self._sum) if mid_chunk else None
                self._feed = self._reader._subscribe(id(self), self._position, self._end, check)
            if self._feed is None:
                return None
            piece = self._reader._fed_piece(id(self), self._feed)
            if piece is None:
                self._feed = None
                return None
            self._piece = memoryview(piece)
        data = self._piece[:want]
        self._piece = self._piece[len(data) :]
        return data

    def close(self) -> None:
        self._reader._range_done(id(self))

    def _read_head(self) -> None:
        """Begin the checksum of the range's first chunk, which it starts inside, with the
        bytes before the range (read for that alone): the chunk is compared whole."""
        head = self._start - self._start % CHUNK
        self._sum = zlib_ng.crc32(os.pread(self._reader._fd, self._start - head, head))
        self._sum_from = head

    def _read_tail(self) -> None:
        """End the checksum of the range's last chunk, which it ends inside, with the bytes
        after the range (read for that alone), and compare the chunk whole."""
        index = self._end // CHUNK
        if self._sum_from != index * CHUNK:  # not read from its start by the range: a guard
            return
        tail = os.pread(self._reader._fd, (index + 1) * CHUNK - self._end, self._end)
        self._reader._compare_sum(index, zlib_ng.crc32(tail, self._sum))

    def _checksum(self, data: bytes | memoryview) -> None:
        """Add ``data`` (read at the position) to the running checksum of its aligned
        chunks; hand on each chunk's once it is whole."""
        view, at = memoryview(data), self._position
        while view:
            index, offset = divmod(at, CHUNK)
            if offset == 0:
                self._sum, self._sum_from = 0, at
            piece = view[: CHUNK - offset]
            self._sum = zlib_ng.crc32(piece, self._sum)
            if offset + len(piece) == CHUNK and self._sum_from == index * CHUNK:
                self._reader._compare_sum(index, self._sum)
            view, at = view[len(piece) :], at + len(piece)

    def _cut(self) -> NoReturn:
        got = self._claimed - (self._end - self._position)
        raise MemberCut(
            TarTruncated(
                self._position,
                f"stream ends inside '{self._name}' ({got} of {self._claimed} bytes)",
            )
        )


def _stamp(info: os.stat_result) -> tuple[int, int, int, int]:
    return info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns


def page_cache_window(*, sharing: int = 1, meminfo: str = "/proc/meminfo") -> int:
    """How far the hash may run ahead of the slowest reader, for one of ``sharing``
    HashingReaders open at once (see WINDOW_RANGE)."""
    try:
        with open(meminfo, encoding="ascii") as file:
            fields = dict(line.split(":", 1) for line in file if ":" in line)
        number, unit = fields["MemAvailable"].split()
        if unit != "kB":  # the only unit Linux writes there
            return WINDOW_UNKNOWN
        available = int(number) << 10
    except (OSError, KeyError, ValueError):
        return WINDOW_UNKNOWN
    low, high = WINDOW_RANGE
    return min(high, max(low, available // 4 // max(1, sharing)))


def lower_thread_priority(steps: int) -> None:
    """Lower the calling thread's CPU priority by ``steps`` nice levels (to 19 at most), and
    that of the threads it starts from now on, which inherit it.  Only on Linux, where each
    thread has a nice value of its own (elsewhere the call would lower the whole process);
    where it is refused, nothing changes."""
    if sys.platform != "linux":
        return
    thread = threading.get_native_id()
    with contextlib.suppress(OSError):
        nice = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, nice + steps))


class ReaderThread:
    """Read a stream on a thread of its own, a few chunks ahead of the consumer: decryption
    then runs on the second core while the consumer inflates (or inflating, while the
    consumer writes files out).  An error of the stream is raised by the consumer's ``read``
    at the place it happened.  Leaving the ``with`` block stops and joins the thread, so the
    stream's own source is the caller's again."""

    def __init__(
        self, stream: ByteSource, chunk: int = CHUNK, depth: int = 4, *, name: str = "decrypt"
    ) -> None:
        self._stream = stream
        self._chunk_size = chunk
        self._queue: queue.Queue[bytes | BaseException] = queue.Queue(depth)
        self._stop = threading.Event()
        self._chunk = memoryview(b"")
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

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
        data = take(self._chunk, size)
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
