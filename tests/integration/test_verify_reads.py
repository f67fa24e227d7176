"""Full verification reads the file twice at their own pace (the verifier and the SHA-256
thread, issue #14): a file written to in between must never be called valid, and the hash
must be of exactly the bytes verified."""

from __future__ import annotations

import hashlib
import os
import threading
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
    the times put back (``touch -r``) too: the two reads' checksums differ, or the ctime
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


def _flip_inside(path: Path, member: str, at: float) -> None:
    """Flip a byte ``at`` (a fraction) of the way into ``member``'s data."""
    import tarfile

    with tarfile.open(path) as tar:
        info = next(m for m in tar.getmembers() if m.name.removeprefix("./") == member)
    offset = info.offset_data + int(info.size * at)
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("password", [None, KEY], ids=["plain", "encrypted"])
def test_problems_come_in_the_order_of_the_archive(
    make_backup: MakeBackup, password: str | None
) -> None:
    """Inner archives are checked two at a time on threads, and a small one finishes before
    a big one: the problems still come in the order of the archive, the same every time
    (the first problem is what the log, the page and the notification show)."""
    path = make_backup(password=password, entities=4000)  # homeassistant.tar.gz is big
    _flip_inside(path, "homeassistant.tar.gz", 0.9)  # found late: near its end
    _flip_inside(path, "core_mosquitto.tar.gz", 0.5)  # small: found early
    runs = [verify_archive(path, level=Level.FULL, keys=KeyRing([KEY])) for _ in range(5)]
    first = runs[0]
    assert first.verdict is Verdict.CORRUPT
    assert [p.split(" ")[0] for p in first.problems[:2]] == [
        "homeassistant.tar.gz",
        "core_mosquitto.tar.gz",
    ], first.problems
    assert all(run.problems == first.problems for run in runs)


def test_a_file_cut_short_while_it_is_verified_is_incomplete(make_backup: MakeBackup) -> None:
    """The file is cut short once verification has begun: incomplete, never valid, naming
    the member it now ends in (not where it ended when opened); nothing raises, no thread
    is left behind."""
    path = make_backup(entities=4000)
    cut = []

    def truncate_once(_count: int) -> None:
        if not cut:
            os.truncate(path, 10240)  # inside homeassistant.tar.gz, the first inner archive
            cut.append(True)

    threads = threading.active_count()
    report = verify_archive(path, level=Level.FULL, keys=KeyRing(), on_bytes=truncate_once)
    assert cut
    assert report.verdict is Verdict.INCOMPLETE, report.problems
    assert any("ends inside 'homeassistant.tar.gz'" in p for p in report.problems), report.problems
    assert threading.active_count() == threads


def test_a_cancel_raised_while_inner_archives_are_checked_stops_every_thread(
    make_backup: MakeBackup,
) -> None:
    """The daemon cancels a verification by raising from ``on_bytes``: the exception comes
    out of verify_archive, and the hashing, inner and decrypting threads are all gone (the
    file is closed only after they stopped reading it)."""

    class Stop(Exception):
        pass

    path = make_backup(password=KEY, entities=4000)
    running = []

    def cancel_while_inner_runs(_count: int) -> None:
        names = {thread.name for thread in threading.enumerate()}
        if "inner" in names:
            running.append(names)
            raise Stop()

    threads = threading.active_count()
    with pytest.raises(Stop):
        verify_archive(
            path, level=Level.FULL, keys=KeyRing([KEY]), on_bytes=cancel_while_inner_runs
        )
    assert running  # it was cancelled while an inner archive was being checked
    assert threading.active_count() == threads


@pytest.mark.parametrize("altered", [None, 2], ids=["same-bytes", "chunk-2-changed"])
def test_a_range_read_in_odd_pieces_is_compared_chunk_by_chunk(
    tmp_path: Path, altered: int | None
) -> None:
    """An inner archive is read in pieces that straddle the 1 MiB chunks (v3 reads 1 MiB +
    17 bytes): the checksum of each chunk the range covers whole is built across the pieces
    and compared with the other reader's; the chunk whose bytes differ between the two
    reads is the one named, and equal bytes name none."""
    from nas_receiver.haformat.sources import CHUNK, HashingReader

    content = os.urandom(5 * CHUNK + 1234)
    path = tmp_path / "file"
    path.write_bytes(content)
    reader = HashingReader(path)  # not entered: this test is the second reader itself
    try:
        start = 100  # mid-chunk: chunk 0 is not whole in the range and is not compared
        rest = reader.range(start, len(content), "inner", len(content) - start)
        while rest.read((1 << 20) + 17):
            pass
        rest.close()
        for index in range(1, 5):
            chunk = content[index * CHUNK : (index + 1) * CHUNK]
            if index == altered:
                chunk = b"\x55" + chunk[1:]
            reader._compare(index, chunk)
        assert reader._mismatch == altered
        assert set(reader._sums) == set()  # every whole chunk met its second read
    finally:
        reader.close()
