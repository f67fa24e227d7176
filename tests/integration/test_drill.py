"""The restore drill on realistic HA configurations, good and broken in the ways that matter."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nas_receiver.drill import NOT_RESTORABLE, RESTORABLE, run_drill
from nas_receiver.haformat import KeyRing
from tests.builders import (
    KEY,
    OTHER_KEY,
    BackupSpec,
    backup_with_ha_part,
    make_addon_data,
    make_folder,
    make_ha_config,
    tar_file,
    write_backup_from,
    write_key,
)
from tests.daemon_helpers import cli_command, write_config

Breaker = Callable[[Path], None]


# Each of HA's writers (see tests/builders.py), as the drill must read them all.
WRITERS = {
    "supervisor-v3": {"writer": "supervisor", "password": KEY, "securetar_version": 3},
    "core-v2": {"writer": "core", "password": KEY, "securetar_version": 2},
    "core2024-plain": {"writer": "core2024"},
    "v1-plain": {"writer": "v1"},
}


def _backup(
    tmp_path: Path,
    name: str,
    *,
    entities: int = 40,
    breaker: Breaker | None = None,
    writer: str = "supervisor-v3",
    addon_breaker: Breaker | None = None,
) -> Path:
    work = tmp_path / f"work-{name}"
    config = make_ha_config(work / "ha", entities=entities)
    if breaker:
        breaker(config)
    spec = BackupSpec(entities=entities, folders=("share",), **WRITERS[writer])  # type: ignore[arg-type]
    parts = [("homeassistant", config)]
    if spec.writer not in ("core", "core2024"):
        addon = make_addon_data(work / "addon", "core_mosquitto")
        if addon_breaker:
            addon_breaker(addon)
        parts += [("core_mosquitto", addon), ("share", make_folder(work / "share", "share"))]
    return write_backup_from(tmp_path / f"{name}.tar", spec, parts)


def _failing(report_checks: list[dict[str, object]]) -> list[str]:
    return [str(c["name"]) for c in report_checks if not c["ok"]]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_each_writers_backup_is_restorable(tmp_path: Path, writer: str) -> None:
    """The configuration is found where each of HA's writers puts it (``data/``, or the top
    of the part for v1) and passes every check."""
    report = run_drill(
        _backup(tmp_path, writer, writer=writer), KeyRing([KEY]), work_dir=tmp_path / "drills"
    ).to_dict()
    assert report["verdict"] == RESTORABLE, report["checks"]
    assert report["counts"]["entities"] == 40


def test_a_good_backup_is_restorable(tmp_path: Path) -> None:
    work = tmp_path / "drills"
    report = run_drill(_backup(tmp_path, "good"), KeyRing([KEY]), work_dir=work)
    result = report.to_dict()
    assert result["verdict"] == RESTORABLE, result["checks"]
    names = [c["name"] for c in result["checks"]]
    assert names[:1] == ["archive"]
    for name in (
        "storage",
        "configuration.yaml",
        "secrets.yaml",
        "recorder database",
        "add-on core_mosquitto",
        "folder share",
    ):
        assert name in names
    counts = result["counts"]
    assert counts["entities"] == 40 and counts["devices"] == 10 and counts["config_entries"] == 5
    assert counts["database_schema"] == 48 and counts["database_bytes"] > 0
    assert list(work.iterdir()) == []  # the private folders are gone


def _corrupt_database(config: Path) -> None:
    db = config / "home-assistant_v2.db"
    data = bytearray(db.read_bytes())
    page = 4096
    data[2 * page : 3 * page] = b"\xde\xad\xbe\xef" * (page // 4)  # a page overwritten
    db.write_bytes(bytes(data))


def _truncate_registry(config: Path) -> None:
    registry = config / ".storage" / "core.entity_registry"
    registry.write_bytes(registry.read_bytes()[:200])


def _yaml_error(config: Path) -> None:
    (config / "configuration.yaml").write_text("homeassistant:\n  name: [unclosed\n")


def _missing_include(config: Path) -> None:
    (config / "automations.yaml").unlink()


def _missing_secret(config: Path) -> None:
    (config / "secrets.yaml").write_text("longitude: 4.9\n")


BREAKERS = [
    (_corrupt_database, "recorder database", ""),
    (_truncate_registry, "storage", "core.entity_registry"),
    (_yaml_error, "configuration.yaml", "configuration.yaml"),
    (_missing_include, "configuration.yaml", "!include of missing automations.yaml"),
    (_missing_secret, "secrets.yaml", "no value for latitude"),
]


@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize(("breaker", "check", "detail"), BREAKERS)
def test_broken_backups_are_not_restorable_naming_the_check(
    tmp_path: Path, breaker: Breaker, check: str, detail: str, writer: str
) -> None:
    backup = _backup(tmp_path, "broken", breaker=breaker, writer=writer)
    report = run_drill(backup, KeyRing([KEY]), work_dir=tmp_path / "drills").to_dict()
    assert report["verdict"] == NOT_RESTORABLE
    assert _failing(report["checks"]) == [check]
    failed = next(c for c in report["checks"] if c["name"] == check)
    assert detail in str(failed["detail"])


def _what_ha_accepts(config: Path) -> None:
    """Configurations HA loads fine, each of which a stricter drill once failed."""
    (config / "._configuration.yaml").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (config / "packages").mkdir()
    (config / "packages" / "._lights.yaml").write_bytes(b"\x00\x05\x16\x07")
    (config / "packages" / "lights.yaml").write_text("light:\n  - platform: group\n")
    (config / "packages" / "sub").mkdir()
    (config / "packages" / "sub" / "secrets.yaml").write_text("sub_token: abc\n")
    (config / "packages" / "sub" / "sensor.yaml").write_text("token: !secret sub_token\n")
    (config / "packages" / "database.yaml").write_text(
        "recorder:\n  db_url: !secret recorder_url\n"
    )
    (config / "configuration.yaml").write_text(
        (config / "configuration.yaml")
        .read_text()
        .replace("  name: Home\n", "  name: Home\n  packages: !include_dir_named packages\n")
        + "group: !include_dir_merge_named groups\n"  # a folder that does not exist: empty
        + "sensor: !include sensors/latest.yaml\n"  # through an absolute link, see below
        + "http:\n  server_port: !env_var HA_PORT 8123\n"
    )
    (config / "secrets.yaml").write_text(
        "latitude: 52.37\nrecorder_url: mysql://ha:pw@core-mariadb/homeassistant\n"
        "token: !env_var HA_TOKEN nothing\n"
    )
    (config / "sensors").mkdir()
    (config / "sensors" / "latest.yaml").symlink_to("/config/sensors/v2.yaml")
    (config / "sensors" / "v2.yaml").write_text("- platform: template\n")
    (config / ".storage" / "core.entity_registry.swp").write_bytes(b"\x00vim swap")
    (config / "home-assistant_v2.db").unlink()  # the history lives in MariaDB
    cookies = config / ".storage" / "icloud"
    cookies.mkdir()
    (cookies / "session").write_bytes(b"#LWP-Cookies-2.0\nSet-Cookie3: x=y\n")
    (config / "www" / "latest.png").symlink_to("/config/www/floorplan.png")  # absolute


def _fifo_in_addon(addon: Path) -> None:
    os.mkfifo(addon / "data" / "control.fifo")


def test_what_ha_loads_the_drill_accepts(tmp_path: Path) -> None:
    """Dot-files, a missing !include_dir folder, !secret from a sub-folder's secrets.yaml,
    an integration's non-JSON files under .storage/, MariaDB as recorder, an absolute
    symlink and a FIFO: HA restores and starts; the drill says restorable."""
    backup = _backup(tmp_path, "accepted", breaker=_what_ha_accepts, addon_breaker=_fifo_in_addon)
    report = run_drill(backup, KeyRing([KEY]), work_dir=tmp_path / "drills").to_dict()
    assert report["verdict"] == RESTORABLE, report["checks"]
    recorder = next(c for c in report["checks"] if c["name"] == "recorder database")
    assert recorder["skipped"] is True and "external database (mysql)" in recorder["detail"]
    secrets = next(c for c in report["checks"] if c["name"] == "secrets.yaml")
    assert secrets["detail"] == "3 secret(s) present"


def _broken_core_store(config: Path) -> None:
    (config / ".storage" / "core.config").write_text("{not json")
    (config / ".storage" / "lovelace").write_text("{not json either")


def test_a_broken_core_store_fails_and_an_integrations_is_noted(tmp_path: Path) -> None:
    backup = _backup(tmp_path, "stores", breaker=_broken_core_store)
    report = run_drill(backup, KeyRing([KEY]), work_dir=tmp_path / "drills").to_dict()
    assert _failing(report["checks"]) == ["storage"]
    storage = next(c for c in report["checks"] if c["name"] == "storage")
    assert "core.config" in storage["detail"] and "lovelace" not in storage["detail"]


def test_sixty_percent_fewer_entities_is_suspicious(tmp_path: Path) -> None:
    before = run_drill(
        _backup(tmp_path, "before", entities=50), KeyRing([KEY]), work_dir=tmp_path / "d"
    )
    after = run_drill(
        _backup(tmp_path, "after", entities=20),
        KeyRing([KEY]),
        work_dir=tmp_path / "d",
        previous=before.counts,
    )
    assert after.verdict == RESTORABLE
    assert any(c.startswith("entities: 50 -> 20 (60 % fewer)") for c in after.suspicious)
    same = run_drill(
        _backup(tmp_path, "same", entities=48),
        KeyRing([KEY]),
        work_dir=tmp_path / "d",
        previous=before.counts,
    )
    assert same.suspicious == []


def test_interrupted_drill_leaves_nothing_behind(tmp_path: Path) -> None:
    """kill -9 a drill while it unpacks a big HA part; the next drill removes the leftover."""
    import os
    import random
    import signal
    import time

    def big_media(config: Path) -> None:
        chunk = random.Random(3).randbytes(1 << 20)
        with (config / "www" / "video.mp4").open("wb") as file:
            for index in range(300):
                file.write(chunk[index % 5 :] + chunk[: index % 5])

    backup = _backup(tmp_path, "big", breaker=big_media)
    config = write_config(tmp_path / "site", settle=0)
    key = write_key(tmp_path / "key.txt", KEY)
    work = tmp_path / "site" / "data" / "tmp"
    process = subprocess.Popen(
        cli_command(config, "drill", backup, "--key-file", key),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (work.exists() and any(work.iterdir())):
        time.sleep(0.01)
    time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(30)
    assert len(list(work.iterdir())) == 1  # the killed drill's private folder
    result = subprocess.run(
        cli_command(config, "drill", backup, "--key-file", key, "--json"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["verdict"] == RESTORABLE
    assert list(work.iterdir()) == []  # removed by the next drill, and its own too


def test_daemon_drills_after_arrival_and_reports(
    make_backup: Callable[..., Path], tmp_path: Path
) -> None:
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config
    from nas_receiver.daemon import scan_once
    from nas_receiver.drills import prove_keys
    from nas_receiver.report import list_archives, source_status

    key = write_key(tmp_path / "key.txt", KEY)
    config = load_config(write_config(tmp_path, settle=0, keys=(key,)))
    share = config.sources[0].path
    shutil.copyfile(make_backup(password=KEY, entities=50, slug="00000001"), share / "a.tar")
    assert scan_once(config) == ["valid"]
    later = make_backup(
        password=KEY, entities=10, slug="00000002", date=BackupSpec().date + timedelta(days=1)
    )
    shutil.copyfile(later, share / "b.tar")
    assert scan_once(config) == ["valid"]
    catalog = Catalog(config.catalog_path)
    rows = {row["slug"]: row for row in list_archives(catalog)}
    assert rows["00000001"]["drill"]["verdict"] == RESTORABLE
    assert rows["00000002"]["drill"]["suspicious"] is True
    assert "entities: 50 -> 10" in rows["00000002"]["drill"]["changes"][0]
    status = source_status(config, catalog)
    assert status["healthy"] is False
    assert "suspicious" in status["sources"][0]["problems"][0]
    assert status["sources"][0]["last_restorable"] is not None
    proof = prove_keys(config, catalog)
    assert proof["sources"][0]["keys"] == [{"key_file": str(key), "proves": True}]
    assert proof["ok"] is True
    write_key(key, OTHER_KEY)  # the user replaced the key file with the wrong key
    proof = prove_keys(config, catalog)
    assert proof["ok"] is False
    assert "no configured key opens the newest backup" in proof["sources"][0]["warnings"][0]


def test_scheduled_drill_instead_of_after_arrival(
    make_backup: Callable[..., Path], tmp_path: Path
) -> None:
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config
    from nas_receiver.daemon import scan_once
    from nas_receiver.drills import drill_pending

    config_path = write_config(tmp_path, settle=0)
    config_path.write_text(config_path.read_text() + "drill: {after_arrival: false}\n")
    config = load_config(config_path)
    shutil.copyfile(make_backup(), config.sources[0].path / "a.tar")
    assert scan_once(config) == ["valid"]
    catalog = Catalog(config.catalog_path)
    assert catalog.latest_drills() == {}  # not drilled on arrival
    assert drill_pending(config, catalog) == 1
    (drill,) = catalog.latest_drills().values()
    assert drill["verdict"] == RESTORABLE
    assert drill_pending(config, catalog) == 0  # nothing left to drill


def test_the_drill_after_arrival_checks_the_browse_copy_without_writing_to_it(
    tmp_path: Path,
) -> None:
    """Asserts: with ``store: both``, ``browse: true`` and the drill after arrival, the drill
    checks the read-only browse copy where it is instead of unpacking the HA part again:
    restorable, with the recorder database (WAL mode, as HA's) opened in the read-only tree
    by a process that file permissions bind (root without its override capabilities, as
    the DSM package user is bound); the drill's work folder is read-only, so any unpacking
    there would have failed the drill; the browse copy holds no file SQLite added (-shm,
    -wal)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        from tests.conftest import missing

        missing("dropping the file permission override needs root and setpriv(1)")
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config

    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path / "site", settle=0, keys=(key,))
    library = tmp_path / "site" / "library"
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}",
            f"library: {{path: {library}, store: both, browse: true}}",
        )
        + f"drill: {{work_dir: {tmp_path / 'drill-work'}}}\n"
    )
    (tmp_path / "drill-work").mkdir(mode=0o500)
    core = _backup(tmp_path, "good", writer="core-v2")  # no add-on: those are unpacked apart
    shutil.copyfile(core, tmp_path / "site" / "share" / "a.tar")
    bound = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    result = subprocess.run(
        [*bound, *cli_command(config_path, "scan")],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    config = load_config(config_path)
    drills = list(Catalog(config.catalog_path).latest_drills().values())
    assert len(drills) == 1, result.stdout + result.stderr
    (drill,) = drills
    assert drill["verdict"] == RESTORABLE, drill["checks"]
    database = next(c for c in drill["checks"] if c["name"] == "recorder database")
    assert database["ok"] and "schema 48" in database["detail"]
    (tree,) = [p for p in (library / "home").iterdir() if p.is_dir() and p.name != "decrypted"]
    files = [p.name for p in tree.rglob("*")]
    assert "home-assistant_v2.db" in files
    assert not [name for name in files if name.endswith(("-shm", "-wal"))]
    assert list(config.drill_dir.iterdir()) == []


def test_a_read_only_tree_with_a_write_ahead_log_is_read_from_a_private_copy(
    tmp_path: Path,
) -> None:
    """Asserts: a recorder database whose write-ahead log has content (HA checkpoints before
    a backup, but a log may come along) is checked with that content, from a private copy,
    when it lies in a tree that must not change; the tree's name holds '?', '#' and '%'
    (it is named after a backup) and is left exactly as it was."""
    from nas_receiver.drill.haconfig import check_recorder

    config = tmp_path / "What? #1 100%" / "data"
    config.mkdir(parents=True)
    db = sqlite3.connect(config / "home-assistant_v2.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    db.execute("CREATE TABLE schema_changes (change_id INTEGER PRIMARY KEY, schema_version)")
    db.commit()
    db.execute("INSERT INTO schema_changes (schema_version) VALUES (48)")  # in the log only
    db.commit()
    for name in ("home-assistant_v2.db", "home-assistant_v2.db-wal"):  # a copy, as in a backup
        shutil.copyfile(config / name, tmp_path / name)
    db.close()
    for name in ("home-assistant_v2.db", "home-assistant_v2.db-wal"):
        shutil.copyfile(tmp_path / name, config / name)
    (config / "home-assistant_v2.db-shm").unlink(missing_ok=True)
    before = sorted((p.name, p.stat().st_size) for p in config.iterdir())
    assert dict(before)["home-assistant_v2.db-wal"] > 0
    work = tmp_path / "work"
    work.mkdir()
    counts: dict[str, int] = {}
    check = check_recorder(config, counts, excluded=False, frozen_work=work)
    assert check.ok, check.detail
    assert counts["database_schema"] == 48  # read from the log's content
    assert sorted((p.name, p.stat().st_size) for p in config.iterdir()) == before
    assert list(work.iterdir()) == []


def test_with_store_decrypted_the_drill_names_the_decrypted_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asserts: where the library keeps only the decrypted copy, the drill after arrival
    (run on the very bytes verified) is told by that copy's name, never by the number of
    the share's open file it read ("drill: 8 is restorable")."""
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config
    from nas_receiver.daemon import scan_once

    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path / "site", settle=0, keys=(key,))
    library = tmp_path / "site" / "library"
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}", f"library: {{path: {library}, store: decrypted}}"
        )
    )
    shutil.copyfile(_backup(tmp_path, "good"), tmp_path / "site" / "share" / "a.tar")
    config = load_config(config_path)
    caplog.set_level("INFO", logger="nas_receiver")
    assert scan_once(config) == ["valid"]
    (kept,) = (library / "home").glob("*.tar")
    assert f"drill: {kept.name} is restorable" in caplog.text, caplog.text
    (drill,) = Catalog(config.catalog_path).latest_drills().values()
    assert drill["verdict"] == RESTORABLE


