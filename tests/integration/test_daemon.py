"""The daemon with real watchdog on temporary folders and writers that behave like HA's."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from securetar import SecureTarArchive, atomic_contents_add

from nas_receiver.catalog import Catalog
from nas_receiver.config import Config
from nas_receiver.daemon import Daemon
from nas_receiver.report import list_archives
from tests.builders import KEY, BackupSpec, make_ha_config
from tests.daemon_helpers import archives_in, config_at, partials_in, sha256, wait_for

MakeBackup = Callable[..., Path]


@pytest.fixture
def running() -> Iterator[Callable[[Config], Daemon]]:
    """Start daemons in threads; stop them (warm) after the test."""
    started: list[tuple[Daemon, threading.Thread]] = []

    def start(config: Config) -> Daemon:
        daemon = Daemon(config)
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        started.append((daemon, thread))
        wait_for(config.catalog_path.exists, 10, "catalog")
        return daemon

    yield start
    for daemon, thread in started:
        daemon.request_stop()
        thread.join(30)
        assert not thread.is_alive()


def _library(config: Config) -> list[Path]:
    return archives_in(config.library.path)


def test_slow_writer_is_never_taken_half_written(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=1.5)
    running(config)
    data = make_backup().read_bytes()
    target = config.sources[0].path / "slow.tar"
    with target.open("wb") as file:
        for offset in range(0, len(data), len(data) // 6 + 1):
            file.write(data[offset : offset + len(data) // 6 + 1])
            file.flush()
            time.sleep(0.4)  # longer than event latency, shorter than settle
    wait_for(lambda: _library(config), 20, "library copy")
    assert archives_in(config.quarantine.path) == []
    (sighting,) = Catalog(config.catalog_path).sightings()
    assert sighting.attempts == 1  # verified once: never while it was being written


def test_ha_writer_pattern_size_zero_header_then_backup_json_last(
    tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    """securetar writes each inner archive behind a size-0 header patched afterwards, and
    the supervisor writes backup.json last; we write into the watched folder directly and
    pause inside an inner archive for longer than settle: the daemon sees an incomplete
    file, waits, and takes it once finished."""
    config = config_at(tmp_path, settle=0.3)
    running(config)
    content = make_ha_config(tmp_path / "ha")
    target = config.sources[0].path / "Automatic_backup.tar"
    spec = BackupSpec(password=KEY, addons=(), folders=())
    paused = []

    def slow_filter(_path: object) -> bool:
        if not paused:
            paused.append(True)
            time.sleep(1.5)  # a stall mid-write, longer than settle
        return False

    with SecureTarArchive(target, "w", password=KEY, create_version=3) as archive:
        with archive.create_tar("homeassistant.tar.gz") as tar:
            atomic_contents_add(tar, content, file_filter=slow_filter, arcname=".")
        data = json.dumps(spec.backup_json()).encode()
        import io
        import tarfile

        info = tarfile.TarInfo("./backup.json")
        info.size = len(data)
        archive.tar.addfile(info, io.BytesIO(data))
    wait_for(lambda: _library(config), 20, "library copy after the writer finished")
    assert archives_in(config.quarantine.path) == []


def test_rename_into_place_and_tmp_folders_ignored(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=0.3)
    running(config)
    upload = config.sources[0].path / "tmpab12cd34"
    upload.mkdir()
    shutil.copyfile(make_backup(), upload / "upload.tar")
    time.sleep(1.5)
    assert Catalog(config.catalog_path).sightings() == []  # tmp* folders are HA's own
    (upload / "upload.tar").rename(config.sources[0].path / "final.tar")
    wait_for(lambda: _library(config), 20, "library copy")


def test_dsm_agent_tar_then_sidecar(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=0.3)
    folder = config.sources[0].path / "ha_backup"
    folder.mkdir()
    earlier = make_backup(slug="00000001")
    shutil.copyfile(earlier, folder / "earlier.tar")
    (folder / "earlier_meta.json").write_text("{}")
    running(config)
    wait_for(lambda: len(_library(config)) == 1, 20, "the earlier pair")
    shutil.copyfile(make_backup(slug="00000002"), folder / "new.tar")
    time.sleep(2)
    assert len(_library(config)) == 1  # the upload is not finished until its sidecar
    (folder / "new_meta.json").write_text("{}")
    wait_for(lambda: len(_library(config)) == 2, 20, "the new pair")


def test_abandoned_partial_is_quarantined_after_give_up(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=0.2, give_up="2s")
    running(config)
    (config.sources[0].path / "cut.tar").write_bytes(make_backup().read_bytes()[:40000])
    wait_for(lambda: archives_in(config.quarantine.path), 20, "quarantine")
    (kept,) = archives_in(config.quarantine.path)
    assert json.loads(kept.with_name(kept.name + ".reason.json").read_text())["verdict"] == (
        "incomplete"
    )


def test_burst_replaced_and_deleted(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=0.3)
    running(config)
    share = config.sources[0].path
    backups = [make_backup(slug=f"{i:08x}", entities=5) for i in range(12)]
    for index, backup in enumerate(backups):
        shutil.copyfile(backup, share / f"b{index}.tar")
    wait_for(lambda: len(_library(config)) == 12, 60, "12 library copies")
    # the same name, other bytes (HA re-wrote it): a second archive
    shutil.copyfile(make_backup(slug="feedbeef"), share / "b0.tar")
    wait_for(lambda: len(_library(config)) == 13, 20, "the replaced file")
    for index in range(12):  # HA's own retention deletes from the share
        (share / f"b{index}.tar").unlink()
    catalog = Catalog(config.catalog_path)
    wait_for(lambda: all(s.state == "gone" for s in catalog.sightings()), 20, "deletions")
    assert len(_library(config)) == 13
    rows = list_archives(catalog)
    assert sorted(r["sha256"] for r in rows) == sorted(sha256(p) for p in _library(config))
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_poll_mode_finds_files_without_events(
    make_backup: MakeBackup, tmp_path: Path, running: Callable[[Config], Daemon]
) -> None:
    config = config_at(tmp_path, settle=0.3, watch="poll", reconcile="1s")
    running(config)
    shutil.copyfile(make_backup(), config.sources[0].path / "polled.tar")
    wait_for(lambda: _library(config), 20, "library copy")
