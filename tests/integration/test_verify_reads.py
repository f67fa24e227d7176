"""Full verification reads the file twice at their own pace (the verifier and the SHA-256
thread, issue #14): a file written to in between must never be called valid, and the hash
must be of exactly the bytes verified."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.haformat import KeyRing, Level, Verdict, verify_archive
from tests.builders import KEY

MakeBackup = Callable[..., Path]


@pytest.mark.parametrize("password", [None, KEY], ids=["plain", "encrypted"])
def test_the_hash_is_of_the_bytes_verified(make_backup: MakeBackup, password: str | None) -> None:
    path = make_backup(password=password, entities=4000)
    report = verify_archive(path, level=Level.FULL, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("keep_times", [False, True], ids=["plain-write", "times-put-back"])
def test_a_file_written_to_while_it_is_verified_is_not_valid(
    make_backup: MakeBackup, keep_times: bool
) -> None:
    """Bytes change near the end of the file once verification has started: whichever
    reader sees them first, the verdict is incomplete (HA still writing), never valid; with
    the times put back (``touch -r``) too: the two reads' CRC-32s differ, or the ctime
    (which no one can put back) did change."""
    path = make_backup(entities=4000)
    size = path.stat().st_size
    before = path.stat()
    changed = []

    def write_once(_count: int) -> None:
        if changed:
            return
        with path.open("r+b") as file:  # same size, other bytes, in the last chunk
            file.seek(size - 4096)
            file.write(b"\x55" * 1024)
        if keep_times:
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
        changed.append(True)

    report = verify_archive(path, level=Level.FULL, keys=KeyRing(), on_bytes=write_once)
    assert changed
    assert report.verdict is Verdict.INCOMPLETE, report.problems
    assert any("changed while it was verified" in p for p in report.problems)