def test_a_bomb_is_not_restorable_and_a_name_twice_is_unpacked_as_ha_restores_it(
    tmp_path: Path,
) -> None:
    """Asserts: the drill of a backup whose HA part is a decompression bomb (valid as an
    archive) records it not restorable, saying the unpacking was refused, instead of
    raising; a backup whose HA part holds a name twice is unpacked as HA's restore does
    (the later file), so the drill judges what HA would restore."""
    bomb = backup_with_ha_part(tmp_path / "bomb.tar", [tar_file("data/zeros.bin", bytes(96 << 20))])
    report = run_drill(bomb, KeyRing([KEY]), work_dir=tmp_path / "work")
    assert report.verdict == NOT_RESTORABLE
    unpack = next(c for c in report.checks if c.name == "unpack")
    assert not unpack.ok and "decompression bomb" in unpack.detail
    twice = backup_with_ha_part(
        tmp_path / "twice.tar",
        [
            tar_file("data/configuration.yaml", b"broken: [\n"),
            tar_file("data/configuration.yaml", b"{}\n"),
        ],
    )
    report = run_drill(twice, KeyRing([KEY]), work_dir=tmp_path / "work")
    assert not [c for c in report.checks if c.name == "unpack"], report.checks
    assert all("configuration.yaml" not in c.detail for c in report.checks if not c.ok), (
        report.checks
    )


