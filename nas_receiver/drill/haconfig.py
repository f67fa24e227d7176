"""Checks on an extracted HA configuration folder: what HA needs to start from it.

Each check returns a ``Check``; none raises for what the files hold.
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REGISTRIES = {
    "core.config_entries": ("entries", "config_entries"),
    "core.device_registry": ("devices", "devices"),
    "core.entity_registry": ("entities", "entities"),
}
RECORDER_DB = "home-assistant_v2.db"
_ESSENTIAL = ("core.", "auth")  # the stores HA itself needs to start
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
    store of HA's core or auth fails the check; any other broken one is noted (HA starts,
    that integration does not)."""
    storage = config / ".storage"
    if not storage.is_dir():
        return Check("storage", False, ".storage/ is missing")
    broken: list[str] = []
    noted: list[str] = []
    for path in sorted(p for p in storage.iterdir() if _regular(p)):
        try:
            document = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:
            (broken if path.name.startswith(_ESSENTIAL) else noted).append(
                f"{path.relative_to(config)}: {err}"
            )
            continue
        if path.name in REGISTRIES:
            key, label = REGISTRIES[path.name]
            items = document.get("data", {}).get(key) if isinstance(document, dict) else None
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


def _regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


class _Secrets:
    """``!secret`` as HA resolves it: ``secrets.yaml`` in the using file's folder, then in
    each parent up to the configuration folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.used: set[str] = set()
        self.missing: set[str] = set()
        self.problems: list[str] = []
        self._files: dict[Path, dict[str, Any]] = {}

    def lookup(self, folder: Path, name: str) -> Any:
        self.used.add(name)
        current = folder
        while True:
            values = self._load(current)
            if name in values:
                return values[name]
            if current == self.root or self.root not in current.parents:
                self.missing.add(name)
                return None
            current = current.parent

    def _load(self, folder: Path) -> dict[str, Any]:
        if folder not in self._files:
            self._files[folder] = {}
            path = folder / "secrets.yaml"
            if _regular(path):
                try:
                    values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                except (yaml.YAMLError, UnicodeDecodeError) as err:
                    where = path.relative_to(self.root)
                    self.problems.append(f"{where} does not parse: {_first_line(err)}")
                    values = {}
                self._files[folder] = values if isinstance(values, dict) else {}
        return self._files[folder]

    def check(self) -> Check:
        if self.problems:
            return Check("secrets.yaml", False, "; ".join(self.problems[:2]))
        if self.missing:
            return Check("secrets.yaml", False, f"no value for {', '.join(sorted(self.missing))}")
        if not self.used:
            return Check("secrets.yaml", True, "no !secret used")
        return Check("secrets.yaml", True, f"{len(self.used)} secret(s) present")


@dataclass
class _YamlWalk:
    root: Path
    secrets: _Secrets
    problems: list[str] = field(default_factory=list)
    files: int = 0


@dataclass(frozen=True)
class YamlResult:
    checks: list[Check]
    recorder_url: str | None  # ``recorder: db_url:``, when configured


def check_yaml(config: Path) -> YamlResult:
    """configuration.yaml and everything it includes parse, HA's tags accepted, as HA's own
    loader reads them (dot-files skipped, a missing ``!include_dir_*`` folder is empty); every
    ``!secret`` it uses has a value."""
    main = config / "configuration.yaml"
    if not _regular(main):
        return YamlResult(
            [Check("configuration.yaml", False, "configuration.yaml is missing")], None
        )
    walk = _YamlWalk(config, _Secrets(config))
    document = _load(main, walk)
    checks = [
        Check(
            "configuration.yaml",
            not walk.problems,
            "; ".join(walk.problems[:3]) or f"{walk.files} YAML file(s) parse",
        ),
        walk.secrets.check(),
    ]
    return YamlResult(checks, _recorder_url(document))


def _recorder_url(document: Any) -> str | None:
    recorder = document.get("recorder") if isinstance(document, dict) else None
    url = recorder.get("db_url") if isinstance(recorder, dict) else None
    return url if isinstance(url, str) else None


def _load(path: Path, walk: _YamlWalk) -> Any:
    walk.files += 1
    loader_class = _loader_for(path, walk)
    try:
        with path.open(encoding="utf-8") as file:
            return yaml.load(file, Loader=loader_class)  # noqa: S506  (a SafeLoader subclass)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        walk.problems.append(f"{path.relative_to(walk.root)}: {_first_line(err)}")
        return None


def _yaml_files(folder: Path) -> list[Path]:
    """The files HA's ``!include_dir_*`` reads: ``*.yaml`` below ``folder``, not following
    links, skipping names that start with a dot and ``secrets.yaml``."""
    found: list[Path] = []
    for top, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [
            Path(top) / name
            for name in sorted(files)
            if name.endswith(".yaml") and not name.startswith(".") and name != "secrets.yaml"
        ]
    return found


def _loader_for(path: Path, walk: _YamlWalk) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        target = path.parent / str(loader.construct_scalar(node))  # type: ignore[arg-type]
        if not _regular(target):
            walk.problems.append(
                f"{path.relative_to(walk.root)}: !include of missing "
                f"{loader.construct_scalar(node)}"  # type: ignore[arg-type]
            )
            return None
        return _load(target, walk)

    def include_dir(loader: yaml.SafeLoader, node: yaml.Node) -> None:
        folder = path.parent / str(loader.construct_scalar(node))  # type: ignore[arg-type]
        if folder.is_dir() and not folder.is_symlink():  # a missing folder is empty to HA
            for child in _yaml_files(folder):
                _load(child, walk)

    def secret(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        name = str(loader.construct_scalar(node))  # type: ignore[arg-type]
        return walk.secrets.lookup(path.parent, name)

    def anything(_loader: yaml.SafeLoader, _node: yaml.Node) -> None:
        return None

    Loader.add_constructor("!include", include)
    for tag in _INCLUDE_TAGS:
        Loader.add_constructor(tag, include_dir)
    Loader.add_constructor("!secret", secret)
    for tag in ("!env_var", "!input", "!template"):
        Loader.add_constructor(tag, anything)
    return Loader


def check_recorder(
    config: Path, counts: dict[str, int], *, excluded: bool, db_url: str | None = None
) -> Check:
    """The recorder database passes SQLite's integrity check; size and schema version.

    ``db_url`` is the configured ``recorder: db_url:``: a MySQL or PostgreSQL server holds
    no file in the backup, which is reported as skipped."""
    name = RECORDER_DB
    if db_url is not None:
        scheme = db_url.split(":", 1)[0].split("+", 1)[0]
        if scheme != "sqlite":
            detail = f"external database ({scheme or '?'}): not in the backup, not checked"
            return Check("recorder database", True, detail, skipped=True)
        name = PurePosixPath(db_url.split(":///", 1)[-1]).name or RECORDER_DB
    path = config / name
    if not _regular(path):
        if excluded:
            return Check("recorder database", True, "not in this backup (excluded)")
        return Check("recorder database", False, f"{name} is missing")
    size = path.stat().st_size
    counts["database_bytes"] = size
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            result = db.execute("PRAGMA integrity_check").fetchall()
            version = _schema_version(db)
        db.close()
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
    except (OSError, ValueError) as err:
        return Check(f"add-on {slug}", False, f"addon.json: {_first_line(err)}")
    if not (folder / "data").is_dir():
        return Check(f"add-on {slug}", False, "no data folder")
    return Check(f"add-on {slug}", True, "addon.json and data present")


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
