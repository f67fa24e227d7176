"""A small disk filling up and growing again, and a job that keeps failing: the daemon waits,
says why, and goes on by itself.  Each test says what it asserts."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from nas_receiver import library, pipeline
from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.haformat import KeyRing, Verdict, verify_archive
from nas_receiver.haformat.sources import HashingReader
from nas_receiver.library import ROOM_MARGIN
from nas_receiver.report import list_archives
from tests.builders import KEY, write_key
from tests.conftest import corpus_file, missing
from tests.daemon_helpers import (
    archives_in,
    cli,
    cli_command,
    partials_in,
    wait_for,
    write_config,
)

MakeBackup = Callable[..., Path]
TMPFS_MIB = 96


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of TMPFS_MIB MiB (mounting needs root: CI runs as root)."""
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        missing("a tmpfs needs root and mount(8)")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        missing(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _site(tmp_path: Path, library: Path) -> Path:
    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path / "site", settle=0, reconcile="1s", keys=(key,))
    text = config_path.read_text().replace(
        f"library: {{path: {tmp_path / 'site' / 'library'}}}", f"library: {{path: {library}}}"
    )
    config_path.write_text(text)
    return config_path


def _status(config_path: Path) -> dict[str, object]:
    result = cli(config_path, "status", "--json")
    status: dict[str, object] = json.loads(result.stdout)
    status["exit"] = result.returncode
    return status


