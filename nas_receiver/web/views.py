"""What each page shows, as plain values: the same verdicts as ``status`` and ``list``."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from ..catalog import Catalog, SightingState
from ..config import Config
from ..report import PENDING, list_archives, receiver_state, source_status, when
from .chart import instant

DELIVERY_SHOWN = 7 * 86400.0  # notification failures of the last week are on the overview
LOCAL = ("library", "library-decrypted")
LATEST_SHOWN = 5  # the newest backups on the overview
ADVICE = (
    # (words in a problem, what the user can do): the first match is shown
    (
        "does not exist",
        "Check that the shared folder exists and is mounted (Control Panel > Shared Folder).",
    ),
    ("cannot be read by", ""),  # the problem already names the fix
    (
        "no new valid backup",
        "Check Home Assistant's backup schedule and its network storage "
        "location (Settings > System > Backups).",
    ),
    (
        "no valid backup",
        "Check that Home Assistant writes its backups to this folder "
        "(Settings > System > Backups > locations).",
    ),
    (
        "wrong_key",
        "Add the backup's encryption key (Home Assistant's emergency kit) to the source's keys.",
    ),
    (
        "key_required",
        "Add the backup's encryption key (Home Assistant's emergency kit) to the source's keys.",
    ),
    (
        "not restorable",
        "Open the backup to see which check of the restore drill failed, and "
        "take a new backup in Home Assistant.",
    ),
    (
        "suspicious",
        "Open the backup to compare it with the previous one; if the drop was "
        "intended, nothing needs to be done.",
    ),
    ("waiting for", "Free space on the library's volume; the job goes on by itself."),
    (
        "copy failing",
        "Check the destination's credentials, space and network; the copy is "
        "tried again by itself.",
    ),
    (
        "newest archive",
        "Open the backup to see its problems, and take a new backup in Home Assistant.",
    ),
)


def advice(problem: str) -> str:
    """What the user can do about ``problem`` (empty when the problem says it already)."""
    for words, text in ADVICE:
        if words in problem:
            return text
    return ""


def overview(config: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """Health of every source and destination, the next backup expected, open problems,
    and notifications that could not be delivered."""
    now = now or time.time()
    status = source_status(config, catalog, now)
    expected = {s.name: s.expect_every for s in config.sources}
    problems = []
    for source in status["sources"]:
        every = expected.get(source["name"])
        last = source["last_valid"]
        source["next_expected"] = (
            when(datetime.fromisoformat(last).timestamp() + every.total_seconds())
            if every is not None and last
            else None
        )
        problems += [(source["name"], p, advice(p)) for p in source["problems"]]
    for destination in status["destinations"]:
        problems += [(destination["name"], p, advice(p)) for p in destination["problems"]]
    status["problems"] = [{"where": w, "problem": p, "advice": a} for w, p, a in problems]
    status["deliveries"] = [
        {"at": when(e["at"]), "message": e["message"]}
        for e in catalog.events(limit=200)
        if e["kind"] == "delivery" and now - e["at"] <= DELIVERY_SHOWN
    ]
    drills = catalog.latest_drills()
    status["latest"] = [
        {**row, "drill": drills.get(row["sha256"], {}).get("verdict")}
        for row in catalog.newest_archives(LATEST_SHOWN)
    ]
    status["receiver"] = receiver_state(config)
    status["now"] = when(now)
    return status


def backups(config: Config, catalog: Catalog) -> dict[str, Any]:
    """Every archive, newest first, with its copies by location (the 3-2-1 view)."""
    rows = list_archives(catalog, config)
    rows.sort(key=lambda row: (row["date"] or "", row["sha256"]), reverse=True)
    locations = [*LOCAL, *(d.name for d in config.destinations)]
    for row in rows:
        row["places"] = {copy["location"]: copy for copy in row["copies"]}
    return {"rows": rows, "locations": locations}


def backup(config: Config, catalog: Catalog, sha256: str) -> dict[str, Any] | None:
    """One archive: its checks and problems, the drill, changes against the previous
    backup of the same source, every copy, and the commands that fetch or restore it."""
    rows = backups(config, catalog)["rows"]
    row: dict[str, Any] | None = next((r for r in rows if r["sha256"] == sha256), None)
    if row is None:
        return None
    drills = catalog.latest_drills()
    stored = catalog.archive(sha256) or {}
    previous = _previous(rows, row)
    drill = drills.get(sha256)
    row["drill_checks"] = drill["checks"] if drill else []
    row["counts"] = drill["counts"] if drill else {}
    row["changes"] = changes(
        previous, row, drills.get(previous["sha256"]) if previous else None, drill
    )
    row["previous"] = previous
    row["backup_json"] = json.loads(stored["backup_json"]) if stored.get("backup_json") else {}
    row["commands"] = commands(config, row)
    return row


def _previous(rows: list[dict[str, Any]], row: dict[str, Any]) -> dict[str, Any] | None:
    """The newest valid backup of the same source dated before ``row`` (None if none)."""
    mine = instant(row["date"])
    if mine is None:
        return None
    older = [
        (at, other)
        for other in rows
        if other["source"] == row["source"]
        and other["verdict"] == "valid"
        and other["sha256"] != row["sha256"]
        and (at := instant(other["date"])) is not None
        and at < mine
    ]
    return max(older, key=lambda item: item[0])[1] if older else None


def changes(
    previous: dict[str, Any] | None,
    current: dict[str, Any],
    previous_drill: dict[str, Any] | None,
    drill: dict[str, Any] | None,
) -> list[dict[str, Any]]:
    """What changed since the previous backup: counts, add-ons and size, one row each."""
    if previous is None:
        return []
    before = previous_drill["counts"] if previous_drill else {}
    after = drill["counts"] if drill else {}
    rows = [{"what": "size (bytes)", "before": previous["size"], "after": current["size"]}]
    for key in ("entities", "devices", "automations", "config_entries", "database_bytes"):
        if key in before or key in after:
            rows.append(
                {"what": key.replace("_", " "), "before": before.get(key), "after": after.get(key)}
            )
    old, new = set(before.get("addons", [])), set(after.get("addons", []))
    if before and after:  # both drilled: their add-ons are known
        rows.append({"what": "add-ons added", "before": None, "after": sorted(new - old)})
        rows.append({"what": "add-ons gone", "before": None, "after": sorted(old - new)})
    return rows


def commands(config: Config, row: dict[str, Any]) -> list[str]:
    """Command lines that fetch or restore this backup, by its short SHA-256."""
    short = row["sha256"][:12]
    lines = [f"nas-receiver list --json   # where every copy of {short} is"]
    library = row["places"].get("library")
    if library and library.get("path"):
        lines.append(f"nas-receiver verify --level full {_quoted(library['path'])}")
        lines.append(
            f"nas-receiver extract {_quoted(library['path'])} -o restored/   "
            "# files for recovery without Home Assistant"
        )
    for destination in config.destinations:
        if destination.name in row["places"]:
            lines.append(
                f"nas-receiver fetch {short} --from {_quoted(destination.name)} -o {short}.tar"
            )
    return lines


def _quoted(text: str) -> str:
    import shlex

    return shlex.quote(text)


def jobs(config: Config, catalog: Catalog, now: float | None = None) -> dict[str, Any]:
    """What is pending, running, failed or waiting for room: arrivals and off-site copies."""
    now = now or time.time()
    arrivals = []
    for sighting in catalog.sightings(states=PENDING):
        state = sighting.state
        if state == SightingState.FAILED and sighting.wait_bytes is not None:
            state = "waiting for space"
        elif state == SightingState.VERIFYING:
            state = "running"
        arrivals.append(
            {
                "source": sighting.source,
                "path": sighting.path,
                "size": sighting.size,
                "state": state,
                "reason": sighting.error,
                "attempts": sighting.attempts,
                "next_try": when(sighting.next_try),
                "since": when(sighting.first_seen),
            }
        )
    copies = []
    names = {d.name for d in config.destinations}
    for row in list_archives(catalog, config):
        for copy in row["copies"]:
            if copy["location"] in names and copy["state"] != "verified":
                copies.append(
                    {
                        "destination": copy["location"],
                        "sha256": row["sha256"],
                        "name": row["name"],
                        "state": "running" if copy["state"] == "uploading" else copy["state"],
                        "reason": copy.get("reason"),
                        "attempts": copy.get("attempts"),
                        "next_try": copy.get("next_try"),
                    }
                )
    return {"arrivals": arrivals, "copies": copies, "now": when(now)}
