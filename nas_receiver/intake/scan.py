"""The reconcile scan: what is in a source folder now.  The truth; file events are hints."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .shareio import Identity, lstat_regular

SIDECAR_SUFFIXES = ("_meta.json", ".metadata.json")
MAX_DEPTH = 3


@dataclass(frozen=True)
class SeenFile:
    """An archive file in a source folder, with its paired sidecar if any."""

    path: str  # relative to the source folder, with "/"
    size: int
    mtime_ns: int
    sidecar: str | None  # relative path of <base>_meta.json or <base>.metadata.json
    identity: str | None = None  # inode and change time (see shareio.Identity)


def ignored_dir(name: str) -> bool:
    """HA uploads and restores through tmp* folders; hidden folders are never backups."""
    return name.startswith((".", "tmp", "@")) or name == "#recycle"


def is_archive_name(name: str) -> bool:
    return name.endswith(".tar") and not name.startswith(".") and is_text(name)


def is_text(name: str) -> bool:
    """Whether a file name is valid UTF-8 (HA writes no other; the catalog keeps no other)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def scan_source(root: Path, unreadable: list[str] | None = None) -> dict[str, SeenFile]:
    """Return every archive under ``root`` (a few levels deep), keyed by relative path.
    Names that are not valid UTF-8 are left out (and added to ``unreadable``).

    Raise OSError when ``root`` itself cannot be listed.
    """
    found: dict[str, SeenFile] = {}
    _scan_dir(root, "", 0, found, [] if unreadable is None else unreadable)
    return found


def _scan_dir(
    folder: Path, prefix: str, depth: int, found: dict[str, SeenFile], unreadable: list[str]
) -> None:
    with os.scandir(folder) as entries:
        listing = list(entries)
    names = {entry.name for entry in listing}
    for entry in listing:
        if not is_text(entry.name):
            unreadable.append(repr(prefix + entry.name))
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                if depth < MAX_DEPTH and not ignored_dir(entry.name):
                    try:
                        _scan_dir(
                            Path(entry.path), f"{prefix}{entry.name}/", depth + 1, found, unreadable
                        )
                    except OSError:
                        continue  # a folder that vanished or is unreadable: next scan
                continue
            if not (entry.is_file(follow_symlinks=False) and is_archive_name(entry.name)):
                continue
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
        base = entry.name[: -len(".tar")]
        sidecar = next((base + s for s in SIDECAR_SUFFIXES if base + s in names), None)
        relative = prefix + entry.name
        found[relative] = SeenFile(
            relative,
            stat.st_size,
            stat.st_mtime_ns,
            prefix + sidecar if sidecar else None,
            Identity.of(stat).token,
        )


def stat_one(root: Path, relative: str) -> SeenFile | None:
    """Return the current state of one archive path; None if it is gone, not an archive, or
    not a regular file reached without a symbolic link (a link is never followed)."""
    path = root / relative
    parts = Path(relative).parts
    if (
        not is_text(relative)
        or not is_archive_name(path.name)
        or len(parts) > MAX_DEPTH + 1  # as deep as the rescan looks, no deeper
        or any(ignored_dir(p) for p in parts[:-1])
    ):
        return None
    try:
        stat = lstat_regular(root, relative)
    except OSError:  # gone, unreadable, or not a regular file
        return None
    base = path.name[: -len(".tar")]
    sidecar = next(
        (
            str(Path(relative).parent / (base + s)).removeprefix("./")
            for s in SIDECAR_SUFFIXES
            if (path.parent / (base + s)).exists()
        ),
        None,
    )
    return SeenFile(relative, stat.st_size, stat.st_mtime_ns, sidecar, Identity.of(stat).token)
