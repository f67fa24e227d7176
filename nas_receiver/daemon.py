"""The receiver daemon: watch, reconcile, verify one archive at a time, keep it.

The main loop owns the catalog's bookkeeping of sightings; verification runs on worker
threads (``workers`` of them).  Each pass: check stop and reload requests, take in file
events (hints), rescan when due (the truth), hand due archives to workers, tell systemd.
First SIGTERM/SIGINT: warm stop (the current verification finishes); a second: cold stop
(it is abandoned and verified again next time).  SIGHUP reloads the configuration.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import FrameType
from typing import IO, Any

from . import prune
from .catalog import Catalog, SightingState
from .config import Config
from .drills import drill_pending
from .errors import ConfigError, NasReceiverError, one_line
from .health import daily_checks
from .intake.sightings import Intake, due_sightings
from .intake.watch import Hint, Watcher
from .mirror import MirrorBusy, mirror_once
from .notify import Channel, channels_from, deliver
from .pipeline import Pipeline
from .systemd import Notifier

log = logging.getLogger(__name__)

TICK = 1.0
DAILY = 86400.0
PASS_RETRY = 10.0  # after a pass failed as a whole


def prune_all(config: Config, catalog: Catalog) -> int:
    """Apply retention everywhere; return how many archives were deleted.

    A failing prune is logged and never stops the receiver: it is tried again on the next
    pass."""
    try:
        return len(prune.run(config, catalog)[1])
    except Exception as err:
        log.error("prune failed, tried again later: %s", one_line(err))
        return 0


class AlreadyRunning(NasReceiverError):
    code = "locked"


class DaemonLock:
    """An exclusive lock on the data folder: two daemons never share one catalog."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._file: IO[str] | None = None

    def __enter__(self) -> DaemonLock:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        handle = self._path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AlreadyRunning(
                f"{self._path}: another nas-receiver works on this data folder"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class Daemon:
    """``nas-receiver run``: the long-running receiver."""

    catalog: Catalog  # opened by run(), under the lock; nothing touches the disk before

    def __init__(
        self,
        config: Config,
        *,
        reload: Callable[[], Config] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._reload = reload
        self.clock = clock
        self.notifier = Notifier()
        self._stop_requests = 0
        self._reload_requested = False
        self._cancel = threading.Event()
        self._mirror_stop = threading.Event()
        self._mirroring: Future[Any] | None = None
        self._mirrors: ThreadPoolExecutor
        self._in_flight: dict[int, Future[str | None]] = {}
        self._last_event = "started"
        self._next_reconcile = 0.0
        self._next_daily = 0.0
        self._sending: Future[int] | None = None

    # -- signals -------------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self._stop_requests += 1
        if self._stop_requests > 1:
            self._cancel.set()  # cold: abandon the current verification
            log.info("stopping at once: the current verification is abandoned for now")

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self._reload_requested = True

    def request_stop(self) -> None:
        self._stop_requests += 1

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> None:
        with DaemonLock(self.config.lock_path):
            self.catalog = Catalog(self.config.catalog_path)
            self._prepare_folders()
            pipeline = Pipeline(self.config, self.catalog, self.clock)
            pipeline.recover()
            intake = Intake(self.catalog, self.clock)
            watcher = self._start_watcher()
            self._reconcile(intake)
            self._next_daily = time.monotonic()
            channels = self._channels()
            self.notifier.ready(self._status())
            log.info("ready: watching %s", ", ".join(str(s.path) for s in self.config.sources))
            with (
                ThreadPoolExecutor(self.config.workers, thread_name_prefix="verify") as pool,
                ThreadPoolExecutor(1, thread_name_prefix="notify") as alerts,
                ThreadPoolExecutor(1, thread_name_prefix="mirror") as mirrors,
            ):
                self._mirrors = mirrors
                while not self._stop_requests:
                    if self._reload_requested:
                        pipeline, intake, watcher = self._do_reload(pipeline, intake, watcher)
                        channels = self._channels()
                    try:
                        self._pass(pool, pipeline, intake, watcher)
                    except Exception as err:
                        log.error("this pass failed, trying again shortly: %s", one_line(err))
                        self._pause(PASS_RETRY)
                    if self._sending is None or self._sending.done():  # alerts: own thread
                        self._sending = alerts.submit(deliver, self.catalog, channels)
                    self.notifier.heartbeat(self._status())
                    self._wait_for_work(watcher)
                self.notifier.stopping()
                log.info("stopping: finishing the current verification")
                self._mirror_stop.set()  # an upload stops at once; it resumes on the next start
                self._drain(pool)
            watcher.stop()
            self.catalog.close()
            log.info("stopped")

    def _pass(
        self, pool: ThreadPoolExecutor, pipeline: Pipeline, intake: Intake, watcher: Watcher
    ) -> None:
        """One pass of the loop: hints, the rescan when due, jobs, prune and daily checks."""
        self._take_hints(watcher, intake)
        if time.monotonic() >= self._next_reconcile:
            self._reconcile(intake)
        daily = time.monotonic() >= self._next_daily
        if self._dispatch(pool, pipeline) or daily:
            if self.config.destinations and (self._mirroring is None or self._mirroring.done()):
                # uploads take hours on a slow line: their own thread, one run at a time
                self._mirroring = self._mirrors.submit(
                    mirror_when_free, self.config, self.catalog, self._mirror_stop
                )
            prune_all(self.config, self.catalog)  # after arrivals, and daily
        if daily:
            daily_checks(self.config, self.catalog)
            if not self.config.drill.after_arrival:  # the drill on a schedule instead
                pool.submit(drill_pending, self.config, self.catalog)
            self._next_daily = time.monotonic() + DAILY

    def _reconcile(self, intake: Intake) -> None:
        for source in self.config.sources:
            intake.reconcile(source)
        self._next_reconcile = time.monotonic() + self.config.reconcile_every.total_seconds()

    def _channels(self) -> list[Channel]:
        try:
            return channels_from(self.config.notify)
        except OSError as err:
            log.error("notifications are off: %s", err)
            return []

    def _prepare_folders(self) -> None:
        prepare_folders(self.config, self.catalog)

    def _start_watcher(self) -> Watcher:
        watcher = Watcher()
        for source in self.config.sources:
            try:
                watcher.watch(source.name, source.path, poll=source.watch == "poll")
            except OSError as err:
                log.warning(
                    "%s: no file events (%s); the rescan every %s finds new files",
                    source.name,
                    err,
                    self.config.reconcile_every,
                )
        return watcher

    def _take_hints(self, watcher: Watcher, intake: Intake) -> None:
        looked: set[Hint] = set()
        while True:
            try:
                hint = watcher.hints.get_nowait()
            except queue.Empty:
                return
            if hint in looked:
                continue
            looked.add(hint)
            try:
                source = self.config.source(hint.source)
            except KeyError:
                continue
            intake.hint(source, hint.relative)

    def _dispatch(self, pool: ThreadPoolExecutor, pipeline: Pipeline) -> bool:
        """Collect finished jobs, start due ones; return True when an archive was kept."""
        kept = False
        for sighting_id, future in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[sighting_id]
                kept = self._report(future) or kept
        free = self.config.workers - len(self._in_flight)
        if free <= 0:
            return kept
        for sighting_id, _source in due_sightings(self.config, self.catalog, self.clock()):
            if free <= 0:
                break
            if sighting_id in self._in_flight:
                continue
            sighting = self.catalog.sighting(sighting_id)
            if sighting is None:
                continue
            self._in_flight[sighting_id] = pool.submit(pipeline.process, sighting, self._cancel)
            self._last_event = f"verifying {sighting.path}"
            free -= 1
        return kept

    def _report(self, future: Future[str | None]) -> bool:
        try:
            verdict = future.result()
        except Exception:
            log.exception("a job failed; it will be tried again")
            return False
        if verdict:
            self._last_event = f"last verdict: {verdict}"
        return verdict is not None and verdict != "incomplete"

    def _pause(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self._stop_requests:
            self.notifier.heartbeat(f"waiting after a failed pass; {self._last_event}")
            time.sleep(0.5)

    def _wait_for_work(self, watcher: Watcher) -> None:
        deadline = time.monotonic() + TICK
        while time.monotonic() < deadline and not self._stop_requests:
            if not watcher.hints.empty() or any(f.done() for f in self._in_flight.values()):
                return
            time.sleep(0.05)

    def _drain(self, pool: ThreadPoolExecutor) -> None:
        for future in self._in_flight.values():
            while not future.done():
                time.sleep(0.05)
            self._report(future)
        self._in_flight.clear()
        pool.shutdown(wait=True)

    def _do_reload(
        self, pipeline: Pipeline, intake: Intake, watcher: Watcher
    ) -> tuple[Pipeline, Intake, Watcher]:
        self._reload_requested = False
        if self._reload is None:
            return pipeline, intake, watcher
        try:
            config = self._reload()
        except (ConfigError, OSError) as err:
            log.error("reload refused, the old configuration stays: %s", err)
            return pipeline, intake, watcher
        if config.data_dir != self.config.data_dir:
            log.error("reload refused: data_dir cannot change while running")
            return pipeline, intake, watcher
        self.config = config
        self._prepare_folders()
        watcher.stop()
        log.info("configuration reloaded")
        return Pipeline(config, self.catalog, self.clock), intake, self._start_watcher()

    def _status(self) -> str:
        waiting = self.catalog.count_sightings(
            [SightingState.WAITING, SightingState.INCOMPLETE, SightingState.VERIFYING]
        )
        return f"{waiting} waiting, {len(self._in_flight)} verifying; {self._last_event}"


def prepare_folders(config: Config, catalog: Catalog) -> None:
    """Make our own folders.  A source folder is never made (that would hide a share that
    is not mounted, and fill the NAS's own disk): its absence is an alarm, told once.  Only
    a source inside our data folder (the embedded default's ``incoming/``) is ours to make."""
    for folder in (config.data_dir, config.library.path, config.quarantine.path):
        folder.mkdir(parents=True, exist_ok=True)
    for source in config.sources:
        if source.path.exists():
            continue
        if config.data_dir.resolve() in source.path.resolve().parents:
            source.path.mkdir(parents=True, exist_ok=True)
            log.info("%s: created %s", source.name, source.path)
            continue
        message = f"{source.path} does not exist: is the share mounted?"
        log.error("%s: %s", source.name, message)
        if catalog.last_event_at("share", source.name) is None:
            catalog.event("share", message, level="error", source=source.name)


def scan_once(config: Config, *, clock: Callable[[], float] = time.time) -> list[str]:
    """``nas-receiver scan``: take in every source, process everything due, return verdicts.

    Files still changing (not yet settled) are left for a later run.
    """
    with DaemonLock(config.lock_path):
        catalog = Catalog(config.catalog_path)
        prepare_folders(config, catalog)
        pipeline = Pipeline(config, catalog, clock)
        pipeline.recover()
        intake = Intake(catalog, clock)
        for source in config.sources:
            if source.path.exists():
                intake.reconcile(source)
        verdicts = []
        for sighting_id, _source in due_sightings(config, catalog, clock()):
            sighting = catalog.sighting(sighting_id)
            if sighting is not None and (verdict := pipeline.process(sighting)):
                verdicts.append(verdict)
        mirror_when_free(config, catalog)
        prune_all(config, catalog)
        daily_checks(config, catalog)
        try:
            deliver(catalog, channels_from(config.notify))
        except OSError as err:
            log.error("notifications are off: %s", err)
        catalog.close()
        return verdicts


def mirror_when_free(
    config: Config, catalog: Catalog, cancel: threading.Event | None = None
) -> None:
    """Mirror, unless a ``mirror`` command is at it already (the next pass will look)."""
    try:
        mirror_once(config, catalog, cancel=cancel)
    except MirrorBusy as busy:
        log.info("mirror: %s; later", busy)
        return
    except Exception:
        log.exception("mirror: the run failed; it is tried again on the next pass")
        return
    for destination in config.destinations:  # what the copies made old goes now, not later
        try:
            prune.run(config, catalog, only=destination.name)
        except Exception as err:
            log.error("prune of %s failed: %s", destination.name, one_line(err))
