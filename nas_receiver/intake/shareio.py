"""Reading files from a share that other machines write: regular files only, never through
a symbolic link, a FIFO or a device, whatever the names say.

A path in a share is walked one component at a time with ``O_NOFOLLOW`` (a folder swapped
for a link between a scan and the open is refused too), the file is opened non-blocking (a
FIFO cannot hang us) and checked with ``fstat`` on what was opened.  The open file is then
read through ``/proc/self/fd/N``, which names that very inode however the share changes
meanwhile (Linux: DSM and systemd hosts).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import NasReceiverError

_ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_DIR_FLAGS = _ROOT_FLAGS | os.O_NOFOLLOW
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class NotRegularFile(NasReceiverError, OSError):
    """A name in a share is not a plain regular file (a link, a FIFO, a device, a folder)."""

    code = "not_regular"


@dataclass(frozen=True)
class Identity:
    """What tells one file from another under the same name: a replacement has a new inode
    or a new change time, whatever its size and modification time claim."""

    size: int
    mtime_ns: int
    inode: int
    ctime_ns: int

    @classmethod
    def of(cls, result: os.stat_result) -> Identity:
        return cls(result.st_size, result.st_mtime_ns, result.st_ino, result.st_ctime_ns)

    @property
    def token(self) -> str:
        """The part a size and a time cannot show, as the catalog keeps it."""
        return f"{self.inode}:{self.ctime_ns}"


@dataclass(frozen=True)
class OpenedFile:
    """A regular file opened from a share: ``path`` reads exactly it."""

    fd: int
    identity: Identity

    @property
    def path(self) -> Path:
        return Path(f"/proc/self/fd/{self.fd}")

    def current(self) -> Identity:
        """The opened file's identity now (it changed if it was written to meanwhile)."""
        return Identity.of(os.fstat(self.fd))


def lstat_regular(root: Path, relative: str) -> os.stat_result:
    """``lstat`` of ``root/relative``: no component may be a link, the file must be regular.

    Raise NotRegularFile, or OSError (FileNotFoundError when it is gone)."""
    with _open(root, relative) as fd:
        return os.fstat(fd)


@contextmanager
def open_regular(root: Path, relative: str) -> Iterator[OpenedFile]:
    """Open ``root/relative`` for reading: see the module's description."""
    with _open(root, relative) as fd:
        yield OpenedFile(fd, Identity.of(os.fstat(fd)))


@contextmanager
def _open(root: Path, relative: str) -> Iterator[int]:
    parts = PurePosixPath(relative).parts
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
        raise NotRegularFile(f"{root}/{relative}: not a plain path inside the share")
    folder = os.open(root, _ROOT_FLAGS)  # the configured folder itself may be a link
    try:
        for part in parts[:-1]:
            try:
                inner = os.open(part, _DIR_FLAGS, dir_fd=folder)
            except OSError as err:
                raise _refusal(root, relative, err) from err
            os.close(folder)
            folder = inner
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=folder)
        except OSError as err:
            raise _refusal(root, relative, err) from err
    finally:
        os.close(folder)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"{root}/{relative}: not a regular file; not read")
        os.set_blocking(fd, True)
        yield fd
    finally:
        os.close(fd)


def _refusal(root: Path, relative: str, err: OSError) -> OSError:
    if err.errno in (errno.ELOOP, errno.ENOTDIR):  # O_NOFOLLOW met a link
        return NotRegularFile(f"{root}/{relative}: a symbolic link; never followed")
    return err


UNREADABLE = "cannot be read by"


def unreadable(what: str) -> str:
    """Why a file of the share cannot be read, and the fix (NFS squash, share permissions,
    ACLs: the share is written by HA's user, read by ours)."""
    user = user_name()
    return (
        f"{what} {UNREADABLE} user {user}: give {user} read access to the share"
        " (DSM: Control Panel > Shared Folder > Edit > Permissions; for an NFS share also"
        " a squash such as 'Map all users to admin', so that those permissions apply)"
    )


def user_name() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
