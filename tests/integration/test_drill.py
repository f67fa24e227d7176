"""The restore drill on realistic HA configurations, good and broken in the ways that matter."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from nas_receiver.drill import NOT_RESTORABLE, RESTORABLE, run_drill
from nas_receiver.haformat import KeyRing
from tests.builders import (
    KEY,
    OTHER_KEY,
    BackupSpec,
    make_addon_data,
    make_folder,
    make_ha_config,
    write_backup_from,
    write_key,
)
from tests.daemon_helpers import cli_command, write_config

Breaker = Callable[[Path], None]


def _backup(
    tmp_path: Path, name: str, *, entities: int = 40, breaker: Breaker | None = None
) -> Path:
    work = tmp_path / f"work-{name}"
    config = make_ha_config(work / "ha", entities=entities)
    if breaker:
        breaker(config)
    parts = [
        ("homeassistant", config),
        ("core_mosquitto", make_addon_data(work / "addon", "core_mosquitto")),
        ("share", make_folder(work / "share", "share")),
    ]
    spec = BackupSpec(password=KEY, entities=entities, folders=("share",))
    return write_backup_from(tmp_path / f"{name}.tar", spec, parts)


def _failing(report_checks: list[dict[str, object]]) -> list[str]:
    return [str(c["name"]) for c in report_checks if not c["ok"]]


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


@pytest.mark.parametrize(
    ("breaker", "check", "detail"),
    [
        (_corrupt_database, "recorder database", ""),
        (_truncate_registry, "storage", "core.entity_registry"),
        (_yaml_error, "configuration.yaml", "configuration.yaml"),
        (_missing_include, "configuration.yaml", "!include of missing automations.yaml"),
    ],
)
def test_broken_backups_are_not_restorable_naming_the_check(
    tmp_path: Path, breaker: Breaker, check: str, detail: str
) -> None:
    report = run_drill(
        _backup(tmp_path, "broken", breaker=breaker), KeyRing([KEY]), work_dir=tmp_path / "drills"
    ).to_dict()
    assert report["verdict"] == NOT_RESTORABLE
    assert _failing(report["checks"]) == [check]
    failed = next(c for c in report["checks"] if c["name"] == check)
    assert detail in str(failed["detail"])


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
