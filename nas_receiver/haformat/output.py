"""Write a new file atomically and never over an existing one."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import OutputExistsError


def fsync_dir(directory: Path) -> None:
    """Make a rename or link in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish(temporary: Path, final: Path) -> None:
    """Give ``temporary`` the name ``final``, failing if ``final`` exists; fsync the folder.

    A hard link is atomic and refuses to replace; where links are not allowed (some
    shares), an existence check and a rename do the same without the race guarantee.
    """
    try:
        os.link(temporary, final)
    except FileExistsError as err:
        raise OutputExistsError(f"{final}: exists already; not overwritten") from err
    except OSError:
        if final.exists():
            raise OutputExistsError(f"{final}: exists already; not overwritten") from None
        os.rename(temporary, final)
    else:
        temporary.unlink()
    fsync_dir(final.parent)


@dataclass(frozen=True)
class PendingFile:
    """An open temporary file and its path, published under its final name on success."""

    file: BinaryIO
    path: Path


@contextlib.contextmanager
def atomic_output(
    final: Path, before_publish: Callable[[], None] | None = None
) -> Iterator[PendingFile]:
    """Yield a temporary file beside ``final``; on success fsync it, call
    ``before_publish``, and publish it.

    On any error the temporary file is removed and ``final`` is untouched.
    """
    final = Path(final)
    if final.exists():
        raise OutputExistsError(f"{final}: exists already; not overwritten")
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.partial-", dir=final.parent)
    temporary = Path(name)
    try:
        with os.fdopen(fd, "w+b") as file:
            yield PendingFile(file, temporary)
            file.flush()
            os.fsync(file.fileno())
        if before_publish is not None:
            before_publish()
        publish(temporary, final)
    finally:
        temporary.unlink(missing_ok=True)


def chmod_tree(folder: Path, dir_mode: int, file_mode: int | None = None) -> None:
    """Give ``folder`` and every folder under it ``dir_mode`` (and, with ``file_mode``, every
    regular file that mode), never through a symbolic link, and by descriptor: a tree
    unpacked from a backup may hold paths longer than the system takes whole."""
    os.chmod(folder, dir_mode)
    for _top, dirs, files, dirfd in os.fwalk(folder, follow_symlinks=False):
        for name in dirs + (files if file_mode is not None else []):
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile: nothing to do
                kind = os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode
                if stat.S_ISDIR(kind):
                    os.chmod(name, dir_mode, dir_fd=dirfd)
                elif stat.S_ISREG(kind) and file_mode is not None:
                    os.chmod(name, file_mode, dir_fd=dirfd)
