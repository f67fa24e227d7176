"""Bringing what is in the source folders into the catalog, and choosing what to verify."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable

from ..catalog import Catalog, Sighting, SightingState
from ..config import Config, SourceConfig
from .scan import SIDECAR_SUFFIXES, SeenFile, scan_source, stat_one
from .stability import is_due

log = logging.getLogger(__name__)


class Intake:
    """Bring what is in the source folders into the catalog (scan results and hints)."""

    def __init__(self, catalog: Catalog, clock: Callable[[], float] = time.time) -> None:
        self.catalog = catalog
        self.clock = clock
        self._told: set[str] = set()  # names already warned about, once per process

    def reconcile(self, source: SourceConfig) -> int:
        """Rescan one source; record new, changed and vanished files.  Return files seen."""
        unreadable: list[str] = []
        try:
            found = scan_source(source.path, unreadable)
        except OSError as err:
            log.error("%s: cannot list %s: %s", source.name, source.path, err.strerror)
            return 0
        for name in unreadable:
            if name not in self._told:
                self._told.add(name)
                log.warning("%s: %s is not a UTF-8 file name; left alone", source.name, name)
        now = self.clock()
        known = {s.path: s for s in self.catalog.sightings(source.name)}
        for seen in found.values():
            old = known.get(seen.path)
            if (
                old
                and old.size == seen.size
                and old.mtime_ns == seen.mtime_ns
                and old.sidecar == seen.sidecar
                and old.identity == seen.identity
                and old.state != SightingState.GONE
            ):
                continue  # the common case: nothing to write
            self._observe(source, seen, now)
        for path, sighting in known.items():
            if path not in found and sighting.state != SightingState.GONE:
                self._vanished(source, sighting.id, path)
        return len(found)

    def hint(self, source: SourceConfig, relative: str) -> None:
        """Look at one path an event named."""
        for suffix in SIDECAR_SUFFIXES:  # a sidecar arrived: look at its archive
            if relative.endswith(suffix):
                relative = relative[: -len(suffix)] + ".tar"
        seen = stat_one(source.path, relative)
        if seen is not None:
            self._observe(source, seen, self.clock())
            return
        for sighting in self.catalog.sightings(source.name):
            if sighting.path == relative and sighting.state != SightingState.GONE:
                self._vanished(source, sighting.id, relative)

    def _observe(self, source: SourceConfig, seen: SeenFile, now: float) -> None:
        change = self.catalog.observe(
            source.name, seen.path, seen.size, seen.mtime_ns, now, seen.sidecar, seen.identity
        )
        if change == "new":
            log.info("%s: arrived: %s", source.name, seen.path)
        elif change == "replaced":
            log.info("%s: replaced under the same name: %s", source.name, seen.path)

    def _vanished(self, source: SourceConfig, sighting_id: int, path: str) -> None:
        log.info("%s: deleted from the share (HA's retention?): %s", source.name, path)
        self.catalog.mark_gone(sighting_id)
        self.catalog.event("deleted", f"{path}: deleted from the share", source=source.name)


def has_room(sighting: Sighting) -> bool:
    """A job that waits for room is tried again only once the room is there."""
    if sighting.wait_bytes is None or sighting.wait_path is None:
        return True
    try:
        return shutil.disk_usage(sighting.wait_path).free >= sighting.wait_bytes
    except OSError:
        return True  # the folder is gone: let the job find out why


def due_sightings(config: Config, catalog: Catalog, now: float) -> list[tuple[int, SourceConfig]]:
    """Return the sightings to verify now, oldest first."""
    due: list[tuple[int, SourceConfig]] = []
    for source in config.sources:
        sightings = catalog.sightings(
            source.name, [SightingState.WAITING, SightingState.INCOMPLETE, SightingState.FAILED]
        )
        if not sightings:
            continue
        sidecar_folder = catalog.has_sidecars(source.name)
        for sighting in sightings:
            if is_due(
                sighting,
                now,
                settle_seconds=source.settle_seconds,
                give_up_seconds=source.give_up.total_seconds(),
                awaiting_sidecar=sidecar_folder and sighting.sidecar is None,
            ) and has_room(sighting):
                due.append((sighting.id, source))
    return due
