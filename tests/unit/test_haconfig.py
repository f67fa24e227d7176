"""The drill's configuration checks on folders laid out as HA keeps them (no archive)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from nas_receiver.drill.haconfig import check_recorder, check_storage
from nas_receiver.drill.hayaml import check_yaml


def _config(root: Path, text: str, **files: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "configuration.yaml").write_text(text)
    for name, content in files.items():
        path = root / name.replace("__", "/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def _database(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()


@pytest.mark.parametrize(
    ("url", "database", "skipped"),
    [
        (None, "home-assistant_v2.db", False),
        ("sqlite:////config/db/ha.db", "db/ha.db", False),
        ("sqlite:////config/db/ha.db?timeout=30", "db/ha.db", False),
        ("sqlite:///db/ha.db", "db/ha.db", False),
        ("mysql://ha:pw@core-mariadb/homeassistant", None, True),
        ("postgresql+psycopg2://ha@db/ha", None, True),
        ("sqlite:////var/lib/ha.db", None, True),  # outside the configuration: not in it
    ],
)
def test_the_recorder_database_is_where_db_url_says(
    tmp_path: Path, url: str | None, database: str | None, skipped: bool
) -> None:
    if database:
        _database(tmp_path / database)
    check = check_recorder(tmp_path, {}, excluded=False, db_url=url)
    assert check.ok and check.skipped is skipped, check


def test_includes_never_leave_the_configuration(tmp_path: Path) -> None:
    """Asserts: a file outside the configuration folder is never read (a YAML error in it
    would show), and the include fails as HA's restore on new hardware would."""
    outside = tmp_path / "outside.yaml"
    outside.write_text("[unclosed")
    (tmp_path / "outdir").mkdir()
    (tmp_path / "outdir" / "x.yaml").write_text("[unclosed")
    config = _config(
        tmp_path / "config",
        "a: !include ../outside.yaml\nb: !include_dir_merge_list /tmp\nc: !include /etc/passwd\n",
    )
    result = check_yaml(config)
    detail = result.checks[0].detail
    assert not result.checks[0].ok
    assert "outside the configuration" in detail and "unclosed" not in detail


def test_a_registry_of_an_unexpected_shape_is_a_failed_check(tmp_path: Path) -> None:
    storage = tmp_path / ".storage"
    storage.mkdir()
    for name in ("core.config_entries", "core.device_registry", "core.entity_registry"):
        (storage / name).write_text('{"version": 1, "data": []}')
    check = check_storage(tmp_path, {})
    assert not check.ok and "no readable" in check.detail


def test_a_store_nested_too_deep_for_python_is_a_failed_check(tmp_path: Path) -> None:
    """A hostile .storage file (JSON nested 100000 deep) fails the check, not the drill."""
    storage = tmp_path / ".storage"
    storage.mkdir()
    (storage / "core.config_entries").write_text("[" * 100_000 + "]" * 100_000)
    check = check_storage(tmp_path, {})
    assert not check.ok and "core.config_entries" in check.detail


def test_packages_are_merged_as_ha_merges_them(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "homeassistant:\n  packages: !include_dir_named packages\n",
        packages__db="recorder:\n  db_url: mysql://x@y/z\n",
    )
    (tmp_path / "packages" / "db").rename(tmp_path / "packages" / "db.yaml")
    assert check_yaml(config).recorder_url() == "mysql://x@y/z"
