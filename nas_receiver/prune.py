"""Prune: apply retention to the library and the quarantine, deleting in two steps.

``plan`` says what would go and why; ``delete_copies`` is the only function that deletes.
It re-reads the catalog and applies the safety floors again right before deleting, so no
caller (a stale plan, a future destination, a bug) can delete past them.  A deletion is
marked in the catalog first and recorded as done once the files are gone: a crash
mid-prune is finished by the next run.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, NamedTuple

from .catalog import Catalog, CopyState
from .config import Config, DestinationConfig
from .destinations.base import DestinationError
from .haformat.model import within_range
from .library import LinkedFolder, companions, remove_own
from .retention import Candidate, Decision, Holding, Policy, World, apply_floors, select

log = logging.getLogger(__name__)

LIBRARY = "library"
QUARANTINE = "quarantine"
# A library entry is the archive and what was made from it; they go together.
LIBRARY_PARTS = ("library", "library-decrypted", "library-browse")


class Row(NamedTuple):
    """One archive at one location, with what prune does with it and why (a named tuple:
    there is one per archive)."""

    location: str
    decision: Decision

    def to_dict(self) -> dict[str, Any]:
        d = self.decision
        return {
            "location": self.location,
            "sha256": d.sha256,
            "name": d.name,
            "date": d.date.isoformat(),
            "group": d.group,
            "action": d.action,
            "reasons": list(d.reasons),
        }


def locations(config: Config) -> list[str]:
    return [LIBRARY, QUARANTINE, *(d.name for d in config.destinations)]


def _policy(config: Config, location: str) -> Policy:
    if location == LIBRARY:
        return config.library.retention.policy()
    for destination in config.destinations:
        if destination.name == location:
            return destination.retention.policy()
    return Policy()  # the quarantine: its age rule is applied apart


def run(
    config: Config, catalog: Catalog, *, only: str | None = None, dry_run: bool = False
) -> tuple[list[Row], list[Row]]:
    """Plan every location (or ``only`` one) and, unless ``dry_run``, delete what the plan
    says.  Return (the plan, what was deleted)."""
    now = datetime.now().astimezone()
    planned: list[Row] = []
    deleted: list[Row] = []
    if not dry_run:
        forget_vanished(config, catalog, now.timestamp())
    for location in [only] if only else locations(config):
        rows = plan(config, catalog, location, now=now)
        if not dry_run:
            deleted += delete_copies(config, catalog, location, rows, now=now.timestamp())
        planned += rows
    return planned, deleted


def plan(
    config: Config, catalog: Catalog, location: str, *, now: datetime, tz: tzinfo | None = None
) -> list[Row]:
    """Return the keep/delete decision of every archive held at ``location``."""
    candidates = _candidates(catalog, location)
    if location == QUARANTINE:
        decisions = _quarantine_decisions(candidates, config.quarantine.max_age, now)
        policy = Policy()
    else:
        policy = _policy(config, location)
        decisions = select(candidates, policy, tz=tz)
    world = _world(config, catalog, location)
    decisions = apply_floors(decisions, candidates, location, policy, world)
    return [Row(location, decision) for decision in decisions]


def delete_copies(
    config: Config, catalog: Catalog, location: str, rows: list[Row], *, now: float
) -> list[Row]:
    """Delete what ``rows`` mark for deletion, floors permitting; return what was deleted."""
    finish_marked(config, catalog, now)
    wanted = {r.decision.sha256 for r in rows if r.decision.action == "delete"}
    if not wanted:
        return []
    candidates = _candidates(catalog, location)
    policy = _policy(config, location)
    proposed = [
        Decision(
            c.sha256,
            c.name,
            c.date,
            c.group,
            "delete" if c.sha256 in wanted else "keep",
            ("asked",),
        )
        for c in candidates
    ]
    permitted = apply_floors(
        proposed, candidates, location, policy, _world(config, catalog, location)
    )
    deleted = []
    for decision in permitted:
        if decision.action != "delete":
            continue
        try:
            _delete_archive_at(config, catalog, location, decision.sha256, now)
        except (DestinationError, LinkedFolder) as err:  # marked: finished by a later run
            log.warning("prune: %s: %s stays for now: %s", location, decision.name, err)
            continue
        log.info("pruned from the %s: %s (%s)", location, decision.name, decision.sha256[:12])
        catalog.event(
            "pruned",
            f"{decision.name}: deleted from the {location}",
            sha256=decision.sha256,
            now=now,
        )
        deleted.append(Row(location, decision))
    return deleted


def finish_marked(config: Config, catalog: Catalog, now: float) -> None:
    """Complete deletions a killed run had marked but not finished.  One that cannot be
    finished now (a destination away) stays marked for the next run."""
    for copy in catalog.copies():
        if copy.state == CopyState.MARKED:
            try:
                _remove(config, copy.location, copy.path, catalog)
            except (DestinationError, LinkedFolder) as err:
                log.warning("prune: %s: finishing a deletion later: %s", copy.location, err)
                continue
            catalog.copy_deleted(copy.id, now)


def forget_vanished(config: Config, catalog: Catalog, now: float) -> list[str]:
    """Record as gone the copies of our own folders (library, quarantine, local
    destinations) whose files are no longer there, so that no floor and no deletion relies
    on them.  Return their paths."""
    roots = {d.name: d.path for d in config.destinations if d.type == "local" and d.path}
    gone = []
    for copy in catalog.copies():
        if copy.state != CopyState.PRESENT or not copy.path:
            continue
        if copy.location in roots:
            path = roots[copy.location] / copy.path
        elif copy.location in (*LIBRARY_PARTS, QUARANTINE):
            path = Path(copy.path)
        else:
            continue  # a cloud copy: checked by ``reconcile``
        if not (path.exists() or path.is_symlink()):
            log.warning("%s: %s is gone; no longer counted as a copy", copy.location, path)
            catalog.copy_deleted(copy.id, now, vanished=True)
            gone.append(str(path))
    return gone


def _parts(location: str) -> tuple[str, ...]:
    """The catalog locations that make up one location's entry of an archive."""
    return LIBRARY_PARTS if location == LIBRARY else (location,)