def test_a_full_disk_is_waited_for_and_the_work_resumes_by_itself(
    make_backup: MakeBackup, tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: with the library's disk nearly full, the arrival waits ("waiting for N
    bytes free in PATH"), status is unhealthy and says so, one alert is recorded, the disk
    is never filled, nothing partial is left; once room appears the archive is kept without
    a restart."""
    library = small_disk / "library"
    config_path = _site(tmp_path, library)
    filler = small_disk / "filler"
    with filler.open("wb") as file:  # leave less than the margin a copy needs
        file.truncate(0)
        file.write(b"\0" * ((TMPFS_MIB << 20) - ROOM_MARGIN))
    daemon = subprocess.Popen(
        cli_command(config_path, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        shutil.copyfile(make_backup(password=KEY), tmp_path / "site" / "share" / "a.tar")

        def waiting() -> bool:
            problems = json.dumps(_status(config_path))
            return "waiting for" in problems and str(library) in problems

        wait_for(waiting, 60, "the job to wait for room")
        status = _status(config_path)
        assert status["exit"] == 3 and status["healthy"] is False
        assert shutil.disk_usage(small_disk).free > 0
        assert not [p for p in small_disk.rglob("*") if ".partial-" in p.name]
        filler.unlink()  # room appears
        wait_for(lambda: list(library.rglob("*.tar")), 60, "the archive to be kept")
        wait_for(lambda: _status(config_path)["healthy"] is True, 30, "status to be healthy")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    with sqlite3.connect(tmp_path / "site" / "data" / "catalog.sqlite3") as db:
        alerts = db.execute("SELECT COUNT(*) FROM events WHERE kind = 'space'").fetchone()[0]
    assert alerts == 1


def test_a_job_that_keeps_failing_is_retried_and_shown_never_stops_the_daemon(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: when the library cannot be written (a file stands where its folder goes),
    the daemon keeps running, verifies other sources' work, status names the failing file
    and its reason; once the obstacle is gone the archive is kept on a later try."""
    config_path = write_config(tmp_path / "site", settle=0, reconcile="1s")
    library = tmp_path / "site" / "library"
    library.mkdir(parents=True)
    (library / "home").write_text("not a folder")  # where the source's library folder goes
    daemon = subprocess.Popen(
        cli_command(config_path, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        shutil.copyfile(make_backup(), tmp_path / "site" / "share" / "a.tar")

        def failing() -> bool:
            pending = _status(config_path)["sources"][0]["pending"]  # type: ignore[index]
            return any(p["state"] == "failed" and p.get("error") for p in pending)

        wait_for(failing, 60, "the job to be recorded as failed")
        assert daemon.poll() is None  # still running
        (library / "home").unlink()
        with sqlite3.connect(tmp_path / "site" / "data" / "catalog.sqlite3") as db:
            (next_try,) = db.execute("SELECT next_try FROM sightings").fetchone()
            assert next_try > time.time() + 30  # backoff: the first retry is a minute later
            db.execute("UPDATE sightings SET next_try = 0")  # as if that minute had passed
        wait_for(lambda: list(library.rglob("*.tar")), 60, "a retry to keep the archive")
    finally:
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(60) == 0


def test_a_copy_that_runs_out_of_room_raises_and_leaves_no_thread(
    tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: a library copy (its SHA-256 made on a second thread) that fills the disk
    half-way raises ENOSPC at once, and its hashing thread has ended."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom((TMPFS_MIB + 8) << 20))
    before = {thread.ident for thread in threading.enumerate()}
    with pytest.raises(OSError, match="No space left") as raised:
        library._stream_copy(source, small_disk / "copy.bin")
    assert raised.value.errno == errno.ENOSPC
    left = [t.name for t in threading.enumerate() if t.ident not in before and t.is_alive()]
    assert left == []


def test_an_error_of_the_hashing_thread_is_raised_by_the_copy_never_a_hang() -> None:
    """Asserts: where the hash itself fails (a piece it cannot take), the next hand-over
    or the digest raises on the copying thread, and the thread is gone."""
    hasher = library._BackgroundHash()
    hasher.feed("not bytes")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="hashing thread") as raised:
        _feed_and_digest(hasher, 10)
    assert isinstance(raised.value.__cause__, TypeError)
    hasher.close()
    assert not any(t.name == "sha256" and t.is_alive() for t in threading.enumerate())


def _feed_and_digest(hasher: library._BackgroundHash, pieces: int) -> str:
    for _ in range(pieces):
        hasher.feed(b"x")
    return hasher.hexdigest()


def test_a_disk_that_fills_during_a_copy_written_while_verifying_changes_no_verdict(
    make_backup: MakeBackup, small_disk: Path
) -> None:
    """Asserts: where the disk fills while the verifier's copy is written (ENOSPC), the copy
    ends and says why, and the verification goes on to the same verdict and SHA-256."""
    backup = make_backup(password=KEY, entities=400)
    filler = small_disk / "filler"
    with filler.open("wb") as file:  # leave less room than the backup takes
        file.write(b"\0" * ((TMPFS_MIB << 20) - backup.stat().st_size // 2))
    with (small_disk / "copy.tar").open("xb", buffering=0) as copy:
        reader = HashingReader(backup, copy_to=copy)
        report = verify_archive(backup, keys=KeyRing([KEY]), opened=reader)
    assert report.verdict is Verdict.VALID, report.problems
    assert report.sha256 == hashlib.sha256(backup.read_bytes()).hexdigest()
    assert not reader.copied()
    assert reader.copy_error is not None and reader.copy_error.errno == errno.ENOSPC


def test_a_copy_written_while_verifying_on_another_disk_is_copied_again(
    tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: where the quarantine is on another filesystem than the library (where the
    copy written while verifying lies), the quarantined copy is copied again, holds the
    share's bytes, and no temporary file is left on either disk."""
    config = load_config(_site(tmp_path, small_disk / "library"))
    arrived = config.sources[0].path / "broken.tar"
    shutil.copyfile(corpus_file("habackuptool_test_protected_v1.tar"), arrived)
    assert scan_once(config) == ["corrupt"]
    (kept,) = archives_in(config.quarantine.path)
    assert kept.read_bytes() == arrived.read_bytes()
    (row,) = list_archives(Catalog(config.catalog_path))
    assert [(c["location"], c["method"]) for c in row["copies"]] == [("quarantine", "copy")]
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_copies_written_at_once_never_count_the_same_room_twice(
    tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: where two arrivals are verified at once and the disk has room for one copy
    (and the margin), the second is not written while verifying (it is made after its
    verdict, where the room is then checked again); once the first is kept or removed, its
    room counts as the disk says again."""
    source = tmp_path / "archive.tar"
    size = (TMPFS_MIB << 20) - ROOM_MARGIN - (8 << 20)  # one fits, two do not
    source.write_bytes(b"\0" * 16)  # what is in it does not matter here
    folder = small_disk / "library" / "home"
    with source.open("rb") as opened:
        first = library.open_copy(folder, opened.fileno(), size)
        assert first is not None
        assert library.open_copy(folder, opened.fileno(), size) is None
        first.discard()
        again = library.open_copy(folder, opened.fileno(), size)
        assert again is not None
        again.discard()
    assert partials_in(small_disk) == []


def test_a_copy_that_failed_while_verifying_is_removed_before_the_verdict_is_kept(
    make_backup: MakeBackup, small_disk: Path
) -> None:
    """Asserts: where the disk filled while the copy was written, the partial copy is gone
    and its room set free as soon as the verification ends, before the archive is kept
    (which checks for room for a copy of its own, and would count the partial's)."""
    backup = make_backup(password=KEY, entities=400)
    folder = small_disk / "library" / "home"
    with backup.open("rb") as opened:
        copy = library.open_copy(folder, opened.fileno(), backup.stat().st_size)
    assert copy is not None
    with (small_disk / "filler").open("wb") as file:  # another writer fills the disk
        file.write(b"\0" * ((TMPFS_MIB << 20) - backup.stat().st_size // 2))
    reader = HashingReader(backup, copy_to=copy.file)
    report = verify_archive(backup, keys=KeyRing([KEY]), opened=reader)
    assert report.verdict is Verdict.VALID and not reader.copied()
    assert pipeline._finish_copy(copy, reader, report) is None
    assert not copy.path.exists() and partials_in(small_disk) == []
    (small_disk / "filler").unlink()
    free = shutil.disk_usage(small_disk).free  # the room set aside for it is free again:
    most = free - ROOM_MARGIN - backup.stat().st_size // 2  # this fits only without it
    with backup.open("rb") as opened:
        whole = library.open_copy(folder, opened.fileno(), most)
    assert whole is not None
    whole.discard()


def test_a_copy_after_a_verdict_leaves_the_room_a_copy_in_progress_still_needs(
    make_backup: MakeBackup, tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: while a copy is being written during a verification, an arrival whose copy
    would fit only in the room that copy still needs waits instead (the disk is never
    filled past its margin by the two together), says so, and is tried again a while
    later, not at once; once the copy in progress is gone, the arrival is kept."""
    config = load_config(_site(tmp_path, small_disk / "library"))
    folder = small_disk / "library" / "home"
    with (tmp_path / "big.tar").open("wb+") as other:  # an archive being verified meanwhile
        in_progress = library.open_copy(folder, other.fileno(), 10 << 20)
    assert in_progress is not None
    backup = make_backup(password=KEY)
    shutil.copyfile(backup, config.sources[0].path / "a.tar")
    room = (10 << 20) + ROOM_MARGIN + backup.stat().st_size // 2  # enough for one, not both
    with (small_disk / "filler").open("wb") as file:
        file.write(b"\0" * (shutil.disk_usage(small_disk).free - room))
    now = time.time()
    assert scan_once(config, clock=lambda: now) == []
    catalog = Catalog(config.catalog_path)
    (sighting,) = catalog.sightings()
    assert sighting.state == "failed" and "set aside for copies being written" in (
        sighting.error or ""
    )
    assert sighting.next_try is not None and sighting.next_try >= now + 30
    assert archives_in(config.library.path) == []
    in_progress.discard()
    assert scan_once(config, clock=lambda: now + 120) == ["valid"]
    assert len(archives_in(config.library.path)) == 1


def test_a_browse_copy_without_room_while_verifying_waits_and_is_made_later(
    tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: where the library's disk has room for the archive's copy but not for its HA
    part unpacked beside it (and the margin), the unpacking while verifying stops before
    writing the file and its folder is removed; the job then waits for room ("waiting
    for"), leaving no partial file nor any unpacked file; once room appears, the browse
    copy is unpacked after the verdict, whole, without a restart."""
    from tests.builders import BackupSpec, write_backup_from

    library = small_disk / "library"
    config_path = _site(tmp_path, library)
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}", f"library: {{path: {library}, browse: true}}"
        )
    )
    config = tmp_path / "ha"
    config.mkdir()
    (config / "configuration.yaml").write_text("default_config:\n")
    (config / "camera.mp4").write_bytes(os.urandom(12 << 20))
    backup = tmp_path / "a.tar"
    spec = BackupSpec(password=KEY, addons=(), folders=())
    write_backup_from(backup, spec, [("homeassistant", config)])
    filler = small_disk / "filler"
    with filler.open("wb") as file:  # room for the copy and the margin, not for both
        file.write(b"\0" * ((TMPFS_MIB << 20) - (80 << 20)))
    daemon = subprocess.Popen(
        cli_command(config_path, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        shutil.copyfile(backup, tmp_path / "site" / "share" / "a.tar")

        def waiting() -> bool:
            problems = json.dumps(_status(config_path))
            return "waiting for" in problems and str(library) in problems

        wait_for(waiting, 60, "the job to wait for room")
        assert list(library.rglob("*.tar"))  # the archive itself is kept
        assert not [p for p in small_disk.rglob("*") if ".partial-" in p.name]
        assert not list(library.rglob("camera.mp4"))
        filler.unlink()  # room appears
        wait_for(lambda: list(library.rglob("camera.mp4")), 90, "the browse copy")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    (unpacked,) = library.rglob("camera.mp4")
    assert unpacked.read_bytes() == (config / "camera.mp4").read_bytes()
    assert not [p for p in small_disk.rglob("*") if ".partial-" in p.name]


def test_the_unpacking_while_verifying_leaves_the_decrypted_copy_its_room(
    tmp_path: Path, small_disk: Path
) -> None:
    """Asserts: on a library disk with room for the archive, its decrypted copy and the
    margin, but not for its browse copy as well, the HA part is not unpacked while
    verifying into the room the decrypted copy will need: the decrypted copy is made, and
    the job waits for the room of the browse copy in the library folder (the one alert
    says so; never "waiting ... in decrypted/"), without a partial file."""
    from tests.builders import BackupSpec, write_backup_from

    library = small_disk / "library"
    config_path = _site(tmp_path, library)
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}",
            f"library: {{path: {library}, store: both, browse: true}}",
        )
    )
    ha = tmp_path / "ha"
    ha.mkdir()
    (ha / "configuration.yaml").write_text("default_config:\n")
    (ha / "camera.mp4").write_bytes(os.urandom(12 << 20))
    spec = BackupSpec(password=KEY, addons=(), folders=())
    write_backup_from(tmp_path / "site" / "share" / "a.tar", spec, [("homeassistant", ha)])
    with (small_disk / "filler").open("wb") as file:  # 92 MiB free: copy, decrypted, margin
        file.write(b"\0" * ((TMPFS_MIB - 92) << 20))
    config = load_config(config_path)
    assert scan_once(config) == []  # the job waits
    (row,) = list_archives(Catalog(config.catalog_path))
    assert sorted(c["location"] for c in row["copies"]) == ["library", "library-decrypted"]
    with sqlite3.connect(config.catalog_path) as db:
        events = db.execute("SELECT message FROM events WHERE kind = 'space'").fetchall()
    assert len(events) == 1 and f"free in {library / 'home'}," in events[0][0] + ",", events
    assert "decrypted" not in events[0][0]
    assert not [p for p in small_disk.rglob("*") if ".partial-" in p.name]
    assert not list(library.rglob("camera.mp4"))
