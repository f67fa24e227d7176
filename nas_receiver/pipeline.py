"""One archive's way from the share to the library or the quarantine.

Every step is recorded in the catalog before and after its work (see ``Catalog``), so a
process killed anywhere here resumes cleanly: ``recover`` hands interrupted verifications
back to the queue and removes half-written copies; placing is idempotent by SHA-256.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .catalog import ALERT_AFTER, Catalog, Copy, CopyState, Sighting, SightingState
from .config import Config, SourceConfig
from .drill import DrillUnavailable, Unpacked
from .errors import NasReceiverError, UnsafeArchiveError, one_line
from .haformat import KeyRing, Verdict, VerifyReport, verify_archive
from .haformat.convert import decrypt_backup
from .haformat.extract import UnpackAlongside, extract_backup
from .haformat.names import SUFFIX_ROOM, inner_base_name, safe_base, safe_component
from .haformat.sources import HashingReader
from .intake.shareio import Identity, NotRegularFile, OpenedFile, open_regular, unreadable
from .library import (
    ROOM_MARGIN,
    CopyInProgress,
    NoRoom,
    Placed,
    PlacementError,
    Written,
    clean_partials,
    companions,
    ensure_room,
    holds,
    make_read_only,
    occupied,
    open_copy,
    own_folder,
    place,
    place_candidates,
    remove_own,
    remove_path,
    set_aside,
    sidecar_of,
    temp_name,
    write_json,
)
from .progress import human_bytes

log = logging.getLogger(__name__)

LIBRARY = "library"
LIBRARY_DECRYPTED = "library-decrypted"
LIBRARY_BROWSE = "library-browse"
QUARANTINE = "quarantine"
SPACE_RETRY = 60.0  # a disk that filled mid-copy: the job looks again after a minute
RETRY_FIRST = 60.0  # a failed job: 1 min, doubling to 1 h
RETRY_LONGEST = 3600.0
LIBRARY_DEPTH = 3  # <library>/<source>/decrypted/<file>: where our partial files can be
LOCAL_LOCATIONS = (LIBRARY, LIBRARY_DECRYPTED, LIBRARY_BROWSE, QUARANTINE)
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
            # A destination's copy under way is the mirror's to finish (it knows the object
            # cut short before its sidecar is its own from this row).
            if copy.state == CopyState.PLACING and copy.location in LOCAL_LOCATIONS:
                self._undo(copy)
        for folder in (self.config.library.path, self.config.quarantine.path):
            for path in clean_partials(folder, depth=LIBRARY_DEPTH):
                log.info("removed a temporary file left by a stop: %s", path)

    def _undo(self, copy: Copy) -> None:
        """Remove a copy of ours that was begun and never recorded as finished, with the
        files written beside it (the place was claimed for it: they are ours too).  Where a
        folder on the way has become a symbolic link, nothing is removed and the copy stays
        recorded (told at each start until the link is gone)."""
        roots = (self.config.library.path, self.config.quarantine.path)
        paths = [Path(copy.temp_path)] if copy.temp_path else []
        if copy.path:
            paths += [Path(copy.path), *companions(Path(copy.path))]
        try:
            for path in paths:
                remove_own(path, roots)
        except OSError as err:  # a linked folder on the way, or a tree that will not go
            log.warning("an unfinished copy is not removed: %s", one_line(err))
            return
        self.catalog.drop_copy(copy.id)

    def process(self, sighting: Sighting, cancel: threading.Event | None = None) -> str | None:
        """Verify and keep one sighting.  Return its verdict, or None if it was not taken.

        Only a regular file reached without a link is read, and only while it stays the
        file that was seen.  Whatever fails while keeping it is this job's alone: recorded
        with its reason and tried again later (see ``_failed``); it never raises."""
        source = self.config.source(sighting.source)
        if not self.catalog.take(sighting.id, sighting.size, sighting.mtime_ns):
            return None
        log.info("%s: verifying %s (%s)", source.name, sighting.path, human_bytes(sighting.size))
        try:
            with open_regular(source.path, sighting.path) as opened:
                return self._verify_and_keep(source, sighting, opened, cancel)
        except Cancelled:
            self.catalog.release(sighting.id)
        except FileNotFoundError:
            self._gone(sighting)
        except NotRegularFile as err:
            log.warning("%s: %s", source.name, err)
            self.catalog.mark_gone(sighting.id)
        except Exception as err:
            self._failed(source, sighting, err, None)
        return None

    def _verify_and_keep(
        self,
        source: SourceConfig,
        sighting: Sighting,
        opened: OpenedFile,
        cancel: threading.Event | None,
    ) -> str | None:
        if not _is_seen_file(opened.identity, sighting):
            log.info("%s: %s changed since seen; looked at again", source.name, sighting.path)
            self._changed(source, sighting, opened.identity)
            return None
        keys = self.keys(source)
        copy = self._open_copy(source, sighting, opened)
        unpack = self._open_unpack(source, sighting)
        try:
            reader = HashingReader(opened.path, copy_to=copy.file if copy else None)
            report = verify_archive(
                opened.path,
                keys=keys,
                on_bytes=_canceller(cancel),
                opened=reader,
                unpack=unpack,
            )
            report.path = str(source.path / sighting.path)  # the name, not the descriptor read
            if opened.current() != opened.identity:
                log.info(
                    "%s: %s changed while verified; looked at again", source.name, sighting.path
                )
                self._changed(source, sighting, opened.current())
                return None
            written = None
            if copy is not None:
                written = _finish_copy(copy, reader, report)
            try:
                return self._keep(source, sighting, report, opened.path, written, unpack)
            except Exception as err:
                self._failed(source, sighting, err, report)
                return None
        finally:
            if copy is not None:
                copy.discard()  # where it was not taken: a copy kept has its new name
            if unpack is not None:
                unpack.close()
                remove_path(unpack.destination)  # likewise

    def _changed(self, source: SourceConfig, sighting: Sighting, now_is: Identity) -> None:
        """The file was written to since it was seen: it is seen as it is now, so it is
        looked at again once it has settled anew, not at once (a file HA writes with
        pauses would else be verified over and over while it grows)."""
        seen = self.catalog.observe(
            source.name,
            sighting.path,
            now_is.size,
            now_is.mtime_ns,
            self.clock(),
            sighting.sidecar,
            now_is.token,
        )
        if seen == "same":  # the intake saw the change first, and made it wait
            self.catalog.release(sighting.id)

    def _open_copy(
        self, source: SourceConfig, sighting: Sighting, opened: OpenedFile
    ) -> CopyInProgress | None:
        """A temporary file in the library for the archive's copy, written as it is verified
        (see HashingReader), or None.  Only where the original is kept whatever the verdict
        (in the library or the quarantine), and only at a file's first look: one looked at
        again was incomplete (HA may still be writing it, and each look would write a copy
        to throw away), or keeping it failed."""
        if self.config.library.store == "decrypted" or sighting.attempts > 0:
            return None
        try:
            folder = own_folder(self.config.library.path, source.name)
            return open_copy(folder, opened.fd, sighting.size)
        except OSError as err:  # the copy after the verdict meets it again and says so
            log.debug("%s: no copy while verifying: %s", source.name, err)
            return None

    def _open_unpack(self, source: SourceConfig, sighting: Sighting) -> UnpackAlongside | None:
        """A private temporary folder in the library where HA's part is unpacked as it is
        verified, for the browse copy (see UnpackAlongside), or None; at a file's first
        look only, as the copy.  Its files are decrypted contents before the verdict: the
        folder is 0700, and removed unless the verdict keeps it as the browse copy."""
        if not self.config.library.browse or sighting.attempts > 0:
            return None
        try:
            folder = own_folder(self.config.library.path, source.name)
            device = folder.stat().st_dev
            temp = temp_name(folder / "arrival-browse")
            temp.mkdir(mode=0o700)
        except OSError as err:  # the browse copy after the verdict meets it again
            log.debug("%s: no unpacking while verifying: %s", source.name, err)
            return None
        # The decrypted copy is made after the verdict, before the browse copy would be:
        # the room it will need is left to it (an unpacking that takes it would make that
        # copy wait, and the archive be verified again).
        later = sighting.size if self.config.library.store != "original" else 0
        return UnpackAlongside(temp, "homeassistant", aside=lambda: set_aside(device) + later)

    def _failed(
        self,
        source: SourceConfig,
        sighting: Sighting,
        err: Exception,
        report: VerifyReport | None,
    ) -> None:
        """Record why keeping this file failed and when to try again; undo what it left.

        Out of room is a state of its own: the job waits until ``need`` bytes are free
        where it writes, and the user is told once."""
        if report is not None and report.sha256:
            self._undo_partial_copies(report.sha256)
        now = self.clock()
        attempts = sighting.attempts + 1  # take() counted this attempt
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            if isinstance(err, NoRoom):  # seen before writing: due as soon as there is room
                folder, need, retry = err.folder, err.need, now
                if err.aside:  # copies being written will take room the disk shows free now
                    retry = now + SPACE_RETRY
            else:  # the disk filled while writing: look again in a while
                folder = self._target_folder(source, report)
                need, retry = 2 * sighting.size + ROOM_MARGIN, now + SPACE_RETRY
            reason = f"waiting for {human_bytes(need)} free in {folder}"
            if isinstance(err, NoRoom) and err.aside:
                reason += f", beside {human_bytes(err.aside)} set aside for copies being written"
            self.catalog.fail_sighting(
                sighting.id, reason, retry, wait_bytes=need, wait_path=str(folder)
            )
            log.error("%s: %s: %s", source.name, sighting.path, reason)
            if sighting.wait_bytes is None:  # entering the state: alert once
                self.catalog.event(
                    "space", f"{sighting.path}: {reason}", level="error", source=source.name
                )
            return
        reason = unreadable(sighting.path) if isinstance(err, PermissionError) else one_line(err)
        wait = min(RETRY_LONGEST, RETRY_FIRST * 2 ** (attempts - 1))
        self.catalog.fail_sighting(sighting.id, reason, now + wait)
        log.error(
            "%s: keeping %s failed (attempt %d): %s; tried again in %d s",
            source.name,
            sighting.path,
            attempts,
            reason,
            wait,
        )
        if attempts == ALERT_AFTER:
            self.catalog.event(
                "job",
                f"{sighting.path}: failed {attempts} times: {reason}",
                level="error",
                source=source.name,
            )

    def _target_folder(self, source: SourceConfig, report: VerifyReport | None) -> Path:
        quarantined = report is not None and not _kept_in_library(report.verdict)
        root = self.config.quarantine.path if quarantined else self.config.library.path
        return root / source.name

    def _undo_partial_copies(self, sha: str) -> None:
        """Remove the files of this archive's copies that were begun and never finished."""
        for copy in self.catalog.copies(sha):
            if copy.state == CopyState.PLACING and copy.location in LOCAL_LOCATIONS:
                self._undo(copy)

    def _keep(
        self,
        source: SourceConfig,
        sighting: Sighting,
        report: VerifyReport,
        archive: Path,
        written: Written | None = None,
        unpack: UnpackAlongside | None = None,
    ) -> str:
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
        if _kept_in_library(verdict):
            log.info("%s: %s verified %s in %s", source.name, sighting.path, verdict, seconds)
            self._to_library(source, archive, report, written, unpack)
        else:
            self._to_quarantine(source, sighting, report, archive, written)
        self.catalog.finish_sighting(sighting.id, SightingState.DONE, report.sha256, verdict)
        return str(verdict)

    def _to_library(
        self,
        source: SourceConfig,
        archive: Path,
        report: VerifyReport,
        written: Written | None = None,
        unpack: UnpackAlongside | None = None,
    ) -> None:
        """Keep what the library settings ask for; each part once (by SHA-256 and location),
        so a run that was killed half-way completes the missing parts only."""
        assert report.sha256 is not None and report.backup is not None
        sha = report.sha256
        folder = own_folder(self.config.library.path, source.name)
        base = safe_base(report.backup.name, datetime.fromisoformat(report.backup.display_date))
        verified = report.verdict is Verdict.VALID
        store = self.config.library.store
        decryptable = verified and bool(report.securetar_versions)
        shown = archive
        if store != "decrypted" or not decryptable:
            original = self._present(sha, LIBRARY)
            if original is None:
                placed = self._place(
                    archive, folder, base, sha, LIBRARY, verified=verified, written=written
                )
                write_json(sidecar_of(placed.path), report.backup.agent_backup(report.size))
                original = placed.path
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
            else:
                log.info("%s: already in the library: %s", source.name, original.name)
                if not sidecar_of(original).exists():  # a stop came between the two
                    write_json(sidecar_of(original), report.backup.agent_backup(report.size))
            archive = shown = original
            base = original.stem  # one archive, one name: its copies follow the library's
        if store != "original" and decryptable:
            decrypted = self._present(sha, LIBRARY_DECRYPTED)
            if decrypted is None:
                where = folder if store == "decrypted" else own_folder(folder, "decrypted")
                decrypted = self._store_decrypted(source, archive, where, base, report)
            if store == "decrypted":
                base = decrypted.stem
                shown = decrypted  # the library's only copy: the drill is told by its name
        unpacked = None
        if (
            self.config.library.browse
            and verified
            and _has_ha_part(report)
            and self._present(sha, LIBRARY_BROWSE) is None
        ):
            unpacked = self._browse(source, archive, folder, base, report, unpack)
        if verified and self.config.drill.after_arrival:
            self._drill(source, archive, sha, report, unpacked, shown)

    def _drill(
        self,
        source: SourceConfig,
        archive: Path,
        sha: str,
        report: VerifyReport,
        unpacked: Unpacked | None,
        shown: Path,
    ) -> None:
        """Drill ``archive`` (these very bytes, verified in ``report``), telling it as
        ``shown``: the copy in the library, where ``archive`` is the share's open file."""
        from .drills import drill_and_record  # the drill is an upper layer of its own

        try:  # the arrival's full verification and browse copy are of these very bytes
            drill_and_record(
                self.config,
                self.catalog,
                archive,
                self.keys(source),
                sha,
                report,
                unpacked,
                shown_as=shown,
            )
        except (DrillUnavailable, OSError, NasReceiverError) as err:  # the archive is kept
            log.warning("%s: drill not possible now: %s", source.name, one_line(err))

    def _present(self, sha: str, location: str) -> Path | None:
        for copy in self.catalog.copies(sha, location):
            if copy.state == CopyState.PRESENT and copy.path and Path(copy.path).exists():
                return Path(copy.path)
        return None

    def _claim(
        self, sha: str, location: str, candidates: list[Path], *, reusable: bool = False
    ) -> Path:
        """The place for this archive's copy at ``location``: the first candidate that the
        catalog gives to no other archive and where neither it nor its companions (sidecar,
        reason) hold anything we did not write (with ``reusable``, an identical file counts
        as ours, and so do its companions).  Raise PlacementError if none is free."""
        for path in candidates:  # a place this archive already claimed comes first
            if self.catalog.holder(location, str(path)) == sha:
                return path
        for path in candidates:
            if self.catalog.holder(location, str(path)) is not None:
                continue
            if reusable and holds(path, sha):
                return path
            if not any(occupied(p) for p in (path, *companions(path))):
                return path
        raise PlacementError(f"{candidates[0]}: taken by other archives, and so are its variants")

    def _store_decrypted(
        self, source: SourceConfig, archive: Path, folder: Path, base: str, report: VerifyReport
    ) -> Path:
        """Keep an unencrypted HA backup (restorable in HA, openable without it), made from
        ``archive`` without verifying it again: decrypting hashes what it reads and refuses
        bytes other than those ``report`` verified."""
        assert report.sha256 is not None
        sha = report.sha256
        final = self._claim(sha, LIBRARY_DECRYPTED, place_candidates(folder, base, sha, ".tar"))
        copy_id = self.catalog.begin_copy(
            sha, LIBRARY_DECRYPTED, self.clock(), temp_path=str(final), key=str(final)
        )
        remove_path(final)  # only ever a leftover of this archive's own earlier attempt
        ensure_room(folder, archive.stat().st_size)
        result = decrypt_backup(archive, final, self.keys(source), verified=report)
        assert result.sha256 is not None and result.backup is not None
        write_json(sidecar_of(final), result.backup.agent_backup(result.size, protected=False))
        self.catalog.finish_copy(
            copy_id, str(final), result.sha256, verified=True, now=self.clock(), detail="decrypted"
        )
        log.info("%s: decrypted copy in library: %s", source.name, final)
        return final

    def _browse(
        self,
        source: SourceConfig,
        archive: Path,
        folder: Path,
        base: str,
        report: VerifyReport,
        unpack: UnpackAlongside | None = None,
    ) -> Unpacked | None:
        """Unpack the HA part read-only, for single files from File Station (and for the
        drill, which then checks it where it is): the tree ``unpack`` wrote as the part was
        verified, where all of it was, else from ``archive``, bounded by what the full
        verification measured inside it, and needing that much room."""
        assert report.sha256 is not None
        sha = report.sha256
        content = sum(
            inner.content_bytes or 0
            for inner in report.inner
            if inner_base_name(inner.name) == "homeassistant"
        )
        final = self._claim(sha, LIBRARY_BROWSE, place_candidates(folder, base, sha, ""))
        early = unpack.finish() if unpack is not None else None
        if unpack is not None and early is not None:
            temp, when = unpack.destination, "unpacked while verified"
        else:
            if unpack is not None:  # its room is free again for the unpacking after
                log.debug(
                    "%s: HA's part unpacked after the verdict: %s", source.name, unpack.failure
                )
                remove_path(unpack.destination)
            ensure_room(folder, content)
            temp, when = temp_name(final), "unpacked after the verdict"
        copy_id = self.catalog.begin_copy(
            sha, LIBRARY_BROWSE, self.clock(), temp_path=str(temp), key=str(final)
        )
        remove_path(final)  # only ever a leftover of this archive's own earlier attempt
        result = early
        if result is None:
            temp.mkdir(mode=0o700)  # decrypted contents: private while they are written, too
            keys, bound = self.keys(source), content + (1 << 20)
            try:
                result = extract_backup(  # force: a name that comes again replaces, as in HA
                    archive, temp, keys, members=["homeassistant"], max_bytes=bound, force=True
                )
            except UnsafeArchiveError as err:  # the archive is kept; only its browse copy not
                remove_path(temp)
                self.catalog.drop_copy(copy_id)
                log.warning("%s: no browsable copy of %s: %s", source.name, final.name, err)
                return None
        make_read_only(temp)
        temp.rename(final)
        self.catalog.finish_copy(
            copy_id,
            str(final),
            sha,
            verified=not result.problems,
            now=self.clock(),
            detail=f"{result.files} files, {when}",
        )
        log.info("%s: browsable copy of the configuration: %s/ (%s)", source.name, final, when)
        if result.refused:
            names = [line.split(": ", 1)[0] for line in result.refused]
            log.warning(
                "%s: %d member(s) of the HA part left out of %s/ (a link out of it, a "
                "device, a name the disk cannot hold): %s",
                source.name,
                len(names),
                final.name,
                ", ".join(repr(name) for name in names[:5]) + (" ..." if len(names) > 5 else ""),
            )
        return None if result.problems else Unpacked(final, result.refused)

    def _to_quarantine(
        self,
        source: SourceConfig,
        sighting: Sighting,
        report: VerifyReport,
        archive: Path,
        written: Written | None = None,
    ) -> None:
        assert report.sha256 is not None
        folder = own_folder(self.config.quarantine.path, source.name)
        base = safe_component(Path(sighting.path).name.removesuffix(".tar"), room=SUFFIX_ROOM)
        placed = self._place(
            archive, folder, base, report.sha256, QUARANTINE, verified=False, written=written
        )
        reason = {
            "file": sighting.path,
            "source": source.name,
            "verdict": str(report.verdict),
            "problems": report.problems,
            "time": self.clock(),
            "sha256": report.sha256,
        }
        write_json(placed.path.with_name(placed.path.name + ".reason.json"), reason, mode=0o600)
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
        self,
        path: Path,
        folder: Path,
        base: str,
        sha: str,
        location: str,
        *,
        verified: bool,
        written: Written | None = None,
    ) -> Placed:
        candidates = place_candidates(folder, base, sha, ".tar")
        final = self._claim(sha, location, candidates, reusable=True)
        temp = temp_name(final)
        copy_id = self.catalog.begin_copy(
            sha, location, self.clock(), temp_path=str(temp), key=str(final)
        )
        mode = 0o600 if location == QUARANTINE else None  # damaged, maybe not a backup at all
        placed = place(path, final, sha, temp=temp, mode=mode, written=written)
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


