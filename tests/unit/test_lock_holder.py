"""``status`` tells whether a receiver holds the data folder, without taking its lock."""

from __future__ import annotations

import os
from pathlib import Path

from nas_receiver.daemon import DaemonLock
from nas_receiver.report import lock_holder


def test_the_holder_is_read_from_the_kernels_table_of_locks(tmp_path: Path) -> None:
    path = tmp_path / "data" / "lock"
    assert lock_holder(path) == 0  # never created: no receiver ever ran here
    with DaemonLock(path):
        assert lock_holder(path) == os.getpid()
        assert lock_holder(tmp_path / "other") == 0
    assert lock_holder(path) == 0  # released: the file stays, nobody holds it


def test_a_system_without_a_table_of_locks_cannot_say(tmp_path: Path) -> None:
    path = tmp_path / "lock"
    path.write_text("")
    assert lock_holder(path, locks=tmp_path / "no-such-table") is None


def test_asking_never_takes_the_lock(tmp_path: Path) -> None:
    """A daemon starting while status asks must still get its lock."""
    path = tmp_path / "lock"
    with DaemonLock(path):
        pass
    for _ in range(200):
        lock_holder(path)
        with DaemonLock(path):  # raises AlreadyRunning if the question held it
            pass


def test_a_lock_file_this_user_cannot_look_at_cannot_say(tmp_path: Path) -> None:
    """The page's CGI user in DSM may not enter the data folder: "cannot say", not an
    error page.  (Tests run as root, who may enter any folder: a file where a folder
    should be stands in for any error but "not there".)"""
    (tmp_path / "file").write_text("")
    assert lock_holder(tmp_path / "file" / "lock") is None
