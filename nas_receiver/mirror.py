"""Mirror jobs: every valid library archive a destination selects gets a verified copy there.

The catalog records an upload before it starts and its result after (``present`` once the
destination has checked what arrived, ``failed`` with the reason and the time of the next
try), so a stopped run is simply done again: S3 uploads continue from their last part, the
others start over.

Cloud destinations only ever receive encrypted data: an archive HA encrypted goes as it is;
one HA did not is encrypted on its way out (SecureTar, streamed; HA restores it with the
key) or packed into an AES-256 7z archive first (``<base>.tar.7z``, in ``data_dir/outbox``
until it is uploaded).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from . import prune
from .catalog import Catalog, Copy, CopyState
from .config import Config, DestinationConfig
from .destinations.base import (
    MARKER,
    Destination,
    DestinationError,
    Payload,
    PlaceRefused,
    Stopped,
    stoppable,
)
from .errors import NasReceiverError
from .haformat.keys import KeyRing, read_key_file, read_secret
from .haformat.model import parse_backup_json, within_range
from .haformat.names import safe_base
from .library import clean_partials, place_candidates, sha256_of

log = logging.getLogger(__name__)

LIBRARY = "library"
LIBRARY_DECRYPTED = "library-decrypted"
RETRY_FIRST = 300.0  # seconds after a first transient failure; doubled each time
RETRY_LONGEST = 6 * 3600.0
RETRY_PERMANENT = 24 * 3600.0  # a refusal (credentials, bucket) is tried again daily
ALERT_AFTER = 5  # transient failures in a row before the user is alerted

ProgressFactory = Callable[[str, int], Callable[[int], None] | None]


@dataclass(frozen=True)
class Outcome:
    destination: str
    sha256: str
    name: str
    result: str  # "copied", "failed", "unreachable"
    detail: str = ""
    permanent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_destination(
    settings: DestinationConfig,
    catalog: Catalog | None = None,
    stop: threading.Event | None = None,
) -> Destination:
    if settings.type == "s3":
        from .destinations.s3 import S3Destination

        if catalog is None:
            raise ValueError("an s3 destination keeps its uploads in the catalog")
        return S3Destination(settings, catalog, stop=stop)
    if settings.type == "rclone":
        from .destinations.rclone import RcloneDestination

        return RcloneDestination(settings)
    from .destinations.local import LocalDestination

    assert settings.path is not None
    return LocalDestination(settings.name, settings.path)


def object_keys(settings: DestinationConfig, archive: dict[str, Any], *, packed: bool) -> list[str]:
    """The keys an archive's copy may take, in order: the name of its library copy (so one
    archive has one name everywhere), ``<prefix>/<HA base name>.tar``, the name HA's own
    agents compute from the sidecar (``.tar.7z`` for a 7z copy), then with the start of its
    SHA-256, for a different archive whose HA name and date coincide."""
    backup = parse_backup_json(archive["backup_json"].encode())
    base = safe_base(backup.name, datetime.fromisoformat(backup.display_date))
    prefix = settings.prefix.strip("/")
    suffix = ".tar.7z" if packed else ".tar"
    named = archive.get("library_name")
    stems = [str(named).removesuffix(".tar")] if named else []
    stems += [p.name for p in place_candidates(Path(), base, archive["sha256"], "")]
    keys = [f"{prefix}/{stem}{suffix}" if prefix else f"{stem}{suffix}" for stem in stems]
    return list(dict.fromkeys(keys))


def mirror_once(
    config: Config,
    catalog: Catalog,
    only: str | None = None,
    *,
    now: float | None = None,
    waits: bool = True,
    progress: ProgressFactory | None = None,
    cancel: threading.Event | None = None,
) -> list[Outcome]:
    """Copy every selected library archive a destination lacks; return what happened.

    With ``waits`` an archive whose last attempt failed waits for its next-try time.
    Setting ``cancel`` ends the run soon: the copy under way resumes next time.  One run at
    a time per data folder (the daemon's and a scheduled ``mirror`` command): raise
    MirrorBusy when another one is under way."""
    outcomes: list[Outcome] = []
    with _one_run(config.data_dir):
        for settings in config.destinations:
            if cancel is not None and cancel.is_set():
                break
            if only is None or settings.name == only:
                mirror = _Mirror(config, settings, catalog, progress, cancel)
                outcomes += mirror.run(time.time() if now is None else now, waits=waits)
    return outcomes


class MirrorBusy(Exception):
    """Another mirror run works on this data folder."""


@contextlib.contextmanager
def _one_run(data_dir: Path) -> Iterator[None]:
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "mirror.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MirrorBusy(f"{data_dir}: another mirror run is under way") from None
        yield
    finally:
        os.close(fd)


def selected(settings: DestinationConfig, archives: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The archives ``settings.send`` lets through (``archives`` oldest first)."""
    send = settings.send
    chosen = [a for a in archives if send.kinds is None or (a["kind"] or "manual") in send.kinds]
    if send.newest_per_day:
        newest: dict[str, dict[str, Any]] = {}
        for archive in chosen:  # oldest first: the last one of a day wins
            newest[_day(archive)] = archive
        chosen = [a for a in chosen if newest.get(_day(a)) is a]
    return chosen


def to_send(
    config: Config,
    catalog: Catalog,
    settings: DestinationConfig,
    library: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """The library archives this destination should hold: its send filter, then its
    retention (see ``prune.wanted_at``), oldest first."""
    offered = selected(settings, library)
    wanted = prune.wanted_at(config, catalog, settings, offered)
    return [archive for archive in offered if archive["sha256"] in wanted]


def _day(archive: dict[str, Any]) -> str:
    return within_range(datetime.fromisoformat(archive["date"])).astimezone().date().isoformat()


class _Mirror:
    def __init__(
        self,
        config: Config,
        settings: DestinationConfig,
        catalog: Catalog,
        progress: ProgressFactory | None,
        cancel: threading.Event | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.catalog = catalog
        self.progress = progress
        self.cancel = cancel
        self.destination = open_destination(settings, catalog, cancel)

    def run(self, now: float, *, waits: bool) -> list[Outcome]:
        self._clean_partials()
        library = library_archives(self.catalog)
        archives = to_send(self.config, self.catalog, self.settings, [a for a, _p in library])
        paths = {archive["sha256"]: path for archive, path in library}
        owed, todo = [], []
        for archive in archives:
            copies = self.catalog.copies(archive["sha256"], self.settings.name)
            if any(c.state == CopyState.PRESENT for c in copies):
                continue
            owed.append(archive)
            if not (waits and _waits(copies, now)):  # else its upload so far is kept for it
                todo.append(archive)
        ended = self._ended({a["sha256"]: a for a in archives})
        wanted = {self._key(a) for a in owed}
        self._tidy_outbox(wanted)
        outcomes: list[Outcome] = []
        try:
            if todo or ended:
                self.destination.reachable()
            in_library = {archive["sha256"]: archive for archive, _path in library}
            held = self._settle(ended, in_library, outcomes)
            todo = [a for a in todo if a["sha256"] not in held]
            for key in self.destination.tidy(wanted):
                log.info("mirror: %s: aborted an upload no longer wanted: %s", self.name, key)
        except DestinationError as err:
            log.error("mirror: %s is unreachable: %s", self.name, err)
            if err.permanent:  # a refusal: each archive shows it, the user is alerted once
                unsettled = {c.sha256 for c in ended}  # a new row would replace theirs
                for archive in [a for a in todo if a["sha256"] not in unsettled]:
                    claimed = self._claimed(archive["sha256"])
                    copy_id, _claim = self._begin(archive, self._key(archive), claimed)
                    self._failed(copy_id, archive, err, alert=archive is todo[0])
            return [Outcome(self.name, "", "", "unreachable", str(err), err.permanent)]
        for archive in todo:
            outcome = self._copy(archive, paths[archive["sha256"]])
            if outcome is None:
                log.info("mirror: %s: stopped; the copy continues on the next run", self.name)
                break
            outcomes.append(outcome)
            if outcome.permanent:
                break  # the same refusal would meet every other archive
        return outcomes

    @property
    def name(self) -> str:
        return self.settings.name

    def _ended(self, sending: dict[str, dict[str, Any]]) -> list[Copy]:
        """The copies a stop or a failure cut short that no attempt will continue: of
        archives no longer sent here (retention, the send filter), or at a key the archive
        no longer takes (the destination's prefix or encryption changed)."""
        ended = []
        for copy in self.catalog.copies(location=self.name):
            if not (
                copy.state == CopyState.PLACING or (copy.state == CopyState.FAILED and copy.claimed)
            ):
                continue  # a failed copy that claimed nothing stays as it is, shown failed
            archive = sending.get(copy.sha256)
            if archive is None or (copy.path is not None and copy.path not in self._keys(archive)):
                ended.append(copy)
        return ended

    def _settle(
        self, ended: list[Copy], library: dict[str, dict[str, Any]], outcomes: list[Outcome]
    ) -> set[str]:
        """Settle each ended copy that claimed its key, so that nothing of ours is left
        there untracked: one found whole (its sidecar names the archive, the object has
        the SHA-256 the sidecar records) is recorded as present, and retention decides,
        floors included; else what it left is removed while the library holds the
        archive, and kept, shown as failed, when it does not (it may be the last of it).
        An unclaimed one left nothing of ours: its row goes.  A removal that fails is
        recorded as the copy's failure (``outcomes``; alerted as any other) and tried
        again next run.  Return the archives not to be copied in this run: recorded
        here, or with a row kept (a new attempt would replace it)."""
        held = set()
        for copy in ended:
            if copy.claimed and copy.path:
                try:
                    removed = self._settle_claimed(copy, library)
                except (DestinationError, OSError) as err:
                    failure = DestinationError(f"{copy.path}, cut short, stays for now: {err}")
                    if copy.sha256 in library:
                        outcomes.append(self._failed(copy.id, library[copy.sha256], failure))
                    else:
                        log.warning("mirror: %s: %s", self.name, failure)
                    removed = False
                if not removed:
                    held.add(copy.sha256)
                    continue
            self.catalog.drop_copy(copy.id)
        return held

    def _settle_claimed(self, copy: Copy, library: dict[str, dict[str, Any]]) -> bool:
        """Record ``copy`` if it is whole, keep it if the library no longer holds its
        archive, else remove what it left.  Return whether it was removed."""
        assert copy.path is not None
        stored = self.destination.whole_copy(copy.path, copy.sha256)
        if stored is not None:
            detail = "checked; found whole after a stop"
            now = time.time()
            self.catalog.finish_copy(
                copy.id, copy.path, stored, verified=True, now=now, detail=detail
            )
            return False
        if copy.sha256 not in library:
            if copy.state == CopyState.PLACING:
                reason = "cut short; the library no longer holds the archive"
                self.catalog.fail_copy(copy.id, reason, time.time())
                log.warning("mirror: %s: %s: %s", self.name, copy.path, reason)
            return False
        self.destination.discard(copy.path, copy.sha256)
        log.info("mirror: %s: removed %s, a copy cut short", self.name, copy.path)
        return True

    def _clean_partials(self) -> None:
        """Remove what a stop left half-written in a local destination (one run at a time
        works here: nothing else is writing)."""
        if self.settings.type == "local" and self.settings.path is not None:
            depth = len(Path(self.settings.prefix.strip("/")).parts) + 1
            for partial in clean_partials(self.settings.path, depth=depth):
                log.info("mirror: %s: removed %s, left by a stop", self.name, partial)

    def _key(
        self, archive: dict[str, Any], *, probe: bool = False, claimed: Set[str] = frozenset()
    ) -> str:
        """The archive's key here: one its rows hold, else the first no other archive holds
        in the catalog (which refuses a second).  With ``probe`` only a key where nothing
        is but this archive's own copy, or one in ``claimed``: a copy of this archive
        claimed it (``Copy.claimed``: it may have left something there), so an object
        without our marker there is that copy, cut short before its sidecar."""
        sha = archive["sha256"]
        keys = self._keys(archive)
        holders = [self.catalog.holder(self.name, key) for key in keys]

        def fits(key: str) -> bool:
            return not probe or key in claimed or self.destination.occupant(key) in (None, sha)

        for wanted_holder in (sha, None):
            for key, holder in zip(keys, holders, strict=True):
                if holder == wanted_holder and fits(key):
                    return key
        raise DestinationError(f"{self.name}: {keys[0]} and its variants belong to other archives")

    def _keys(self, archive: dict[str, Any]) -> list[str]:
        return object_keys(self.settings, archive, packed=self._cipher(archive) == "7z")

    def _claimed(self, sha: str) -> set[str]:
        return {c.path for c in self.catalog.copies(sha, self.name) if c.claimed and c.path}

    def _begin(
        self, archive: dict[str, Any], key: str, claimed: Set[str]
    ) -> tuple[int, str | None]:
        """Record a new attempt at ``key`` in place of the earlier ones, in one transaction;
        a claim on ``key`` (among ``claimed``) carries over (a kill in between loses
        nothing).  Return the row and the claimed key, if any."""
        claim = key if key in claimed else None
        copy_id = self.catalog.begin_copy(
            archive["sha256"],
            self.name,
            time.time(),
            key=key,
            temp_path=claim,
            replace_unfinished=True,
        )
        return copy_id, claim

    def _cipher(self, archive: dict[str, Any]) -> str:
        """How this archive travels: as it is (HA encrypted it, or plain is allowed here),
        SecureTar-encrypted on the way, or packed into 7z."""
        encrypted = archive["protected"] and not archive.get("library_plain", False)
        return "none" if encrypted else self.settings.cipher

    def _copy(self, archive: dict[str, Any], source: Path) -> Outcome | None:
        sha = archive["sha256"]
        cipher = self._cipher(archive)
        claimed = self._claimed(sha)
        try:
            key = self._key(archive, probe=True, claimed=claimed)
        except DestinationError as err:
            copy_id = self.catalog.begin_copy(sha, self.name, time.time())
            return self._failed(copy_id, archive, err)
        copy_id, claim = self._begin(archive, key, claimed)
        on_bytes = stoppable(
            self.progress(f"{self.name}: {key.rsplit('/', 1)[-1]}", int(archive["size"]))
            if self.progress
            else None,
            self.cancel,
        )
        try:
            payload, sidecar = self._payload(archive, source, cipher, key)
            stored = self.destination.put(
                payload,
                key,
                sidecar,
                on_bytes,
                resume=claim is not None,
                on_claim=lambda: self.catalog.claim_copy(copy_id),
            )
        except Stopped:  # the row stays 'placing', as a kill leaves it: the next run goes on
            return None
        except DestinationError as err:
            if isinstance(err, PlaceRefused):  # not our copy there after all: no claim
                self.catalog.unclaim_copy(copy_id)
            return self._failed(copy_id, archive, err)
        except NasReceiverError as err:  # e.g. the archive cannot be encrypted as configured
            return self._failed(copy_id, archive, DestinationError(str(err), permanent=True))
        except OSError as err:  # the library copy could not be read: tried again later
            return self._failed(copy_id, archive, DestinationError(f"{source}: {err}"))
        self.catalog.finish_copy(
            copy_id,
            stored.key,
            stored.sha256 or sha,
            verified=True,
            now=time.time(),
            detail=f"checked; {cipher if cipher != 'none' else 'as it is'}",
        )
        if cipher == "7z":
            self._outbox(key).unlink(missing_ok=True)
        log.info("mirror: %s copied to %s as %s", archive["name"], self.name, key)
        return Outcome(self.name, sha, archive["name"], "copied")

    def _failed(
        self, copy_id: int, archive: dict[str, Any], err: DestinationError, *, alert: bool = True
    ) -> Outcome:
        now = time.time()
        attempts = next(
            (c.attempts for c in self.catalog.copies(archive["sha256"]) if c.id == copy_id), 0
        )
        wait = RETRY_PERMANENT if err.permanent else min(RETRY_LONGEST, RETRY_FIRST * 2**attempts)
        self.catalog.fail_copy(copy_id, str(err), now, next_try=now + wait)
        log.warning("mirror: %s to %s failed: %s", archive["name"], self.name, err)
        if alert and (err.permanent or attempts + 1 >= ALERT_AFTER):
            self.catalog.event(
                "mirror",
                f"{archive['name']}: copy to {self.name} failed: {err}",
                level="error",
                sha256=archive["sha256"],
                now=now,
            )
        return Outcome(
            self.name, archive["sha256"], archive["name"], "failed", str(err), err.permanent
        )

    def _payload(
        self, archive: dict[str, Any], source: Path, cipher: str, key: str
    ) -> tuple[Payload, dict[str, Any]]:
        backup = parse_backup_json(archive["backup_json"].encode())
        sidecar = {**backup.agent_backup(archive["size"]), MARKER: {"archive": archive["sha256"]}}
        if archive.get("library_plain"):
            sidecar["protected"] = False  # the decrypted copy, sent as it is or encrypted below
        if cipher == "none":
            return Payload.file(source, archive.get("library_sha256") or archive["sha256"]), sidecar
        sidecar = {**sidecar, "protected": True}
        if cipher == "7z":
            packed = self._pack(source, key)
            return Payload.file(packed, sha256_of(packed)), sidecar
        secret = self._securetar_key(archive)
        version = self.settings.securetar_version

        def stream() -> Any:
            from .destinations.pipe import produced
            from .haformat.convert import encrypt_stream

            return produced(
                lambda sink: encrypt_stream(source, sink, secret, version=version),
                name=f"encrypt-{self.name}",
            )

        return Payload.streamed(stream), sidecar

    def _securetar_key(self, archive: dict[str, Any]) -> str:
        try:
            if self.settings.key_file:
                return read_key_file(self.settings.key_file)
            source = self.config.source(archive["source"])
            ring = KeyRing.load(source.keys)
        except Exception as err:  # a missing key file: permanent until the user fixes it
            raise DestinationError(
                f"{self.name}: no key to encrypt with: {err}", permanent=True
            ) from err
        if not ring:
            raise DestinationError(
                f"{self.name}: source {archive['source']!r} has no key", permanent=True
            )
        return ring[0]

    def _pack(self, source: Path, key: str) -> Path:
        """The 7z copy, made once into the outbox and kept there until it is uploaded, so an
        interrupted upload continues with the same bytes."""
        from .sevenzip import pack

        target = self._outbox(key)
        if target.exists():
            return target
        assert self.settings.password_file is not None
        try:
            password = read_secret(self.settings.password_file)
        except OSError as err:
            raise DestinationError(  # the configured value is never shown: it may be a secret
                f"{self.name}: cannot read password_file ({err.strerror or 'unreadable'})",
                permanent=True,
            ) from err
        target.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(target.parent).free
        if free < source.stat().st_size * 1.05:
            raise DestinationError(f"{self.name}: no room in {target.parent} for the 7z copy")
        pack(source, target, password)
        return target

    def _tidy_outbox(self, wanted: set[str]) -> None:
        """7z copies made for uploads that are no longer needed (the archive was pruned)."""
        folder = self.config.data_dir / "outbox" / self.name
        names = {key.rsplit("/", 1)[-1] for key in wanted}
        for path in folder.glob("*") if folder.is_dir() else ():
            if path.name not in names:
                path.unlink(missing_ok=True)
                log.info("mirror: %s: removed %s, no longer to be sent", self.name, path.name)

    def _outbox(self, key: str) -> Path:
        return self.config.data_dir / "outbox" / self.name / key.rsplit("/", 1)[-1]


def _waits(copies: list[Copy], now: float) -> bool:
    """Whether the last attempt failed and its next try is still to come."""
    failed = [c for c in copies if c.state == CopyState.FAILED]
    return bool(failed) and (failed[-1].next_try or 0) > now


def library_archives(catalog: Catalog) -> list[tuple[dict[str, Any], Path]]:
    """Valid archives with a present, verified library copy, oldest first.

    The original is sent where the library keeps it; with ``store: decrypted`` the library
    holds only the unencrypted copy, which is then the source (and, being plain, is always
    encrypted on its way off the NAS).  Each archive says which in ``library_plain`` and
    ``library_sha256``, and names its library file in ``library_name``."""
    chosen: dict[str, tuple[dict[str, Any], Path]] = {}
    for row in catalog.archives_with_copies((LIBRARY, LIBRARY_DECRYPTED)):
        sha = row["sha256"]
        plain = row["copy_location"] == LIBRARY_DECRYPTED
        if not row["backup_json"] or (sha in chosen and plain):
            continue  # the original comes first where both are kept
        path = Path(row["copy_path"])
        if not path.exists():
            continue
        archive = {k: v for k, v in row.items() if not k.startswith("copy_")}
        archive.update(
            library_plain=plain,
            library_sha256=row["copy_sha"] if plain else sha,
            library_name=path.name,
        )
        chosen[sha] = (archive, path)
    return list(chosen.values())
