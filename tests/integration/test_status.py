"""status: health per source, the dead-man alarm, exit codes; list: the 3-2-1 view."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.report import source_status
from tests.conftest import corpus_file
from tests.daemon_helpers import cli, write_config

MakeBackup = Callable[..., Path]


def test_fresh_source_with_expectation_is_unhealthy(tmp_path: Path) -> None:
    config_path = write_config(tmp_path, expect_every="8d")
    result = cli(config_path, "status", "--json")
    assert result.returncode == 3
    (source,) = json.loads(result.stdout)["sources"]
    assert source["problems"] == ["no valid backup received yet"]


def test_dead_man_alarm_after_expect_every(make_backup: MakeBackup, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, settle=0, expect_every="8d"))
    shutil.copyfile(make_backup(), config.sources[0].path / "a.tar")
    scan_once(config)
    catalog = Catalog(config.catalog_path)
    now = time.time()
    assert source_status(config, catalog, now)["healthy"] is True
    later = source_status(config, catalog, now + 9 * 86400)
    assert later["healthy"] is False
    assert "no new valid backup for 9.0 days" in later["sources"][0]["problems"][0]


def test_newest_archive_not_valid_is_unhealthy_and_list_shows_both(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    config_path = write_config(tmp_path, settle=0)
    config = load_config(config_path)
    shutil.copyfile(make_backup(), config.sources[0].path / "good.tar")
    assert scan_once(config) == ["valid"]
    time.sleep(0.01)
    shutil.copyfile(
        corpus_file("habackuptool_test_protected_v1.tar"), config.sources[0].path / "bad.tar"
    )
    scan = cli(config_path, "scan", "--json")
    assert scan.returncode == 3 and json.loads(scan.stdout) == ["corrupt"]
    status = cli(config_path, "status")
    assert status.returncode == 3 and "is corrupt" in status.stdout
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    assert {r["verdict"] for r in rows} == {"valid", "corrupt"}
    for row in rows:
        assert {"sha256", "slug", "name", "date", "source", "kind", "verdict", "copies"} <= set(row)
        for copy in row["copies"]:
            assert {"location", "state", "path"} <= set(copy)
    text = cli(config_path, "list").stdout
    assert "quarantine" in text and "library" in text


def test_config_commands(tmp_path: Path) -> None:
    config_path = write_config(tmp_path)
    check = cli(config_path, "config", "check")
    assert check.returncode == 0 and "ok" in check.stdout
    example = cli(config_path, "config", "example")
    assert example.returncode == 0 and "sources:" in example.stdout
    config_path.write_text(config_path.read_text() + "surprise: 1\n")
    bad = cli(config_path, "config", "check")
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"nas-receiver: {config_path}: at 'surprise': unknown setting"


def test_log_file_gets_one_line_per_event(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, settle=0)
    log = tmp_path / "logs" / "nas-receiver.log"
    config_path.write_text(config_path.read_text() + f"log_file: {log}\n")
    shutil.copyfile(make_backup(), tmp_path / "share" / "a.tar")
    assert cli(config_path, "scan").returncode == 0
    lines = log.read_text().splitlines()
    assert any(" INFO home: arrived: a.tar" in line for line in lines)
    assert any("verified valid in" in line for line in lines)
    assert any("placed in library" in line for line in lines)


def test_status_while_the_daemon_creates_its_catalog_waits_for_it(tmp_path: Path) -> None:
    """Asserts: `status` run just as the daemon starts, when the catalog file exists but
    its tables are not made yet, waits for them and reports (it crashed with "no such
    table" before: a test polling status at a daemon's start failed about once in 20)."""
    import sqlite3
    import subprocess

    from tests.daemon_helpers import cli_command

    config_path = write_config(tmp_path, settle=0)
    config = load_config(config_path)
    config.catalog_path.parent.mkdir(parents=True)
    begun = sqlite3.connect(config.catalog_path)  # created, as the daemon's first step does
    begun.execute("PRAGMA journal_mode=WAL")
    status = subprocess.Popen(
        cli_command(config_path, "status", "--json"), stdout=subprocess.PIPE, text=True
    )
    time.sleep(0.5)
    Catalog(config.catalog_path)  # the daemon's next step: its tables
    out, _ = status.communicate(timeout=60)
    assert status.returncode in (0, 3)  # healthy or not: a report, not a crash
    assert json.loads(out)["sources"][0]["name"] == "home"
    begun.close()
