"""One archive's way: verify, then library or quarantine, exactly once, checked."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from nas_receiver import pipeline
from nas_receiver.catalog import Catalog, SightingState
from nas_receiver.config import Config, load_config
from nas_receiver.daemon import scan_once
from nas_receiver.intake.sightings import Intake, due_sightings
from nas_receiver.library import open_copy
from nas_receiver.pipeline import Pipeline
from nas_receiver.report import list_archives
from tests.builders import AGENT_BACKUP_KEYS, KEY, write_key
from tests.conftest import corpus_file
from tests.daemon_helpers import (
    archives_in,
    config_at,
    partials_in,
    reflinks,
    sha256,
    write_config,
)

MakeBackup = Callable[..., Path]


def test_valid_goes_to_library_with_ha_sidecar(make_backup: MakeBackup, tmp_path: Path) -> None:
    key = write_key(tmp_path / "key.txt", KEY)
    config = config_at(tmp_path, settle=0, keys=(key,))
    original = make_backup(password=KEY)
    arrived = config.sources[0].path / "Automatic_backup.tar"
    shutil.copyfile(original, arrived)
    before = arrived.read_bytes()
    assert scan_once(config) == ["valid"]
    (placed,) = archives_in(config.library.path)
    assert placed.parent == config.library.path / "home"
    assert placed.name == "Automatic_backup_2026.11.1_2026-11-20_04.45_00000000.tar"
    assert sha256(placed) == sha256(arrived)
    sidecar = json.loads(placed.with_name(placed.stem + "_meta.json").read_text())
    assert set(sidecar) == AGENT_BACKUP_KEYS
    assert sidecar["size"] == placed.stat().st_size and sidecar["protected"] is True
    assert arrived.read_bytes() == before  # the share is never modified
    (row,) = list_archives(Catalog(config.catalog_path))
    assert row["verdict"] == "valid"
    assert [c["location"] for c in row["copies"]] == ["library"]


def test_corrupt_goes_to_quarantine_with_reason(tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)
    arrived = config.sources[0].path / "broken.tar"
    shutil.copyfile(corpus_file("habackuptool_test_protected_v1.tar"), arrived)
    assert scan_once(config) == ["corrupt"]
    assert archives_in(config.library.path) == []
    (kept,) = archives_in(config.quarantine.path)
    reason = json.loads(kept.with_name(kept.name + ".reason.json").read_text())
    assert reason["verdict"] == "corrupt" and reason["sha256"] == sha256(arrived)
    assert any("missing from the archive" in p for p in reason["problems"])
    assert arrived.exists()  # never moved or deleted


def test_locked_archive_is_kept_unverified(tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)  # no key configured
    shutil.copyfile(
        corpus_file("supervisor_backup_example_sec_v3.tar"), config.sources[0].path / "locked.tar"
    )
    assert scan_once(config) == ["key_required"]
    (row,) = list_archives(Catalog(config.catalog_path))
    (copy,) = row["copies"]
    assert copy["location"] == "library" and copy["verified"] is False


def test_same_bytes_twice_is_one_archive(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)
    backup = make_backup()
    for name in ("a.tar", "copy-of-a.tar"):
        shutil.copyfile(backup, config.sources[0].path / name)
    assert scan_once(config) == ["valid", "valid"]
    assert len(archives_in(config.library.path)) == 1
    catalog = Catalog(config.catalog_path)
    assert len(list_archives(catalog)) == 1
    assert {s.sha256 for s in catalog.sightings()} == {sha256(backup)}


def test_incomplete_waits_then_is_given_up(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0, give_up="1h")
    partial = config.sources[0].path / "partial.tar"
    partial.write_bytes(make_backup().read_bytes()[:30000])
    assert scan_once(config) == ["incomplete"]
    assert archives_in(config.quarantine.path) == []
    catalog = Catalog(config.catalog_path)
    assert [s.state for s in catalog.sightings()] == [SightingState.INCOMPLETE]
    assert scan_once(config) == []  # unchanged and not yet given up: nothing to do
    later = config_at(tmp_path, settle=0, give_up="1s")
    assert scan_once(later, clock=lambda: 4e9) == ["incomplete"]
    assert len(archives_in(later.quarantine.path)) == 1


def test_incomplete_then_finished_is_valid(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)
    data = make_backup().read_bytes()
    path = config.sources[0].path / "growing.tar"
    path.write_bytes(data[:50000])
    assert scan_once(config) == ["incomplete"]
    path.write_bytes(data)
    assert scan_once(config) == ["valid"]
    assert len(archives_in(config.library.path)) == 1
    assert archives_in(config.quarantine.path) == []


def test_deleted_share_file_is_recorded_not_fatal(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)
    path = config.sources[0].path / "a.tar"
    shutil.copyfile(make_backup(), path)
    assert scan_once(config) == ["valid"]
    path.unlink()
    assert scan_once(config) == []
    catalog = Catalog(config.catalog_path)
    assert [s.state for s in catalog.sightings()] == [SightingState.GONE]
    assert len(archives_in(config.library.path)) == 1  # our copy stays
    assert any(e["kind"] == "deleted" for e in catalog.events())


def test_recover_cleans_what_a_kill_left(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = config_at(tmp_path, settle=0)
    path = config.sources[0].path / "a.tar"
    shutil.copyfile(make_backup(), path)
    catalog = Catalog(config.catalog_path)
    intake = Intake(catalog)
    intake.reconcile(config.sources[0])
    ((sighting_id, _),) = due_sightings(config, catalog, 4e9)
    sighting = catalog.sighting(sighting_id)
    assert sighting is not None
    assert catalog.take(sighting.id, sighting.size, sighting.mtime_ns)  # then "killed"
    folder = config.library.path / "home"
    folder.mkdir(parents=True)
    stray = folder / ".x.tar.partial-dead"
    stray.write_bytes(b"half")
    copy_id = catalog.begin_copy("f" * 64, "library", 0, temp_path=str(stray))
    Pipeline(config, catalog).recover()
    assert not stray.exists() and partials_in(config.library.path) == []
    assert catalog.copies() == [] and copy_id
    assert catalog.sighting(sighting.id).state == SightingState.WAITING  # type: ignore[union-attr]
    assert scan_once(config) == ["valid"]


def _with_library(config_path: Path, settings: str) -> Path:
    text = config_path.read_text()
    library = text.split("library: {path: ")[1].split("}")[0]
    config_path.write_text(
        text.replace(f"library: {{path: {library}}}", f"library: {{path: {library}, {settings}}}")
    )
    return config_path


def test_store_both_and_browse(make_backup: MakeBackup, tmp_path: Path) -> None:
    from nas_receiver.config import load_config
    from nas_receiver.haformat import KeyRing, verify_archive
    from tests.daemon_helpers import write_config

    key = write_key(tmp_path / "key.txt", KEY)
    path = _with_library(write_config(tmp_path, settle=0, keys=(key,)), "store: both, browse: true")
    config = load_config(path)
    shutil.copyfile(make_backup(password=KEY), config.sources[0].path / "a.tar")
    assert scan_once(config) == ["valid"]
    folder = config.library.path / "home"
    original = next(folder.glob("*.tar"))
    decrypted = next((folder / "decrypted").glob("*.tar"))
    assert verify_archive(original, keys=KeyRing([KEY])).securetar_versions == [3]
    plain = verify_archive(decrypted)
    assert plain.verdict == "valid" and plain.securetar_versions == []
    meta = json.loads(decrypted.with_name(decrypted.stem + "_meta.json").read_text())
    assert meta["protected"] is False
    browse = folder / original.stem
    assert (
        "default_config" in (browse / "homeassistant" / "data" / "configuration.yaml").read_text()
    )
    assert not (browse / "homeassistant" / "data" / "configuration.yaml").stat().st_mode & 0o222
    (row,) = list_archives(Catalog(config.catalog_path))
    assert sorted(c["location"] for c in row["copies"]) == [
        "library",
        "library-browse",
        "library-decrypted",
    ]
    decrypted_copy = next(c for c in row["copies"] if c["location"] == "library-decrypted")
    assert decrypted_copy["path"] == str(decrypted)
    # a second scan finds everything in place and writes nothing new
    assert scan_once(config) == []
    assert len(list(folder.rglob("*.tar"))) == 2


def test_store_decrypted_only(make_backup: MakeBackup, tmp_path: Path) -> None:
    from nas_receiver.config import load_config
    from nas_receiver.haformat import verify_archive
    from tests.daemon_helpers import write_config

    key = write_key(tmp_path / "key.txt", KEY)
    config = load_config(
        _with_library(write_config(tmp_path, settle=0, keys=(key,)), "store: decrypted")
    )
    shutil.copyfile(
        make_backup(password=KEY, securetar_version=2), config.sources[0].path / "a.tar"
    )
    assert scan_once(config) == ["valid"]
    (only,) = archives_in(config.library.path)
    assert verify_archive(only).securetar_versions == []


def _library_method(config: Config) -> str:
    """How the library's copies are expected to be made where the tests run: written while
    verified, unless the filesystem makes a reflink (no bytes written at all)."""
    return "reflink" if reflinks(config.library.path) else "written while verified"


def test_the_library_copy_is_written_while_verifying(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: the library copy of an arrival is written as the verifier reads it (no read
    of its own), holds exactly the share's bytes, leaves no temporary file, and the share
    is untouched."""
    config = config_at(tmp_path, settle=0)
    arrived = config.sources[0].path / "a.tar"
    shutil.copyfile(make_backup(), arrived)
    before = arrived.read_bytes()
    assert scan_once(config) == ["valid"]
    (placed,) = archives_in(config.library.path)
    assert placed.read_bytes() == before and arrived.read_bytes() == before
    umask = os.umask(0o022)
    os.umask(umask)
    assert placed.stat().st_mode & 0o777 == 0o666 & ~umask  # as a copy made after the verdict
    (row,) = list_archives(Catalog(config.catalog_path))
    assert [(c["location"], c["method"]) for c in row["copies"]] == [
        ("library", _library_method(config))
    ]
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_file_last_seen_incomplete_is_copied_after_its_verdict(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a file looked at again (it was incomplete: HA may still be writing it) is
    not copied while it is verified (each look would write a copy to throw away): neither
    look leaves a file behind, and the copy is made after the verdict."""
    config = config_at(tmp_path, settle=0)
    data = make_backup().read_bytes()
    path = config.sources[0].path / "growing.tar"
    path.write_bytes(data[:50000])
    assert scan_once(config) == ["incomplete"]
    assert partials_in(config.library.path) == []
    path.write_bytes(data)
    assert scan_once(config) == ["valid"]
    (row,) = list_archives(Catalog(config.catalog_path))
    expected = "reflink" if reflinks(config.library.path) else "copy"
    assert [c["method"] for c in row["copies"]] == [expected]
    (placed,) = archives_in(config.library.path)
    assert placed.read_bytes() == data
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_quarantined_archive_keeps_the_copy_written_while_verifying(tmp_path: Path) -> None:
    """Asserts: a damaged archive's copy, written while it was verified, goes to the
    quarantine (private: 0600) with exactly the share's bytes; nothing is left in the
    library."""
    config = config_at(tmp_path, settle=0)
    arrived = config.sources[0].path / "broken.tar"
    shutil.copyfile(corpus_file("habackuptool_test_protected_v1.tar"), arrived)
    assert scan_once(config) == ["corrupt"]
    (kept,) = archives_in(config.quarantine.path)
    assert kept.read_bytes() == arrived.read_bytes()
    assert kept.stat().st_mode & 0o777 == 0o600
    (row,) = list_archives(Catalog(config.catalog_path))
    assert [(c["location"], c["method"]) for c in row["copies"]] == [
        ("quarantine", _library_method(config))
    ]
    assert archives_in(config.library.path) == []
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_store_decrypted_writes_no_copy_while_verifying(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asserts: where the library keeps only the decrypted copy, no copy of the original
    is begun while verifying (it would be thrown away): only the decrypted copy is kept
    and no file is left behind."""
    begun: list[object] = []

    def watched(*args: Any) -> object:  # the real one, its calls noted
        begun.append(args)
        return open_copy(*args)

    monkeypatch.setattr(pipeline, "open_copy", watched)
    key = write_key(tmp_path / "key.txt", "supervisor")
    config_path = write_config(tmp_path, settle=0, keys=(key,))
    library = tmp_path / "library"
    text = config_path.read_text().replace(
        f"library: {{path: {library}}}", f"library: {{path: {library}, store: decrypted}}"
    )
    config_path.write_text(text)
    config = load_config(config_path)
    shutil.copyfile(
        corpus_file("supervisor_backup_example_sec_v3.tar"), config.sources[0].path / "a.tar"
    )
    assert scan_once(config) == ["valid"]
    (row,) = list_archives(Catalog(config.catalog_path))
    assert [c["location"] for c in row["copies"]] == ["library-decrypted"]
    assert partials_in(config.library.path, config.quarantine.path) == []
    assert begun == []


def test_a_copy_a_kill_left_while_verifying_is_removed_at_the_start(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: the temporary copy written while verifying, left half-written by a kill,
    is recognised and removed when the daemon starts again; the archive is then kept."""
    config = config_at(tmp_path, settle=0)
    path = config.sources[0].path / "a.tar"
    shutil.copyfile(make_backup(), path)
    with path.open("rb") as source:
        copy = open_copy(config.library.path / "home", source.fileno(), path.stat().st_size)
    if copy is None:
        pytest.skip("this filesystem makes reflinks: no copy is written while verifying")
    assert copy.path.stat().st_mode & 0o777 == 0o600  # private while it is written
    copy.file.write(path.read_bytes()[:1000])  # then "killed" (its room stays set aside
    copy.file.close()  # in this process: a few bytes)
    Pipeline(config, Catalog(config.catalog_path)).recover()
    assert not copy.path.exists() and partials_in(config.library.path) == []
    assert scan_once(config) == ["valid"]
    (placed,) = archives_in(config.library.path)
    assert placed.read_bytes() == path.read_bytes()


def test_on_btrfs_the_copies_are_reflinks_and_none_is_written_while_verifying(
    make_backup: MakeBackup, btrfs_volume: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asserts: where the share, the library and the quarantine are on one btrfs volume (a
    Synology's), the library and quarantine copies are reflinks (no bytes written) with the
    share's bytes, the copy tried while verifying is undone at once (it would write what a
    reflink shares), and nothing is left behind."""
    opened: list[object] = []

    def watched(*args: Any) -> object:  # the real one, what it returned noted
        opened.append(open_copy(*args))
        return opened[-1]

    monkeypatch.setattr(pipeline, "open_copy", watched)
    config = config_at(btrfs_volume / "site", settle=0)
    good, broken = config.sources[0].path / "good.tar", config.sources[0].path / "broken.tar"
    shutil.copyfile(make_backup(), good)
    shutil.copyfile(corpus_file("habackuptool_test_protected_v1.tar"), broken)
    assert sorted(scan_once(config)) == ["corrupt", "valid"]
    assert opened == [None, None]
    (placed,) = archives_in(config.library.path)
    (kept,) = archives_in(config.quarantine.path)
    assert placed.read_bytes() == good.read_bytes() and kept.read_bytes() == broken.read_bytes()
    catalog = Catalog(config.catalog_path)
    rows = list_archives(catalog)
    catalog.close()  # an open catalog would keep the volume busy
    assert sorted((c["location"], c["method"]) for r in rows for c in r["copies"]) == [
        ("library", "reflink"),
        ("quarantine", "reflink"),
    ]
    assert partials_in(config.library.path, config.quarantine.path) == []


def _browse_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key_text: str = KEY
) -> tuple[Config, list[Any]]:
    """A receiver keeping the original, the decrypted copy and the browse copy; and the
    unpackings alongside its verifications, as they are made (the real ones)."""
    from nas_receiver.haformat.extract import UnpackAlongside

    made: list[UnpackAlongside] = []

    class Watched(UnpackAlongside):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(pipeline, "UnpackAlongside", Watched)
    key = write_key(tmp_path / "key.txt", key_text)
    path = _with_library(write_config(tmp_path, settle=0, keys=(key,)), "store: both, browse: true")
    return load_config(path), made


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in folder.rglob("*")
        if p.is_file() and not p.is_symlink()
    }


