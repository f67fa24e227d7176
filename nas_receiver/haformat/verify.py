"""Verify an HA backup: the verdict and every problem, each saying what and where.

``quick`` reads headers only (seeks over data): structure, backup.json, sizes, completeness
and the key where the format allows.  ``full`` also decrypts and inflates every byte of every
inner archive, checks gzip CRCs and v3 authentication, walks every inner tar member to its
end, and hashes the whole file on a second thread that reads it at its own pace and hands
what it reads to the inner archives it is not behind (a file written to meanwhile is
caught and is incomplete).  Each inner archive is checked on a thread of its own, two at a
time, while the walk goes on, and an encrypted one is decrypted on yet another: hashing,
decrypting and inflating overlap on two cores.  Problems are reported in the order of the
archive, as one reader going front to back would find them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from .crypto import (
    PREFIX_SIZE,
    ChainedSource,
    DecryptError,
    InnerFormat,
    KeySession,
    NotRecognised,
    UnsupportedFormat,
    WrongKey,
    expected_ciphertext_size,
    looks_plain,
    sniff,
)
from .gzipstream import GZIP_MAGIC, GzipError, InflatingReader
from .keys import KeyRing
from .model import BackupJson, MetadataError, parse_backup_json
from .names import inner_base_name
from .sources import (
    CHUNK,
    Abandoned,
    FileChanged,
    HashingReader,
    RangeReader,
    ReaderThread,
    SeekingFileSource,
    lower_thread_priority,
)
from .tarstream import (
    ByteSource,
    Counted,
    MemberCut,
    ShortReads,
    TarEntry,
    TarFormatError,
    TarTruncated,
    TarWalker,
)

METADATA_NAMES = ("backup.json", "snapshot.json")
MAX_METADATA = 1 << 20
INNER_AT_ONCE = 2  # inner archives checked at the same time (a NAS has two to four cores)
# How much lower (nice) the CPU priority of an inner archive's check is when it starts while
# an earlier one is still checked.  The earlier one is the longer chain (HA's own archive,
# text that inflates slowly, comes first); shared fairly, the two end apart and the last
# stretch runs on one core.  With the later one yielding, the earlier ends sooner and the
# later fills what the earlier and the hash leave of the cores, so all end nearer together.
# Nice 10 weighs a tenth of nice 0.  In-process, bench backups, in turns, 2-5 runs each:
# +10 against +5, 1 GiB v2 0.72-0.77 s against 0.78-0.84 s, v3 0.80-0.85 against
# 0.82-0.94 s, 4 GiB v2 2.68-2.73 against 2.75-3.18 s, v3 3.00-3.15 against 3.15-3.29 s;
# +5 against none (with libsodium decrypting v3 then), 1 GiB v3 0.83-0.85 against
# 0.90-0.91 s, 4 GiB v2 2.80-2.87 against 2.91-2.93 s.  A priority is never raised back
# (an unprivileged process may only lower one), so of a run of small parts after the first,
# each starting beside another runs lower too (as does the hash: sources.HASH_NICE).
# Where the disk scheduler is CFQ or BFQ, a thread's disk priority follows its nice value.
BEHIND_NICE = 10


class Verdict(StrEnum):
    VALID = "valid"
    INCOMPLETE = "incomplete"
    CORRUPT = "corrupt"
    WRONG_KEY = "wrong_key"
    KEY_REQUIRED = "key_required"
    UNSUPPORTED = "unsupported"


# The verdict of an archive is that of its gravest problem, in this order.
_GRAVITY = [
    Verdict.INCOMPLETE,
    Verdict.CORRUPT,
    Verdict.UNSUPPORTED,
    Verdict.WRONG_KEY,
    Verdict.KEY_REQUIRED,
]


class Level(StrEnum):
    QUICK = "quick"
    FULL = "full"


@dataclass
class InnerArchive:
    """One inner archive (``homeassistant.tar.gz``, an add-on, a folder) as verified."""

    name: str
    offset: int
    size: int
    securetar: int | None = None
    plaintext_size: int | None = None
    files: int | None = None
    content_bytes: int | None = None
    decrypted_size: int | None = None
    legacy_trailer: bool = False
    # Where the deflate data ends and the checked CRC/length: what decrypt needs to write a
    # standard gzip trailer in place of SecureTar v1's split one (crc32 is None otherwise).
    deflate_end: int | None = None
    crc32: int | None = None
    # The CRC-32 of the decrypted_size bytes the check read of an encrypted inner archive
    # (after decryption, before inflating): a decrypted copy holding these bytes holds what
    # was checked here.  A plain one is copied as it is (its source hashed as it is read).
    stream_crc32: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class VerifyReport:
    """What verification found.  ``problems`` decide the verdict; ``notes`` do not."""

    path: str
    level: Level
    size: int
    verdict: Verdict = Verdict.VALID
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    backup: BackupJson | None = None
    inner: list[InnerArchive] = field(default_factory=list)
    sha256: str | None = None
    seconds: float = 0.0

    @property
    def securetar_versions(self) -> list[int]:
        return sorted({i.securetar for i in self.inner if i.securetar})

    def to_dict(self) -> dict[str, Any]:
        backup = self.backup
        return {
            "path": self.path,
            "verdict": str(self.verdict),
            "level": str(self.level),
            "slug": backup.slug if backup else None,
            "name": backup.name if backup else None,
            "date": backup.date.isoformat() if backup else None,
            "kind": backup.kind if backup else None,
            "type": backup.type if backup else None,
            "homeassistant_version": backup.homeassistant_version if backup else None,
            "instance_id": backup.instance_id if backup else None,
            "protected": backup.protected if backup else None,
            "securetar_versions": self.securetar_versions,
            "size": self.size,
            "sha256": self.sha256,
            "problems": list(self.problems),
            "notes": list(self.notes),
            "inner": [inner.to_dict() for inner in self.inner],
            "seconds": round(self.seconds, 3),
        }


def verify_archive(
    path: str | os.PathLike[str],
    *,
    level: Level = Level.FULL,
    keys: KeyRing | None = None,
    on_bytes: Callable[[int], None] | None = None,
    opened: HashingReader | None = None,
    unpack: InnerStream | None = None,
) -> VerifyReport:
    """Verify one archive and return its report.  Never raises for what the file holds.

    ``opened``: for a full check, the file already opened and its hash begun (see
    ``HashingReader.start``); it is closed when done.  ``unpack``: for a full check, is
    handed backup.json and the plain tar stream of the inner archives it wants, each ended
    before this returns.  Raise OSError only when the file cannot be opened at all.
    """
    started = time.monotonic()
    checker = _Checker(Path(path), level, keys or KeyRing(), on_bytes, opened, unpack)
    report = checker.run()
    report.seconds = time.monotonic() - started
    return report


class InnerStream(Protocol):
    """Takes the plain tar stream of an inner archive as the full check reads it, for a
    second use of the same pass (see ``extract.UnpackAlongside``)."""

    def wants(self, name: str, stored_size: int) -> bool: ...

    def feed(self, piece: bytes) -> None: ...

    def end(self, whole: bool) -> None: ...

    def metadata(self, data: bytes) -> None: ...


END = 1 << 62  # the place of problems found once the walk is over: after every member's


class _Problems:
    """The problems found, in the order of the archive: each is placed at the member it is
    about (``at``; by default the member the walk is at), however late a thread finds it."""

    def __init__(self) -> None:
        self.place = 0
        self._found: list[tuple[int, int, str]] = []
        self._verdicts: set[Verdict] = set()
        self._lock = threading.Lock()

    def add(self, verdict: Verdict, message: str, place: int | None = None) -> None:
        with self._lock:
            self._verdicts.add(verdict)
            self._found.append((self.place if place is None else place, len(self._found), message))

    def at(self, place: int) -> _PlacedProblems:
        return _PlacedProblems(self, place)

    def messages(self) -> list[str]:
        with self._lock:
            return [message for _place, _seq, message in sorted(self._found)]

    def verdict(self) -> Verdict:
        for verdict in _GRAVITY:
            if verdict in self._verdicts:
                return verdict
        return Verdict.VALID


class _PlacedProblems:
    def __init__(self, problems: _Problems, place: int) -> None:
        self._problems = problems
        self._place = place

    def add(self, verdict: Verdict, message: str) -> None:
        self._problems.add(verdict, message, self._place)


ProblemSink = _Problems | _PlacedProblems


class _Checker:
    def __init__(
        self,
        path: Path,
        level: Level,
        keys: KeyRing,
        on_bytes: Callable[[int], None] | None,
        opened: HashingReader | None = None,
        unpack: InnerStream | None = None,
    ) -> None:
        self.path = path
        self.opened = opened
        self.unpack = unpack if level is Level.FULL else None
        self.level = level
        self.keys = keys
        self.session = KeySession(keys)
        self.on_bytes = on_bytes
        size = opened.size if opened is not None else path.stat().st_size
        self.report = VerifyReport(path=str(path), level=level, size=size)
        self.problems = _Problems()
        self.reader: HashingReader | None = None  # full level: inner archives run on threads
        self.inner_threads: list[threading.Thread] = []
        self.slots = threading.Semaphore(INNER_AT_ONCE)
        self.running = 0  # inner checks begun and not ended (see BEHIND_NICE)
        self.running_lock = threading.Lock()
        self.inner_failures: list[BaseException] = []
        self.inner_cuts: list[MemberCut] = []
        self.tar_ended = False
        self.truncated = False
        self.entries = 0
        self.metadata_error = False
        self.locked_members = 0

    def run(self) -> VerifyReport:
        if self.report.size == 0:
            if self.opened is not None:
                self.opened.close()
            self.problems.add(Verdict.INCOMPLETE, "empty file (0 bytes): nothing written yet")
        elif self.level is Level.FULL:
            source = self.opened or HashingReader(self.path)
            source.report_to(self.on_bytes)
            with source:
                self.reader = source
                try:
                    self._walk(source)
                    self._wait_for_inner(source)
                except BaseException:
                    source.abandon()  # a cancel or a failure: the threads stop reading
                    self._wait_for_inner(None)
                    raise
                self.problems.place = END
                try:
                    self.report.sha256 = source.finish()
                except FileChanged as err:
                    self.report.sha256 = err.sha256
                    self.problems.add(
                        Verdict.INCOMPLETE,
                        f"the file changed while it was verified ({err}): HA may still be "
                        "writing it",
                    )
        else:
            if self.opened is not None:
                self.opened.close()
            with self.path.open("rb") as file:
                self._walk(SeekingFileSource(file, self.report.size))
        self.problems.place = END
        if self.report.size:
            self._check_metadata()
        self.report.problems = self.problems.messages()
        self.report.verdict = self.problems.verdict()
        return self.report

    # -- the outer archive ------------------------------------------------------------------

    def _walk(self, source: ByteSource) -> None:
        walker = TarWalker(source)
        try:
            for entry in walker:
                self.entries += 1
                self.problems.place = entry.header_offset
                self._entry(walker, entry)
            self.problems.place = END
        except (TarTruncated, MemberCut) as err:
            self.problems.place = END
            self.truncated = True
            self.problems.add(
                Verdict.INCOMPLETE, f"file cut short at byte {err.offset}: {err.message}"
            )
        except TarFormatError as err:
            self.problems.place = END
            if self.entries == 0:
                self.problems.add(Verdict.UNSUPPORTED, f"not a tar archive ({err.message})")
            else:
                self.problems.add(Verdict.CORRUPT, f"damaged tar structure {err}")
            self.truncated = True  # nothing after a broken header can be trusted
        self.tar_ended = walker.ended
        if not self.truncated and not walker.ended:
            self.problems.add(
                Verdict.INCOMPLETE,
                f"no end-of-archive marker: the file ends at byte {walker.offset} "
                "(HA may still be writing it)",
            )

    def _entry(self, walker: TarWalker, entry: TarEntry) -> None:
        if entry.name in METADATA_NAMES:
            self._read_metadata(walker, entry)
        elif inner_base_name(entry.name) is not None and entry.is_file:
            self._inner(walker, entry)
        elif not (entry.name == "" and entry.is_dir):
            self.report.notes.append(
                f"unlisted member '{entry.raw_name}' at byte {entry.header_offset}"
            )

    def _read_metadata(self, walker: TarWalker, entry: TarEntry) -> None:
        where = f"{entry.name} (at byte {entry.header_offset})"
        if self.report.backup is not None or self.metadata_error:
            self.problems.add(Verdict.CORRUPT, f"{where}: a second metadata file")
            return
        if entry.size > MAX_METADATA:
            self.metadata_error = True
            self.problems.add(Verdict.CORRUPT, f"{where}: {entry.size} bytes, too big")
            return
        data = walker.member_stream().read(entry.size)
        try:
            self.report.backup = parse_backup_json(data)
        except MetadataError as err:
            self.metadata_error = True
            verdict = Verdict.INCOMPLETE if entry.size == 0 else Verdict.CORRUPT
            self.problems.add(verdict, f"{where}: {err}")
            return
        if self.unpack is not None:
            self.unpack.metadata(data)

    # -- one inner archive ------------------------------------------------------------------

    def _inner(self, walker: TarWalker, entry: TarEntry) -> None:
        inner = InnerArchive(name=entry.name, offset=entry.header_offset, size=entry.size)
        self.report.inner.append(inner)
        where = f"{entry.name} (at byte {entry.header_offset})"
        if entry.size == 0:
            self.problems.add(Verdict.INCOMPLETE, f"{where}: size 0, HA had not finished it")
            return
        prefix = walker.member_stream().read(min(entry.size, PREFIX_SIZE))
        fmt = self._sniff(prefix, entry.size, where)
        if fmt is None:
            return
        inner.securetar = fmt.securetar
        inner.plaintext_size = fmt.plaintext_size
        if not self._sizes_consistent(fmt, entry, where):
            return
        if fmt.encrypted and not self.keys:
            self.locked_members += 1
            return
        if self.level is Level.FULL:
            self._check_later(entry, prefix, fmt, inner, where)
        elif fmt.encrypted:
            try:
                self.session.find_key(prefix)
            except WrongKey as err:
                self.problems.add(Verdict.WRONG_KEY, f"{where}: wrong key: {err}")

    def _check_later(
        self, entry: TarEntry, prefix: bytes, fmt: InnerFormat, inner: InnerArchive, where: str
    ) -> None:
        """Check the inner archive in full on a thread of its own, reading the rest of it
        (after ``prefix``) from the file itself, while the walk goes on past it."""
        assert self.reader is not None
        start, end = entry.data_offset + len(prefix), entry.data_offset + entry.size
        rest = self.reader.range(start, end, entry.name, entry.size)
        try:
            stream = self.session.open(prefix, rest, entry.size) if fmt.encrypted else None
        except WrongKey as err:
            rest.close()
            self.problems.add(Verdict.WRONG_KEY, f"{where}: wrong key: {err}")
            return
        except DecryptError as err:
            rest.close()
            self.problems.add(Verdict.CORRUPT, f"{where}: {err}")
            return
        except BaseException:
            rest.close()
            raise
        # Plain content is read as it comes (the inflater and the walk take short reads): a
        # piece the hash handed on passes whole, never cut or joined.
        content = ChainedSource(prefix, ShortReads(rest.read_some)) if stream is None else stream
        problems = self.problems.at(entry.header_offset)
        tee = self.unpack if self.unpack and self.unpack.wants(entry.name, entry.size) else None
        self._start_inner(
            lambda: self._check_inner(content, fmt, inner, where, problems, tee), rest
        )

    def _check_inner(
        self,
        content: ByteSource,
        fmt: InnerFormat,
        inner: InnerArchive,
        where: str,
        problems: ProblemSink,
        tee: InnerStream | None,
    ) -> None:
        """The full check of one inner archive (on its own thread): its content, decrypted on
        a thread of its own when it is encrypted, inflated, walked to its end; its plain tar
        stream handed on to ``tee`` as it is walked."""
        whole = False
        try:
            if fmt.encrypted:
                with ReaderThread(content) as ahead:  # decrypts on the other core
                    whole = self._walk_inner(ahead, fmt, inner, where, problems, tee)
            else:
                whole = self._walk_inner(content, fmt, inner, where, problems, tee)
        except WrongKey as err:
            problems.add(Verdict.WRONG_KEY, f"{where}: wrong key: {err}")
        except DecryptError as err:
            problems.add(Verdict.CORRUPT, f"{where}: {err}")
        finally:
            if tee is not None:
                tee.end(whole)

    def _start_inner(self, check: Callable[[], None], rest: RangeReader) -> None:
        """Run ``check`` on a thread once one of the INNER_AT_ONCE places is free."""
        assert self.reader is not None
        if not self.slots.acquire(blocking=False):
            self.reader.member_waits(True)  # ranges waiting for the hash would hold it up
            try:
                while not self.slots.acquire(timeout=0.1):
                    self.reader.report_progress()  # may raise to cancel
            finally:
                self.reader.member_waits(False)
        with self.running_lock:  # behind an earlier check that is still running?
            behind = self.running > 0
            self.running += 1
        thread = threading.Thread(
            target=self._inner_thread, args=(check, rest, behind), name="inner", daemon=True
        )
        self.inner_threads.append(thread)
        thread.start()

    def _inner_thread(self, check: Callable[[], None], rest: RangeReader, behind: bool) -> None:
        try:
            if behind:
                lower_thread_priority(BEHIND_NICE)
            check()
        except MemberCut as err:  # the file shrank since the walk passed: see _wait_for_inner
            self.inner_cuts.append(err)
        except Abandoned:
            pass
        except BaseException as err:  # raised again by the verifier's own thread
            self.inner_failures.append(err)
        finally:
            rest.close()
            with self.running_lock:
                self.running -= 1
            self.slots.release()

    def _wait_for_inner(self, reader: HashingReader | None) -> None:
        """Wait for the inner archives' threads, passing on their progress when ``reader``
        is given; raise what failed in one; a file cut short under one is incomplete."""
        for thread in self.inner_threads:
            while thread.is_alive():
                thread.join(0.1)
                if reader is not None:
                    reader.report_progress()
        if reader is not None:
            reader.report_progress()
        if self.inner_failures:
            raise self.inner_failures[0]
        if self.inner_cuts and not self.truncated:  # the walk saw it whole: it shrank since
            self.truncated = True
            cut = min(self.inner_cuts, key=lambda err: err.offset)
            self.problems.add(
                Verdict.INCOMPLETE, f"file cut short at byte {cut.offset}: {cut.message}", END
            )

    def _sniff(self, prefix: bytes, size: int, where: str) -> InnerFormat | None:
        try:
            return sniff(prefix, size)
        except UnsupportedFormat as err:
            self.problems.add(Verdict.UNSUPPORTED, f"{where}: {err}")
        except NotRecognised as err:
            self.problems.add(Verdict.CORRUPT, f"{where}: {err}")
        return None

    def _sizes_consistent(self, fmt: InnerFormat, entry: TarEntry, where: str) -> bool:
        if fmt.securetar in (2, 3) and not fmt.plaintext_size:
            self.problems.add(
                Verdict.INCOMPLETE,
                f"{where}: SecureTar plaintext_size is 0, HA had not finished it",
            )
            return False
        expected = expected_ciphertext_size(fmt)
        if expected is not None and expected != entry.size:
            self.problems.add(
                Verdict.INCOMPLETE,
                f"{where}: SecureTar plaintext_size {fmt.plaintext_size} needs a member of "
                f"{expected} bytes, the tar header says {entry.size}",
            )
            return False
        if fmt.securetar == 1 and entry.size % 16:
            self.problems.add(Verdict.CORRUPT, f"{where}: size is not whole AES blocks")
            return False
        return True

    def _walk_inner(
        self,
        stream: ByteSource,
        fmt: InnerFormat,
        inner: InnerArchive,
        where: str,
        problems: ProblemSink,
        tee: InnerStream | None = None,
    ) -> bool:
        """Check the content; whether it was found right."""
        counted = Counted(stream, crc=fmt.encrypted)  # what a decrypted copy must hold
        first = counted.read(CHUNK)
        if not looks_plain(first):
            problems.add(Verdict.CORRUPT, f"{where}: content is neither gzip nor tar")
            return False
        chained = ChainedSource(first, counted)
        content: ByteSource = chained
        inflater = None
        if first[:3] == GZIP_MAGIC:
            inflater = InflatingReader(chained, legacy=fmt.securetar == 1)
            content = inflater
        if tee is not None:
            content = _Tee(content, tee)
        try:
            inner.files = _walk_tar(content)
            _drain(content)
        except (GzipError, _InnerTarError, TarFormatError) as err:
            problems.add(Verdict.CORRUPT, f"{where}: {_damage(err)}")
            return False
        inner.decrypted_size = counted.count
        inner.stream_crc32 = counted.crc if fmt.encrypted else None
        inner.content_bytes = counted.count
        if inflater is not None:
            inner.content_bytes = inflater.size
            inner.legacy_trailer = inflater.legacy_trailer
            inner.deflate_end = inflater.deflate_end
            # zlib checks a standard trailer itself and tells no CRC: 0 would read as one
            inner.crc32 = inflater.crc if inflater.legacy_trailer else None
        if fmt.plaintext_size is not None and counted.count != fmt.plaintext_size:
            problems.add(
                Verdict.CORRUPT,
                f"{where}: decrypted {counted.count} bytes, the header says {fmt.plaintext_size}",
            )
            return False
        return True

    # -- backup.json against what is there --------------------------------------------------

    def _check_metadata(self) -> None:
        backup = self.report.backup
        if backup is None:
            self._missing_metadata()
            return
        present = {inner_base_name(i.name): i for i in self.report.inner}
        for part in backup.expected_parts():
            if part not in present:
                self.problems.add(
                    Verdict.CORRUPT, f"{part}: listed in backup.json but missing from the archive"
                )
        listed = set(backup.expected_parts())
        for base, inner in present.items():
            if base not in listed:
                self.report.notes.append(f"{inner.name}: inner archive not listed in backup.json")
            self._check_protection(backup, inner)
        if self.locked_members:
            self.problems.add(
                Verdict.KEY_REQUIRED,
                f"encrypted: {self.locked_members} inner archive(s) need a key to be checked",
            )

    def _missing_metadata(self) -> None:
        if self.metadata_error or self.truncated:
            return
        if not self.tar_ended:
            self.problems.add(Verdict.INCOMPLETE, "no backup.json yet (HA writes it last)")
        elif self.report.inner:
            self.problems.add(Verdict.CORRUPT, "no backup.json in a finished archive")
        else:
            self.problems.add(Verdict.UNSUPPORTED, "not an HA backup: no backup.json")

    def _check_protection(self, backup: BackupJson, inner: InnerArchive) -> None:
        if inner.securetar is None:
            return
        if backup.protected and inner.securetar == 0:
            self.problems.add(
                Verdict.CORRUPT,
                f"{inner.name}: stored unencrypted, but backup.json says protected "
                "(HA would fail to restore it)",
            )
        elif not backup.protected and inner.securetar:
            self.problems.add(
                Verdict.CORRUPT,
                f"{inner.name}: SecureTar v{inner.securetar}, but backup.json says not protected "
                "(HA would fail to restore it)",
            )


class _InnerTarError(Exception):
    pass


def _damage(err: GzipError | _InnerTarError | TarFormatError) -> str:
    """What is wrong in an inner archive's content, from what its walk raised."""
    if isinstance(err, GzipError):
        return f"gzip {err}"
    if isinstance(err, TarTruncated):
        return f"inner tar cut short {err}"
    if isinstance(err, _InnerTarError):
        return f"inner tar {err}"
    return f"inner tar damaged {err}"


