"""``status`` and the page tell whether a receiver holds the data folder, from the kernel's
table of locks, without taking the lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from nas_receiver.daemon import DaemonLock
from nas_receiver.report import lock_holder


def test_the_holder_is_read_from_the_kernels_table_of_locks(tmp_path: Path) -> None:
    path = tmp_path / "data" / "lock"
    assert lock_holder(path) == 0  # never created: no receiver ever ran here
    with DaemonLock(path):
        assert lock_holder(path) == os.getpid()
        assert lock_holder(tmp_path / "other") == 0
    assert lock_holder(path) == 0  # released: the file stays, nobody holds it


def test_asking_never_takes_or_tries_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Taking the lock, even for an instant, would make a daemon starting at that instant
    refuse to run: the question never calls flock, whether the lock is held or free."""
    path = tmp_path / "lock"
    calls: list[object] = []
    with DaemonLock(path):
        monkeypatch.setattr(fcntl, "flock", lambda *args: calls.append(args))
        assert lock_holder(path) == os.getpid()
        monkeypatch.undo()
    monkeypatch.setattr(fcntl, "flock", lambda *args: calls.append(args))
    assert lock_holder(path) == 0
    assert calls == []


def _table(tmp_path: Path, *lines: str) -> Path:
    table = tmp_path / "locks"
    table.write_text("".join(line + "\n" for line in lines))
    return table


def test_on_btrfs_the_table_names_another_device_and_the_written_pid_decides(
    tmp_path: Path,
) -> None:
    """btrfs: stat gives the subvolume's device, the table the filesystem's, and inodes
    repeat across subvolumes (a reviewer's finding on a real btrfs volume: a running daemon
    was "not running").  Same inode, other device: ours when its holder wrote the file."""
    path = tmp_path / "lock"
    path.write_text("4242\n")  # what DaemonLock writes: the holder's pid
    inode = path.stat().st_ino
    ours = _table(tmp_path, f"1: FLOCK  ADVISORY  WRITE 4242 00:27:{inode} 0 EOF")
    assert lock_holder(path, locks=ours) == 4242
    other = _table(tmp_path, f"1: FLOCK  ADVISORY  WRITE 999 00:27:{inode} 0 EOF")
    assert lock_holder(path, locks=other) == 0  # another subvolume's lock on the same inode
    kinds = _table(
        tmp_path,
        f"1: POSIX  ADVISORY  WRITE 4242 00:27:{inode} 0 EOF",
        f"2: -> FLOCK  ADVISORY  WRITE 4242 00:27:{inode} 0 EOF",
        f"3: OFDLCK ADVISORY  READ -1 00:27:{inode} 0 EOF",
    )
    assert lock_holder(path, locks=kinds) == 0  # only a granted flock is DaemonLock's


def test_a_system_without_a_table_of_locks_cannot_say(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text("")
    assert lock_holder(path, locks=tmp_path / "no-such-table") is None


def test_a_lock_file_this_user_cannot_look_at_cannot_say(tmp_path: Path) -> None:
    """The page's CGI user in DSM may not enter the data folder: "cannot say", not an
    error page.  (Tests run as root, who may enter any folder: a file where a folder
    should be stands in for any error but "not there".)"""
    (tmp_path / "file").write_text("")
    assert lock_holder(tmp_path / "file" / "lock") is None
