"""Hostile inputs on the share: each test says what it asserts.

The share is written by other machines: links, FIFOs, names that are not text, files
replaced under the same name, backup.json text no file system can hold.  Nothing outside
the site is read or written, nothing hangs, nothing stops the daemon.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.builders import KEY, BackupSpec, write_backup, write_key
from tests.conftest import corpus_file
from tests.daemon_helpers import cli, cli_command, sha256, wait_for, write_config

MakeBackup = Callable[..., Path]


def _site(tmp_path: Path, **kwargs: object) -> Path:
    key = write_key(tmp_path / "key.txt", KEY)
    return write_config(tmp_path / "site", settle=0, keys=(key,), **kwargs)  # type: ignore[arg-type]


def _rows(config_path: Path) -> list[dict[str, object]]:
    result = cli(config_path, "list", "--json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, object]] = json.loads(result.stdout)
    return rows


def test_a_link_in_the_share_is_never_followed(make_backup: MakeBackup, tmp_path: Path) -> None:
    """Asserts: a symlink named like a backup (to a secret file, to a real backup elsewhere)
    and a symlinked folder are not read by the scan nor by the file-event path; nothing of
    theirs reaches the library or the quarantine."""
    config_path = _site(tmp_path, reconcile="1s")
    share = tmp_path / "site" / "share"
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copyfile(make_backup(password=KEY), elsewhere / "real.tar")
    daemon = subprocess.Popen(
        cli_command(config_path, "run"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for((tmp_path / "site" / "data" / "catalog.sqlite3").exists, 30, "start")
        time.sleep(1)
        (share / "x.tar").symlink_to(secret)  # seen first as a file event
        (share / "y.tar").symlink_to(elsewhere / "real.tar")
        (share / "folder").symlink_to(elsewhere, target_is_directory=True)
        time.sleep(4)  # events, settling and a rescan or three
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    assert _rows(config_path) == []
    kept = [p for p in (tmp_path / "site").rglob("*") if p.is_file() and "share" not in p.parts]
    assert not any(p.suffix == ".tar" for p in kept)


def test_a_fifo_in_the_share_does_not_hang_the_scan(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a FIFO named like a backup is left alone and the real backup beside it is
    verified; the scan ends."""
    config_path = _site(tmp_path)
    share = tmp_path / "site" / "share"
    os.mkfifo(share / "pipe.tar")
    shutil.copyfile(make_backup(password=KEY), share / "real.tar")
    result = subprocess.run(
        cli_command(config_path, "scan", "--json"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert [r["verdict"] for r in _rows(config_path)] == ["valid"]


def test_a_name_that_is_not_text_does_not_stop_the_others(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a file whose name is not valid UTF-8 is reported and left alone; the backup
    beside it is kept."""
    config_path = _site(tmp_path)
    share = tmp_path / "site" / "share"
    shutil.copyfile(make_backup(password=KEY), os.fsencode(share) + b"/bad\xff\xfe.tar")
    shutil.copyfile(make_backup(password=KEY, slug="00000002"), share / "good.tar")
    result = cli(config_path, "scan")
    assert result.returncode == 0, result.stderr
    assert "not a UTF-8 file name" in result.stderr
    assert [r["slug"] for r in _rows(config_path)] == ["00000002"]


def test_backup_json_text_no_file_can_hold_is_quarantined(tmp_path: Path) -> None:
    """Asserts: a lone surrogate in backup.json's name (``"\\udc80"``, which HA's own JSON
    reader refuses) makes the archive corrupt and quarantined, not a job retried forever."""
    config_path = _site(tmp_path)
    spec = BackupSpec(name="x\udc80y", password=KEY)
    write_backup(tmp_path / "site" / "share" / "odd.tar", spec, tmp_path / "work")
    result = cli(config_path, "scan")
    assert result.returncode == 3, result.stderr  # an archive is not valid
    (row,) = _rows(config_path)
    assert row["verdict"] == "corrupt"
    assert [c["location"] for c in row["copies"]] == ["quarantine"]  # type: ignore[index]


def test_a_file_replaced_after_verification_is_a_new_arrival(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a backup replaced under the same name with the same size and modification
    time (``cp -p``, or a coarse network clock) is verified and kept as the new archive."""
    config_path = _site(tmp_path)
    share = tmp_path / "site" / "share"
    first = make_backup(password=KEY, slug="00000001")
    second = make_backup(password=KEY, slug="00000002")
    assert first.stat().st_size == second.stat().st_size
    shutil.copyfile(first, share / "a.tar")
    stamp = share.joinpath("a.tar").stat().st_mtime_ns
    assert cli(config_path, "scan").returncode == 0
    (share / "a.tar").unlink()
    shutil.copyfile(second, share / "a.tar")
    os.utime(share / "a.tar", ns=(stamp, stamp))
    assert cli(config_path, "scan").returncode == 0
    assert sorted(r["slug"] for r in _rows(config_path)) == ["00000001", "00000002"]
    assert {sha256(first), sha256(second)} == {r["sha256"] for r in _rows(config_path)}


def test_a_replacement_during_keeping_is_not_marked_done(tmp_path: Path) -> None:
    """Asserts: a file seen changed while its verification was being kept stays waiting
    (the verdict was of the old bytes), so the new bytes are verified too."""
    from nas_receiver.catalog import Catalog, SightingState

    catalog = Catalog(tmp_path / "catalog.sqlite3")
    catalog.observe("home", "a.tar", 10, 1, 0.0, identity="1:1")
    (sighting,) = catalog.sightings("home")
    assert catalog.take(sighting.id, 10, 1)
    assert catalog.observe("home", "a.tar", 10, 1, 5.0, identity="2:2") == "changed"
    catalog.finish_sighting(sighting.id, SightingState.DONE, "f" * 64, "valid")
    (after,) = catalog.sightings("home")
    assert after.state == SightingState.WAITING


def test_event_paths_are_held_to_the_rescans_rules(tmp_path: Path) -> None:
    """Asserts: a file event for a folder whose name is not UTF-8, or deeper than the rescan
    looks, is not taken in (the catalog keeps only text; the rescan would call it gone)."""
    from nas_receiver.intake.scan import MAX_DEPTH, stat_one

    odd = os.fsencode(tmp_path) + b"/bad\xff"
    os.mkdir(odd)
    with open(odd + b"/x.tar", "wb") as file:
        file.write(b"x")
    assert stat_one(tmp_path, os.fsdecode(b"bad\xff/x.tar")) is None
    deep = tmp_path.joinpath(*[f"d{i}" for i in range(MAX_DEPTH + 1)])
    deep.mkdir(parents=True)
    (deep / "x.tar").write_bytes(b"x")
    assert stat_one(tmp_path, str((deep / "x.tar").relative_to(tmp_path))) is None


def test_a_source_folder_that_is_a_link_works(make_backup: MakeBackup, tmp_path: Path) -> None:
    """Asserts: the configured folder itself may be a link (/volume1/ha -> /volume2/ha): the
    admin's own choice; links below it are still never followed."""
    config_path = _site(tmp_path)
    share = tmp_path / "site" / "share"
    real = tmp_path / "volume2"
    share.rename(real)
    share.symlink_to(real, target_is_directory=True)
    shutil.copyfile(make_backup(password=KEY), real / "a.tar")
    assert cli(config_path, "scan").returncode == 0
    assert [r["verdict"] for r in _rows(config_path)] == ["valid"]


def test_recovery_never_touches_what_came_out_of_a_backup(tmp_path: Path) -> None:
    """Asserts: a backup holding a file named like our temporary files keeps it in its browse
    copy across restarts (recovery looks only where our own partial files can be)."""
    from tests.builders import make_addon_data, make_ha_config, write_backup_from

    config_path = _site(tmp_path)
    library = tmp_path / "site" / "library"
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}", f"library: {{path: {library}, browse: true}}"
        )
    )
    ha = make_ha_config(tmp_path / "work" / "ha", entities=4)
    (ha / ".storage" / ".x.partial-1").write_text("{}")
    parts = [("homeassistant", ha), ("core_mosquitto", make_addon_data(tmp_path / "a", "x"))]
    spec = BackupSpec(password=KEY, folders=(), addons=("core_mosquitto",))
    write_backup_from(tmp_path / "site" / "share" / "a.tar", spec, parts)
    assert cli(config_path, "scan").returncode == 0
    assert cli(config_path, "scan").returncode == 0  # recovery runs at every start
    (kept,) = library.rglob(".x.partial-1")
    assert "data/.storage" in str(kept)


