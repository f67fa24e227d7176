"""Mirroring the library to a local destination; retention on both ends with the floors."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from tests.builders import AGENT_BACKUP_KEYS
from tests.daemon_helpers import archives_in, cli, write_config

MakeBackup = Callable[..., Path]
BASE = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)


def _site(tmp_path: Path, make_backup: MakeBackup, destination: str, days: int = 3) -> Path:
    config_path = write_config(tmp_path, settle=0)
    config_path.write_text(config_path.read_text() + f"destinations: [{destination}]\n")
    config = load_config(config_path)
    for day in range(days):
        backup = make_backup(slug=f"{day:08x}", date=BASE + timedelta(days=day), entities=5)
        shutil.copyfile(backup, config.sources[0].path / f"day{day}.tar")
    return config_path


def _library_first(
    tmp_path: Path, make_backup: MakeBackup, destination: str, days: int
) -> tuple[Path, Catalog]:
    """A site whose archives went into the library before its destination was configured:
    the destination holds nothing yet, whatever state a test then builds there."""
    config_path = _site(tmp_path, make_backup, destination, days)
    full = config_path.read_text()
    config_path.write_text(full.split("destinations:")[0])
    assert scan_once(load_config(config_path)) == ["valid"] * days
    config_path.write_text(full)
    return config_path, Catalog(load_config(config_path).catalog_path)


def _killed_after_rename(
    catalog: Catalog, usb: Path, archive: dict[str, Any] | None = None
) -> tuple[dict[str, Any], Path, str]:
    """Leave what a copy to ``usb`` of ``archive`` (the only one if None) killed after its
    rename and before its sidecar leaves: its row, which claimed the key, and the whole
    file there, unmarked.  Return the archive, its library copy and the key."""
    if archive is None:
        (archive,) = catalog.archives()
    (library_copy,) = [Path(c.path) for c in catalog.copies(archive["sha256"], "library") if c.path]
    key = f"homeassistant/{library_copy.name}"
    catalog.claim_copy(catalog.begin_copy(archive["sha256"], "usb", 0.0, key=key))
    (usb / "homeassistant").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(library_copy, usb / key)
    return archive, library_copy, key


def test_mirror_copies_each_valid_archive_once(make_backup: MakeBackup, tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    config_path = _site(tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}")
    config = load_config(config_path)
    assert scan_once(config) == ["valid"] * 3  # scan mirrors too
    copies = sorted((usb / "homeassistant").glob("*.tar"))
    assert [p.name for p in copies] == [
        f"Automatic_backup_2026.11.1_2026-11-0{d}_04.45_00000000.tar" for d in (1, 2, 3)
    ]
    sidecar = json.loads(copies[0].with_name(copies[0].name[:-4] + ".metadata.json").read_text())
    assert set(sidecar) >= AGENT_BACKUP_KEYS and sidecar["size"] == copies[0].stat().st_size
    again = cli(config_path, "mirror", "--json")
    assert again.returncode == 0 and json.loads(again.stdout) == []
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    for row in rows:
        usb_copies = [c for c in row["copies"] if c["location"] == "usb"]
        assert [(c["state"], c["verified"]) for c in usb_copies] == [("verified", True)]


def test_library_waits_for_the_destination_before_pruning(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    usb.write_text("a file where the USB disk should be mounted")
    destination = f"{{name: usb, type: local, path: {usb}}}"
    config_path = _site(tmp_path, make_backup, destination)
    config_path.write_text(
        config_path.read_text().replace(
            "library: {path: ", "library: {retention: {keep_last: 1}, path: "
        )
    )
    assert scan_once(load_config(config_path)) == ["valid"] * 3
    failed = cli(config_path, "mirror")
    assert failed.returncode == 4 and "failed" in failed.stdout
    rows = json.loads(cli(config_path, "prune", "--json", "--location", "library").stdout)
    floors = [r for r in rows if "floor: not yet verified at usb" in r["reasons"]]
    assert len(floors) == 2
    assert len(archives_in(tmp_path / "library")) == 3  # nothing deleted
    usb.unlink()
    usb.mkdir()
    assert cli(config_path, "mirror").returncode == 0
    cli(config_path, "prune")
    assert len(archives_in(tmp_path / "library")) == 1
    assert len(list((usb / "homeassistant").glob("*.tar"))) == 3


def test_destination_retention_deletes_only_its_own_objects(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    foreign = usb / "homeassistant" / "someone_elses.tar"
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"not ours")
    destination = f"{{name: usb, type: local, path: {usb}, retention: {{keep_last: 1}}}}"
    config_path = _site(tmp_path, make_backup, destination)
    assert scan_once(load_config(config_path)) == ["valid"] * 3
    kept = sorted(p.name for p in (usb / "homeassistant").glob("*.tar"))
    assert kept == ["Automatic_backup_2026.11.1_2026-11-03_04.45_00000000.tar", "someone_elses.tar"]
    assert foreign.read_bytes() == b"not ours"
    assert len(archives_in(tmp_path / "library")) == 3  # the library keeps everything


def test_a_copy_left_half_done_by_a_killed_run_is_redone_once(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    (archive,) = catalog.archives()
    catalog.begin_copy(archive["sha256"], "usb", 0.0, key="homeassistant/x.tar")  # then killed
    assert cli(config_path, "mirror").returncode == 0
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    assert [c["state"] for c in rows[0]["copies"] if c["location"] == "usb"] == ["verified"]


def test_a_copy_killed_before_its_sidecar_is_finished_in_its_place(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """A kill after the copy reached its name and before its sidecar was written leaves an
    unmarked file there.  The catalog's row says it is this archive's: the next run
    finishes it in that place, and leaves no second copy under another name."""
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    _archive, library_copy, key = _killed_after_rename(catalog, usb)
    assert cli(config_path, "mirror").returncode == 0
    assert {p.name for p in (usb / "homeassistant").iterdir()} == {
        library_copy.name,
        library_copy.name.removesuffix(".tar") + ".metadata.json",
    }
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    usb_copies = [c for c in rows[0]["copies"] if c["location"] == "usb"]
    assert [(c["state"], c["path"]) for c in usb_copies] == [("verified", key)]


def test_a_copy_cut_short_of_an_archive_no_longer_sent_is_removed(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """A copy cut short by a kill after it took its name, and before the next run newer
    archives arrived, so that retention no longer sends this one there: what it left is
    removed with its row (it was never a checked copy), rather than left at the
    destination untracked with a row that says 'uploading' for ever."""
    usb = tmp_path / "usb"
    destination = f"{{name: usb, type: local, path: {usb}, retention: {{keep_last: 1}}}}"
    config_path, catalog = _library_first(tmp_path, make_backup, destination, 2)
    older = min(catalog.archives(), key=lambda a: a["date"])
    _older, older_copy, _key = _killed_after_rename(catalog, usb, older)
    assert cli(config_path, "mirror").returncode == 0
    kept = [p.name for p in (usb / "homeassistant").iterdir()]
    assert sorted(kept) == [
        "Automatic_backup_2026.11.1_2026-11-02_04.45_00000000.metadata.json",
        "Automatic_backup_2026.11.1_2026-11-02_04.45_00000000.tar",
    ]
    assert [c.state for c in catalog.copies(older["sha256"], "usb")] == []
    assert older_copy.exists()  # the library keeps it


def test_a_copy_cut_short_at_a_key_the_settings_no_longer_give_is_removed(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Killed after the copy took its name; then the user changed the destination's
    prefix.  The next attempt goes to the new key, and what the first one left at the old
    key is removed, not left there untracked beside a second copy."""
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    archive, library_copy, _key = _killed_after_rename(catalog, usb)
    text = config_path.read_text()
    config_path.write_text(text.replace(f"path: {usb}}}", f"path: {usb}, prefix: ha2}}"))
    assert cli(config_path, "mirror").returncode == 0
    assert sorted(p.relative_to(usb).as_posix() for p in usb.rglob("*.tar")) == [
        f"ha2/{library_copy.name}"
    ]
    rows = [(c.state, c.path) for c in catalog.copies(archive["sha256"], "usb")]
    assert rows == [("present", f"ha2/{library_copy.name}")]


