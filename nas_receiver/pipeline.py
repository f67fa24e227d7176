"""One archive's way from the share to the library or the quarantine.

Every step is recorded in the catalog before and after its work (see ``Catalog``), so a
process killed anywhere here resumes cleanly: ``recover`` hands interrupted verifications
back to the queue and removes half-written copies; placing is idempotent by SHA-256.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from .catalog import Catalog, CopyState, Sighting, SightingState
from .config import Config, SourceConfig
from .haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive
from .haformat.model import ha_base_name
from .library import Placed, clean_partials, place, temp_name, write_json
from .progress import human_bytes

log = logging.getLogger(__name__)

LIBRARY = "library"
QUARANTINE = "quarantine"
KEPT_UNVERIFIED = {Verdict.KEY_REQUIRED, Verdict.WRONG_KEY}


class Cancelled(Exception):
    """The daemon is stopping hard; the current job goes back to the queue."""


class Pipeline:
    """Verify a sighting and keep it: library when valid (or locked), quarantine when not."""

    def __init__(
        self, config: Config, catalog: Catalog, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.catalog = catalog
        self.clock = clock
        self._keys: dict[str, KeyRing] = {}

    def keys(self, source: SourceConfig) -> KeyRing:
        if source.name not in self._keys:
            self._keys[source.name] = KeyRing.load(source.keys)
        return self._keys[source.name]

    def recover(self) -> None:
        """Undo what a killed process left half-done."""
        for sighting in self.catalog.sightings(states=[SightingState.VERIFYING]):
            self.catalog.release(sighting.id)
        for copy in self.catalog.copies():
            if copy.state == CopyState.PLACING:
                if copy.temp_path:
                    Path(copy.temp_path).unlink(missing_ok=True)
                self.catalog.drop_copy(copy.id)
        for folder in (self.config.library.path, self.config.quarantine.path):
            for path in clean_partials(folder):
                log.info("removed a temporary file left by a stop: %s", path)

    def process(self, sighting: Sighting, cancel: threading.Event | None = None) -> str | None:
        """Verify and keep one sighting.  Return its verdict, or None if it was not taken."""
        source = self.config.source(sighting.source)
        path = source.path / sighting.path
        if not self.catalog.take(sighting.id, sighting.size, sighting.mtime_ns):
            return None
        log.info("%s: verifying %s (%s)", source.name, sighting.path, human_bytes(sighting.size))
        try:
            report = verify_archive(
                path, level=Level.FULL, keys=self.keys(source), on_bytes=_canceller(cancel)
            )
        except Cancelled:
            self.catalog.release(sighting.id)
            return None
        except FileNotFoundError:
            self._gone(sighting)
            return None
        if not _unchanged(path, sighting):
            log.info("%s: %s changed while being verified; will look again", source.name, path)
            self.catalog.release(sighting.id)
            return None
        return self._keep(source, sighting, report)

    def _keep(self, source: SourceConfig, sighting: Sighting, report: VerifyReport) -> str:
        now = self.clock()
        verdict = report.verdict
        seconds = f"{report.seconds:.1f} s"
        if verdict is Verdict.INCOMPLETE and not _given_up(sighting, source, now):
            log.info(
                "%s: %s is incomplete (%s); waiting",
                source.name,
                sighting.path,
                report.problems[0] if report.problems else "",
            )
            self.catalog.finish_sighting(sighting.id, SightingState.INCOMPLETE, None, verdict)
            return str(verdict)
        self.catalog.record_archive(report, source.name, now)
        assert report.sha256 is not None
        if verdict is Verdict.VALID or verdict in KEPT_UNVERIFIED:
            log.info("%s: %s verified %s in %s", source.name, sighting.path, verdict, seconds)
            self._to_library(source, sighting, report)
        else:
            self._to_quarantine(source, sighting, report)
        self.catalog.finish_sighting(sighting.id, SightingState.DONE, report.sha256, verdict)
        return str(verdict)

    def _to_library(self, source: SourceConfig, sighting: Sighting, report: VerifyReport) -> None:
        assert report.sha256 is not None and report.backup is not None
        sha = report.sha256
        present = [c for c in self.catalog.copies(sha, LIBRARY) if c.state == CopyState.PRESENT]
        if present and all(Path(c.path or "").exists() for c in present):
            log.info("%s: %s is already in the library (same bytes)", source.name, sighting.path)
            self.catalog.event(
                "duplicate",
                f"{sighting.path}: already in the library",
                source=source.name,
                sha256=sha,
            )
            return
        folder = self.config.library.path / source.name
        base = ha_base_name(report.backup.name, report.backup.date)
        verified = report.verdict is Verdict.VALID
        placed = self._place(
            source.path / sighting.path, folder, base, sha, LIBRARY, verified=verified
        )
        sidecar = placed.path.with_name(placed.path.name[: -len(".tar")] + "_meta.json")
        write_json(sidecar, report.backup.agent_backup(report.size))
        log.info(
            "%s: placed in library: %s (%s%s)",
            source.name,
            placed.path,
            placed.method,
            "" if verified else f", unverified: {report.verdict}",
        )
        self.catalog.event(
            "library",
            f"{placed.path.name} placed ({report.verdict})",
            source=source.name,
            sha256=sha,
        )

    def _to_quarantine(
        self, source: SourceConfig, sighting: Sighting, report: VerifyReport
    ) -> None:
        assert report.sha256 is not None
        folder = self.config.quarantine.path / source.name
        base = Path(sighting.path).name[: -len(".tar")]
        placed = self._place(
            source.path / sighting.path, folder, base, report.sha256, QUARANTINE, verified=False
        )
        reason = {
            "file": sighting.path,
            "source": source.name,
            "verdict": str(report.verdict),
            "problems": report.problems,
            "time": self.clock(),
            "sha256": report.sha256,
        }
        write_json(placed.path.with_name(placed.path.name + ".reason.json"), reason)
        why = report.problems[0] if report.problems else str(report.verdict)
        log.warning("%s: quarantined %s: %s: %s", source.name, sighting.path, report.verdict, why)
        self.catalog.event(
            "quarantine",
            f"{sighting.path}: {report.verdict}: {why}",
            level="warning",
            source=source.name,
            sha256=report.sha256,
        )

    def _place(
        self, path: Path, folder: Path, base: str, sha: str, location: str, *, verified: bool
    ) -> Placed:
        folder.mkdir(parents=True, exist_ok=True)
        temp = temp_name(folder / f"{base}.tar")
        copy_id = self.catalog.begin_copy(sha, location, str(temp), self.clock())
        placed = place(path, folder, base, sha, temp=temp)
        self.catalog.finish_copy(
            copy_id,
            str(placed.path),
            placed.sha256,
            verified=verified,
            now=self.clock(),
            detail=placed.method,
        )
        return placed

    def _gone(self, sighting: Sighting) -> None:
        log.info("%s: %s was deleted before it was verified", sighting.source, sighting.path)
        self.catalog.mark_gone(sighting.id)


def _canceller(cancel: threading.Event | None) -> Callable[[int], None] | None:
    if cancel is None:
        return None

    def check(_count: int) -> None:
        if cancel.is_set():
            raise Cancelled

    return check


def _unchanged(path: Path, sighting: Sighting) -> bool:
    try:
        stat = path.stat()
    except OSError:
        return False
    return stat.st_size == sighting.size and stat.st_mtime_ns == sighting.mtime_ns


def _given_up(sighting: Sighting, source: SourceConfig, now: float) -> bool:
    return now - sighting.stable_since >= source.give_up.total_seconds()
