"""Full verification reads the file twice at their own pace (the verifier and the SHA-256
thread, issue #14): a file written to in between must never be called valid, and the hash
must be of exactly the bytes verified."""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.haformat import KeyRing, Level, Verdict, verify_archive
from nas_receiver.haformat.sources import HashingReader, RangeReader
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


@pytest.mark.parametrize("password", [None, KEY], ids=["plain", "encrypted"])
def test_a_copy_written_while_verifying_holds_the_bytes_hashed(
    tmp_path: Path, password: str | None
) -> None:
    """Asserts: the copy the hash writes as it reads (the arrival's library copy) holds the
    whole file byte for byte, with inner archives checked on threads that take the hash's
    chunks meanwhile, and ``copied`` says so."""
    from nas_receiver.haformat import sources
    from tests.builders import BackupSpec, write_backup_from

    config, media = tmp_path / "config", tmp_path / "media"
    config.mkdir()
    (config / "configuration.yaml").write_text("default_config:\n")
    media.mkdir()
    for index in range(3):
        (media / f"clip-{index}.mp4").write_bytes(os.urandom(3 * sources.CHUNK + index))
    path = tmp_path / "backup.tar"
    spec = BackupSpec(password=password, addons=(), folders=("media",))
    write_backup_from(path, spec, [("homeassistant", config), ("media", media)])
    with (tmp_path / "copy.tar").open("xb", buffering=0) as copy:
        reader = HashingReader(path, copy_to=copy)
        report = verify_archive(path, level=Level.FULL, keys=KeyRing([KEY]), opened=reader)
    assert report.verdict is Verdict.VALID, report.problems
    assert (tmp_path / "copy.tar").read_bytes() == path.read_bytes()
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reader.copied()


