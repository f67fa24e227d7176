"""Checks on an extracted HA configuration folder: what HA needs to start from it.

Each check returns a ``Check``; none raises for what the files hold.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import tempfile
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

REGISTRIES = {
    "core.config_entries": ("entries", "config_entries"),
    "core.device_registry": ("devices", "devices"),
    "core.entity_registry": ("entities", "entities"),
}
RECORDER_DB = "home-assistant_v2.db"
HA_CONFIG_DIR = PurePosixPath("/config")  # where HA keeps its configuration (in a URL, say)
# The stores HA itself needs to start; any other store belongs to one integration.
ESSENTIAL_STORES = frozenset(
    {
        *REGISTRIES,
        "core.config",
        "core.area_registry",
        "core.floor_registry",
        "core.label_registry",
        "core.uuid",
        "auth",
        "auth_provider.homeassistant",
        "onboarding",
    }
)
_INCLUDE_TAGS = (
    "!include_dir_named",
    "!include_dir_list",
    "!include_dir_merge_named",
    "!include_dir_merge_list",
)


@dataclass(frozen=True)
class Check:
    """One check of the drill; ``skipped`` when it could not be made here (it counts as ok:
    HA would start all the same)."""

    name: str
    ok: bool
    detail: str
    skipped: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail, "skipped": self.skipped}


def config_folder(part: Path) -> Path:
    """Where the configuration is inside an unpacked HA part: ``data/`` (supervisor and HA
    core, since 2022; supervisor adds ``homeassistant.json`` beside it), or the part's top
    in old "v1" backups, which supervisor still restores."""
    data = part / "data"
    return data if data.is_dir() and not data.is_symlink() else part


def check_storage(config: Path, counts: dict[str, int]) -> Check:
    """HA's own ``.storage`` files parse as JSON; count config entries, devices, entities.

    Only the files at the top of ``.storage`` are HA's stores; integrations keep folders of
    their own there (cookie jars and the like), which are not JSON by contract.  A broken
    store HA needs to start fails the check; any other broken one is noted (HA starts, that
    integration does not)."""
    storage = config / ".storage"
    if not storage.is_dir():
        return Check("storage", False, ".storage/ is missing")
    broken: list[str] = []
    noted: list[str] = []
    for path in sorted(p for p in storage.iterdir() if regular(p)):
        try:
            document = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError, RecursionError) as err:  # nested too deep
            (broken if path.name in ESSENTIAL_STORES else noted).append(
                f"{path.relative_to(config)}: {err}"
            )
            continue
        if path.name in REGISTRIES:
            key, label = REGISTRIES[path.name]
            data = document.get("data") if isinstance(document, dict) else None
            items = data.get(key) if isinstance(data, dict) else None
            if isinstance(items, list):
                counts[label] = len(items)
    if broken:
        return Check("storage", False, "; ".join(broken[:3]))
    missing = [name for name, (_key, label) in REGISTRIES.items() if label not in counts]
    if missing:
        return Check("storage", False, f"no readable {', '.join(missing)}")
    detail = ", ".join(
        f"{counts[label]} {label.replace('_', ' ')}" for _key, label in REGISTRIES.values()
    )
    if noted:
        detail += f"; not JSON (an integration's, HA starts without it): {noted[0]}"
    return Check("storage", True, detail)


def regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def inside_config(root: Path, base: Path, name: str) -> Path | None:
    """``name`` (relative to ``base``, or absolute under HA's ``/config``) as a path inside
    the configuration ``root``; None when it leaves it (the backup does not hold that)."""
    target = PurePosixPath(name)
    if target.is_absolute():
        if not target.is_relative_to(HA_CONFIG_DIR):
            return None
        path = root.joinpath(*target.relative_to(HA_CONFIG_DIR).parts)
    else:
        path = base / name
    resolved = Path(os.path.normpath(path))
    return resolved if resolved == root or root in resolved.parents else None


def check_recorder(
    config: Path,
    counts: dict[str, int],
    *,
    excluded: bool,
    db_url: str | None = None,
    frozen_work: Path | None = None,
) -> Check:
    """The recorder database passes SQLite's integrity check; size and schema version.

    ``db_url`` is the configured ``recorder: db_url:``: a MySQL or PostgreSQL server (or a
    file outside the configuration) holds nothing in the backup: reported as skipped.
    ``frozen_work``: the configuration is a read-only tree that must stay as it is (see
    ``_opened``)."""
    path = _database(config, db_url)
    if isinstance(path, Check):
        return path
    name = path.relative_to(config).as_posix()
    if not regular(path):
        if excluded:
            return Check("recorder database", True, "not in this backup (excluded)")
        return Check("recorder database", False, f"{name} is missing")
    size = path.stat().st_size
    counts["database_bytes"] = size
    try:
        with _opened(path, frozen_work) as db:
            result = db.execute("PRAGMA integrity_check").fetchall()
            version = _schema_version(db)
    except sqlite3.DatabaseError as err:
        return Check("recorder database", False, f"{name}: {err}")
    if result != [("ok",)]:
        first = "; ".join(str(row[0]) for row in result[:2])
        return Check("recorder database", False, f"integrity check failed: {first}")
    if version is not None:
        counts["database_schema"] = version
    return Check(
        "recorder database",
        True,
        f"{size} bytes, schema {version if version is not None else 'unknown'}, ok",
    )


@contextlib.contextmanager
def _opened(path: Path, frozen_work: Path | None) -> Iterator[sqlite3.Connection]:
    """The database for reading.  SQLite opens a database in WAL mode (HA's) only where it
    can write its ``-shm`` beside it, and leaves ``-shm`` and ``-wal`` files there; so a
    read-only tree that must stay as it is (``frozen_work`` given) is opened immutable,
    which reads the database file alone, or, when a write-ahead log or a rollback journal
    with content came with it, from a private copy of both in ``frozen_work``."""
    logs = [
        log
        for log in (path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-journal"))
        if regular(log) and log.stat().st_size
    ]
    with contextlib.ExitStack() as stack:
        query = "mode=ro"
        if frozen_work is not None and logs:  # as SQLite would read it: with its log
            copy = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=frozen_work)))
            for original in (path, *logs):
                shutil.copyfile(original, copy / original.name, follow_symlinks=False)
            path = copy / path.name
        elif frozen_work is not None:
            query = "mode=ro&immutable=1"
        # The path is quoted: a folder named after a backup may hold '?' or '#'.
        db = sqlite3.connect(f"file:{urllib.parse.quote(str(path))}?{query}", uri=True)
        try:
            yield db
        finally:
            db.close()


def _database(config: Path, db_url: str | None) -> Path | Check:
    """The SQLite file of the recorder, or the skipped check when it is not in the backup."""
    if db_url is None:
        return config / RECORDER_DB
    scheme = db_url.split(":", 1)[0].split("+", 1)[0]
    if scheme != "sqlite":
        detail = f"external database ({scheme or '?'}): not in the backup, not checked"
        return Check("recorder database", True, detail, skipped=True)
    location = db_url.split(":///", 1)[-1].split("?", 1)[0]
    found = inside_config(config, config, location) if location else None
    if found is None:
        detail = f"a database outside the configuration ({location}): not checked"
        return Check("recorder database", True, detail, skipped=True)
    return found


def _schema_version(db: sqlite3.Connection) -> int | None:
    try:
        row = db.execute(
            "SELECT schema_version FROM schema_changes ORDER BY change_id DESC LIMIT 1"
        ).fetchone()
    except sqlite3.DatabaseError:
        return None
    return int(row[0]) if row else None


def check_addon(folder: Path, slug: str) -> Check:
    """An add-on archive holds a readable addon.json and its data folder."""
    meta = folder / "addon.json"
    try:
        json.loads(meta.read_bytes())
    except (OSError, ValueError, RecursionError) as err:
        return Check(f"add-on {slug}", False, f"addon.json: {first_line(err)}")
    if not (folder / "data").is_dir():
        return Check(f"add-on {slug}", False, "no data folder")
    return Check(f"add-on {slug}", True, "addon.json and data present")


def first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
