"""What ``list`` and ``status`` tell: the 3-2-1 view of every archive, and health per source."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .catalog import Catalog, CopyState, Sighting, SightingState
from .config import Config

PENDING = [
    SightingState.WAITING,
    SightingState.INCOMPLETE,
    SightingState.VERIFYING,
    SightingState.FAILED,
]


_REMOTE_STATES = {
    CopyState.PLACING: "uploading",
    CopyState.PRESENT: "verified",
    CopyState.MARKED: "deleting",
}


def _add_pending(config: Config, catalog: Catalog, copies: dict[str, list[dict[str, Any]]]) -> None:
    from .mirror import library_archives, to_send

    library = [archive for archive, _path in library_archives(catalog)]
    for destination in config.destinations:
        for archive in to_send(config, catalog, destination, library):
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


def when(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds") if epoch else None


def list_archives(catalog: Catalog, config: Config | None = None) -> list[dict[str, Any]]:
    """Every archive with its verdict and every copy (location, state, path).

    At a destination a copy is ``pending`` (selected, not tried yet), ``uploading``,
    ``verified`` or ``failed`` with its reason and the time of the next try."""
    remote = {d.name for d in config.destinations} if config is not None else set()
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
                    next_try=when(copy.next_try),
                    attempts=copy.attempts,
                )
        copies.setdefault(copy.sha256, []).append(entry)
    if config is not None:
        _add_pending(config, catalog, copies)
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
                "verified_at": when(archive["verified_at"]),
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
        "at": when(drill["at"]),
    }


def lock_holder(path: Path, locks: Path = Path("/proc/locks")) -> int | None:
    """The process id holding DaemonLock on ``path`` (a daemon, or a ``scan``), 0 when no
    one does; None when the system cannot say (no /proc/locks).  Read from the kernel's
    table of locks, never by taking the lock: a probe holding it for an instant would make
    a daemon starting at that instant refuse to run.

    The table names a file by device and inode.  On btrfs (Synology's volumes) the device
    there is the filesystem's while ``stat`` gives each subvolume a device of its own, and
    inodes repeat across subvolumes: a lock on our inode under another device is ours only
    when its holder is the process that wrote its id into the file (DaemonLock does)."""
    try:
        info = path.stat()
        written = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return 0
    except OSError:  # a folder this user may not look into (the page's CGI user in DSM)
        return None
    try:
        table = locks.read_text()
    except OSError:
        return None
    device = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}"
    for line in table.splitlines():
        fields = line.split()  # "1: FLOCK ADVISORY WRITE <pid> <maj:min:inode> 0 EOF"
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        where, _, inode = fields[5].rpartition(":")
        if inode != str(info.st_ino):
            continue
        if where == device or fields[4] == written:
            return int(fields[4])
    return 0


def receiver_state(config: Config) -> dict[str, Any]:
    """Whether a receiver holds ``config``'s data folder: ``running`` True (with its
    ``pid``), False, or None where the system cannot say."""
    holder = lock_holder(config.lock_path)
    return {"running": None if holder is None else bool(holder), "pid": holder or None}


def source_status(config: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """Health per source; ``healthy`` is False when any source needs the user."""
    now = now or time.time()
    archives = catalog.archive_summaries()
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
            problems.append(f"{source.path} does not exist: is the share mounted?")
        elif not os.access(source.path, os.R_OK | os.X_OK):
            from .intake.shareio import unreadable

            problems.append(unreadable(str(source.path)))
        problems += _job_problems(pending)
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
                "last_arrival": when(last_arrival),
                "last_valid": when(last_valid),
                "last_restorable": when(max(restorable, default=None)),
                "pending": [_pending(s) for s in pending],
                "problems": problems,
                "healthy": not problems,
            }
        )
    destinations = destination_status(config, catalog)
    healthy = all(s["healthy"] for s in sources) and all(d["healthy"] for d in destinations)
    return {"healthy": healthy, "sources": sources, "destinations": destinations}


def _pending(sighting: Sighting) -> dict[str, Any]:
    row: dict[str, Any] = {"path": sighting.path, "state": sighting.state, "size": sighting.size}
    if sighting.state == SightingState.FAILED:
        row.update(
            error=sighting.error, attempts=sighting.attempts, next_try=when(sighting.next_try)
        )
    return row


def _job_problems(pending: Sequence[Sighting]) -> list[str]:
    """Jobs that need the user: waiting for room, or failing again and again."""
    from .catalog import ALERT_AFTER
    from .intake.shareio import UNREADABLE

    return [
        f"{s.path}: {s.error}"
        + ("" if s.wait_bytes is not None else f" (failed {s.attempts} times)")
        for s in pending
        if s.state == SightingState.FAILED
        and (
            s.wait_bytes is not None
            or s.attempts >= ALERT_AFTER
            or UNREADABLE in (s.error or "")  # no retry mends that: the user must
        )
    ]


def destination_status(config: Config, catalog: Catalog) -> list[dict[str, Any]]:
    """Per destination: copies verified, pending, failing; unhealthy on a refusal or on a
    copy that keeps failing (the user was alerted; the daily status says it again)."""
    from .mirror import ALERT_AFTER, library_archives, to_send

    library = [archive for archive, _path in library_archives(catalog)]
    rows = []
    for destination in config.destinations:
        copies = catalog.copies(location=destination.name)
        verified = {c.sha256 for c in copies if c.state == CopyState.PRESENT}
        failed = [c for c in copies if c.state == CopyState.FAILED]
        wanted = {a["sha256"] for a in to_send(config, catalog, destination, library)}
        problems = [
            f"copy failing ({c.attempts} attempts): {c.detail}"
            for c in failed
            if c.attempts >= ALERT_AFTER or _permanent(c)
        ]
        last = max((c.updated_at for c in copies if c.state == CopyState.PRESENT), default=None)
        rows.append(
            {
                "name": destination.name,
                "type": destination.type,
                "verified": len(verified),
                "pending": len(wanted - verified),
                "failed": len(failed),
                "last_copy": when(last),
                "problems": sorted(set(problems)),
                "healthy": not problems,
            }
        )
    return rows


def _permanent(copy: Any) -> bool:
    """A refusal waits a day before the next try; a transient failure at most six hours."""
    from .mirror import RETRY_LONGEST

    return bool(copy.next_try and copy.next_try - copy.updated_at > RETRY_LONGEST)