def test_a_scheduled_drill_that_cannot_read_one_archive_goes_on_to_the_others(
    make_backup: Callable[..., Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Asserts: where one library copy cannot be read at all (here a folder stands where it
    was), the scheduled drill says so for that archive and drills the others; it used to
    stop the whole schedule, every day."""
    from nas_receiver.catalog import Catalog
    from nas_receiver.config import load_config
    from nas_receiver.daemon import scan_once
    from nas_receiver.drills import drill_pending

    config_path = write_config(tmp_path, settle=0)
    config_path.write_text(config_path.read_text() + "drill: {after_arrival: false}\n")
    config = load_config(config_path)
    for index in range(2):
        backup = make_backup(slug=f"{index:08x}", date=datetime(2026, 11, 20 + index, tzinfo=UTC))
        shutil.copyfile(backup, config.sources[0].path / f"{index}.tar")
    assert scan_once(config) == ["valid", "valid"]
    first = sorted((config.library.path / "home").glob("*.tar"))[0]
    first.unlink()
    first.mkdir()
    catalog = Catalog(config.catalog_path)
    assert drill_pending(config, catalog) == 1
    assert [d["verdict"] for d in catalog.latest_drills().values()] == [RESTORABLE]
    assert f"scheduled drill of {first} not possible" in caplog.text