def test_a_cut_short_copy_whose_library_copy_is_gone_is_kept_and_shown_failed(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Nothing is left to finish the copy with, and what it left may be the last of the
    archive: it is kept, and its row says why (not 'uploading' for ever)."""
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    _archive, library_copy, key = _killed_after_rename(catalog, usb)
    kept = library_copy.read_bytes()
    library_copy.unlink()  # gone from the library (a dead disk) before the next run
    result = cli(config_path, "mirror", "--json")
    assert result.returncode == 0, result.stderr
    assert (usb / key).read_bytes() == kept
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    (usb_copy,) = [c for c in rows[0]["copies"] if c["location"] == "usb"]
    assert usb_copy["state"] == "failed" and "no longer holds" in usb_copy["reason"]
    assert cli(config_path, "mirror").returncode == 0  # and stays so
    assert (usb / key).read_bytes() == kept


def test_a_whole_copy_of_an_archive_no_longer_sent_is_recorded_not_removed(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Killed after the sidecar and before the catalog said 'present': the copy is whole
    and checks out, so it is recorded as present and retention decides (floors too)."""
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    archive, library_copy, key = _killed_after_rename(catalog, usb)
    assert cli(config_path, "mirror").returncode == 0  # finished: its sidecar written
    (row,) = catalog.copies(archive["sha256"], "usb")
    with catalog.transaction() as db:  # as if killed before finish_copy
        db.execute("UPDATE copies SET state = 'placing', temp_path = path WHERE id = ?", (row.id,))
    text = config_path.read_text()
    manual = f"path: {usb}, send: {{kinds: [manual]}}}}"
    config_path.write_text(text.replace(f"path: {usb}}}", manual))
    assert cli(config_path, "mirror").returncode == 0
    assert (usb / key).read_bytes() == library_copy.read_bytes()
    assert [c.state for c in catalog.copies(archive["sha256"], "usb")] == ["present"]


def test_a_file_where_a_copy_failed_before_writing_is_never_taken_for_ours(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """A copy that failed before it wrote anything (a refusal, a destination away) left a
    row naming its key but no claim on it.  A file the user put there since is theirs:
    the next run copies beside it and never overwrites it."""
    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    (archive,) = catalog.archives()
    (library_copy,) = archives_in(tmp_path / "library")
    key = f"homeassistant/{library_copy.name}"
    copy_id = catalog.begin_copy(archive["sha256"], "usb", 0.0, key=key)
    catalog.fail_copy(copy_id, "usb: unreachable", 0.0, next_try=0.0)
    (usb / "homeassistant").mkdir(parents=True)
    (usb / key).write_bytes(b"the user's own file")
    assert cli(config_path, "mirror").returncode == 0
    assert (usb / key).read_bytes() == b"the user's own file"
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    usb_copies = [c for c in rows[0]["copies"] if c["location"] == "usb"]
    variant = f"homeassistant/{library_copy.stem}_{archive['sha256'][:8]}.tar"
    assert [(c["state"], c["path"]) for c in usb_copies] == [("verified", variant)]


def test_a_copy_stopped_before_it_took_its_name_claims_nothing(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """A stop (SIGTERM) during a copy keeps its row, as a kill does.  A local copy stopped
    before it took its name left nothing there and claims nothing: a file the user puts
    there afterwards is theirs, and the next run copies beside it."""
    import threading

    from nas_receiver.mirror import mirror_once

    usb = tmp_path / "usb"
    config_path, catalog = _library_first(
        tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1
    )
    stop = threading.Event()

    def progress(_label: str, _total: int) -> None:
        stop.set()  # the stop comes as the copy starts: its first bytes raise Stopped

    assert mirror_once(load_config(config_path), catalog, progress=progress, cancel=stop) == []
    (library_copy,) = archives_in(tmp_path / "library")
    key = f"homeassistant/{library_copy.name}"
    (row,) = catalog.copies(location="usb")
    assert (row.state, row.path, row.claimed) == ("placing", key, False)
    assert not (usb / key).exists()
    (usb / key).write_bytes(b"the user's own file")
    assert cli(config_path, "mirror").returncode == 0
    assert (usb / key).read_bytes() == b"the user's own file"
    (row,) = catalog.copies(location="usb")
    assert (row.state, row.path) == (
        "present",
        f"homeassistant/{library_copy.stem}_{row.sha256[:8]}.tar",
    )


def test_one_mirror_run_at_a_time(make_backup: MakeBackup, tmp_path: Path) -> None:
    import fcntl
    import os

    usb = tmp_path / "usb"
    config_path = _site(tmp_path, make_backup, f"{{name: usb, type: local, path: {usb}}}", 1)
    config = load_config(config_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(config.data_dir / "mirror.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the daemon holds it while uploading
        assert scan_once(config) == ["valid"]  # takes the archive in; mirroring waits
        busy = cli(config_path, "mirror")
        assert busy.returncode == 0 and "mirroring right now" in busy.stdout
        assert not usb.exists()
    finally:
        os.close(fd)
    assert cli(config_path, "mirror").returncode == 0
    assert len(list((usb / "homeassistant").glob("*.tar"))) == 1


def test_a_destination_that_refuses_removal_stops_nothing_else(
    make_backup: MakeBackup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The USB disk went read-only (EROFS, which stops root too): removing what a cut-short
    copy left fails.  The row stays for the next run, failed with the reason (alerted as
    any copy's failure), and the run goes on: the next destination gets its copy."""
    import errno

    from nas_receiver.mirror import mirror_once

    usb, usb2 = tmp_path / "usb", tmp_path / "usb2"
    both = f"{{name: usb, type: local, path: {usb}}}, {{name: usb2, type: local, path: {usb2}}}"
    config_path, catalog = _library_first(tmp_path, make_backup, both, 1)
    archive, _copy, key = _killed_after_rename(catalog, usb)
    text = config_path.read_text()
    config_path.write_text(text.replace(f"path: {usb}}}", f"path: {usb}, prefix: ha2}}"))

    unlink = Path.unlink

    def read_only(path: Path, missing_ok: bool = False) -> None:
        if usb in path.parents:  # the OS refuses, as on a read-only mount
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", read_only)
    outcomes = mirror_once(load_config(config_path), catalog, waits=False)
    monkeypatch.undo()
    assert (usb / key).exists()
    (row,) = catalog.copies(archive["sha256"], "usb")  # kept, and shown failed with why
    assert (row.state, row.path, row.claimed) == ("failed", key, True)
    assert "Read-only file system" in str(row.detail)
    assert [(o.destination, o.result) for o in outcomes] == [("usb", "failed"), ("usb2", "copied")]
    assert [c.state for c in catalog.copies(archive["sha256"], "usb2")] == ["present"]


def test_a_whole_encrypted_copy_killed_before_the_catalog_is_recorded(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """The same for a copy encrypted on its way out (SecureTar): whole means the SHA-256
    its sidecar records, that of the encrypted bytes, not the archive's."""
    from tests.builders import KEY, write_key

    usb, key_file = tmp_path / "usb", write_key(tmp_path / "usb-key.txt", KEY)
    destination = (
        f"{{name: usb, type: local, path: {usb}, encryption: securetar, key_file: {key_file}}}"
    )
    config_path, catalog = _library_first(tmp_path, make_backup, destination, 1)
    assert cli(config_path, "mirror").returncode == 0
    (archive,) = catalog.archives()
    (row,) = catalog.copies(archive["sha256"], "usb")
    assert row.copy_sha256 != archive["sha256"]  # encrypted on the way
    sent = (usb / str(row.path)).read_bytes()
    with catalog.transaction() as db:  # as if killed before finish_copy
        db.execute("UPDATE copies SET state = 'placing', temp_path = path WHERE id = ?", (row.id,))
    text = config_path.read_text()
    config_path.write_text(
        text.replace(
            f"key_file: {key_file}}}", f"key_file: {key_file}, send: {{kinds: [manual]}}}}"
        )
    )
    assert cli(config_path, "mirror").returncode == 0
    assert (usb / str(row.path)).read_bytes() == sent
    assert [(c.state, c.copy_sha256) for c in catalog.copies(archive["sha256"], "usb")] == [
        ("present", row.copy_sha256)
    ]
