"""Checks on an extracted HA configuration folder: what HA needs to start from it.

Each check returns a ``Check``; none raises for what the files hold.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGISTRIES = {
    "core.config_entries": ("entries", "config_entries"),
    "core.device_registry": ("devices", "devices"),
    "core.entity_registry": ("entities", "entities"),
}
RECORDER_DB = "home-assistant_v2.db"
_INCLUDE_TAGS = (
    "!include_dir_named",
    "!include_dir_list",
    "!include_dir_merge_named",
    "!include_dir_merge_list",
)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def check_storage(config: Path, counts: dict[str, int]) -> Check:
    """Every ``.storage`` file parses as JSON; count config entries, devices, entities."""
    storage = config / ".storage"
    if not storage.is_dir():
        return Check("storage", False, ".storage/ is missing")
    broken = []
    for path in sorted(p for p in storage.rglob("*") if p.is_file()):
        try:
            document = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as err:
            broken.append(f"{path.relative_to(config)}: {err}")
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
    return Check("storage", True, detail)


@dataclass
class _YamlWalk:
    root: Path
    secrets_used: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    files: int = 0


def check_yaml(config: Path) -> list[Check]:
    """configuration.yaml and everything it includes parse, HA's tags accepted; every
    ``!secret`` it uses is in secrets.yaml."""
    main = config / "configuration.yaml"
    if not main.is_file():
        return [Check("configuration.yaml", False, "configuration.yaml is missing")]
    walk = _YamlWalk(config)
    _load(main, walk)
    checks = [
        Check(
            "configuration.yaml",
            not walk.problems,
            "; ".join(walk.problems[:3]) or f"{walk.files} YAML file(s) parse",
        )
    ]
    checks.append(_check_secrets(config, walk.secrets_used))
    return checks


def _check_secrets(config: Path, used: set[str]) -> Check:
    if not used:
        return Check("secrets.yaml", True, "no !secret used")
    path = config / "secrets.yaml"
    if not path.is_file():
        return Check("secrets.yaml", False, f"missing, but {len(used)} !secret used")
    try:
        secrets = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return Check("secrets.yaml", False, f"does not parse: {_first_line(err)}")
    absent = sorted(name for name in used if name not in secrets)
    if absent:
        return Check("secrets.yaml", False, f"no value for {', '.join(absent)}")
    return Check("secrets.yaml", True, f"{len(used)} secret(s) present")


def _load(path: Path, walk: _YamlWalk) -> None:
    walk.files += 1
    loader_class = _loader_for(path, walk)
    try:
        with path.open(encoding="utf-8") as file:
            yaml.load(file, Loader=loader_class)  # noqa: S506  (a SafeLoader subclass)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        walk.problems.append(f"{path.relative_to(walk.root)}: {_first_line(err)}")


def _loader_for(path: Path, walk: _YamlWalk) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> None:
        target = path.parent / str(loader.construct_scalar(node))  # type: ignore[arg-type]
        if not target.is_file():
            walk.problems.append(
                f"{path.relative_to(walk.root)}: !include of missing "
                f"{target.relative_to(walk.root)}"
            )
            return
        _load(target, walk)

    def include_dir(loader: yaml.SafeLoader, node: yaml.Node) -> None:
        folder = path.parent / str(loader.construct_scalar(node))  # type: ignore[arg-type]
        if not folder.is_dir():
            walk.problems.append(f"{path.relative_to(walk.root)}: missing folder {folder.name}")
            return
        for child in sorted(folder.rglob("*.yaml")):
            _load(child, walk)

    def secret(loader: yaml.SafeLoader, node: yaml.Node) -> None:
        walk.secrets_used.add(str(loader.construct_scalar(node)))  # type: ignore[arg-type]

    def anything(_loader: yaml.SafeLoader, _node: yaml.Node) -> None:
        return None

    Loader.add_constructor("!include", include)
    for tag in _INCLUDE_TAGS:
        Loader.add_constructor(tag, include_dir)
    Loader.add_constructor("!secret", secret)
    for tag in ("!env_var", "!input", "!template"):
        Loader.add_constructor(tag, anything)
    return Loader


def check_recorder(config: Path, counts: dict[str, int], *, excluded: bool) -> Check:
    """The recorder database passes SQLite's integrity check; size and schema version."""
    path = config / RECORDER_DB
    if not path.exists():
        if excluded:
            return Check("recorder database", True, "not in this backup (excluded)")
        return Check("recorder database", False, f"{RECORDER_DB} is missing")
    size = path.stat().st_size
    counts["database_bytes"] = size
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            result = db.execute("PRAGMA integrity_check").fetchall()
            version = _schema_version(db)
        db.close()
    except sqlite3.DatabaseError as err:
        return Check("recorder database", False, f"{RECORDER_DB}: {err}")
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
