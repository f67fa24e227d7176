"""Any rclone remote (Google Drive, OneDrive, Dropbox, B2, SFTP, WebDAV, ...) through the
rclone program the user configured (``rclone config``).

Files go with ``rclone copyto``, streams (archives encrypted on the way) with ``rclone
rcat``; what arrived is then hashed by the remote (``rclone hashsum sha256``) or, where the
remote keeps no SHA-256, downloaded and hashed (``--download``).  rclone retries transfers
itself; an upload that fails for good starts again on the next run.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from ..config import DestinationConfig
from ..haformat.output import atomic_output
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

log = logging.getLogger(__name__)

CHUNK = 1 << 20
# rclone's exit codes: 1 syntax or usage, 3 directory not found, 4 file not found,
# 5 temporary error, 7 fatal error (authentication, quota, ...): see `rclone help flags`
PERMANENT_EXITS = {1, 7}
NOT_FOUND_EXITS = {3, 4}


class RcloneDestination(Destination):
    """``remote`` is ``name:path`` as rclone writes it; keys go below it."""

    def __init__(self, settings: DestinationConfig) -> None:
        assert settings.remote
        self.name = settings.name
        self.settings = settings
        self.remote = settings.remote

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
        claim_place(self.name, key, self.occupant(key), sidecar, resume=resume, on_claim=on_claim)
        if payload.path is not None:
            assert payload.sha256 is not None
            self._run(["copyto", str(payload.path), self._where(key)], f"upload {key}")
            if on_bytes is not None:
                on_bytes(payload.size or 0)
            sha, size = payload.sha256, payload.size or 0
        else:
            sha, size = self._rcat(payload, key, on_bytes)
        if self._hash(key) != sha:
            raise DestinationError(f"{self.name}: {key} arrived damaged (SHA-256 differs)")
        marked = with_marker(sidecar, sha, size)
        self._run(
            ["rcat", self._where(sidecar_key(key))],
            f"write {sidecar_key(key)}",
            stdin=json.dumps(marked, ensure_ascii=False, indent=2).encode(),
        )
        return StoredObject(key, size, sha, marked)

    def verify(self, key: str, sha256: str) -> bool:
        return marker_sha(self.sidecar(key)) == sha256 and self._hash(key) == sha256

    def list(self) -> Iterator[StoredObject]:
        prefix = self.settings.prefix.strip("/")
        result = self._run(
            ["lsjson", "--recursive", "--files-only", self._where(prefix)],
            "list",
            missing_ok=True,
        )
        for item in json.loads(result or b"[]"):
            key = f"{prefix}/{item['Path']}" if prefix else item["Path"]
            if key.endswith((".tar", ".tar.7z")):
                sidecar = self.sidecar(key)
                yield StoredObject(key, int(item["Size"]), marker_sha(sidecar), sidecar)

    def get(self, key: str, target: Path, on_bytes: OnBytes = None) -> None:
        expected = marker_sha(self.sidecar(key))
        digest = hashlib.sha256()
        with atomic_output(target) as pending:
            process = subprocess.Popen(
                [*self._command(), "cat", self._where(key)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            assert process.stdout is not None
            while chunk := process.stdout.read(CHUNK):
                digest.update(chunk)
                pending.file.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            _stdout, stderr = process.communicate()
            if process.returncode:
                raise self._error(process.returncode, stderr, f"download {key}")
            if expected and digest.hexdigest() != expected:
                raise DestinationError(f"{self.name}: {key} came back damaged (SHA-256 differs)")

    def occupant(self, key: str) -> str | None:
        sidecar = self.sidecar(key)
        if sidecar is not None:
            return marker_archive(sidecar)
        return FOREIGN if self._exists(key) else None

    def delete(self, key: str) -> None:
        if self._exists(key) and marker_sha(self.sidecar(key)) is None:
            raise DestinationError(
                f"{self.name}: {key} was not written by nas-receiver; not deleted", permanent=True
            )
        self._remove(key)

    def discard(self, key: str, sha256: str) -> None:
        if self.occupant(key) in (FOREIGN, sha256):
            self._remove(key)

    def _remove(self, key: str) -> None:
        """The sidecar, then the object at ``key``, go (HA stops listing it first)."""
        for name in (sidecar_key(key), key):
            self._run(["deletefile", self._where(name)], f"delete {name}", missing_ok=True)

    def reachable(self) -> None:
        self._run(["lsf", "--max-depth", "1", self._where("")], "reach", missing_ok=True)

    # -- helpers -------------------------------------------------------------------------------

    def _where(self, key: str) -> str:
        if not key:
            return self.remote
        if self.remote.endswith(":"):
            return self.remote + key
        return f"{self.remote.rstrip('/')}/{key}"

    def _command(self) -> builtins.list[str]:
        binary = shutil.which(self.settings.rclone_binary)
        if binary is None:
            raise DestinationError(
                f"{self.name}: rclone is not installed ({self.settings.rclone_binary!r} not found)"
            )
        command = [binary, "--retries", "3", "--low-level-retries", "10"]
        if self.settings.rclone_config:
            command += ["--config", str(self.settings.rclone_config)]
        limit = self._bwlimit()
        if limit:
            command += ["--bwlimit", limit]
        return command

    def _bwlimit(self) -> str | None:
        """rclone's --bwlimit, a timetable when the limit changes with the time of day."""

        def rate(value: int | None) -> str:
            return "off" if value is None else f"{max(1, value // 1024)}K"

        windows = self.settings.bandwidth_schedule
        if not windows:
            return rate(self.settings.bandwidth) if self.settings.bandwidth else None
        entries: dict[str, str] = {}
        for window in windows:
            entries.setdefault(window.end, rate(self.settings.bandwidth))
            entries[window.start] = rate(window.limit)
        return " ".join(f"{at},{limit}" for at, limit in sorted(entries.items()))

    def _run(
        self,
        args: Sequence[str],
        what: str,
        *,
        stdin: bytes | None = None,
        missing_ok: bool = False,
    ) -> bytes | None:
        result = subprocess.run(
            [*self._command(), *args],
            input=stdin,
            capture_output=True,
            check=False,
            timeout=24 * 3600,
        )
        if result.returncode in NOT_FOUND_EXITS and missing_ok:
            return None
        if result.returncode:
            raise self._error(result.returncode, result.stderr, what)
        return result.stdout

    def _rcat(self, payload: Payload, key: str, on_bytes: OnBytes) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        process = subprocess.Popen(
            [*self._command(), "rcat", self._where(key)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        assert process.stdin is not None and process.stderr is not None
        errors: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(process.stderr, errors), daemon=True)
        reader.start()
        try:
            with payload.open() as stream:
                while chunk := stream.read(CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    process.stdin.write(chunk)
                    if on_bytes is not None:
                        on_bytes(len(chunk))
            process.stdin.close()
        except BrokenPipeError:
            pass
        except BaseException:
            process.kill()
            raise
        finally:
            process.wait()
            reader.join()
        if process.returncode:
            raise self._error(process.returncode, b"".join(errors), f"upload {key}")
        return digest.hexdigest(), size

    def _hash(self, key: str) -> str | None:
        for extra in ([], ["--download"]):
            result = subprocess.run(
                [*self._command(), "hashsum", "sha256", *extra, self._where(key)],
                capture_output=True,
                check=False,
            )
            value = result.stdout.split(maxsplit=1)[0].decode() if result.stdout else ""
            if result.returncode == 0 and len(value) == 64 and value != "0" * 64:
                return value
            if result.returncode in NOT_FOUND_EXITS:
                return None
        return None

    def _exists(self, key: str) -> bool:
        result = self._run(["lsjson", self._where(key)], f"look at {key}", missing_ok=True)
        return bool(result and json.loads(result))

    def sidecar(self, key: str) -> dict[str, Any] | None:
        result = self._run(
            ["cat", self._where(sidecar_key(key))], f"read {sidecar_key(key)}", missing_ok=True
        )
        try:
            value = json.loads(result) if result else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def _error(self, code: int, stderr: bytes, what: str) -> DestinationError:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        detail = lines[-1] if lines else f"rclone exit {code}"
        return DestinationError(f"{self.name}: {what}: {detail}", permanent=code in PERMANENT_EXITS)


def _drain(stream: IO[bytes], into: list[bytes]) -> None:
    into.append(stream.read())
