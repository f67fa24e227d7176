"""A destination that is a folder: a USB disk, another share, another machine's mount."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..haformat.output import atomic_output
from ..library import sha256_of, write_json
from .base import (
    FOREIGN,
    Destination,
    DestinationError,
    OnBytes,
    OnClaim,
    Payload,
    StoredObject,
    claim_place,
    marker_archive,
    marker_sha,
    sidecar_key,
    with_marker,
)

CHUNK = 1 << 20


class LocalDestination(Destination):
    """Objects are files under ``root``; a key is a relative path."""

    def __init__(self, name: str, root: Path) -> None:
        self.name = name
        self.root = root

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
        target = self._path(key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            claim_place(self.name, key, self.occupant(key), sidecar, resume=resume, on_claim=None)
            if payload.sha256 and target.exists() and sha256_of(target) == payload.sha256:
                sha = payload.sha256  # already there: a repeated or resumed run
                if on_claim is not None:
                    on_claim()
            else:
                target.unlink(missing_ok=True)  # our own half-done or outdated copy
                sha = self._copy(payload, target, on_bytes, on_claim)
            if sha256_of(target) != sha or (payload.sha256 and sha != payload.sha256):
                target.unlink()
                raise DestinationError(f"{self.name}: {key} arrived damaged")
            marked = with_marker(sidecar, sha, target.stat().st_size)
            write_json(self._path(sidecar_key(key)), marked)
        except OSError as err:
            raise DestinationError(
                f"{self.name}: {key}: {err.strerror or err}",
                permanent=isinstance(err, PermissionError),
            ) from err
        return StoredObject(key, target.stat().st_size, sha, marked)

    def occupant(self, key: str) -> str | None:
        there = [p for p in (self._path(key), self._path(sidecar_key(key))) if _exists(p)]
        return marker_archive(self.sidecar(key)) if there else None

    def verify(self, key: str, sha256: str) -> bool:
        path = self._path(key)
        stored = self.sidecar(key)
        return path.is_file() and marker_sha(stored) == sha256 and sha256_of(path) == sha256

    def list(self) -> Iterator[StoredObject]:
        if not self.root.exists():
            return
        for path in sorted(self.root.rglob("*")):
            if path.is_file() and path.name.endswith((".tar", ".tar.7z")):
                key = path.relative_to(self.root).as_posix()
                sidecar = self.sidecar(key)
                yield StoredObject(key, path.stat().st_size, marker_sha(sidecar), sidecar)

    def get(self, key: str, target: Path, on_bytes: OnBytes = None) -> None:
        source = self._path(key)
        if not source.is_file():
            raise DestinationError(f"{self.name}: no object {key}", permanent=True)
        with atomic_output(target) as pending, source.open("rb") as file:
            while chunk := file.read(CHUNK):
                pending.file.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))

    def delete(self, key: str) -> None:
        if self.occupant(key) is None:
            return  # nothing there (a deletion a stop cut short, finished by someone)
        if marker_sha(self.sidecar(key)) is None:
            raise DestinationError(
                f"{self.name}: {key} was not written by nas-receiver; not deleted", permanent=True
            )
        self._remove(key)

    def discard(self, key: str, sha256: str) -> None:
        try:
            if self.occupant(key) in (FOREIGN, sha256):
                self._remove(key)
        except OSError as err:
            raise DestinationError(f"{self.name}: {key}: {err.strerror or err}") from err

    def _remove(self, key: str) -> None:
        """The object at ``key`` and its sidecar go."""
        self._path(key).unlink(missing_ok=True)
        self._path(sidecar_key(key)).unlink(missing_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise DestinationError(f"{self.name}: key {key!r} leaves the folder", permanent=True)
        return path

    def sidecar(self, key: str) -> dict[str, Any] | None:
        try:
            value = json.loads(self._path(sidecar_key(key)).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    @staticmethod
    def _copy(payload: Payload, target: Path, on_bytes: OnBytes, on_claim: OnClaim) -> str:
        """Write ``target`` through a temporary file, claimed once it is on disk, just
        before it takes the name: a copy stopped before that left nothing at ``target``
        and claims nothing there."""
        digest = hashlib.sha256()
        with atomic_output(target, before_publish=on_claim) as pending, payload.open() as file:
            while chunk := file.read(CHUNK):
                pending.file.write(chunk)
                digest.update(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
        return digest.hexdigest()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()
