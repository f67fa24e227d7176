"""A destination compared with the catalog, and a copy brought back from one.

``reconcile`` trusts neither side: a copy the catalog has but the destination lacks is
queued again; one whose size or SHA-256 differs is flagged (and sent again); objects the
catalog does not know are only reported, never deleted.  ``fetch`` needs no catalog at all
(the NAS may be new after a disaster): it finds the archive in the destination's listing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .catalog import Catalog, CopyState
from .config import Config, DestinationConfig
from .destinations.base import MARKER, StoredObject
from .errors import UsageError
from .haformat import KeyRing, Level, VerifyReport, verify_archive
from .haformat.keys import read_secret
from .mirror import open_destination

log = logging.getLogger(__name__)


def reconcile(config: Config, settings: DestinationConfig, catalog: Catalog) -> dict[str, Any]:
    destination = open_destination(settings, catalog)
    objects = {stored.key: stored for stored in destination.list()}
    report: dict[str, Any] = {
        "destination": settings.name,
        "matching": 0,
        "missing": [],
        "mismatched": [],
        "unknown": [],
    }
    known = set()
    now = time.time()
    for copy in catalog.copies(location=settings.name):
        if copy.path:
            known.add(copy.path)
        if copy.state != CopyState.PRESENT or not copy.path:
            continue
        stored = objects.get(copy.path)
        if stored is None:
            catalog.copy_deleted(copy.id, now, vanished=True)  # the mirror sends it again
            report["missing"].append(
                {
                    "key": copy.path,
                    "sha256": copy.sha256,
                    "detail": "in the catalog, not at the destination",
                }
            )
            continue
        problem = _mismatch(stored, copy.copy_sha256)
        if problem:
            catalog.fail_copy(copy.id, f"reconcile: {problem}", now, next_try=now)
            report["mismatched"].append(
                {"key": copy.path, "sha256": copy.sha256, "detail": problem}
            )
        else:
            report["matching"] += 1
    for key, stored in sorted(objects.items()):
        if key not in known:
            report["unknown"].append(
                {
                    "key": key,
                    "size": stored.size,
                    "ours": stored.ours,
                    "detail": "written by nas-receiver, not in this catalog"
                    if stored.ours
                    else "not written by nas-receiver (left alone)",
                }
            )
    for kind in ("missing", "mismatched"):
        for item in report[kind]:
            log.warning(
                "reconcile: %s: %s %s: %s", settings.name, kind, item["key"], item["detail"]
            )
    return report


def _mismatch(stored: StoredObject, expected_sha: str | None) -> str | None:
    if not stored.ours:
        return "the object there was not written by nas-receiver"
    if expected_sha and stored.sha256 != expected_sha:
        return f"SHA-256 {stored.sha256} there, {expected_sha} in the catalog"
    size = (stored.sidecar or {}).get("size")
    if isinstance(size, int) and size != stored.size:
        return f"{stored.size} bytes there, the sidecar says {size}"
    return None


def fetch(
    config: Config,
    settings: DestinationConfig,
    catalog: Catalog,
    needle: str,
    output: Path,
    keys: KeyRing,
    on_bytes: Callable[[int], None] | None = None,
) -> VerifyReport:
    """Download the archive ``needle`` names from ``settings`` to ``output``; verify it."""
    if output.exists():
        raise UsageError(f"{output}: exists already; not overwritten")
    destination = open_destination(settings, catalog)
    stored = _find(list(destination.list()), needle, catalog)
    output.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetch: %s from %s", stored.key, settings.name)
    if stored.key.endswith(".tar.7z"):
        from .sevenzip import unpack

        if settings.password_file is None:
            raise UsageError(f"{settings.name}: a 7z copy needs password_file to be opened")
        with tempfile.TemporaryDirectory(dir=output.parent, prefix=".fetch-") as scratch:
            packed = Path(scratch) / "copy.tar.7z"
            destination.get(stored.key, packed, on_bytes)
            unpack(packed, output, read_secret(settings.password_file))
    else:
        destination.get(stored.key, output, on_bytes)
    return verify_archive(output, level=Level.FULL, keys=keys)


def _find(objects: list[StoredObject], needle: str, catalog: Catalog) -> StoredObject:
    """The one archive object ``needle`` names: its file name or key, slug or HA name, or
    (the start of, 6 digits at least) its SHA-256 or the library archive's."""
    shas = {needle} if len(needle) >= 6 else set()
    shas |= {archive["sha256"] for archive in catalog.find_archives(needle)}
    found = []
    for stored in objects:
        sidecar = stored.sidecar or {}
        names = {
            stored.key,
            stored.key.rsplit("/", 1)[-1],
            sidecar.get("backup_id"),
            sidecar.get("name"),
        }
        stored_shas = [stored.sha256, (sidecar.get(MARKER) or {}).get("archive")]
        if needle in names or any(
            have and have.startswith(want) for have in stored_shas for want in shas
        ):
            found.append(stored)
    if len(found) != 1:
        what = "no archive" if not found else f"{len(found)} archives"
        raise UsageError(f"{needle}: {what} at the destination match; be more precise")
    return found[0]