def test_the_browse_copy_is_unpacked_while_verifying(
    make_backup: MakeBackup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: an arrival's browse copy is the tree its verification unpacked as it read HA's
    part (no second read, decryption or inflate): the log and the catalog say so, it holds
    what an extraction of the library copy holds, read-only, and no temporary folder is
    left."""
    from nas_receiver.haformat import KeyRing
    from nas_receiver.haformat.extract import extract_backup

    config, made = _browse_site(tmp_path, monkeypatch)
    shutil.copyfile(make_backup(password=KEY), config.sources[0].path / "a.tar")
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    assert len(made) == 1
    folder = config.library.path / "home"
    original = next(folder.glob("*.tar"))
    browse = folder / original.stem
    assert f"browsable copy of the configuration: {browse}/ (unpacked while verified)" in (
        caplog.text
    )
    extract_backup(original, tmp_path / "out", KeyRing([KEY]), members=["homeassistant"])
    assert _files(browse) == _files(tmp_path / "out")
    assert not (browse / "homeassistant" / "data" / "configuration.yaml").stat().st_mode & 0o222
    (row,) = list_archives(Catalog(config.catalog_path))
    (browse_copy,) = [c for c in row["copies"] if c["location"] == "library-browse"]
    assert browse_copy["path"] == str(browse)
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_quarantined_archive_leaves_nothing_of_its_unpacked_ha_part(
    make_backup: MakeBackup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asserts: where HA's part was whole and unpacked while verifying but another part is
    damaged (so the archive is quarantined), the unpacked files (decrypted contents) are
    removed: no tree in the library or the quarantine, no temporary folder."""
    from tests.builders import member_spans

    config, made = _browse_site(tmp_path, monkeypatch)
    arrived = config.sources[0].path / "a.tar"
    shutil.copyfile(make_backup(password=KEY), arrived)
    start, size = member_spans(arrived)["core_mosquitto.tar.gz"]
    with arrived.open("r+b") as file:  # the add-on's last message no longer authenticates
        file.seek(start + size - 5)
        file.write(b"\0\0\0\0\0")
    assert scan_once(config) == ["corrupt"]
    (alongside,) = made
    assert alongside.finish() is not None  # HA's part was unpacked whole while verified
    assert not alongside.destination.exists()
    assert list(config.library.path.rglob("homeassistant")) == []
    assert list(config.quarantine.path.rglob("homeassistant")) == []
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_file_looked_at_again_is_unpacked_after_its_verdict(
    make_backup: MakeBackup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: a file looked at again (it was incomplete) is not unpacked while verified
    (each look would unpack what is thrown away): its browse copy is unpacked after the
    verdict, and no look leaves a folder behind."""
    config, made = _browse_site(tmp_path, monkeypatch)
    data = make_backup(password=KEY).read_bytes()
    path = config.sources[0].path / "growing.tar"
    path.write_bytes(data[: len(data) // 2])
    assert scan_once(config) == ["incomplete"]
    assert partials_in(config.library.path) == []
    path.write_bytes(data)
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    assert len(made) == 1  # the first look only
    assert "(unpacked after the verdict)" in caplog.text
    original = next((config.library.path / "home").glob("*.tar"))
    browse = original.with_suffix("")
    assert (browse / "homeassistant" / "data" / "configuration.yaml").is_file()
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_an_unpacking_a_kill_left_is_removed_at_the_start(tmp_path: Path) -> None:
    """Asserts: the private folder HA's part is unpacked in while verifying, left by a kill
    (read-only parts and all), is removed when the daemon starts again."""
    config = config_at(tmp_path, settle=0)
    left = config.library.path / "home" / ".arrival-browse.partial-dead"
    (left / "homeassistant" / "data").mkdir(parents=True)
    (left / "homeassistant" / "data" / "secrets.yaml").write_text("key: value\n")
    (left / "homeassistant" / "data").chmod(0o500)
    Pipeline(config, Catalog(config.catalog_path)).recover()
    assert not left.exists() and partials_in(config.library.path) == []


def test_an_ha_part_holding_a_name_twice_gets_the_later_file_as_has_restore_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: a valid backup whose HA part holds the same file name twice (no HA writer
    does; a share is written by other machines) is kept with a browse copy holding the
    later file, as HA's restore (tarfile's extractall) leaves it, the same whether
    unpacked while verified or after; its job is done, not failed and tried again."""
    from tests.builders import backup_with_ha_part, tar_file

    config, _made = _browse_site(tmp_path, monkeypatch)
    arrived = config.sources[0].path / "twice.tar"
    entries = [tar_file("data/configuration.yaml", text) for text in (b"first\n", b"second\n")]
    backup_with_ha_part(arrived, entries)
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    assert "(unpacked while verified)" in caplog.text
    original = next((config.library.path / "home").glob("*.tar"))
    browse = original.with_suffix("")
    assert (browse / "homeassistant/data/configuration.yaml").read_bytes() == b"second\n"
    catalog = Catalog(config.catalog_path)
    assert [s.state for s in catalog.sightings()] == [SightingState.DONE]
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_backup_without_has_part_gets_no_browse_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: a real supervisor backup of an add-on only (no HA configuration) gets no
    browse folder and no "browsable copy" line (there is no configuration to browse);
    its original and decrypted copies are kept and nothing is left behind."""
    config, made = _browse_site(tmp_path, monkeypatch, key_text="supervisor")
    shutil.copyfile(
        corpus_file("supervisor_backup_example_sec_v3.tar"), config.sources[0].path / "a.tar"
    )
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    assert "browsable copy" not in caplog.text
    (row,) = list_archives(Catalog(config.catalog_path))
    assert sorted(c["location"] for c in row["copies"]) == ["library", "library-decrypted"]
    folder = config.library.path / "home"
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["decrypted"]
    assert len(made) == 1 and made[0].finish() is None  # nothing was handed to it
    assert partials_in(config.library.path, config.quarantine.path) == []


class _Writer(threading.Event):
    """A cancel flag that is never set, and does ``act`` the first time it is looked at (as
    the verifier looks at it while it reads): a write to the file while it is verified."""

    def __init__(self, act: Callable[[int], None]) -> None:
        super().__init__()
        self._act: Callable[[int], None] | None = act

    def is_set(self) -> bool:
        if self._act is not None:
            act, self._act = self._act, None
            act(0)
        return False


@pytest.mark.parametrize("when", ["since seen", "while verified"])
def test_a_file_that_grows_again_waits_to_settle_anew(
    make_backup: MakeBackup, tmp_path: Path, when: str
) -> None:
    """Asserts: a file that was quiet long enough to be due, then is written to again (an
    upload that paused), is seen as it is now and waits ``settle_seconds`` from then
    before it is looked at again, not at once: a file growing in bursts is not verified
    over and over (the review saw 20 looks a second)."""
    config = config_at(tmp_path, settle=2)
    data = make_backup(password=KEY).read_bytes()
    path = config.sources[0].path / "a.tar"
    path.write_bytes(data[: len(data) // 2])
    catalog = Catalog(config.catalog_path)
    Intake(catalog).reconcile(config.sources[0])
    later = time.time() + 100  # the first half has long settled
    ((sighting_id, _),) = due_sightings(config, catalog, later)
    sighting = catalog.sighting(sighting_id)
    assert sighting is not None

    def grows(_count: int) -> None:
        with path.open("ab") as file:
            file.write(b"\0" * 512)

    if when == "since seen":
        grows(0)
        assert Pipeline(config, catalog, clock=lambda: later).process(sighting) is None
    else:
        writer = _Writer(grows)
        assert Pipeline(config, catalog, clock=lambda: later).process(sighting, writer) is None
        assert writer._act is None  # it wrote
    now = catalog.sighting(sighting_id)
    assert now is not None and now.state == SightingState.WAITING
    assert now.size == path.stat().st_size
    assert due_sightings(config, catalog, later + 1) == []
    assert [s for s, _ in due_sightings(config, catalog, later + 2.5)] == [sighting_id]


def test_members_left_out_of_a_browse_copy_are_told_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: members of HA's part the browse copy leaves out (a link out of it, a name
    the disk cannot hold) are told in one warning, by their names (quoted: names are
    data), without the temporary folder's path; the rest is kept."""
    from tests.builders import backup_with_ha_part, tar_file, tar_link

    config, _made = _browse_site(tmp_path, monkeypatch)
    arrived = config.sources[0].path / "odd.tar"
    backup_with_ha_part(
        arrived,
        [
            tar_link("data/shadow", "/etc/shadow"),
            tar_file("data/" + "n" * 300, b"{}\n"),
            tar_file("data/configuration.yaml", b"{}\n"),
        ],
    )
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    (warning,) = [r.getMessage() for r in caplog.records if "left out of" in r.getMessage()]
    assert "2 member(s)" in warning and "'data/shadow'" in warning and "'data/nnn" in warning
    assert ".partial-" not in warning
    original = next((config.library.path / "home").glob("*.tar"))
    assert (original.with_suffix("") / "homeassistant/data/configuration.yaml").is_file()


def test_a_partial_tree_deeper_than_a_path_can_reach_is_removed_at_the_start(
    tmp_path: Path,
) -> None:
    """Asserts: an unpacking a stop left behind whose folders lie deeper than a path the
    system takes whole (as a hostile backup could once make them) is removed when the
    daemon starts, by descriptor, and the start goes on: the next arrival is kept. (It
    stopped every start with 'File name too long', and its cleanup first opened the
    decrypted files' folders to everyone.)"""
    config = config_at(tmp_path, settle=0)
    left = config.library.path / "home" / ".arrival-browse.partial-deep"
    left.mkdir(parents=True, mode=0o700)
    fd = os.open(left, os.O_RDONLY)
    try:
        for _ in range(20):  # 20 x 248 bytes: well past 4096
            os.mkdir("d" * 247, 0o500, dir_fd=fd)
            inner = os.open("d" * 247, os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        secret = os.open("secrets.yaml", os.O_WRONLY | os.O_CREAT, 0o600, dir_fd=fd)
        os.close(secret)
    finally:
        os.close(fd)
    Pipeline(config, Catalog(config.catalog_path)).recover()
    assert not left.exists()
    shutil.copyfile(corpus_file("supervisor_backup_example.tar"), config.sources[0].path / "a.tar")
    assert scan_once(config) == ["valid"]


def test_a_backup_with_a_member_deeper_than_a_path_can_reach_is_kept_and_browsable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    """Asserts: a valid backup whose HA part places a file deeper than a path the system
    takes (through links that lead down) is kept with a browse copy that leaves that file
    out, says so, and the job is done (it failed with 'File name too long' and left the
    decrypted partial folder open to everyone); nothing partial is left."""
    from tests.builders import backup_with_ha_part, link_chain, tar_file

    config, _made = _browse_site(tmp_path, monkeypatch)
    entries, via = link_chain("data")
    entries += [
        tar_file(f"data/{via}/{'f' * 200}", b"deep\n"),
        tar_file("data/configuration.yaml", b"{}\n"),
    ]
    backup_with_ha_part(config.sources[0].path / "deep.tar", entries)
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    assert "(unpacked while verified)" in caplog.text and "left out of" in caplog.text
    original = next((config.library.path / "home").glob("*.tar"))
    assert (original.with_suffix("") / "homeassistant/data/configuration.yaml").is_file()
    catalog = Catalog(config.catalog_path)
    assert [s.state for s in catalog.sightings()] == [SightingState.DONE]
    assert partials_in(config.library.path, config.quarantine.path) == []


def test_a_backup_with_members_the_system_refuses_is_kept_and_browsable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asserts: a valid backup whose HA part holds members the system refuses (a NUL in a
    name, a time out of range, a file under a link that leads nowhere) is kept with its
    browse copy and its job is done (it failed at every try), nothing partial left."""
    import tarfile

    from tests.builders import backup_with_ha_part, tar_file, tar_link

    nul = tarfile.TarInfo("data/nul")
    nul.size, nul.pax_headers = 1, {"path": "data/a\x00b"}
    late = tarfile.TarInfo("data/late")
    late.size, late.pax_headers = 1, {"mtime": "1e300"}
    config, _made = _browse_site(tmp_path, monkeypatch)
    backup_with_ha_part(
        config.sources[0].path / "odd.tar",
        [
            (nul, b"x"),
            (late, b"x"),
            tar_link("data/s", "nowhere"),
            tar_file("data/s/f", b"f"),
            tar_file("data/configuration.yaml", b"{}\n"),
        ],
    )
    assert scan_once(config) == ["valid"]
    original = next((config.library.path / "home").glob("*.tar"))
    assert (original.with_suffix("") / "homeassistant/data/configuration.yaml").is_file()
    assert (original.with_suffix("") / "homeassistant/data/late").stat().st_mtime == 0
    catalog = Catalog(config.catalog_path)
    assert [s.state for s in catalog.sightings()] == [SightingState.DONE]
    assert partials_in(config.library.path, config.quarantine.path) == []