def _delete_archive_at(
    config: Config, catalog: Catalog, location: str, sha: str, now: float
) -> None:
    parts = _parts(location)
    copies = [
        c for c in catalog.copies(sha) if c.location in parts and c.state == CopyState.PRESENT
    ]
    for copy in copies:
        catalog.mark_copy(copy.id, now)
    for copy in copies:
        _remove(config, copy.location, copy.path, catalog)
        catalog.copy_deleted(copy.id, now)


def _remove(config: Config, location: str, path: str | None, catalog: Catalog) -> None:
    """Remove one copy: a destination's object through the destination (which refuses
    objects we did not write), a file of our own folders directly."""
    for destination in config.destinations:
        if destination.name == location:
            if path:
                from .mirror import open_destination  # mirror builds on prune's layer

                open_destination(destination, catalog).delete(path)
            return
    _remove_files(path, (config.library.path, config.quarantine.path))


def _remove_files(path_text: str | None, roots: tuple[Path, ...]) -> None:
    """Remove a copy in our own folders with the files beside it; raise LinkedFolder,
    removing nothing, where a folder on the way is a symbolic link."""
    if not path_text:
        return
    path = Path(path_text)
    for removed in (*companions(path), path):
        remove_own(removed, roots)


def _candidates(catalog: Catalog, location: str) -> list[Candidate]:
    pinned = catalog.pinned()
    rows = catalog.held_at(_parts(location))
    return [
        Candidate(
            sha,
            name or "",
            _date(date, first_seen),
            instance or source,
            kind or "manual",
            verdict == "valid" and bool(verified),
            sha in pinned,
        )
        for sha, name, date, first_seen, instance, source, kind, verdict, verified in rows
    ]


def _date(iso: str | None, first_seen: float) -> datetime:
    """All in UTC: aware datetimes sharing one tzinfo compare fast (retention sorts them)."""
    if iso:
        return within_range(datetime.fromisoformat(iso)).astimezone(UTC)
    return datetime.fromtimestamp(first_seen, UTC)


def _world(config: Config, catalog: Catalog, location: str) -> World:
    """Copies elsewhere (the floors look at other locations only), and for the library:
    each archive a destination wants (see ``wanted_at``) is expected there before its
    library copy may go."""
    holdings: dict[str, list[Holding]] = {}
    for sha, where, verified in catalog.present_copies(other_than=_parts(location)):
        holdings.setdefault(sha, []).append(Holding(where, verified))
    expected: dict[str, list[str]] = {}
    if location == LIBRARY and config.destinations:
        from .mirror import library_archives, to_send  # mirror builds on prune's layer

        library = [archive for archive, _path in library_archives(catalog)]
        for destination in config.destinations:
            for archive in to_send(config, catalog, destination, library):
                expected.setdefault(archive["sha256"], []).append(destination.name)
    return World(holdings=holdings, expected=expected)


def wanted_at(
    config: Config, catalog: Catalog, destination: DestinationConfig, offered: list[dict[str, Any]]
) -> set[str]:
    """The archives ``destination`` should hold: one plan for the mirror and for pruning.

    Of what it holds and what the library offers it (``offered``, through its send filter),
    what its retention keeps (floors included), less what its retention deleted before:
    nothing is sent only to be deleted, nor sent again after it was."""
    pinned = catalog.pinned()
    pruned = catalog.pruned_at(destination.name)
    candidates = {c.sha256: c for c in _candidates(catalog, destination.name)}
    for archive in offered:
        if archive["sha256"] not in candidates and archive["sha256"] not in pruned:
            candidates[archive["sha256"]] = Candidate(
                archive["sha256"],
                archive["name"] or "",
                _date(archive["date"], archive["first_seen"]),
                archive["instance_id"] or archive["source"],
                archive["kind"] or "manual",
                archive["verdict"] == "valid",
                archive["sha256"] in pinned,
            )
    everyone = list(candidates.values())
    policy = destination.retention.policy()
    world = _world(config, catalog, destination.name)
    decisions = apply_floors(select(everyone, policy), everyone, destination.name, policy, world)
    return {d.sha256 for d in decisions if d.action == "keep"}


def _quarantine_decisions(
    candidates: list[Candidate], max_age: timedelta | None, now: datetime
) -> list[Decision]:
    decisions = []
    for c in candidates:
        old = max_age is not None and c.date < now - max_age
        reasons = (
            () if old else (("no age rule",) if max_age is None else (f"younger than {max_age}",))
        )
        decisions.append(
            Decision(c.sha256, c.name, c.date, c.group, "delete" if old else "keep", reasons)
        )
    return decisions
