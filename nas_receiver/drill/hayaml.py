"""HA's YAML configuration, read the way HA's own loader reads it, inside the backup only.

What HA accepts passes: its tags (``!include``, ``!include_dir_*``, ``!secret``,
``!env_var`` with its default, ``!input``), files and folders starting with ``.`` skipped by
``!include_dir_*``, a missing ``!include_dir_*`` folder read as empty, ``!secret`` looked up
in ``secrets.yaml`` of the using file's folder and then of each parent up to the
configuration folder.  ``/config/...`` is the configuration folder (HA's own path for it);
nothing outside it is ever read: the backup does not hold it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .haconfig import Check, first_line, inside_config, regular

_DIR_TAGS = (
    "!include_dir_named",
    "!include_dir_list",
    "!include_dir_merge_named",
    "!include_dir_merge_list",
)


@dataclass(frozen=True)
class YamlResult:
    checks: list[Check]
    document: Any  # configuration.yaml with its includes and packages merged in

    def recorder_url(self) -> str | None:
        """``recorder: db_url:``, at the top or in a package, when configured."""
        for block in _recorder_blocks(self.document):
            url = block.get("db_url")
            if isinstance(url, str):
                return url
        return None

    def automations(self) -> int:
        """How many automations the configuration holds (``automation:`` and
        ``automation <label>:`` blocks, at the top and in packages)."""
        documents = [self.document] if isinstance(self.document, dict) else []
        core = documents[0].get("homeassistant") if documents else None
        packages = core.get("packages") if isinstance(core, dict) else None
        if isinstance(packages, dict):
            documents += [p for p in packages.values() if isinstance(p, dict)]
        total = 0
        for document in documents:
            for key, value in document.items():
                if isinstance(key, str) and key.split(" ")[0] == "automation":
                    total += (
                        sum(isinstance(v, dict) for v in value)
                        if isinstance(value, list)
                        else int(isinstance(value, dict))
                    )
        return total


@dataclass
class _Walk:
    root: Path
    links: frozenset[str]  # links the unpacking left out (relative to the root)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: int = 0
    secrets_used: set[str] = field(default_factory=set)
    secrets_missing: set[str] = field(default_factory=set)
    secret_files: dict[Path, dict[str, Any]] = field(default_factory=dict)


def check_yaml(config: Path, links: frozenset[str] = frozenset()) -> YamlResult:
    """configuration.yaml and everything it includes parse; every ``!secret`` has a value.

    ``links`` are members the unpacking did not create (symbolic links): an include that
    names one is reported, not failed."""
    main = config / "configuration.yaml"
    if not regular(main):
        return YamlResult([Check("configuration.yaml", False, "configuration.yaml is missing")], {})
    walk = _Walk(config, links)
    document = _load(main, walk)
    detail = "; ".join(walk.problems[:3]) or f"{walk.files} YAML file(s) parse"
    if walk.notes and not walk.problems:
        detail += f"; {walk.notes[0]}"
    return YamlResult(
        [Check("configuration.yaml", not walk.problems, detail), _secrets_check(walk)], document
    )


def _secrets_check(walk: _Walk) -> Check:
    if walk.secrets_missing:
        missing = ", ".join(sorted(walk.secrets_missing))
        return Check("secrets.yaml", False, f"no value for {missing}")
    if not walk.secrets_used:
        return Check("secrets.yaml", True, "no !secret used")
    return Check("secrets.yaml", True, f"{len(walk.secrets_used)} secret(s) present")


def _load(path: Path, walk: _Walk) -> Any:
    walk.files += 1
    try:
        with path.open(encoding="utf-8") as file:
            return yaml.load(file, Loader=_loader_for(path, walk))  # noqa: S506  (SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError, OSError) as err:
        walk.problems.append(f"{_shown(path, walk)}: {first_line(err)}")
        return None


def _shown(path: Path, walk: _Walk) -> str:
    try:
        return path.relative_to(walk.root).as_posix()
    except ValueError:
        return str(path)


def _loader_for(path: Path, walk: _Walk) -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader):
        pass

    where = _shown(path, walk)

    def include(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        name = str(loader.construct_scalar(node))  # type: ignore[arg-type]
        target = inside_config(walk.root, path.parent, name)
        if target is None:
            walk.problems.append(f"{where}: !include of {name}, outside the configuration")
        elif regular(target):
            return _load(target, walk)
        elif _shown(target, walk) in walk.links:
            walk.notes.append(f"!include of {name}: a symbolic link, not followed here")
        else:
            walk.problems.append(f"{where}: !include of missing {name}")
        return None

    def include_dir(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        name = str(loader.construct_scalar(node))  # type: ignore[arg-type]
        folder = inside_config(walk.root, path.parent, name)
        if folder is None:
            walk.problems.append(f"{where}: {node.tag} {name}, outside the configuration")
            return None
        files = _yaml_files(folder) if folder.is_dir() and not folder.is_symlink() else []
        return _merged(node.tag, [(child, _load(child, walk)) for child in files])

    def secret(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        return _secret(path.parent, str(loader.construct_scalar(node)), walk)  # type: ignore[arg-type]

    def env_var(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
        words = str(loader.construct_scalar(node)).split(maxsplit=1)  # type: ignore[arg-type]
        return words[1] if len(words) > 1 else None  # the variable is the HA host's

    def anything(_loader: yaml.SafeLoader, _node: yaml.Node) -> None:
        return None

    Loader.add_constructor("!include", include)
    for tag in _DIR_TAGS:
        Loader.add_constructor(tag, include_dir)
    Loader.add_constructor("!secret", secret)
    Loader.add_constructor("!env_var", env_var)
    for tag in ("!input", "!template"):
        Loader.add_constructor(tag, anything)
    return Loader


def _merged(tag: str, loaded: list[tuple[Path, Any]]) -> Any:
    """What each ``!include_dir_*`` gives HA: a mapping by file name, a list, or merged."""
    if tag == "!include_dir_named":
        return {child.stem: value for child, value in loaded}
    if tag == "!include_dir_list":
        return [value for _child, value in loaded]
    if tag == "!include_dir_merge_named":
        merged: dict[Any, Any] = {}
        for _child, value in loaded:
            if isinstance(value, dict):
                merged.update(value)
        return merged
    return [item for _child, value in loaded if isinstance(value, list) for item in value]


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


def _secret(folder: Path, name: str, walk: _Walk) -> Any:
    """HA's lookup: ``secrets.yaml`` here, then in each parent up to the root."""
    walk.secrets_used.add(name)
    current = folder
    while True:
        values = _secrets_file(current, walk)
        if name in values:
            return values[name]
        if current == walk.root or walk.root not in current.parents:
            walk.secrets_missing.add(name)
            return None
        current = current.parent


def _secrets_file(folder: Path, walk: _Walk) -> dict[str, Any]:
    if folder not in walk.secret_files:
        walk.secret_files[folder] = {}  # set first: a secrets.yaml using !secret ends here
        path = folder / "secrets.yaml"
        values = _load(path, walk) if regular(path) else {}
        walk.secret_files[folder] = values if isinstance(values, dict) else {}
    return walk.secret_files[folder]


def _recorder_blocks(document: Any) -> list[dict[str, Any]]:
    if not isinstance(document, dict):
        return []
    blocks = [document.get("recorder")]
    core = document.get("homeassistant")
    packages = core.get("packages") if isinstance(core, dict) else None
    if isinstance(packages, dict):
        blocks += [p.get("recorder") for p in packages.values() if isinstance(p, dict)]
    return [block for block in blocks if isinstance(block, dict)]