def test_a_stop_between_the_copy_and_its_sidecar_is_finished(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a library copy whose ``_meta.json`` a stop prevented gets it when the file is
    looked at again, so HA lists it."""
    import sqlite3

    config_path = _site(tmp_path)
    shutil.copyfile(make_backup(password=KEY), tmp_path / "site" / "share" / "a.tar")
    assert cli(config_path, "scan").returncode == 0
    (meta,) = (tmp_path / "site" / "library").rglob("*_meta.json")
    meta.unlink()
    with sqlite3.connect(tmp_path / "site" / "data" / "catalog.sqlite3") as db:
        db.execute("UPDATE sightings SET state = 'verifying'")  # as a kill leaves it
    assert cli(config_path, "scan").returncode == 0
    assert meta.is_file()


def test_a_share_file_our_user_cannot_read_is_named_with_the_fix(make_backup: MakeBackup) -> None:
    """Asserts: run as another user than HA's (as the DSM package user is), a backup that
    user cannot read (root's 0600 file, as NFS without squash leaves it) makes status
    unhealthy at once, naming the file, the user, and what to change; the scan exits 0."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        from tests.conftest import missing

        missing("running as another user needs root and setpriv(1)")
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="nas-receiver-as-nobody-"))  # pytest's is root-only
    site = home / "site"
    config_path = write_config(site, settle=0)
    locked = site / "share" / "a.tar"
    shutil.copyfile(make_backup(), locked)
    locked.chmod(0o600)  # root's, as HA wrote it
    for path in [home, *home.rglob("*")]:
        if path != locked:
            os.chown(path, 65534, 65534)  # the site is the package user's

    def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
        drop = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
        return subprocess.run(
            [*drop, *cli_command(config_path, *args)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=Path(__file__).resolve().parents[2],
        )

    try:
        assert as_nobody("scan").returncode == 0
        status = as_nobody("status", "--json")
    finally:
        shutil.rmtree(home)
    assert status.returncode == 3, status.stderr
    problems = json.loads(status.stdout)["sources"][0]["problems"]
    assert any("a.tar cannot be read by user nobody" in p and "read access" in p for p in problems)


def test_a_date_typed_at_the_ends_of_time_breaks_nothing(tmp_path: Path) -> None:
    """Asserts: backups dated 9999-12-31 west of UTC and 0001-01-01 east of it (only a hand
    can type them, HA never does) are taken in like any other, and scan (which mirrors and
    prunes), status, list and the page keep working in time zones on both sides of UTC,
    with retention on the library and on a destination (they sort and bucket by date)."""
    from datetime import datetime, timedelta, timezone

    config_path = _site(tmp_path)
    offsite = tmp_path / "site" / "offsite"
    config_path.write_text(
        config_path.read_text().replace(
            "library: {path: ", "library: {retention: {keep_daily: 3, min_valid: 1}, path: "
        )
        + f"destinations:\n  - {{name: usb, type: local, path: {offsite},"
        " retention: {keep_daily: 2, keep_monthly: 2}}\n"
    )
    share = tmp_path / "site" / "share"
    ends = {
        "future.tar": datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-12))),
        "past.tar": datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14))),
        "now.tar": datetime(2026, 11, 20, 4, 45, tzinfo=timezone(timedelta(0))),
    }
    for index, (name, date) in enumerate(ends.items()):
        spec = BackupSpec(date=date, slug=f"0000000{index}", password=KEY)
        write_backup(share / name, spec, tmp_path / f"work{index}")
    for zone in ("Pacific/Kiritimati", "Etc/GMT+12", "UTC"):
        env = {**os.environ, "TZ": zone}
        for args in (["scan"], ["status", "--json"], ["list", "--json"], ["prune", "--dry-run"]):
            result = subprocess.run(
                cli_command(config_path, *args),
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                env=env,
            )
            assert result.returncode in (0, 3), (zone, args, result.stderr)
            assert "Traceback" not in result.stderr, (zone, args, result.stderr)
    rows = _rows(config_path)
    assert sorted(r["verdict"] for r in rows) == ["valid"] * 3  # type: ignore[type-var]

    from nas_receiver.config import load_config
    from nas_receiver.web.app import App, Sources
    from nas_receiver.web.auth import Verdict

    app = App(Sources(lambda: load_config(config_path)), lambda _e: Verdict(200))
    statuses: list[str] = []
    for view in ("overview", "backups", "jobs"):
        body = b"".join(app({"QUERY_STRING": f"view={view}"}, lambda s, _h: statuses.append(s)))
        assert statuses[-1] == "200 OK", (view, body[:300])


