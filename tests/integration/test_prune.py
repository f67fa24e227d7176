"""Prune end to end: archives really leave the library, the catalog agrees, floors hold."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from nas_receiver.catalog import Catalog, CopyState
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from tests.daemon_helpers import archives_in, cli, write_config

MakeBackup = Callable[..., Path]
BASE = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)


def _setup(tmp_path: Path, make_backup: MakeBackup, retention: str, days: int = 6) -> Path:
    config_path = write_config(tmp_path, settle=0)
    config = load_config(config_path)
    for day in range(days):
        backup = make_backup(slug=f"{day:08x}", date=BASE + timedelta(days=day), entities=5)
        shutil.copyfile(backup, config.sources[0].path / f"day{day}.tar")
    assert scan_once(config) == ["valid"] * days  # no policy yet: everything is kept
    assert len(archives_in(config.library.path)) == days
    text = config_path.read_text().replace(
        "library: {path: ", f"library: {{retention: {retention}, path: "
    )
    config_path.write_text(text)
    return config_path


def _library_days(config_path: Path) -> list[str]:
    config = load_config(config_path)
    return sorted(p.name.split("_")[3] for p in archives_in(config.library.path))


def test_prune_deletes_files_and_catalog_agrees(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = _setup(tmp_path, make_backup, "{keep_last: 2}")
    dry = cli(config_path, "prune", "--dry-run", "--json")
    assert dry.returncode == 0
    rows = json.loads(dry.stdout)
    assert {"location", "sha256", "name", "date", "action", "reasons"} <= set(rows[0])
    library_rows = [r for r in rows if r["location"] == "library"]
    assert [r["action"] for r in library_rows].count("delete") == 4
    assert len(_library_days(config_path)) == 6  # a dry run deletes nothing
    assert "last 1" in next(r for r in library_rows if r["action"] == "keep")["reasons"]

    assert cli(config_path, "prune").returncode == 0
    assert _library_days(config_path) == ["2026-11-05", "2026-11-06"]
    config = load_config(config_path)
    names = {p.name for p in (config.library.path / "home").iterdir()}
    assert len(names) == 4  # two archives, two sidecars: the sidecars went with them
    catalog = Catalog(config.catalog_path)
    states = sorted(c.state for c in catalog.copies(location="library"))
    assert states == [CopyState.DELETED] * 4 + [CopyState.PRESENT] * 2
    listed = json.loads(cli(config_path, "list", "--json").stdout)
    assert sum(1 for row in listed if row["copies"]) == 2
    again = json.loads(cli(config_path, "prune", "--json").stdout)
    assert all(r["action"] == "keep" for r in again)  # a second prune deletes nothing more


def test_pin_keeps_an_archive_everywhere(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = _setup(tmp_path, make_backup, "{keep_last: 1}", days=3)
    pinned = cli(config_path, "pin", "00000000")  # the slug of the oldest
    assert pinned.returncode == 0, pinned.stderr
    cli(config_path, "prune")
    assert _library_days(config_path) == ["2026-11-01", "2026-11-03"]
    rows = json.loads(cli(config_path, "prune", "--dry-run", "--json").stdout)
    assert any("pinned" in r["reasons"] for r in rows)
    assert cli(config_path, "unpin", "00000000").returncode == 0
    cli(config_path, "prune")
    assert _library_days(config_path) == ["2026-11-03"]
    unknown = cli(config_path, "pin", "ffffffff")
    assert unknown.returncode == 2 and "no archive" in unknown.stderr


def test_a_deletion_marked_by_a_killed_run_is_finished(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    config_path = _setup(tmp_path, make_backup, "{keep_last: 10}", days=2)
    config = load_config(config_path)
    catalog = Catalog(config.catalog_path)
    oldest = min(catalog.copies(location="library"), key=lambda c: c.path or "")
    catalog.mark_copy(oldest.id, 0)  # step one done, then the process died
    assert Path(oldest.path or "").exists()
    cli(config_path, "prune")
    assert not Path(oldest.path or "").exists()
    assert {c.state for c in catalog.copies() if c.id == oldest.id} == {CopyState.DELETED}


def test_min_valid_floor_end_to_end(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = _setup(tmp_path, make_backup, "{keep_last: 1, min_valid: 3}", days=5)
    rows = json.loads(cli(config_path, "prune", "--json").stdout)
    assert len(_library_days(config_path)) == 3
    assert sum("floor: min_valid 3" in r["reasons"] for r in rows) == 2


def test_daemon_scan_prunes_after_arrivals(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = _setup(tmp_path, make_backup, "{keep_daily: 2}", days=3)
    config = load_config(config_path)
    backup = make_backup(slug="0000000a", date=BASE + timedelta(days=10), entities=5)
    shutil.copyfile(backup, config.sources[0].path / "new.tar")
    assert scan_once(config) == ["valid"]
    assert _library_days(config_path) == ["2026-11-03", "2026-11-11"]


def test_quarantine_age_rule_is_off_by_default(tmp_path: Path) -> None:
    from tests.conftest import corpus_file

    config_path = write_config(tmp_path, settle=0)
    config = load_config(config_path)
    shutil.copyfile(
        corpus_file("habackuptool_test_protected_v1.tar"), config.sources[0].path / "bad.tar"
    )
    assert scan_once(config) == ["corrupt"]
    cli(config_path, "prune")
    assert len(archives_in(config.quarantine.path)) == 1  # kept: no age rule
    config_path.write_text(
        config_path.read_text().replace("quarantine: {path: ", "quarantine: {max_age: 30d, path: ")
    )
    cli(config_path, "prune", "--location", "quarantine")
    assert archives_in(config.quarantine.path) == []  # from 2025: older than 30 days
    assert list(config.quarantine.path.rglob("*.reason.json")) == []


def test_prune_sees_a_library_that_keeps_decrypted_copies_only(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    from tests.builders import KEY, write_key

    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path, settle=0, keys=(key,))
    config_path.write_text(
        config_path.read_text().replace(
            "library: {path: ", "library: {store: decrypted, retention: {keep_last: 1}, path: "
        )
    )
    config = load_config(config_path)
    for day in range(3):
        backup = make_backup(
            password=KEY, slug=f"{day:08x}", date=BASE + timedelta(days=day), entities=5
        )
        shutil.copyfile(backup, config.sources[0].path / f"day{day}.tar")
    assert scan_once(config) == ["valid"] * 3
    assert _library_days(config_path) == ["2026-11-03"]  # decrypted copies pruned too
    (left,) = archives_in(config.library.path)
    assert left.with_name(left.stem + "_meta.json").exists()


def test_prune_never_deletes_through_a_linked_library_folder(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: where the source's library folder has been replaced by a symbolic link (here
    to the share, where HA's Synology agent keeps files of the very names the library
    uses), prune deletes nothing through it: HA's files stay as they are, the deletions stay
    marked and are told, and they are finished once the folder is real again."""
    config_path = _setup(tmp_path, make_backup, "{keep_last: 2}", days=3)
    config = load_config(config_path)
    folder, share = config.library.path / "home", config.sources[0].path
    for path in folder.iterdir():  # the names HA's agent gives its files in the share
        shutil.copyfile(path, share / path.name)
    before = {p.name: p.read_bytes() for p in share.iterdir()}
    folder.rename(folder.with_name("home.moved"))
    folder.symlink_to(share, target_is_directory=True)
    done = cli(config_path, "prune")
    assert done.returncode == 0, done.stderr
    assert {p.name: p.read_bytes() for p in share.iterdir()} == before
    assert "a symbolic link where a folder of ours goes" in done.stderr
    states = [c.state for c in Catalog(config.catalog_path).copies(location="library")]
    assert sorted(states) == [CopyState.MARKED] + [CopyState.PRESENT] * 2
    folder.unlink()
    folder.with_name("home.moved").rename(folder)
    assert cli(config_path, "prune").returncode == 0
    assert _library_days(config_path) == ["2026-11-02", "2026-11-03"]
