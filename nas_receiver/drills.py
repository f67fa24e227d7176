"""Drills and key proofs against the catalog: which archive, which previous one, what to keep
of the result, and what to warn about (logged and kept as events for notifications)."""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from .catalog import Catalog, CopyState
from .config import Config
from .drill import RESTORABLE, DrillReport, DrillUnavailable, Unpacked, run_drill
from .drill.compare import Thresholds
from .errors import NasReceiverError, one_line
from .haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive

log = logging.getLogger(__name__)


def drill_and_record(
    config: Config,
    catalog: Catalog,
    archive: Path,
    keys: KeyRing,
    sha256: str | None = None,
    verified: VerifyReport | None = None,
    unpacked: Unpacked | None = None,
    shown_as: Path | None = None,
) -> DrillReport:
    """Drill ``archive``; when the catalog knows it, compare with the previous backup of the
    same instance and record the result.  ``verified``, ``unpacked``: see ``run_drill``;
    ``shown_as``: the file the report names (``archive`` if not given)."""
    known = catalog.archive(sha256) if sha256 else None
    previous = _previous_counts(catalog, known) if known else None
    thresholds = Thresholds(
        count_drop=config.drill.count_drop, database_shrink=config.drill.database_shrink
    )
    report = run_drill(
        archive,
        keys,
        work_dir=config.drill_dir,
        previous=previous,
        thresholds=thresholds,
        verified=verified,
        unpacked=unpacked,
    )
    if shown_as is not None:
        report.path = str(shown_as)
    sha = report.sha256 or sha256
    if sha and catalog.archive(sha):
        catalog.record_drill(sha, report.to_dict(), time.time())
    _tell(catalog, report, sha)
    return report


def drill_pending(config: Config, catalog: Catalog) -> int:
    """Drill every valid library archive that has no drill yet (the scheduled drill)."""
    from .pipeline import LIBRARY

    drilled = catalog.latest_drills()
    count = 0
    for archive in catalog.archives():
        if archive["verdict"] != "valid" or archive["sha256"] in drilled:
            continue
        copy = next(
            (
                c
                for c in catalog.copies(archive["sha256"], LIBRARY)
                if c.state == CopyState.PRESENT and c.path
            ),
            None,
        )
        if copy is None or copy.path is None:
            continue
        source = next((s for s in config.sources if s.name == archive["source"]), None)
        keys = KeyRing.load(source.keys) if source else KeyRing()
        try:
            drill_and_record(config, catalog, Path(copy.path), keys, archive["sha256"])
        except DrillUnavailable as err:
            log.warning("scheduled drill not possible now: %s", err)
            break
        except (NasReceiverError, OSError) as err:  # this archive's: the others go on
            log.warning("scheduled drill of %s not possible: %s", copy.path, one_line(err))
            continue
        count += 1
    return count


def _tell(catalog: Catalog, report: DrillReport, sha: str | None) -> None:
    name = Path(report.path).name
    if report.verdict != RESTORABLE:
        failed = next((c for c in report.checks if not c.ok), None)
        why = f"{failed.name}: {failed.detail}" if failed else "?"
        log.warning("drill: %s is NOT restorable: %s", name, why)
        catalog.event("drill", f"{name}: not restorable: {why}", level="warning", sha256=sha)
    else:
        log.info("drill: %s is restorable%s", name, _summary(report.counts))
    if report.suspicious:
        log.warning("drill: %s is suspicious: %s", name, "; ".join(report.suspicious))
        catalog.event(
            "suspicious", f"{name}: {'; '.join(report.suspicious)}", level="warning", sha256=sha
        )


def _summary(counts: dict[str, Any]) -> str:
    keys = ("entities", "devices", "config_entries")
    found = ", ".join(f"{counts[k]} {k.replace('_', ' ')}" for k in keys if k in counts)
    return f" ({found})" if found else ""


def _previous_counts(catalog: Catalog, archive: dict[str, Any]) -> dict[str, Any] | None:
    """Counts of the newest drilled archive of the same instance dated before this one."""
    group = archive["instance_id"] or archive["source"]
    drills = catalog.latest_drills()
    earlier = [
        a
        for a in catalog.archives()
        if (a["instance_id"] or a["source"]) == group
        and a["sha256"] in drills
        and a["sha256"] != archive["sha256"]
        and (a["date"] or "") < (archive["date"] or "")
    ]
    if not earlier:
        return None
    newest = max(earlier, key=lambda a: datetime.fromisoformat(a["date"]))
    counts: dict[str, Any] = drills[newest["sha256"]]["counts"]
    return counts


def prove_keys(config: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """For each source, prove each configured key against its newest protected archive."""
    now = now or time.time()
    drills = catalog.latest_drills()
    archives = catalog.archives()
    sources = []
    for source in config.sources:
        ring = KeyRing.load(source.keys, use_env=False)
        mine = [a for a in archives if a["source"] == source.name]
        warnings: list[str] = []
        newest = _newest_protected(catalog, mine)
        keys = []
        if newest is not None:
            path, archive = newest
            for index, key in enumerate(ring):
                result = verify_archive(path, level=Level.QUICK, keys=KeyRing([key]))
                keys.append(
                    {"key_file": str(source.keys[index]), "proves": result.verdict is Verdict.VALID}
                )
            if not any(k["proves"] for k in keys):
                warnings.append(f"no configured key opens the newest backup {archive['name']!r}")
        plaintext = [a["name"] for a in mine if "says protected" in a["problems"]]
        if plaintext:
            warnings.append(f"marked protected but holding plaintext: {', '.join(plaintext)}")
        restorable = [
            drills[a["sha256"]]["at"]
            for a in mine
            if drills.get(a["sha256"], {}).get("verdict") == RESTORABLE
        ]
        days = (now - max(restorable)) / 86400 if restorable else None
        if days is None and mine:
            warnings.append("no backup proven restorable yet")
        sources.append(
            {
                "name": source.name,
                "keys": keys,
                "warnings": warnings,
                "days_since_restorable": None if days is None else round(days, 1),
            }
        )
    return {"ok": not any(s["warnings"] for s in sources), "sources": sources}


def _newest_protected(
    catalog: Catalog, archives: list[dict[str, Any]]
) -> tuple[Path, dict[str, Any]] | None:
    protected = [a for a in archives if a["protected"] and a["date"]]
    for archive in sorted(protected, key=lambda a: datetime.fromisoformat(a["date"]), reverse=True):
        for copy in catalog.copies(archive["sha256"], "library"):
            if copy.state == CopyState.PRESENT and copy.path and Path(copy.path).exists():
                return Path(copy.path), archive
    return None
