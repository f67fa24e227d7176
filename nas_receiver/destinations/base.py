"""The destination interface: put, verify, list, get, delete.  Nothing about retention,
encryption or the catalog: those compose destinations, destinations know only objects."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

MARKER = "nas_receiver"  # the sidecar key that says: this object is ours
OnBytes = Callable[[int], None] | None
OnClaim = Callable[[], None] | None


class Stopped(Exception):
    """The program is stopping: the copy under way ends here and resumes on the next run."""


def stoppable(on_bytes: OnBytes, stop: threading.Event | None) -> OnBytes:
    """``on_bytes`` that raises Stopped once ``stop`` is set."""
    if stop is None:
        return on_bytes

    def counted(count: int) -> None:
        if stop.is_set():
            raise Stopped
        if on_bytes is not None:
            on_bytes(count)

    return counted


@dataclass(frozen=True)
class Payload:
    """What goes to a destination: a file (size and SHA-256 known, readable at any offset,
    so an interrupted upload continues where it stopped), or a stream made once, e.g. an
    archive encrypted on its way out (an interrupted one starts again)."""

    path: Path | None = None
    sha256: str | None = None
    size: int | None = None
    stream: Callable[[], AbstractContextManager[BinaryIO]] | None = None

    @classmethod
    def file(cls, path: Path, sha256: str) -> Payload:
        return cls(path=path, sha256=sha256, size=path.stat().st_size)

    @classmethod
    def streamed(cls, opener: Callable[[], AbstractContextManager[BinaryIO]]) -> Payload:
        return cls(stream=opener)

    def open(self) -> AbstractContextManager[BinaryIO]:
        if self.stream is not None:
            return self.stream()
        assert self.path is not None
        return self.path.open("rb")


class DestinationError(Exception):
    """A destination failed.  ``permanent`` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class PlaceRefused(DestinationError):
    """The place holds what is not this copy's to replace (see ``claim_place``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, permanent=True)


@dataclass(frozen=True)
class StoredObject:
    """An archive at a destination: ``key`` is ``<prefix>/<base>.tar`` (or ``.tar.7z``)."""

    key: str
    size: int
    sha256: str | None  # from our marker; None for an object we did not write
    sidecar: dict[str, Any] | None

    @property
    def ours(self) -> bool:
        return self.sha256 is not None


class Destination(ABC):
    """One place that holds off-site copies, laid out as HA's own agents lay them out:
    ``<key>`` and ``<key minus .tar>.metadata.json`` (HA's AgentBackup JSON + our marker)."""

    name: str

    @abstractmethod
    def put(
        self,
        payload: Payload,
        key: str,
        sidecar: dict[str, Any],
        on_bytes: OnBytes = None,
        *,
        resume: bool = False,
        on_claim: OnClaim = None,
    ) -> StoredObject:
        """Store ``payload`` under ``key``, check that what arrived is what was sent, then
        write the sidecar (its ``size`` and our marker describe the stored object).

        A place holding another archive's copy, or anything without our marker, is never
        written (PlaceRefused), except with ``resume``: the caller's catalog says an
        unmarked object there is its own copy of this archive, cut short before its
        sidecar.  The catalog knows so from ``on_claim``, which put calls once the place
        is found free (or this archive's), before anything of the copy can appear there
        (see ``claim_place``).

        Raise DestinationError (``permanent`` for auth, permission or missing bucket)."""

    @abstractmethod
    def occupant(self, key: str) -> str | None:
        """Who holds ``key``: None (free), the SHA-256 of the archive whose copy it is (from
        our marker), or FOREIGN (an object or sidecar nas-receiver did not mark)."""

    @abstractmethod
    def verify(self, key: str, sha256: str) -> bool:
        """Return True when the object at ``key`` is there, ours, and has ``sha256``."""

    @abstractmethod
    def list(self) -> Iterator[StoredObject]:
        """Every archive object under this destination's prefix, ours or not."""

    @abstractmethod
    def get(self, key: str, target: Path, on_bytes: OnBytes = None) -> None:
        """Download the object at ``key`` to ``target`` (written atomically, never over a file)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object at ``key`` and its sidecar; refuse an object we did not write."""

    @abstractmethod
    def sidecar(self, key: str) -> dict[str, Any] | None:
        """The sidecar beside ``key``, if there is one that reads as JSON."""

    def whole_copy(self, key: str, archive: str) -> str | None:
        """The SHA-256 of the object at ``key`` when it is a whole, checked copy of archive
        ``archive``: its sidecar names the archive, and the object has the SHA-256 the
        sidecar records (for an encrypted copy, that of the encrypted bytes)."""
        sidecar = self.sidecar(key)
        sha = marker_sha(sidecar)
        if marker_archive(sidecar) != archive or sha is None:
            return None
        return sha if self.verify(key, sha) else None

    @abstractmethod
    def discard(self, key: str, sha256: str) -> None:
        """Remove what a copy of archive ``sha256`` that was cut short left at ``key`` (an
        unfinished upload, the object, its sidecar).  The caller's claim says an object
        without our sidecar there is that copy, except where the destination can tell
        its own objects apart (S3's metadata mark): there only those go.  Another
        archive's copy is left alone."""

    def reachable(self) -> None:  # noqa: B027 - most destinations find out on first use
        """Raise DestinationError when the destination cannot be reached at all."""

    def tidy(self, wanted: set[str]) -> tuple[str, ...]:
        """Abort uploads of ours left unfinished for keys not in ``wanted``; return them."""
        return ()


def sidecar_key(key: str) -> str:
    """HA's S3 agent keeps ``<base>.metadata.json`` beside ``<base>.tar``.  A 7z copy (for
    restores without HA) has ``<base>.tar.7z.json``, which HA's agents do not list."""
    if key.endswith(".tar.7z"):
        return key + ".json"
    if key.endswith(".tar"):
        return key[: -len(".tar")] + ".metadata.json"
    raise ValueError(f"{key}: not an archive key")


def with_marker(sidecar: dict[str, Any], sha256: str, size: int) -> dict[str, Any]:
    """The sidecar HA reads, describing the stored object, plus our marker (HA ignores
    unknown keys)."""
    return {**sidecar, "size": size, MARKER: {**sidecar.get(MARKER, {}), "sha256": sha256}}


FOREIGN = ""  # the occupant of a place nas-receiver did not write (or cannot tell it did)
UNNAMED = "?"  # ours, written without naming its archive (a direct put, older versions)


def marker_archive(sidecar: dict[str, Any] | None) -> str:
    """The archive whose copy a sidecar describes, from our marker (FOREIGN without one)."""
    mark = (sidecar or {}).get(MARKER)
    if not isinstance(mark, dict):
        return FOREIGN
    value = mark.get("archive")
    return value if isinstance(value, str) and value else UNNAMED


def claim_place(
    name: str,
    key: str,
    occupant: str | None,
    sidecar: dict[str, Any],
    *,
    resume: bool,
    on_claim: OnClaim,
) -> None:
    """Raise PlaceRefused unless ``key`` may take the copy ``sidecar`` describes: it is
    free, holds this archive's copy, or (with ``resume``) holds an unmarked object the
    caller knows to be its own copy cut short.  Then call ``on_claim``, before anything of
    this copy can appear there (a destination that writes through a temporary file, as
    the local one does, passes None here and claims just before the rename)."""
    mine = occupant != FOREIGN and occupant == marker_archive(sidecar)
    if not (occupant is None or mine or (occupant == FOREIGN and resume)):
        what = "an object nas-receiver did not write" if occupant == FOREIGN else "another archive"
        raise PlaceRefused(f"{name}: {key} holds {what}; not replaced")
    if on_claim is not None:
        on_claim()


def marker_sha(sidecar: dict[str, Any] | None) -> str | None:
    mark = (sidecar or {}).get(MARKER)
    value = mark.get("sha256") if isinstance(mark, dict) else None
    return value if isinstance(value, str) else None
