"""Extract files from a backup for recovery without HA, safely, also from damaged backups.

Each chosen inner archive is decrypted and inflated as a stream (CRC checked) and unpacked
with ``tarfile``'s ``data`` filter, which refuses absolute paths, ``..``, links that point
outside the folder and device files.  A size cap stops decompression bombs; nothing is
overwritten without ``force``.  Damage in one inner archive is reported and the others are
still extracted: recovering what is intact is the point.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import json
import os
import queue
import shutil
import stat
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, cast

from ..errors import OutputExistsError, UnsafeArchiveError, one_line
from .crypto import (
    PREFIX_SIZE,
    ChainedSource,
    DecryptError,
    KeySession,
    NotRecognised,
    UnsupportedFormat,
    WrongKey,
    looks_plain,
    sniff,
)
from .gzipstream import GZIP_MAGIC, GzipError, InflatingReader
from .keys import KeyRing
from .names import inner_base_name
from .sources import ReaderThread, SeekingFileSource
from .tarstream import (
    ByteSource,
    FileLike,
    MemberCut,
    TarEntry,
    TarFormatError,
    TarWalker,
    take,
)
from .verify import METADATA_NAMES

DEFAULT_MAX_BYTES = 256 << 30
FREE_SPACE_MARGIN = 64 << 20  # as library.ROOM_MARGIN: never the disk's last bytes
# Real HA parts inflate to at most ~20 times their stored size (media and databases do not
# compress much); deflate can reach 1032.  An inner archive unpacking to more than this many
# times its stored size (plus a little) is taken for a decompression bomb.
MAX_RATIO = 256
RATIO_SLACK = 64 << 20


class NoRoomToUnpack(UnsafeArchiveError):
    """The disk has not the room for the next file (and the margin): nothing is wrong with
    the archive."""


@dataclass
class ExtractResult:
    """What was written, what was refused and what was damaged."""

    files: int = 0
    bytes: int = 0
    archives: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def extract_backup(
    source: Path,
    destination: Path,
    keys: KeyRing,
    *,
    members: Sequence[str] = (),
    paths: Sequence[str] = (),
    force: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> ExtractResult:
    """Extract ``source`` into ``destination/<inner archive>/``.

    ``members`` chooses inner archives (``homeassistant`` or ``homeassistant.tar.gz``),
    ``paths`` chooses files by glob within them.  Raise UnsafeArchiveError past
    ``max_bytes`` or the free space, OutputExistsError before overwriting without ``force``.
    """
    destination.mkdir(parents=True, exist_ok=True)
    job = _Extraction(destination, keys, members, paths, force, max_bytes)
    with source.open("rb") as handle:
        walker = TarWalker(_Counted(SeekingFileSource(handle, source.stat().st_size), on_bytes))
        try:
            for entry in walker:
                job.entry(walker, entry)
        except (TarFormatError, MemberCut) as err:
            job.result.problems.append(f"{source}: archive damaged or cut short: {err}")
    wanted = {_base(name) for name in members}
    missing = wanted - {_base(name) for name in job.result.archives}
    job.result.problems += [f"{name}: no such inner archive" for name in sorted(missing)]
    return job.result


def _base(name: str) -> str:
    return inner_base_name(name) or name


class _Counted:
    def __init__(self, source: SeekingFileSource, on_bytes: Callable[[int], None] | None) -> None:
        self._source = source
        self._on_bytes = on_bytes

    def read(self, size: int, /) -> bytes:
        data = self._source.read(size)
        if self._on_bytes:
            self._on_bytes(len(data))
        return data

    def skip(self, size: int) -> int:
        skipped = self._source.skip(size)
        if self._on_bytes:
            self._on_bytes(skipped)
        return skipped


class _Extraction:
    def __init__(
        self,
        destination: Path,
        keys: KeyRing,
        members: Sequence[str],
        paths: Sequence[str],
        force: bool,
        max_bytes: int,
        aside: Callable[[], int] = lambda: 0,
    ) -> None:
        self.destination = destination
        self.aside = aside  # room the disk shows free that is promised to others
        self.session = KeySession(keys)
        self.keys = keys
        self.members = {_base(name) for name in members}
        self.paths = list(paths)
        self.force = force
        self.max_bytes = max_bytes
        self.result = ExtractResult()
        self._member_limit = max_bytes  # the current inner archive's bound (see MAX_RATIO)
        self._member_bytes = 0

    def entry(self, walker: TarWalker, entry: TarEntry) -> None:
        base = inner_base_name(entry.name)
        if entry.name in METADATA_NAMES and not self.paths:
            self._write_metadata(walker, entry)
        elif base is not None and entry.is_file and (not self.members or base in self.members):
            self.result.archives.append(entry.name)
            self._inner(walker, entry, base)

    def _write_metadata(self, walker: TarWalker, entry: TarEntry) -> None:
        target = self.destination / "backup.json"
        data = walker.member_stream().read(min(entry.size, 1 << 20))
        try:
            json.loads(data)
        except (ValueError, RecursionError):
            self.result.problems.append(f"{entry.name}: not JSON; not written")
            return
        self._make_way(target)
        target.write_bytes(data)

    def begin_member(self, stored_size: int) -> None:
        """An inner archive of ``stored_size`` bytes begins: its bound (see MAX_RATIO)."""
        self._member_limit = stored_size * MAX_RATIO + RATIO_SLACK
        self._member_bytes = 0

    def _inner(self, walker: TarWalker, entry: TarEntry, base: str) -> None:
        where = f"{entry.name} (at byte {entry.header_offset})"
        self.begin_member(entry.size)
        prefix = walker.member_stream().read(min(entry.size, PREFIX_SIZE))
        try:
            fmt = sniff(prefix, entry.size)
            rest = walker.member_stream()
            stream: ByteSource = (
                self.session.open(prefix, rest, entry.size)
                if fmt.encrypted
                else ChainedSource(prefix, rest)
            )
            self._unpack(stream, self.destination / base, legacy=fmt.securetar == 1)
        except (UnsupportedFormat, NotRecognised, DecryptError, GzipError) as err:
            self.result.problems.append(f"{where}: {err}")
        except WrongKey as err:
            detail = "no key given" if not self.keys else str(err)
            self.result.problems.append(f"{where}: cannot decrypt: {detail}")
        except tarfile.TarError as err:
            self.result.problems.append(f"{where}: inner tar damaged: {err}")

    def _unpack(self, stream: ByteSource, target: Path, *, legacy: bool) -> None:
        first = stream.read(1 << 20)
        if not looks_plain(first):
            raise NotRecognised("content is neither gzip nor tar")
        content: ByteSource = ChainedSource(first, stream)
        target.mkdir(exist_ok=True)
        with contextlib.ExitStack() as stack:
            if first[:3] == GZIP_MAGIC:  # inflated (and decrypted) ahead while files are written
                inflating = InflatingReader(content, legacy=legacy)
                content = stack.enter_context(ReaderThread(inflating, name="inflate"))
            self.unpack_tar(content, target)
            while content.read(1 << 20):  # the CRC is checked only once all data is read
                pass

    def unpack_tar(self, content: ByteSource, target: Path) -> None:
        """Write the files of the tar stream ``content`` (read to its end-of-archive marker)
        into ``target``."""
        with tarfile.open(fileobj=cast(IO[bytes], FileLike(content)), mode="r|") as tar:
            for member in tar:
                if self._wanted(member):
                    self._extract_one(tar, member, target)

    def _wanted(self, member: tarfile.TarInfo) -> bool:
        """Whether ``--path`` globs choose this member; HA keeps a part's files under
        ``data/``, so ``.storage/*`` also finds ``data/.storage/...``."""
        if not self.paths:
            return True
        name = str(PurePosixPath(member.name.lstrip("/")))
        name = name[2:] if name.startswith("./") else name
        names = (name, name.removeprefix("data/"))
        return any(fnmatch.fnmatch(n, glob) for n in names for glob in self.paths)

    def _extract_one(self, tar: tarfile.TarFile, member: tarfile.TarInfo, target: Path) -> None:
        try:
            checked = tarfile.data_filter(member, str(target))
        except (tarfile.FilterError, ValueError) as err:  # ValueError: a NUL in a name
            self.result.refused.append(f"{member.name}: {err}")
            return
        refusal = _beyond_the_filter(checked, target)
        if refusal is not None:
            self.result.refused.append(f"{member.name}: {refusal}")
            return
        try:
            if checked.isfile():
                self._check_budget(checked.size, target)
            if not checked.isdir():  # a folder may come again; anything else replaces
                self._make_way(target / checked.name)
            if checked.islnk():
                self._hard_link(checked, target)
                return
            if checked.issym():
                self._symlink(checked, target)
                return
            if not _is_time(checked.mtime):  # tarfile's utime would raise once it is written
                checked = checked.replace(mtime=0, deep=False)
            # ``checked`` is the data filter's own result, from just above: filtered again,
            # the same paths would be resolved again (HA's part of bench_arrival --files
            # 20000, 3 runs each: 9.3-9.6 s filtered twice, 8.6-8.9 s once; creating 20,000
            # files alone took 4.5-5.3 s of it on that disk).
            tar.extract(checked, path=target, filter="fully_trusted")
        except (ValueError, OverflowError) as err:  # a value of the member's the system refuses
            self.result.refused.append(f"{member.name}: not written: {err}")
            return
        except OSError as err:
            if err.errno not in _NAME_ERRORS:
                raise
            # A name this filesystem cannot hold, or a file where a folder of the same name
            # goes: that member alone is left out, as a refused one is.
            self.result.refused.append(f"{member.name}: not written: {err.strerror}")
            return
        if checked.isfile():
            self.result.files += 1
            self.result.bytes += checked.size

    def _check_budget(self, size: int, target: Path) -> None:
        if self.result.bytes + size > self.max_bytes:
            raise UnsafeArchiveError(
                f"extracting more than the cap of {self.max_bytes} bytes; stopped "
                "(a decompression bomb, or raise --max-bytes)"
            )
        self._member_bytes += size
        if self._member_bytes > self._member_limit:
            raise UnsafeArchiveError(
                f"an inner archive unpacks to more than {MAX_RATIO} times its size; stopped "
                "(a decompression bomb)"
            )
        free = shutil.disk_usage(target).free - self.aside()
        if size + FREE_SPACE_MARGIN > free:
            raise NoRoomToUnpack(f"{target}: {free} bytes free, a file needs {size}")

    def _hard_link(self, checked: tarfile.TarInfo, target: Path) -> None:
        """Make the hard link ``checked`` to the regular file unpacked before it, never
        through tarfile: where its own link fails, tarfile writes the member the link names
        instead, unfiltered, so a symbolic link the filter refused (to /etc/shadow, say)
        would be written after all."""
        source, link = target / checked.linkname, target / checked.name
        if not _is_file_within(source, target):
            self.result.refused.append(
                f"{checked.name}: a hard link to {checked.linkname!r}, which is not a file "
                "unpacked here"
            )
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(source, link, follow_symlinks=False)

    def _symlink(self, checked: tarfile.TarInfo, target: Path) -> None:
        """Make the symbolic link ``checked`` (its target checked by the data filter), never
        through tarfile: where its link fails (a folder of that name is there), tarfile
        writes the member the link names instead, unfiltered."""
        link = target / checked.name
        if link.is_dir() and not link.is_symlink():
            self.result.refused.append(
                f"{checked.name}: a symbolic link where a folder of that name was unpacked"
            )
            return
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(checked.linkname, link)

    def _make_way(self, path: Path) -> None:
        """Before a member is written at ``path``: without ``force`` nothing there is
        replaced (OutputExistsError); with it, what is there goes first unless it is a
        folder (so nothing is ever written through a link left there)."""
        if not (path.exists() or path.is_symlink()):
            return
        if not self.force:
            raise OutputExistsError(f"{path}: exists already; use --force to overwrite")
        if path.is_symlink() or not path.is_dir():
            path.unlink()


# What a member's own name or kind can make the filesystem refuse (not the disk's state).
_NAME_ERRORS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.EEXIST,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EILSEQ,
        errno.EINVAL,
        errno.ELOOP,
        errno.EMLINK,
        errno.ENOENT,  # under a link that leads nowhere (an empty or refused target)
    }
)


# A member's place, resolved, must leave this much of the system's 4096 bytes for a path:
# the folder it is unpacked in may be renamed to a longer name (a browse copy's).
PATH_ROOM = 4096 - 256


def _beyond_the_filter(checked: tarfile.TarInfo, target: Path) -> str | None:
    """Why a member the data filter let through is refused all the same, or None.

    The filter decides with ``os.path.realpath``, which before CPython 3.11.13 (3.12.11,
    3.13.4) gives up on paths longer than the system takes and resolves the rest as text,
    while the kernel follows the links: a chain of links can then lead out of the folder
    (CVE-2025-4517).  So no name and no link target may climb with ``..`` (links only lead
    down, from inside the folder, whatever realpath makes of them; no HA writer writes
    such names), and no member may lie deeper than PATH_ROOM (a tree no one could walk by
    path, nor realpath judge)."""
    names = [checked.name]
    if checked.issym() or checked.islnk():
        names.append(checked.linkname)
    for name in names:
        if PurePosixPath(name).is_absolute() or ".." in PurePosixPath(name).parts:
            return f"{name!r} climbs with '..': links and names may only lead down"
    inner = checked.name.removeprefix("./").rstrip("/").split("/")
    if "." in inner and checked.name not in (".", "./"):  # a name may start with ./, no more
        return f"{checked.name!r} has a '.' inside it"
    place = os.path.realpath(target / checked.name)
    if len(os.fsencode(place)) >= PATH_ROOM:
        return f"its place would be a path of {len(os.fsencode(place))} bytes or more"
    return None


def _is_time(value: object) -> bool:
    """Whether ``value`` is a modification time the system takes (1901 to 2242)."""
    return isinstance(value, int | float) and -(2**31) <= value < 2**33


def _is_file_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a regular file (itself no symbolic link) inside ``folder``."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    resolved = os.path.realpath(path)
    return stat.S_ISREG(mode) and Path(resolved).is_relative_to(os.path.realpath(folder))


PIECES_AHEAD = 2  # pieces (up to verify.TEE_STEP) between the verifier and the unpacking
SMALL_PIECE = 256 << 10  # smaller pieces (tar headers, small files) are handed on together


class UnpackAlongside:
    """Unpack one inner archive (``member``: HA's part, for the library's browse copy) into
    ``destination/<member>/`` from the plain tar stream a full verification reads anyway,
    on a thread of its own: the part is read, decrypted and inflated once for both.  The
    verifier (see ``verify_archive``'s ``unpack``) hands on what it reads of that part
    (``feed``), then says whether it was whole and right (``end``), and backup.json.

    The unpacking never holds up the verdict beyond its own pace, nor changes it: where it
    is refused (a decompression bomb, no room, a tar ``tarfile`` will not unpack, a second
    inner archive of that name) it stops and drops what follows, and ``finish`` returns
    None.  The caller then unpacks after the verdict as ``extract_backup`` does, and meets
    the same refusal there, told as before.  Unpacked with the same rules as
    ``extract_backup`` (``tarfile``'s data filter, the size caps, the free room less
    ``aside``).
    """

    def __init__(
        self, destination: Path, member: str, *, aside: Callable[[], int] = lambda: 0
    ) -> None:
        self.destination = destination
        self.member = member
        # force: a member replaces an earlier one of the same name, as in HA's restore
        # (tarfile's extractall); the folder is a fresh one of ours.
        self._job = _Extraction(
            destination, KeyRing(), [member], [], True, DEFAULT_MAX_BYTES, aside=aside
        )
        self._queue: queue.Queue[bytes] = queue.Queue(PIECES_AHEAD)
        self._stop = threading.Event()  # the unpacking is over: what follows is dropped
        self._thread: threading.Thread | None = None
        self._pending = bytearray()
        self._claims = 0
        self._ended = False
        self._whole = False
        self.failure: str | None = None

    def wants(self, name: str, stored_size: int) -> bool:
        """Whether the inner archive ``name`` (of ``stored_size`` bytes) is to be handed
        on; true once, for the first of ``member``'s name."""
        if inner_base_name(name) != self.member:
            return False
        self._claims += 1
        if self._claims > 1:
            self._fail(f"{name}: a second inner archive of that name")
            return False
        self._job.result.archives.append(name)
        self._job.begin_member(stored_size)
        try:
            (self.destination / self.member).mkdir(exist_ok=True)
        except OSError as err:  # the unpacking's end, never the verification's
            self._fail(one_line(err))
            return False
        self._thread = threading.Thread(target=self._run, name="unpack", daemon=True)
        self._thread.start()
        return True

    def metadata(self, data: bytes) -> None:
        """The backup's backup.json, as the verifier read and parsed it."""
        if self._stop.is_set():
            return
        try:
            with (self.destination / "backup.json").open("xb") as file:
                file.write(data)
        except OSError as err:
            self._fail(one_line(err))

    def feed(self, piece: bytes) -> None:
        """The next piece of the part's plain tar stream."""
        if self._stop.is_set():
            return
        if len(piece) >= SMALL_PIECE:
            self._flush()
            self._put(piece)
            return
        self._pending += piece
        if len(self._pending) >= SMALL_PIECE:
            self._flush()

    def end(self, whole: bool) -> None:
        """The part's stream is over: ``whole`` where it was read to its end and found
        right (its CRC, its length, its tar)."""
        if self._ended:
            return
        self._ended = True
        self._flush()
        self._whole = whole
        self._put(b"")

    def finish(self) -> ExtractResult | None:
        """Once the verification is over: what was unpacked where all of the part was, as
        ``extract_backup`` would report it, else None (``failure`` may say why)."""
        if self._thread is None:
            return None
        self.end(False)  # where the verifier stopped before the part's end
        self._thread.join()
        # A second part of the name, and every refusal, set ``failure``.
        return None if self.failure or not self._whole else self._job.result

    def close(self) -> None:
        """Stop the unpacking where it is, and wait for its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = reason
        self._stop.set()

    def _flush(self) -> None:
        if self._pending:
            self._put(bytes(self._pending))
            self._pending.clear()

    def _put(self, piece: bytes) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(queue.Full):
                self._queue.put(piece, timeout=0.1)
                return

    def _run(self) -> None:
        pieces = _Pieces(self._queue, self._stop)
        try:
            self._job.unpack_tar(pieces, self.destination / self.member)
            while pieces.read(1 << 20):  # to the verifier's end, as it reads it
                pass
        except _Stopped:
            pass
        except Exception as err:  # the unpacking's own end, never the verification's
            self._fail(one_line(err) if str(err) else type(err).__name__)


class _Stopped(Exception):
    pass


class _Pieces:
    """The pieces ``UnpackAlongside`` is handed, as a ByteSource; raise _Stopped once it is
    stopped and nothing is left."""

    def __init__(self, pieces: queue.Queue[bytes], stop: threading.Event) -> None:
        self._queue = pieces
        self._stop = stop
        self._piece = memoryview(b"")
        self._ended = False

    def read(self, size: int, /) -> bytes:
        if not self._piece:
            if self._ended:
                return b""
            piece = self._next()
            if not piece:
                self._ended = True
                return b""
            self._piece = memoryview(piece)
        data = take(self._piece, size)
        self._piece = self._piece[len(data) :]
        return data

    def _next(self) -> bytes:
        while True:
            try:
                return self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None