# The pieces a _Tee hands on of what the walk passes over.  Plain 1 GiB arrival (browse),
# 4 runs each in turns: 1 MiB 1.24-1.26 s, peak RSS 72-80 MiB; 4 MiB (the walk's own
# SKIP_CHUNK) 1.18-1.23 s, 82-89 MiB; then 3 runs of 2 MiB 1.20-1.22 s, 80-84 MiB.
TEE_STEP = 2 << 20


class _Tee:
    """Reads ``source``, handing what it reads on to ``sink`` too, what the walk passes over
    included (``skip`` reads it, TEE_STEP at a time: the pieces ``sink`` holds stay small)."""

    def __init__(self, source: ByteSource, sink: InnerStream) -> None:
        self._source = source
        self._sink = sink

    def read(self, size: int, /) -> bytes:
        data = self._source.read(size)
        if data:
            self._sink.feed(data)
        return data

    def skip(self, size: int) -> int:
        skipped = 0
        while skipped < size and (data := self.read(min(size - skipped, TEE_STEP))):
            skipped += len(data)
        return skipped


def _walk_tar(content: ByteSource) -> int:
    walker = TarWalker(content)
    files = sum(1 for _ in walker)
    if not walker.ended:
        raise _InnerTarError(f"has no end-of-archive marker (ends at byte {walker.offset})")
    return files


def _drain(source: ByteSource) -> None:
    while source.read(CHUNK):
        pass
