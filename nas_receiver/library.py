"""Placing archives in the NAS library or the quarantine: atomic, checksum-checked, once.

The fastest safe way is chosen per copy: a reflink (FICLONE, btrfs on Synology) shares the
data blocks copy-on-write, else the copy the verifier wrote as it read the archive is taken
(``open_copy``), else a streamed copy is fsync'd.  Each is written under a temporary name,
checked, then given its final name without replacing anything.  The folders written in are
never symbolic links (``own_folder``), nor are those deleted in (``remove_own``).

No hard links: a hard link *is* the share's file, so a writer that rewrites a backup in
place under the same name (``shutil.copy`` does, and HA's extra-location copies use it)
would silently change the library's copy too.  The daemon's tests caught exactly that.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import queue
import secrets
import shutil
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal

from .haformat.output import chmod_tree, fsync_dir, publish

log = logging.getLogger(__name__)

FICLONE = 0x40049409  # from linux/fs.h
CHUNK = 1 << 20
PARTIAL_MARK = ".partial-"
ROOM_MARGIN = 64 << 20

Method = Literal["reflink", "copy", "written while verified"]


@dataclass(frozen=True)
class Placed:
    path: Path
    sha256: str
    method: Method


@dataclass(frozen=True)
class Written:
    """A temporary copy of a file, fsync'd, whose bytes had ``sha256`` as they were written
    (see ``open_copy``)."""

    path: Path
    sha256: str


def temp_name(final: Path) -> Path:
    """Return a temporary name beside ``final`` that ``clean_partials`` will recognise."""
    return final.with_name(f".{final.name}{PARTIAL_MARK}{secrets.token_hex(4)}")


def own_folder(root: Path, *names: str) -> Path:
    """``root/names...``, each made where it is missing: the folders nas-receiver writes in.
    Raise OSError where one of them is a symbolic link (never followed: it could lead
    anywhere, into the share HA writes to too) or not a folder.  ``root`` itself, the
    configured place, may be a link: the admin's own choice."""
    root.mkdir(parents=True, exist_ok=True)
    folder = root
    for name in names:
        folder = folder / name
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder)
        mode = os.lstat(folder).st_mode
        if stat.S_ISLNK(mode):
            raise LinkedFolder(folder)
        if not stat.S_ISDIR(mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(folder))
    return folder


class LinkedFolder(OSError):
    """A folder of ours, or one on the way to a file of ours, is a symbolic link: not
    followed."""

    def __init__(self, folder: Path) -> None:
        link = "a symbolic link where a folder of ours goes; not followed"
        super().__init__(errno.ELOOP, link, str(folder))


def link_on_the_way(path: Path, roots: tuple[Path, ...]) -> Path | None:
    """The first folder between the root of ours that holds ``path`` and ``path`` itself
    that is a symbolic link (it could lead anywhere, into the share HA writes to too), else
    None.  The roots themselves, as configured, may be links (the admin's choice)."""
    for root in roots:
        try:
            parts = path.relative_to(root).parts
        except ValueError:
            continue
        folder = root
        for part in parts[:-1]:
            folder = folder / part
            if folder.is_symlink():
                return folder
        return None
    return None


def remove_own(path: Path, roots: tuple[Path, ...]) -> None:
    """``remove_path`` of a file or folder of ours under one of ``roots``; raise
    LinkedFolder, removing nothing, where a folder on the way is a symbolic link."""
    link = link_on_the_way(path, roots)
    if link is not None:
        raise LinkedFolder(link)
    remove_path(path)


def clean_partials(folder: Path, *, depth: int) -> list[Path]:
    """Remove temporary files a killed process left in ``folder``, at most ``depth`` levels
    down (deeper lies what came out of backups, such as a browse copy's files, which may
    be named anything), never through a folder that is a symbolic link.  Return them.
    One that cannot be removed is told and left: it never stops the start."""
    removed: list[Path] = []
    for level in range(1, depth + 1):
        pattern = "/".join(["*"] * (level - 1) + [f".*{PARTIAL_MARK}*"])
        for path in sorted(folder.glob(pattern), reverse=True):
            if link_on_the_way(path, (folder,)) is not None:
                continue
            if path.exists() or path.is_symlink():
                try:
                    remove_path(path)
                except OSError as err:
                    log.warning("a temporary file left by a stop cannot be removed: %s", err)
                    continue
                removed.append(path)
    return removed


