"""Extract files from a backup for recovery without HA, safely, also from damaged backups.

Each chosen inner archive is decrypted and inflated as a stream (CRC checked) and unpacked
with ``tarfile``'s ``data`` filter, which refuses absolute paths, ``..``, links that point
outside the folder and device files.  A size cap stops decompression bombs; nothing is
overwritten without ``force``.  Damage in one inner archive is reported and the others are
still extracted: recovering what is intact is the point.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import shutil
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, cast

from ..errors import OutputExistsError, UnsafeArchiveError
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
from .tarstream import ByteSource, FileLike, MemberCut, TarEntry, TarFormatError, TarWalker
from .verify import METADATA_NAMES

DEFAULT_MAX_BYTES = 256 << 30
FREE_SPACE_MARGIN = 64 << 20  # as library.ROOM_MARGIN: never the disk's last bytes
# Real HA parts inflate to at most ~20 times their stored size (media and databases do not
# compress much); deflate can reach 1032.  An inner archive unpacking to more than this many
# times its stored size (plus a little) is taken for a decompression bomb.
MAX_RATIO = 256
RATIO_SLACK = 64 << 20


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
    ) -> None:
        self.destination = destination
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
        self._refuse_overwrite(target)
        target.write_bytes(data)

    def _inner(self, walker: TarWalker, entry: TarEntry, base: str) -> None:
        where = f"{entry.name} (at byte {entry.header_offset})"
        self._member_limit = entry.size * MAX_RATIO + RATIO_SLACK
        self._member_bytes = 0
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
            with tarfile.open(fileobj=cast(IO[bytes], FileLike(content)), mode="r|") as tar:
                for member in tar:
                    if self._wanted(member):
                        self._extract_one(tar, member, target)
            while content.read(1 << 20):  # the CRC is checked only once all data is read
                pass

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
        except tarfile.FilterError as err:
            self.result.refused.append(f"{member.name}: {err}")
            return
        if checked.isfile():
            self._check_budget(checked.size, target)
            self._refuse_overwrite(target / checked.name)
        tar.extract(checked, path=target, filter="data")
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
        free = shutil.disk_usage(target).free
        if size + FREE_SPACE_MARGIN > free:
            raise UnsafeArchiveError(f"{target}: {free} bytes free, a file needs {size}")

    def _refuse_overwrite(self, path: Path) -> None:
        if not self.force and (path.exists() or path.is_symlink()):
            raise OutputExistsError(f"{path}: exists already; use --force to overwrite")