def _finish_copy(
    copy: CopyInProgress, reader: HashingReader, report: VerifyReport
) -> Written | None:
    """The copy written while verifying, fsync'd, if it holds every byte verified; else
    None, and it is removed at once (its room is free for the copy after the verdict, which
    meets what stopped it and says so)."""
    if report.sha256 is not None and reader.copied():
        return copy.keep(report.sha256)
    if reader.copy_error is not None:
        log.debug("%s: the copy written while verifying failed: %s", copy.path, reader.copy_error)
    copy.discard()
    return None


def _has_ha_part(report: VerifyReport) -> bool:
    """Whether the backup holds HA's configuration (an add-on or folder backup does not:
    it has no browse copy)."""
    return any(inner_base_name(inner.name) == "homeassistant" for inner in report.inner)


def _kept_in_library(verdict: Verdict) -> bool:
    return verdict is Verdict.VALID or verdict in KEPT_UNVERIFIED


def _is_seen_file(identity: Identity, sighting: Sighting) -> bool:
    """Whether the opened file is the one the sighting recorded (not a replacement)."""
    return (
        identity.size == sighting.size
        and identity.mtime_ns == sighting.mtime_ns
        and (sighting.identity is None or identity.token == sighting.identity)
    )


def _given_up(sighting: Sighting, source: SourceConfig, now: float) -> bool:
    return now - sighting.stable_since >= source.give_up.total_seconds()