def test_a_cancelled_verification_says_its_copy_is_not_whole(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a verification cancelled half-way leaves a copy that ``copied`` does not
    call whole (the arrival then throws it away)."""

    class Stop(Exception):
        pass

    path = make_backup(password=KEY, entities=4000)
    seen: list[int] = []

    def cancel_half_way(count: int) -> None:
        seen.append(count)
        if sum(seen) > path.stat().st_size // 2:
            raise Stop()

    with (tmp_path / "copy.tar").open("xb", buffering=0) as copy:
        reader = HashingReader(path, copy_to=copy)
        with pytest.raises(Stop):
            verify_archive(path, keys=KeyRing([KEY]), on_bytes=cancel_half_way, opened=reader)
    assert not reader.copied()


def _read_pieces(rest: RangeReader, how: str, piece: int) -> bytes:
    """All of a range, read ``piece`` bytes at a time with ``read`` or ``readinto``."""
    parts = []
    if how == "read":
        while data := rest.read(piece):
            parts.append(data)
    else:
        buffer = memoryview(bytearray(piece))
        while count := rest.readinto(buffer):
            parts.append(bytes(buffer[:count]))
    return b"".join(parts)


@pytest.mark.parametrize("how", ["read", "readinto"])
@pytest.mark.parametrize(
    "altered",
    [None, 0, 2, 5],
    ids=["same-bytes", "first-chunk-changed", "chunk-2-changed", "last-chunk-changed"],
)
def test_a_range_read_in_odd_pieces_is_compared_chunk_by_chunk(
    tmp_path: Path, altered: int | None, how: str
) -> None:
    """An inner archive is read in pieces that straddle the 1 MiB chunks (v3 reads 1 MiB +
    17 bytes, into a buffer of its own): the checksum of each chunk the range covers is
    built across the pieces and compared with the other reader's, the first and last too,
    which the range covers only in part (it reads the rest of them for the checksum); the
    chunk whose bytes differ between the two reads is the one named, and equal bytes name
    none."""
    from nas_receiver.haformat.sources import CHUNK, HashingReader

    content = os.urandom(5 * CHUNK + 1234)
    path = tmp_path / "file"
    path.write_bytes(content)
    reader = HashingReader(path)  # not started: this test is the other reader itself
    try:
        start = 100  # inside chunk 0; the range ends inside chunk 5, with the file
        rest = reader.range(start, len(content), "inner", len(content) - start)
        assert _read_pieces(rest, how, (1 << 20) + 17) == content[start:]
        rest.close()
        for index in range(6):
            chunk = content[index * CHUNK : (index + 1) * CHUNK]
            if index == altered:
                chunk = chunk[:-1] + b"\x55" if chunk[-1] != 0x55 else chunk[:-1] + b"\x56"
            reader._compare(index, chunk)
        assert reader._mismatch == altered
        assert set(reader._sums) == set(range(6))  # every chunk the range touched
    finally:
        reader.close()


# -- a range ahead of the hash takes the hash's chunks (read once) --------------------------


def _gated_hash(monkeypatch: pytest.MonkeyPatch, until: threading.Event) -> None:
    """Hold every hash thread back until ``until`` is set (at most 10 s): ranges that ask
    meanwhile are ahead of it."""
    from nas_receiver.haformat.sources import HashingReader

    hash_file = HashingReader._hash

    def gated(self: HashingReader) -> None:
        until.wait(10)
        hash_file(self)

    monkeypatch.setattr(HashingReader, "_hash", gated)


def _priority() -> int:
    """The calling thread's nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _priority_with_room_below(steps: int) -> int:
    """The calling thread's nice value; skip the test where it cannot go ``steps`` lower."""
    caller = _priority()
    if caller > 19 - steps:
        pytest.skip(f"this process runs at nice {caller}: no lower priority to be seen")
    return caller


def _own_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the reads ranges make themselves (not handed by the hash), as made."""
    from nas_receiver.haformat.sources import HashingReader

    sizes: list[int] = []
    range_pread, range_preadinto = HashingReader._range_pread, HashingReader._range_preadinto
    monkeypatch.setattr(
        HashingReader,
        "_range_pread",
        lambda self, *args: sizes.append(args[1]) or range_pread(self, *args),
    )
    monkeypatch.setattr(
        HashingReader,
        "_range_preadinto",
        lambda self, *args: sizes.append(len(args[1])) or range_preadinto(self, *args),
    )
    return sizes


def _read_on_a_thread(read: Callable[[], bytes]) -> tuple[threading.Thread, list[bytes]]:
    out: list[bytes] = []
    thread = threading.Thread(target=lambda: out.append(read()), daemon=True)
    thread.start()
    return thread, out


@pytest.mark.parametrize("how", ["read", "readinto"])
def test_a_range_ahead_of_the_hash_is_handed_its_chunks_and_reads_none_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """A range the hash has not reached yet takes the chunks the hash reads: its bytes are
    the file's, it reads none itself, the chunks it takes whole are checksummed by no one
    (read once, nothing to compare), and the hash is of the whole file.  The hash starts
    only once the range has asked, and its feed holds the whole range, so that how the
    two threads happen to be scheduled changes nothing (a feed that fills up is the next
    test's)."""
    from nas_receiver.haformat import sources

    content = os.urandom(8 * sources.CHUNK + 1234)
    path = tmp_path / "file"
    path.write_bytes(content)
    monkeypatch.setattr(sources, "FEED_DEPTH", 16)
    go = threading.Event()
    _gated_hash(monkeypatch, go)
    own_reads = _own_reads(monkeypatch)
    with sources.HashingReader(path) as reader:
        start = 100  # mid-chunk: the first piece is the rest of chunk 0
        rest = reader.range(start, len(content), "inner", len(content) - start)
        thread, out = _read_on_a_thread(lambda: _read_pieces(rest, how, (1 << 20) + 17))
        _wait_until(lambda: bool(reader._feeds), "the range to ask the hash for its chunks")
        go.set()
        thread.join(10)
        rest.close()
        assert out == [content[start:]]
        assert own_reads == []
        assert reader.finish() == hashlib.sha256(content).hexdigest()
        whole = set(range(1, 8))  # chunk 0 is shared with what precedes the range
        assert not whole & set(reader._sums), "a chunk taken whole was checksummed"


def test_the_hash_never_waits_for_a_range_it_feeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range that takes its first piece from the hash and then stops reading does not
    hold the hash up: its feed is closed once it holds FEED_DEPTH pieces, the hash reads the
    whole file meanwhile, and the range, once it reads again, takes the pieces it holds and
    reads the rest itself, the file's bytes all the same."""
    from nas_receiver.haformat import sources

    content = os.urandom((sources.FEED_DEPTH + 4) * sources.CHUNK + 1234)
    path = tmp_path / "file"
    path.write_bytes(content)
    go, resume = threading.Event(), threading.Event()
    _gated_hash(monkeypatch, go)
    own_reads = _own_reads(monkeypatch)
    reader = sources.HashingReader(path)
    reader._window = 1 << 30  # larger than the file: the window is the next tests'
    with reader:
        rest = reader.range(0, len(content), "inner", len(content))

        def read_slowly() -> bytes:
            first = rest.read_some(1)
            resume.wait(10)
            return first + rest.read(len(content))

        thread, out = _read_on_a_thread(read_slowly)
        _wait_until(lambda: bool(reader._feeds), "the range to ask the hash for its chunks")
        go.set()
        _wait_until(lambda: reader._hashed == len(content), "the hash to read the whole file")
        resume.set()
        thread.join(10)
        rest.close()
        assert out == [content]
        # The feed took chunk 0 and the FEED_DEPTH after it, or FEED_DEPTH in all where the
        # hash handed chunk 1 before the range had taken chunk 0 out.
        fed = len(content) - sum(own_reads)
        assert fed in (sources.FEED_DEPTH * sources.CHUNK, (sources.FEED_DEPTH + 1) * sources.CHUNK)
        assert reader.finish() == hashlib.sha256(content).hexdigest()


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        assert time.monotonic() < deadline, f"waited 10 s for {what}"
        time.sleep(0.001)


@pytest.mark.parametrize("altered", [False, True], ids=["same-bytes", "changed-between"])
def test_a_range_fed_inside_a_chunk_has_what_it_read_itself_compared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, altered: bool
) -> None:
    """A range that read the start of a chunk itself (the hash had not started) and is fed
    the rest of it: the hash compares the part the range read with its own read of it, so
    bytes changed in between are caught there (and never where they were not)."""
    from nas_receiver.haformat import sources

    content = os.urandom(3 * sources.CHUNK)
    path = tmp_path / "file"
    path.write_bytes(content)
    go = threading.Event()
    _gated_hash(monkeypatch, go)
    reader = sources.HashingReader(path)
    try:
        rest = reader.range(100, len(content), "inner", len(content) - 100)
        first = rest.read_some(1000)  # the hash is not running: the range reads it itself
        assert first == content[100:1100]
        if altered:
            with path.open("r+b") as file:
                file.seek(500)
                file.write(b"\x55" * 100)
        reader.start()
        thread, out = _read_on_a_thread(lambda: rest.read(len(content)))
        go.set()
        thread.join(10)
        rest.close()
        assert out and len(out[0]) == len(content) - 1100
        assert reader._mismatch == (0 if altered else None)
    finally:
        go.set()
        reader.close()


def test_while_a_member_waits_for_a_place_no_range_waits_for_the_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range waiting for the hash holds its place; once a member waits for one, the range
    reads for itself and ends without the hash (held back here until the range is done)."""
    from nas_receiver.haformat import sources

    content = os.urandom(4 * sources.CHUNK)
    path = tmp_path / "file"
    path.write_bytes(content)
    go = threading.Event()
    _gated_hash(monkeypatch, go)
    with sources.HashingReader(path) as reader:
        start = 2 * sources.CHUNK + 100
        rest = reader.range(start, len(content), "inner", len(content) - start)
        thread, out = _read_on_a_thread(lambda: rest.read(len(content)))
        thread.join(0.3)
        assert thread.is_alive()  # it waits for the hash
        reader.member_waits(True)
        thread.join(5)  # the hash is held back for 10 s
        assert not thread.is_alive()
        assert out == [content[start:]]
        assert reader._hashed == 0  # the hash never moved
        reader.member_waits(False)
        rest.close()
        go.set()
        assert reader.finish() == hashlib.sha256(content).hexdigest()


def test_a_verify_whose_inner_archives_are_fed_is_valid_and_hashes_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end, with the hash held back until an inner archive asks for bytes: the inner
    archives take the hash's chunks (some whole, so read once), the verdict is valid and
    the hash is the file's."""
    from nas_receiver.haformat import sources
    from tests.builders import BackupSpec, write_backup_from

    config, media = tmp_path / "config", tmp_path / "media"
    config.mkdir()
    (config / "configuration.yaml").write_text("default_config:\n")
    media.mkdir()
    for index in range(3):
        (media / f"clip-{index}.mp4").write_bytes(os.urandom(3 * sources.CHUNK))
    path = tmp_path / "backup.tar"
    spec = BackupSpec(password=KEY, addons=(), folders=("media",))
    write_backup_from(path, spec, [("homeassistant", config), ("media", media)])
    asked = threading.Event()
    _gated_hash(monkeypatch, asked)
    subscribe, hand_out = sources.HashingReader._subscribe, sources.HashingReader._hand_out
    handed_whole: list[int] = []

    def asking(self: sources.HashingReader, *args: object) -> object:
        feed = subscribe(self, *args)  # type: ignore[arg-type]
        if feed is not None:
            asked.set()
        return feed

    def counting(self: sources.HashingReader, index: int, data: bytes) -> bool:
        whole = hand_out(self, index, data)
        if whole:
            handed_whole.append(index)
        return whole

    monkeypatch.setattr(sources.HashingReader, "_subscribe", asking)
    monkeypatch.setattr(sources.HashingReader, "_hand_out", counting)
    report = verify_archive(path, level=Level.FULL, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID, report.problems
    assert report.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert handed_whole


def test_a_range_far_ahead_of_the_hash_reads_for_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range more than FEED_DEPTH chunks ahead of the hash does not wait for it (a slow
    member after a big fast one would sit idle until the hash had read the fast one): it
    reads for itself at once, with the hash still held back."""
    from nas_receiver.haformat import sources

    content = os.urandom((sources.FEED_DEPTH + 4) * sources.CHUNK)
    path = tmp_path / "file"
    path.write_bytes(content)
    go = threading.Event()
    _gated_hash(monkeypatch, go)
    with sources.HashingReader(path) as reader:
        start = (sources.FEED_DEPTH + 1) * sources.CHUNK + 100
        rest = reader.range(start, len(content), "inner", len(content) - start)
        thread, out = _read_on_a_thread(lambda: rest.read(len(content)))
        thread.join(5)  # the hash is held back for 10 s
        assert not thread.is_alive()
        assert out == [content[start:]]
        assert reader._hashed == 0
        rest.close()
        go.set()
        assert reader.finish() == hashlib.sha256(content).hexdigest()


# -- the hash keeps within a window of the slowest reader, yielding the CPU ----------------


def _wait_for_the_hash_to_wait(reader: HashingReader, past: int = 0) -> None:
    """Until the hash has read more than ``past`` bytes and waits for a reader."""
    _wait_until(
        lambda: reader._hashed > past and reader._hash_waits, "the hash to wait for a reader"
    )


def test_the_hash_waits_for_the_walk_a_window_behind_it(tmp_path: Path) -> None:
    """With the walk at the start, the hash stops a window ahead of it (its bytes would
    leave the page cache before the walk got there); once the walk moves on, it goes on,
    and the hash is of the whole file."""
    from nas_receiver.haformat.sources import CHUNK, HashingReader

    content = os.urandom(12 * CHUNK)
    path = tmp_path / "file"
    path.write_bytes(content)
    reader = HashingReader(path)
    reader._window = 2 * CHUNK
    with reader:
        _wait_for_the_hash_to_wait(reader)
        assert reader._hashed <= 3 * CHUNK  # the window and the chunk that passed it
        assert reader.read(100) == content[:100]
        assert reader.skip(8 * CHUNK) == 8 * CHUNK
        _wait_for_the_hash_to_wait(reader, past=8 * CHUNK)
        assert reader._hashed <= 11 * CHUNK
        assert reader.finish() == hashlib.sha256(content).hexdigest()


def test_the_hash_waits_for_a_range_behind_it_until_it_passes_its_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A range the hash is ahead of holds it a window ahead of where the range is, and the
    hash goes on as soon as the range moves (woken: it would not look again by itself for
    30 s here), also where the range takes a chunk the hash had handed it; a range whose end
    the hash has passed holds it back no more (its bytes are all read)."""
    from nas_receiver.haformat import sources
    from nas_receiver.haformat.sources import CHUNK, HashingReader

    monkeypatch.setattr(sources, "RECHECK", 30)
    content = os.urandom(12 * CHUNK)
    path = tmp_path / "file"
    path.write_bytes(content)
    go = threading.Event()
    _gated_hash(monkeypatch, go)  # until the range has asked for the hash's chunks
    reader = HashingReader(path)
    reader._window = 2 * CHUNK
    with reader:
        rest = reader.range(0, 4 * CHUNK, "inner", 4 * CHUNK)
        thread, out = _read_on_a_thread(lambda: rest.read(CHUNK))
        _wait_until(lambda: bool(reader._feeds), "the range to ask the hash for its chunks")
        go.set()
        thread.join(10)
        assert out == [content[:CHUNK]]  # handed by the hash, and then chunks 1 and 2
        reader.skip(len(content))  # the walk is past everything: the range holds the hash
        _wait_for_the_hash_to_wait(reader)
        assert reader._hashed == 3 * CHUNK  # the range's place (0), the window and a chunk
        assert rest.read(CHUNK) == content[CHUNK : 2 * CHUNK]  # its place is 1 MiB now
        _wait_until(lambda: reader._hashed == len(content), "the hash to pass the range's end")
        assert rest.read(2 * CHUNK) == content[2 * CHUNK : 4 * CHUNK]  # still open until here
        rest.close()
        assert reader.finish() == hashlib.sha256(content).hexdigest()


def test_the_window_is_a_quarter_of_the_memory_available(tmp_path: Path) -> None:
    """A quarter of /proc/meminfo's MemAvailable, shared by the readers open at once,
    between 64 MiB and 1 GiB; 256 MiB where the file cannot be read or makes no sense."""
    from nas_receiver.haformat.sources import page_cache_window

    def window(text: str | None, sharing: int = 1) -> int:
        meminfo = tmp_path / "meminfo"
        meminfo.unlink(missing_ok=True)
        if text is not None:
            meminfo.write_text(text)
        return page_cache_window(sharing=sharing, meminfo=str(meminfo))

    mib = 1 << 20
    assert window("MemTotal: 2000000 kB\nMemAvailable:    1048576 kB\n") == 256 * mib
    assert window("MemAvailable: 3145728 kB\n") == 768 * mib
    assert window("MemAvailable: 3145728 kB\n", sharing=2) == 384 * mib
    assert window("MemAvailable: 16777216 kB\n") == 1024 * mib
    assert window("MemAvailable: 131072 kB\n") == 64 * mib
    assert window("MemAvailable: 3145728 kB\n", sharing=100) == 64 * mib
    assert window(None) == 256 * mib
    assert window("MemFree: 1048576 kB\n") == 256 * mib
    assert window("MemAvailable: lots\n") == 256 * mib
    assert window("MemAvailable: 4 GB\n") == 256 * mib


def test_readers_open_at_once_share_the_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each HashingReader takes its window when it opens, shared with those still open."""
    from nas_receiver.haformat import sources

    asked: list[int] = []
    monkeypatch.setattr(
        sources, "page_cache_window", lambda *, sharing: asked.append(sharing) or sharing
    )
    path = tmp_path / "file"
    path.write_bytes(b"x")
    first, second = sources.HashingReader(path), sources.HashingReader(path)
    assert (first._window, second._window) == (1, 2)
    second.close()
    second.close()  # counted once
    third = sources.HashingReader(path)
    first.close()
    third.close()
    fourth = sources.HashingReader(path)
    fourth.close()
    assert asked == [1, 2, 2, 1]


def test_a_hash_thread_that_fails_to_start_gives_no_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever stops the hash thread, from its first line on, is raised by ``finish``: a
    hash of part of the file (here of none of it) is never returned."""
    from nas_receiver.haformat import sources

    def refuse(steps: int) -> None:
        raise RuntimeError("no priority for you")

    monkeypatch.setattr(sources, "lower_thread_priority", refuse)
    path = tmp_path / "file"
    path.write_bytes(bytes(3 << 20))
    with sources.HashingReader(path) as reader:
        reader.skip(3 << 20)
        with pytest.raises(RuntimeError, match="priority"):
            reader.finish()


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives a thread a nice value")
def test_the_hash_runs_below_the_verifiers_priority(tmp_path: Path) -> None:
    """The hash thread runs HASH_NICE lower than the thread that started it, which keeps
    its own."""
    from nas_receiver.haformat import sources

    caller = _priority_with_room_below(sources.HASH_NICE)
    size = 3 * sources.CHUNK
    path = tmp_path / "file"
    path.write_bytes(bytes(size))
    seen: list[int] = []
    slowest = sources.HashingReader._slowest

    def noting(self: sources.HashingReader) -> int:
        seen.append(_priority())
        return slowest(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources.HashingReader, "_slowest", noting)
        with sources.HashingReader(path) as reader:
            reader.skip(size)
            assert reader.finish() == hashlib.sha256(bytes(size)).hexdigest()
    assert seen and set(seen) == {caller + sources.HASH_NICE}
    assert _priority() == caller


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux gives a thread a nice value")
def test_an_inner_archive_checked_beside_an_earlier_one_yields_the_cpu_to_it(
    tmp_path: Path,
) -> None:
    """The first inner archive's check runs at the caller's priority; one that starts while
    the first is still checked runs BEHIND_NICE lower, and so do the threads it starts (its
    decryption); one that starts once both ended runs at the caller's again, and the
    caller's own priority never changes."""
    from nas_receiver.haformat import sources, verify

    caller = _priority_with_room_below(verify.BEHIND_NICE)
    path = tmp_path / "file"
    path.write_bytes(bytes(3 * sources.CHUNK))
    seen: dict[str, int] = {}
    first_may_end = threading.Event()

    def first() -> None:
        seen["first"] = _priority()
        first_may_end.wait(10)

    def second() -> None:
        seen["second"] = _priority()
        child = threading.Thread(target=lambda: seen.update(started_by_second=_priority()))
        child.start()
        child.join()
        first_may_end.set()

    def third() -> None:
        seen["third"] = _priority()

    checker = verify._Checker(path, Level.FULL, KeyRing(), None)
    with sources.HashingReader(path) as reader:
        checker.reader = reader
        for index, check in enumerate([first, second]):
            start = index * sources.CHUNK
            checker._start_inner(check, reader.range(start, start + 100, "inner", 100))
        checker._wait_for_inner(None)
        checker._start_inner(third, reader.range(2 * sources.CHUNK, 3 * sources.CHUNK, "c", 1))
        checker._wait_for_inner(None)
    behind = caller + verify.BEHIND_NICE
    assert seen == {
        "first": caller,
        "second": behind,
        "started_by_second": behind,
        "third": caller,
    }
    assert _priority() == caller
