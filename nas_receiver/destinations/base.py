"""The destination interface: put, verify, list, get, delete.  Nothing about retention,
encryption or the catalog: those compose destinations, destinations know only objects."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "nas_receiver"  # the sidecar key that says: this object is ours


class DestinationError(Exception):
    """A destination failed.  ``permanent`` says whether trying again can help."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


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
        source: Path,
        key: str,
        sidecar: dict[str, Any],
        sha256: str,
        on_bytes: Callable[[int], None] | None = None,
    ) -> StoredObject:
        """Store ``source`` under ``key`` with its sidecar; check what arrived has ``sha256``.

        Raise DestinationError (``permanent`` for auth, permission or missing bucket)."""

    @abstractmethod
    def verify(self, key: str, sha256: str) -> bool:
        """Return True when the object at ``key`` is there, ours, and has ``sha256``."""

    @abstractmethod
    def list(self) -> Iterator[StoredObject]:
        """Every archive object under this destination's prefix, ours or not."""

    @abstractmethod
    def get(self, key: str, target: Path) -> None:
        """Download the object at ``key`` to ``target`` (written atomically, never over a file)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object at ``key`` and its sidecar; refuse an object we did not write."""


def sidecar_key(key: str) -> str:
    """HA's S3 agent keeps ``<base>.metadata.json`` beside ``<base>.tar``."""
    for suffix in (".tar.7z", ".tar"):
        if key.endswith(suffix):
            return key[: -len(suffix)] + ".metadata.json"
    raise ValueError(f"{key}: not an archive key")


def with_marker(sidecar: dict[str, Any], sha256: str) -> dict[str, Any]:
    """The sidecar HA reads, plus our marker (HA ignores unknown keys)."""
    return {**sidecar, MARKER: {"sha256": sha256}}


def marker_sha(sidecar: dict[str, Any] | None) -> str | None:
    mark = (sidecar or {}).get(MARKER)
    value = mark.get("sha256") if isinstance(mark, dict) else None
    return value if isinstance(value, str) else None
