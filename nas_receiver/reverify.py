"""Re-verify the library: every kept copy read in full again, to catch bit rot, a copy
damaged or removed behind our back, before the day it is needed.

Nothing is moved or deleted: a copy that no longer matches is reported, recorded as an
event (so the user is alerted) and left where it is for the user to look at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .catalog import Catalog, Copy, CopyState
from .config import Config
from .haformat import KeyRing, Level, verify_archive

log = logging.getLogger(__name__)

LIBRARY = "library"


def reverify_library(
    config: Config,
    catalog: Catalog,
    copies: list[tuple[Copy, dict[str, Any]]],
    *,
    on_bytes: Callable[[int], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[dict[str, Any]]:
    """Verify ``copies`` (``library_copies``); return one row per copy with ``ok`` and why
    not."""
    rings: dict[str, KeyRing] = {}
    rows = []
    for copy, archive in copies:
        source = str(archive.get("source") or "")
        if source not in rings:
            keys = next((s.keys for s in config.sources if s.name == source), [])
            rings[source] = KeyRing.load(keys)
        path = Path(str(copy.path))
        rows.append(_check(catalog, path, copy.sha256, archive, rings[source], clock, on_bytes))
    return rows


def library_copies(catalog: Catalog) -> list[tuple[Copy, dict[str, Any]]]:
    """Every present library copy with its archive's catalog row."""
    return [
        (copy, catalog.archive(copy.sha256) or {})
        for copy in catalog.copies(location=LIBRARY)
        if copy.state == CopyState.PRESENT and copy.path is not None
    ]


def _check(
    catalog: Catalog,
    path: Path,
    sha: str,
    archive: dict[str, Any],
    keys: KeyRing,
    clock: Callable[[], float],
    on_bytes: Callable[[int], None] | None,
) -> dict[str, Any]:
    expected = str(archive.get("verdict") or "valid")
    row: dict[str, Any] = {"path": str(path), "sha256": sha, "expected": expected}
    try:
        report = verify_archive(path, level=Level.FULL, keys=keys, on_bytes=on_bytes)
    except FileNotFoundError:
        problem = "the library copy is missing"
        verdict = "missing"
    else:
        verdict = str(report.verdict)
        if report.sha256 != sha:
            problem = "its SHA-256 changed since it was verified (bit rot or an outside change)"
        elif verdict != expected:
            problem = f"verdict is now {verdict}, was {expected}"
        else:
            problem = ""
    row.update(verdict=verdict, ok=not problem, problem=problem or None)
    if problem:
        message = f"{path}: {problem}"
        log.error("re-verify: %s", message)
        catalog.event(
            "rot", message, level="error", source=archive.get("source"), sha256=sha, now=clock()
        )
    else:
        log.info("re-verify: %s still %s", path.name, verdict)
    return row
