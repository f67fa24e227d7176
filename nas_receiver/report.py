"""What ``list`` and ``status`` tell: the 3-2-1 view of every archive, and health per source."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .catalog import Catalog, CopyState, SightingState
from .config import Config, DestinationConfig

PENDING = [SightingState.WAITING, SightingState.INCOMPLETE, SightingState.VERIFYING]


_REMOTE_STATES = {
    CopyState.PLACING: "uploading",
    CopyState.PRESENT: "verified",
    CopyState.MARKED: "deleting",
}


def _add_pending(
    catalog: Catalog,
    destinations: Sequence[DestinationConfig],
    copies: dict[str, list[dict[str, Any]]],
) -> None:
    from .mirror import library_archives, selected

    library = [archive for archive, _path in library_archives(catalog)]
    for destination in destinations:
        for archive in selected(destination, library):
            held = copies.setdefault(archive["sha256"], [])
            if not any(c["location"] == destination.name for c in held):
                held.append(
                    {
                        "location": destination.name,
                        "state": "pending",
                        "path": None,
                        "verified": False,
                        "method": None,
                    }
                )


def _when(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


def list_archives(
    catalog: Catalog, destinations: Sequence[DestinationConfig] = ()
) -> list[dict[str, Any]]:
    """Every archive with its verdict and every copy (location, state, path).

    At a destination a copy is ``pending`` (selected, not tried yet), ``uploading``,
    ``verified`` or ``failed`` with its reason and the time of the next try."""
    remote = {d.name for d in destinations}
    copies: dict[str, list[dict[str, Any]]] = {}
    for copy in catalog.copies():
        if copy.state == CopyState.DELETED:
            continue
        if copy.state == CopyState.PLACING and copy.location not in remote:
            continue
        entry: dict[str, Any] = {
            "location": copy.location,
            "state": copy.state,
            "path": copy.path,
            "verified": copy.verified,
            "method": copy.detail,
        }
        if copy.location in remote:
            entry["state"] = _REMOTE_STATES.get(copy.state, copy.state)
            if copy.state == CopyState.FAILED:
                entry.update(
                    method=None,
                    reason=copy.detail,
                    next_try=_when(copy.next_try),
                    attempts=copy.attempts,
                )
        copies.setdefault(copy.sha256, []).append(entry)
    _add_pending(catalog, destinations, copies)
    drills = catalog.latest_drills()
    rows = []
    for archive in catalog.archives():
        drill = drills.get(archive["sha256"])
        rows.append(
            {
                "sha256": archive["sha256"],
                "slug": archive["slug"],
                "name": archive["name"],
                "date": archive["date"],
                "source": archive["source"],
                "kind": archive["kind"],
                "verdict": archive["verdict"],
                "problems": json.loads(archive["problems"]),
                "size": archive["size"],
                "protected": bool(archive["protected"])
                if archive["protected"] is not None
                else None,
                "homeassistant_version": archive["ha_version"],
                "verified_at": _when(archive["verified_at"]),
                "copies": copies.get(archive["sha256"], []),
                "drill": _drill_summary(drill),
            }
        )
    return rows


def _drill_summary(drill: dict[str, Any] | None) -> dict[str, Any] | None:
    if drill is None:
        return None
    return {
        "verdict": drill["verdict"],
        "suspicious": bool(drill["changes"]),
        "changes": drill["changes"],
        "at": _when(drill["at"]),
    }


def source_status(config: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """Health per source; ``healthy`` is False when any source needs the user."""
    now = now or time.time()
    archives = catalog.archives()
    drills = catalog.latest_drills()
    sources = []
    for source in config.sources:
        mine = [a for a in archives if a["source"] == source.name]
        valid = [a for a in mine if a["verdict"] == "valid"]
        pending = catalog.sightings(source.name, PENDING)
        last_arrival = max((a["first_seen"] for a in mine), default=None)
        last_valid = max((a["first_seen"] for a in valid), default=None)
        newest = max(mine, key=lambda a: a["first_seen"], default=None)
        problems = []
        if newest is not None and newest["verdict"] != "valid":
            problems.append(f"newest archive {newest['name']!r} is {newest['verdict']}")
        if source.expect_every is not None:
            limit = source.expect_every.total_seconds()
            if last_valid is None:
                problems.append("no valid backup received yet")
            elif now - last_valid > limit:
                days = (now - last_valid) / 86400
                problems.append(
                    f"no new valid backup for {days:.1f} days "
                    f"(expected every {source.expect_every})"
                )
        if not source.path.exists():
            problems.append(f"{source.path} does not exist")
        restorable = [
            drills[a["sha256"]]["at"]
            for a in mine
            if drills.get(a["sha256"], {}).get("verdict") == "restorable"
        ]
        if newest is not None and newest["sha256"] in drills:
            newest_drill = drills[newest["sha256"]]
            if newest_drill["verdict"] != "restorable":
                problems.append(f"newest archive {newest['name']!r} is not restorable")
            if newest_drill["changes"]:
                problems.append(
                    f"newest archive is suspicious: {'; '.join(newest_drill['changes'])}"
                )
        sources.append(
            {
                "name": source.name,
                "path": str(source.path),
                "archives": len(mine),
                "valid": len(valid),
                "last_arrival": _when(last_arrival),
                "last_valid": _when(last_valid),
                "last_restorable": _when(max(restorable, default=None)),
                "pending": [{"path": s.path, "state": s.state, "size": s.size} for s in pending],
                "problems": problems,
                "healthy": not problems,
            }
        )
    return {"healthy": all(s["healthy"] for s in sources), "sources": sources}