def remove_path(path: Path) -> None:
    """Remove a file or a whole folder (even a read-only one); nothing if it is not there."""
    if path.is_dir() and not path.is_symlink():
        make_writable_tree(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def make_writable_tree(folder: Path) -> None:
    """Let the owner (only: the tree may hold decrypted files) remove what is in it."""
    chmod_tree(folder, 0o700)


def make_read_only(folder: Path) -> None:
    """Make everything under ``folder`` readable by its owner only, and by nobody writable
    (a browse copy is a record, and holds secrets.yaml): folders 0500, files 0400."""
    chmod_tree(folder, 0o500, 0o400)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb", buffering=0) as file:
        while chunk := file.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sidecar_of(archive: Path) -> Path:
    """HA's Synology DSM agent keeps ``<base>_meta.json`` beside ``<base>.tar``."""
    return archive.with_name(archive.name.removesuffix(".tar") + "_meta.json")


def companions(path: Path) -> tuple[Path, ...]:
    """The files we write beside a ``.tar`` copy: HA's sidecar and a quarantine reason."""
    if not path.name.endswith(".tar"):
        return ()
    return (sidecar_of(path), path.with_name(path.name + ".reason.json"))


def place_candidates(folder: Path, base: str, sha256: str, suffix: str) -> list[Path]:
    """The places an archive's copy may take, in order: HA's name, then with the start of
    the archive's SHA-256 (for a different archive whose HA name and date coincide)."""
    return [
        folder / f"{stem}{suffix}"
        for stem in (base, f"{base}_{sha256[:8]}", f"{base}_{sha256[:16]}")
    ]


def holds(path: Path, sha256: str) -> bool:
    """Whether ``path`` is a regular file (not a link) with exactly these bytes."""
    return path.is_file() and not path.is_symlink() and sha256_of(path) == sha256


def occupied(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def clone_into(source: Path, temp: Path) -> tuple[Method, str]:
    """Write ``temp`` as an independent copy of ``source``, the cheapest way; fsync it.
    Return how, and the SHA-256 of what ``temp`` holds: of the bytes written, as they were
    written, for a streamed copy (no second read); read back after a reflink."""
    try:
        _reflink(source, temp)
        return "reflink", sha256_of(temp)
    except OSError as err:
        temp.unlink(missing_ok=True)
        log.debug("reflink %s: %s", source, err)
    return "copy", _stream_copy(source, temp)


class CopyInProgress:
    """A temporary copy of a file in the library that its reader writes as it reads (see
    ``open_copy``): private (0600) while it is written; the room it still needs is set
    aside meanwhile (see ``set_aside``)."""

    def __init__(self, path: Path, file: BinaryIO, device: int, size: int) -> None:
        self.path = path
        self.file = file
        self.device = device
        self._size = size

    def still_needs(self) -> int:
        """The bytes of the copy not yet written (0 once it is closed)."""
        try:
            written = os.fstat(self.file.fileno()).st_size
        except (OSError, ValueError):  # closed
            return 0
        return max(0, self._size - written)

    def keep(self, sha256: str) -> Written | None:
        """The copy, fsync'd and closed, for ``place``; None where the fsync fails (a full
        disk may only show there): the copy is then removed."""
        try:
            os.fsync(self.file.fileno())
        except OSError as err:
            log.debug("%s: fsync of the copy failed: %s", self.path, err)
            self.discard()
            return None
        self._close()
        return Written(self.path, sha256)

    def discard(self) -> None:
        """Close and remove the copy, where it still is (once ``place`` took it, it is
        not)."""
        try:
            self._close()
        finally:
            self.path.unlink(missing_ok=True)

    def _close(self) -> None:
        with _copies_lock:
            _copies.discard(self)  # first: a close that fails sets nothing aside
        self.file.close()


# The copies in progress in this process: copies begun at once (the daemon verifies several
# archives at a time) and copies made meanwhile after a verdict never count the same free
# room twice.
_copies: set[CopyInProgress] = set()
_copies_lock = threading.Lock()


def set_aside(device: int) -> int:
    """The bytes the copies in progress on ``device`` still need."""
    with _copies_lock:
        return _still_needed(device)


def _still_needed(device: int) -> int:
    """``set_aside`` for a caller that holds ``_copies_lock``."""
    return sum(copy.still_needs() for copy in _copies if copy.device == device)


def open_copy(folder: Path, source_fd: int, size: int) -> CopyInProgress | None:
    """A new temporary file in ``folder`` for a copy of the open file ``source_fd`` (of
    ``size`` bytes) that its reader writes as it reads (a streamed copy without a read of
    its own); None where a copy would not be written that way: a reflink takes no writing
    (tried here, then undone: ``place`` makes it), or ``size`` does not fit beside what
    the copies in progress still need.  Raise OSError when ``folder`` cannot be written."""
    folder.mkdir(parents=True, exist_ok=True)
    device = folder.stat().st_dev
    path = temp_name(folder / "arrival.tar")
    with _copies_lock:  # the room is looked at and set aside at once
        if shutil.disk_usage(folder).free - _still_needed(device) < size + ROOM_MARGIN:
            return None
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        copy = CopyInProgress(path, os.fdopen(fd, "wb", buffering=0), device, size)
        _copies.add(copy)
    try:
        fcntl.ioctl(fd, FICLONE, source_fd)
    except OSError:  # no reflink between the two (another filesystem, or not btrfs)
        return copy
    copy.discard()
    return None


def place(
    source: Path,
    final: Path,
    sha256: str,
    *,
    temp: Path | None = None,
    mode: int | None = None,
    written: Written | None = None,
) -> Placed:
    """Put a checked copy of ``source`` at ``final``, which must be free or hold these bytes;
    with ``mode``, the copy gets that mode before it is published.  ``written``: a copy
    made already, taken (moved) instead of making one where it is on the same filesystem.

    Raise PlacementError when the copy does not have ``sha256`` (the source changed, or the
    disk lied); nothing is left behind then.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    if holds(final, sha256):
        return Placed(final, sha256, "copy")
    temp = temp or temp_name(final)
    method: Method
    try:
        if written is not None and _moved(written.path, temp):
            method, copied = "written while verified", written.sha256
            if mode is None:  # private while written: now as a copy made here would be
                temp.chmod(0o666 & ~_umask())
        else:
            ensure_room(final.parent, source.stat().st_size)
            method, copied = clone_into(source, temp)
        if mode is not None:
            temp.chmod(mode)
        if copied != sha256:  # the source may have been replaced since it was verified
            raise PlacementError(f"{temp}: copy has SHA-256 {copied}, expected {sha256}")
        publish(temp, final)
    finally:
        temp.unlink(missing_ok=True)
    return Placed(final, sha256, method)


class NoRoom(OSError):
    """Not enough room in ``folder``: ``need`` bytes must be free first.  ``aside``: bytes
    the copies in progress there still need (they may be what is short)."""

    def __init__(self, folder: Path, need: int, free: int, aside: int = 0) -> None:
        taken = f" ({aside} of them set aside for copies being written)" if aside else ""
        super().__init__(errno.ENOSPC, f"{free} bytes free{taken}, {need} needed", str(folder))
        self.folder = folder
        self.need = need
        self.aside = aside


def ensure_room(folder: Path, size: int) -> None:
    """Raise NoRoom unless ``size`` bytes and a margin are free in ``folder``, beside what
    the copies in progress there still need: a copy never fills a disk to its last byte
    (the NAS itself needs some)."""
    free = shutil.disk_usage(folder).free
    aside = set_aside(folder.stat().st_dev)
    if free - aside < size + ROOM_MARGIN:
        raise NoRoom(folder, size + ROOM_MARGIN, free, aside)


def write_json(path: Path, value: dict[str, Any], *, mode: int = 0o644) -> None:
    """Write ``path`` atomically (temporary name, fsync, rename over any older version)."""
    temp = temp_name(path)
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with open(fd, "w", encoding="utf-8") as file:
            json.dump(value, file, indent=2, ensure_ascii=False)
            file.write("\n")
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
        fsync_dir(path.parent)
    finally:
        temp.unlink(missing_ok=True)


class PlacementError(OSError):
    """A placed copy did not turn out identical to its source."""


def _umask() -> int:
    """This process's umask (Linux tells it in /proc; elsewhere the most private one)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o077


def _moved(path: Path, target: Path) -> bool:
    """Rename ``path`` to ``target``; False where the two are on different filesystems."""
    try:
        os.rename(path, target)
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
        return False
    return True


def _reflink(source: Path, temp: Path) -> None:
    with source.open("rb") as src, temp.open("xb") as dst:
        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        os.fsync(dst.fileno())


def _stream_copy(source: Path, temp: Path) -> str:
    """Copy ``source`` to ``temp``, fsync it; return the SHA-256 of the bytes written, made
    on a second thread while the copy writes (hashing and writing overlap on two cores)."""
    hasher = _BackgroundHash()
    try:
        with source.open("rb", buffering=0) as src, temp.open("xb", buffering=0) as dst:
            try:
                os.posix_fadvise(src.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError as err:  # not every filesystem takes advice
                if err.errno != errno.EINVAL:
                    raise
            while chunk := src.read(CHUNK):
                hasher.feed(chunk)
                view = memoryview(chunk)
                while view:  # a write may be short (a full disk raises, a signal may cut it)
                    view = view[dst.write(view) :]
            os.fsync(dst.fileno())
        return hasher.hexdigest()
    finally:
        hasher.close()


class _BackgroundHash:
    """SHA-256 of the pieces fed to it, made on a thread of its own (a few pieces behind).
    The thread is a daemon and ``close`` ends it whatever happened, so a copy that failed
    or was interrupted leaves no thread waiting; an error of the hash is raised by
    ``feed`` or ``hexdigest``."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self._pieces: queue.Queue[bytes] = queue.Queue(4)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sha256", daemon=True)
        self._thread.start()

    def feed(self, piece: bytes) -> None:
        """Hand ``piece`` over (b"" ends the hash)."""
        if not self._put(piece):
            raise RuntimeError("the hashing thread stopped") from self._error

    def hexdigest(self) -> str:
        self.feed(b"")
        self._thread.join()
        if self._error is not None:
            raise RuntimeError("the hashing thread failed") from self._error
        return self._digest.hexdigest()

    def close(self) -> None:
        """End the thread (once it took what it holds)."""
        self._put(b"")
        self._thread.join()

    def _put(self, piece: bytes) -> bool:
        """Queue ``piece`` while the thread lives (it takes every piece, so room comes);
        False once the thread has ended."""
        while self._thread.is_alive():
            try:
                self._pieces.put(piece, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            while piece := self._pieces.get():
                self._digest.update(piece)
        except BaseException as err:  # raised on the copying thread
            self._error = err