@pytest.mark.parametrize(
    ("where", "store", "damaged"),
    [
        ("library/home", "original", False),
        ("library/home/decrypted", "both", False),
        ("quarantine/home", "original", True),
    ],
    ids=["library-folder", "decrypted-folder", "quarantine-folder"],
)
def test_a_link_where_a_folder_of_ours_goes_is_never_followed(
    make_backup: MakeBackup, tmp_path: Path, where: str, store: str, damaged: bool
) -> None:
    """Asserts: where a folder nas-receiver writes in (the source's library, decrypted or
    quarantine folder) is a symbolic link (here into the share HA writes to), nothing is
    written through it, the share holds only what HA wrote, and the job fails saying where
    and why (it is tried again later: a link removed lets it go on)."""
    config_path = _site(tmp_path)
    site, share = tmp_path / "site", tmp_path / "site" / "share"
    library = site / "library"
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}", f"library: {{path: {library}, store: {store}}}"
        )
    )
    link = site / where
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(share, target_is_directory=True)
    arrived = share / "a.tar"
    if damaged:
        shutil.copyfile(corpus_file("habackuptool_test_protected_v1.tar"), arrived)
    else:
        shutil.copyfile(make_backup(password=KEY), arrived)
    before = arrived.read_bytes()
    assert cli(config_path, "scan").returncode == 0
    assert sorted(p.name for p in share.iterdir()) == ["a.tar"]
    assert arrived.read_bytes() == before
    status = json.loads(cli(config_path, "status", "--json").stdout)
    (pending,) = status["sources"][0]["pending"]
    assert pending["state"] == "failed"
    assert f"{link}: a symbolic link" in pending["error"], pending


def test_the_start_never_removes_anything_through_a_linked_folder(tmp_path: Path) -> None:
    """Asserts: where the source's library folder is a symbolic link (here to the share),
    the start's clean-up of what a kill left removes nothing through it: neither the
    files of an unfinished copy the catalog names there (HA's agent uses those names in
    the share) nor a file named like our temporary files; the copy stays recorded."""
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config
    from nas_receiver.pipeline import Pipeline

    config = load_config(_site(tmp_path))
    share = config.sources[0].path
    named = share / "Automatic_backup_2026.11.1_2026-11-20_04.45_00000000.tar"
    named.write_bytes(b"what HA wrote")
    (share / ".x.tar.partial-1").write_bytes(b"HA's too")
    config.library.path.mkdir(parents=True)
    folder = config.library.path / "home"
    folder.symlink_to(share, target_is_directory=True)
    catalog = Catalog(config.catalog_path)
    catalog.begin_copy("e" * 64, "library", 0, temp_path=str(folder / named.name))  # "killed"
    Pipeline(config, catalog).recover()
    assert sorted(p.name for p in share.iterdir()) == [".x.tar.partial-1", named.name]
    assert named.read_bytes() == b"what HA wrote"
    assert [c.state for c in catalog.copies()] == ["placing"]
