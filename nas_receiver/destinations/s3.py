"""AWS S3 and S3-compatibles (Synology C2, Backblaze B2, Wasabi, MinIO, ...).

Every archive goes up as a multipart upload, whatever its size, so one code path does it
all: each part carries its SHA-256 (``checksums: sha256``; ``compat`` sends Content-MD5
for servers that reject the newer headers), parts go ``concurrency`` at a time, read from
the file at their offset (memory stays at part size x concurrency), through a shared
bandwidth limit.  The upload id is in the catalog before the first part is sent: after a
stop, the parts the server lists are checked against the file and only the rest are sent.
Transient failures (5xx, timeouts, resets) are retried with exponential backoff and
jitter; authentication, permission and bucket problems fail at once, as permanent.

The archive object carries our marker and its SHA-256 in its metadata; the sidecar
(``.metadata.json``, HA's AgentBackup plus our marker) is written last, so HA's own S3
agent never lists a half-uploaded backup.  After completion the object's size and the
server's composite checksum are compared with what was sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Protocol, TypeVar, cast

from ..catalog import Upload
from ..config import DestinationConfig
from ..haformat.keys import read_secret
from ..haformat.output import atomic_output
from ..haformat.tarstream import read_full
from .base import (
    FOREIGN,
    Destination,
    DestinationError,
    OnBytes,
    OnClaim,
    Payload,
    Stopped,
    StoredObject,
    claim_place,
    marker_archive,
    marker_sha,
    sidecar_key,
    with_marker,
)
from .throttle import Throttle

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)
T = TypeVar("T")

META_MARK = "nas-receiver"  # x-amz-meta-nas-receiver: "1" on every archive object of ours
META_SHA = "nas-receiver-sha256"
MAX_PARTS = 10_000
CHUNK = 1 << 20
PERMANENT_CODES = {
    "AccessDenied",
    "AccountProblem",
    "AllAccessDisabled",
    "InvalidAccessKeyId",
    "InvalidBucketName",
    "NoSuchBucket",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "InvalidStorageClass",
    "KMS.NotFoundException",
    "NotSignedUp",
}
TRANSIENT_CODES = {
    "RequestTimeout",
    "RequestTimeTooSkewed",
    "SlowDown",
    "InternalError",
    "ServiceUnavailable",
    "BadDigest",
    "XAmzContentSHA256Mismatch",
    "IncompleteBody",
}


class UploadJournal(Protocol):
    """Where upload ids live between runs (the catalog)."""

    def upload(self, location: str, key: str) -> Upload | None: ...
    def uploads(self, location: str) -> list[Upload]: ...
    def record_upload(self, upload: Upload) -> None: ...
    def forget_upload(self, location: str, key: str) -> None: ...


@dataclass(frozen=True)
class _Part:
    number: int
    etag: str
    checksum: str | None  # base64 SHA-256, as S3 reports it
    size: int
    raw_sha256: bytes
    md5: bytes = b""  # known in compat mode, where the ETag check stands in for checksums


class S3Destination(Destination):
    """One bucket and prefix."""

    retry_attempts = 6
    retry_base = 0.5  # seconds; doubled each attempt, with full jitter

    def __init__(
        self,
        settings: DestinationConfig,
        journal: UploadJournal,
        *,
        clock: Callable[[], float] = time.time,
        stop: threading.Event | None = None,
    ) -> None:
        assert settings.bucket
        self.name = settings.name
        self.settings = settings
        self.bucket = settings.bucket
        self.journal = journal
        self.clock = clock
        self.stop = stop
        self.throttle = Throttle(settings.bandwidth, settings.bandwidth_schedule)
        self.sha_parts = settings.checksums == "sha256"
        self._client: S3Client | None = None
        self._client_lock = threading.Lock()

    # -- the interface ------------------------------------------------------------------------

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
        occupant = self.occupant(key)
        existing = self._head(key)
        if occupant == FOREIGN and resume:  # every object we write carries our mark
            resume = existing is None or self._ours(key, existing)
        claim_place(self.name, key, occupant, sidecar, resume=resume, on_claim=on_claim)
        if existing is not None:
            stored_sha = existing.get("Metadata", {}).get(META_SHA)
            if payload.sha256 and stored_sha == payload.sha256:
                size = int(existing["ContentLength"])
                if on_bytes is not None:
                    on_bytes(size)
                return self._finish(key, sidecar, payload.sha256, size)  # a repeated run
        if payload.path is not None:
            sha, size = self._upload_file(payload, key, on_bytes)
        else:
            sha, size = self._upload_stream(payload, key, on_bytes)
        return self._finish(key, sidecar, sha, size)

    def occupant(self, key: str) -> str | None:
        sidecar = self.sidecar(key)
        if sidecar is not None:
            return marker_archive(sidecar)
        return None if self._head(key) is None else FOREIGN

    def verify(self, key: str, sha256: str) -> bool:
        head = self._head(key)
        if head is None:
            return False
        sidecar = self.sidecar(key)
        return marker_sha(sidecar) == sha256 and int(head["ContentLength"]) == int(
            (sidecar or {}).get("size", -1)
        )

    def list(self) -> Iterator[StoredObject]:
        prefix = self._prefix()
        paginator = self.client.get_paginator("list_objects_v2")
        pages = self._call(
            lambda: list(paginator.paginate(Bucket=self.bucket, Prefix=prefix)), "list"
        )
        for page in pages:
            for item in page.get("Contents", []):
                key = item["Key"]
                if key.endswith((".tar", ".tar.7z")):
                    sidecar = self.sidecar(key)
                    yield StoredObject(key, int(item["Size"]), marker_sha(sidecar), sidecar)

    def get(self, key: str, target: Path, on_bytes: OnBytes = None) -> None:
        sidecar = self.sidecar(key)
        expected = marker_sha(sidecar)
        response = self._call(
            lambda: self.client.get_object(Bucket=self.bucket, Key=key), f"get {key}"
        )
        digest = hashlib.sha256()
        with atomic_output(target) as pending:
            body = response["Body"]
            while chunk := body.read(1 << 20):
                digest.update(chunk)
                pending.file.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            if expected and digest.hexdigest() != expected:
                raise DestinationError(f"{self.name}: {key} came back damaged (SHA-256 differs)")

    def delete(self, key: str) -> None:
        head = self._head(key)
        if head is not None and not self._ours(key, head):
            raise DestinationError(
                f"{self.name}: {key} was not written by nas-receiver; not deleted", permanent=True
            )
        # the sidecar first: HA stops listing the backup; the archive keeps our metadata mark
        for name in (sidecar_key(key), key):
            self._call(
                lambda name=name: self.client.delete_object(Bucket=self.bucket, Key=name),  # type: ignore[misc]
                f"delete {name}",
            )

    def discard(self, key: str, sha256: str) -> None:
        for upload in self.journal.uploads(self.name):
            if upload.key == key:
                self._abort(key, upload.upload_id)
        head = self._head(key)
        if head is not None and self._ours(key, head) and self.occupant(key) in (FOREIGN, sha256):
            self.delete(key)

    def reachable(self) -> None:
        self._call(
            lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self._prefix(), MaxKeys=1
            ),
            "reach the bucket",
        )

    def tidy(self, wanted: set[str]) -> tuple[str, ...]:
        aborted = []
        for upload in self.journal.uploads(self.name):
            if upload.key not in wanted:
                self._abort(upload.key, upload.upload_id)
                aborted.append(upload.key)
        return tuple(aborted)

    # -- uploading ----------------------------------------------------------------------------

    def _upload_file(self, payload: Payload, key: str, on_bytes: OnBytes) -> tuple[str, int]:
        assert payload.path is not None and payload.sha256 is not None
        assert payload.size is not None
        size, sha = payload.size, payload.sha256
        part_size = self._part_size(size)
        done = self._resume(key, sha, part_size)
        upload_id = done[0] if done else self._create(key, sha, part_size)
        finished = done[1] if done else {}
        count = max(1, -(-size // part_size))
        with payload.path.open("rb") as file:
            fd = file.fileno()

            def read(number: int) -> _Region:
                offset = (number - 1) * part_size
                return _Region(fd, offset, min(part_size, size - offset), self.throttle, self.stop)

            parts: dict[int, _Part] = {}
            todo = []
            for number in range(1, count + 1):
                listed = finished.get(number)
                kept = self._same_part(listed, read(number)) if listed else None
                if kept is not None:
                    parts[number] = kept
                    if on_bytes is not None:
                        on_bytes(kept.size)
                else:
                    todo.append(number)
            if finished:
                log.info(
                    "%s: %s: resuming, %d of %d parts already there",
                    self.name,
                    key,
                    len(parts),
                    count,
                )
            reads = ((number, partial(read, number)) for number in todo)
            parts.update(self._send_parts(key, upload_id, reads, on_bytes))
        self._complete(key, upload_id, parts, size)
        return sha, size

    def _upload_stream(self, payload: Payload, key: str, on_bytes: OnBytes) -> tuple[str, int]:
        earlier = self.journal.upload(self.name, key)
        if earlier is not None:  # made from a stream: the bytes differ each time; start over
            self._abort(key, earlier.upload_id)
        part_size = self.settings.part_size
        upload_id = self._create(key, None, part_size)
        digest = hashlib.sha256()
        size = 0

        def chunks(stream: BinaryIO) -> Iterator[tuple[int, Callable[[], bytes]]]:
            nonlocal size
            number = 0
            while True:
                data = read_full(stream, part_size)
                if not data and number:
                    return
                number += 1
                if number > MAX_PARTS:
                    raise DestinationError(f"{self.name}: {key}: more than {MAX_PARTS} parts")
                digest.update(data)
                size += len(data)
                yield number, partial(bytes, data)
                if len(data) < part_size:
                    return

        with payload.open() as stream:
            parts = self._send_parts(key, upload_id, chunks(stream), on_bytes)
        self._complete(key, upload_id, parts, size, sha=digest.hexdigest())
        return digest.hexdigest(), size

    def _part_size(self, size: int) -> int:
        part = self.settings.part_size
        while -(-size // part) > MAX_PARTS:
            part *= 2
        return part

    def _resume(self, key: str, sha: str, part_size: int) -> tuple[str, dict[int, _Part]] | None:
        """The upload of ``key`` a stopped run left, and the parts the server holds."""
        earlier = self.journal.upload(self.name, key)
        if earlier is None:
            return None
        if earlier.sha256 != sha or earlier.part_size != part_size:
            self._abort(key, earlier.upload_id)
            return None
        try:
            return earlier.upload_id, self._listed_parts(key, earlier.upload_id)
        except DestinationError as err:
            if "NoSuchUpload" not in str(err):
                raise
            self.journal.forget_upload(self.name, key)
            return None

    def _listed_parts(self, key: str, upload_id: str) -> dict[int, _Part]:
        parts: dict[int, _Part] = {}
        marker = 0
        while True:
            page = self._call(
                lambda marker=marker: self.client.list_parts(  # type: ignore[misc]
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumberMarker=marker
                ),
                f"list the parts of {key}",
            )
            for item in page.get("Parts", []):
                checksum = item.get("ChecksumSHA256")
                parts[item["PartNumber"]] = _Part(
                    item["PartNumber"],
                    item["ETag"],
                    checksum,
                    int(item["Size"]),
                    base64.b64decode(checksum) if checksum else b"",
                )
            if not page.get("IsTruncated"):
                return parts
            marker = int(page["NextPartNumberMarker"])

    def _same_part(self, part: _Part, body: _Region) -> _Part | None:
        """The listed part, when it holds exactly these bytes (by its SHA-256, or by its
        ETag, the MD5, where the server lists no checksum); else None."""
        if part.size != len(body):
            return None
        raw, md5 = _digests(body, md5=not part.checksum)
        if part.checksum:
            return part if part.checksum == _b64(raw) else None
        if part.etag.strip('"') != md5.hex():
            return None
        checksum = _b64(raw) if self.sha_parts else None
        return _Part(part.number, part.etag, checksum, part.size, raw, md5)

    def _create(self, key: str, sha: str | None, part_size: int) -> str:
        extra: dict[str, Any] = {"Metadata": {META_MARK: "1", **({META_SHA: sha} if sha else {})}}
        if self.sha_parts:
            extra["ChecksumAlgorithm"] = "SHA256"
        if self.settings.storage_class:
            extra["StorageClass"] = self.settings.storage_class
        if self.settings.sse:
            extra["ServerSideEncryption"] = self.settings.sse
        if self.settings.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.settings.sse_kms_key_id
        response = self._call(
            lambda: self.client.create_multipart_upload(
                Bucket=self.bucket, Key=key, ContentType="application/x-tar", **extra
            ),
            f"start {key}",
        )
        upload_id = response["UploadId"]
        # Recorded before the first byte goes: a file's upload (sha known) is continued after
        # a stop; a stream's (no sha: its bytes differ each time) is aborted and redone.
        self.journal.record_upload(
            Upload(self.name, key, sha or "", upload_id, part_size, self.clock())
        )
        return upload_id

    def _send_parts(
        self,
        key: str,
        upload_id: str,
        parts: Iterator[tuple[int, Callable[[], bytes | _Region]]],
        on_bytes: OnBytes,
    ) -> dict[int, _Part]:
        """Send parts ``concurrency`` at a time.  A part of a file is read from the file as
        it is sent; a part of a stream is held in memory (at most ``concurrency`` of them)."""
        sent: dict[int, _Part] = {}
        concurrency = self.settings.concurrency
        with ThreadPoolExecutor(concurrency, thread_name_prefix=f"s3-{self.name}") as pool:
            running: set[Future[_Part]] = set()

            def collect(block: bool) -> None:
                nonlocal running
                finished, running = wait(
                    running, timeout=None if block else 0, return_when=FIRST_COMPLETED
                )
                for future in finished:
                    part = future.result()  # raises the part's DestinationError
                    sent[part.number] = part

            try:
                for number, read in parts:
                    while len(running) >= concurrency:
                        collect(block=True)
                    data = read()
                    running.add(
                        pool.submit(self._send_part, key, upload_id, number, data, on_bytes)
                    )
                while running:
                    collect(block=True)
            except BaseException:
                for future in running:
                    future.cancel()
                raise
        return sent

    def _send_part(
        self, key: str, upload_id: str, number: int, body: bytes | _Region, on_bytes: OnBytes
    ) -> _Part:
        raw, md5 = _digests(body, md5=not self.sha_parts)
        extra: dict[str, Any] = {}
        if self.sha_parts:
            extra["ChecksumSHA256"] = _b64(raw)
        else:
            extra["ContentMD5"] = _b64(md5)
        if isinstance(body, bytes):
            self.throttle.take(len(body))  # a region is throttled as it is read

        def send() -> Any:
            if isinstance(body, _Region):
                body.seek(0)  # a retry sends the part from its start
            # bytes go as a stream too: http.client would copy a bytes body to prepend headers
            stream = cast(IO[bytes], body if isinstance(body, _Region) else io.BytesIO(body))
            return self.client.upload_part(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                Body=stream,
                ContentLength=len(body),
                **extra,
            )

        response = self._call(send, f"send part {number} of {key}")
        if on_bytes is not None:
            on_bytes(len(body))
        return _Part(number, response["ETag"], extra.get("ChecksumSHA256"), len(body), raw, md5)

    def _complete(
        self, key: str, upload_id: str, parts: dict[int, _Part], size: int, sha: str | None = None
    ) -> None:
        listed = []
        for number in sorted(parts):
            entry: dict[str, Any] = {"PartNumber": number, "ETag": parts[number].etag}
            if self.sha_parts and parts[number].checksum:
                entry["ChecksumSHA256"] = parts[number].checksum
            listed.append(entry)
        try:
            self._call(
                lambda: self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": listed},  # type: ignore[typeddict-item]
                ),
                f"complete {key}",
            )
        except DestinationError as err:
            if "NoSuchUpload" not in str(err) or self._head(key) is None:
                raise  # NoSuchUpload after a lost reply: the retry found it completed
        self.journal.forget_upload(self.name, key)
        head = self._head(key, checksums=True)
        if head is None or int(head["ContentLength"]) != size:
            got = "nothing" if head is None else f"{head['ContentLength']} bytes"
            raise DestinationError(f"{self.name}: {key}: sent {size} bytes, the server has {got}")
        composite = head.get("ChecksumSHA256")
        if composite and self.sha_parts:
            expected = _composite([parts[n].raw_sha256 for n in sorted(parts)])
            if composite.split("-")[0] != expected:
                raise DestinationError(f"{self.name}: {key}: the server's checksum differs")
        md5s = [parts[n].md5 for n in sorted(parts)]
        if not self.sha_parts and not self.settings.sse and all(md5s):
            # a multipart ETag is the MD5 of the parts' MD5s, and their count
            etag = f"{hashlib.md5(b''.join(md5s), usedforsecurity=False).hexdigest()}-{len(md5s)}"
            if str(head.get("ETag", "")).strip('"') != etag:
                raise DestinationError(f"{self.name}: {key}: the server's ETag differs")

    def _finish(self, key: str, sidecar: dict[str, Any], sha: str, size: int) -> StoredObject:
        marked = with_marker(sidecar, sha, size)
        body = json.dumps(marked, ensure_ascii=False, indent=2).encode()
        extra: dict[str, Any] = {}
        if self.sha_parts:
            extra["ChecksumSHA256"] = _b64(hashlib.sha256(body).digest())
        self._call(
            lambda: self.client.put_object(
                Bucket=self.bucket,
                Key=sidecar_key(key),
                Body=body,
                ContentType="application/json",
                Metadata={META_MARK: "1"},
                **extra,
            ),
            f"write {sidecar_key(key)}",
        )
        return StoredObject(key, size, sha, marked)

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(
                lambda: self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id
                ),
                f"abort the upload of {key}",
            )
        except DestinationError as err:
            if "NoSuchUpload" not in str(err):
                raise
        self.journal.forget_upload(self.name, key)
        log.info("%s: aborted an unfinished upload of %s", self.name, key)

    # -- reading ------------------------------------------------------------------------------

    def _head(self, key: str, *, checksums: bool = False) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        extra: dict[str, Any] = {"ChecksumMode": "ENABLED"} if checksums and self.sha_parts else {}
        try:
            return dict(
                self._call(
                    lambda: self.client.head_object(Bucket=self.bucket, Key=key, **extra),
                    f"look at {key}",
                    raw=True,
                )
            )
        except ClientError as err:
            if _status(err) == 404:
                return None
            raise self._error(err, f"look at {key}") from err

    def _ours(self, key: str, head: dict[str, Any]) -> bool:
        return head.get("Metadata", {}).get(META_MARK) == "1" or bool(marker_sha(self.sidecar(key)))

    def sidecar(self, key: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError

        try:
            response = self._call(
                lambda: self.client.get_object(Bucket=self.bucket, Key=sidecar_key(key)),
                f"read {sidecar_key(key)}",
                raw=True,
            )
            value = json.loads(response["Body"].read())
        except ClientError as err:
            if _status(err) == 404:
                return None
            raise self._error(err, f"read {sidecar_key(key)}") from err
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def _prefix(self) -> str:
        prefix = self.settings.prefix.strip("/")
        return f"{prefix}/" if prefix else ""

    # -- the client, retries and errors -------------------------------------------------------

    @property
    def client(self) -> S3Client:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> S3Client:
        import boto3
        from botocore.config import Config as BotoConfig

        settings = self.settings
        credentials: dict[str, str] = {}
        if settings.access_key_id_file or settings.secret_access_key_file:
            if not (settings.access_key_id_file and settings.secret_access_key_file):
                raise DestinationError(
                    f"{self.name}: access_key_id_file and secret_access_key_file go together",
                    permanent=True,
                )
            try:
                credentials = {
                    "aws_access_key_id": read_secret(settings.access_key_id_file),
                    "aws_secret_access_key": read_secret(settings.secret_access_key_file),
                }
            except OSError as err:
                raise DestinationError(  # the configured paths are never shown: maybe secrets
                    f"{self.name}: cannot read access_key_id_file or secret_access_key_file"
                    f" ({err.strerror or 'unreadable'})",
                    permanent=True,
                ) from err
        compat = settings.checksums == "compat"
        config = BotoConfig(
            region_name=settings.region,
            s3={"addressing_style": settings.addressing_style},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=min(30, settings.timeout.total_seconds()),
            read_timeout=settings.timeout.total_seconds(),
            max_pool_connections=settings.concurrency + 4,
            request_checksum_calculation="when_required" if compat else "when_supported",
            response_checksum_validation="when_required" if compat else "when_supported",
            user_agent_extra="nas-receiver",
        )
        session = boto3.session.Session(**credentials)  # type: ignore[arg-type]
        return session.client("s3", endpoint_url=settings.endpoint_url, config=config)

    def _call(self, action: Callable[[], T], what: str, *, raw: bool = False) -> T:
        """Run one request; retry what may pass next time, with backoff and full jitter.

        With ``raw`` a ClientError is re-raised as it is (the caller reads its status)."""
        from botocore.exceptions import BotoCoreError, ClientError

        attempt = 0
        while True:
            try:
                return action()
            except ClientError as err:
                if raw and not _transient(err):
                    raise
                if not _transient(err) or attempt + 1 >= self.retry_attempts:
                    raise self._error(err, what) from err
                reason = _code(err) or str(_status(err))
            except (BotoCoreError, OSError) as err:
                if attempt + 1 >= self.retry_attempts:
                    raise DestinationError(f"{self.name}: {what}: {err}") from err
                reason = type(err).__name__
            delay = random.uniform(0, self.retry_base * 2**attempt)  # noqa: S311 - jitter
            log.info("%s: %s: %s; retrying in %.1f s", self.name, what, reason, delay)
            time.sleep(delay)
            attempt += 1

    def _error(self, err: Exception, what: str) -> DestinationError:
        code, status = _code(err), _status(err)
        permanent = code in PERMANENT_CODES or status in (401, 403)
        detail = {
            "InvalidAccessKeyId": "the access key is not known (check access_key_id_file)",
            "SignatureDoesNotMatch": "the secret key is wrong (check secret_access_key_file)",
            "AccessDenied": "access denied: the key may not do this in this bucket",
            "NoSuchBucket": f"bucket {self.bucket!r} does not exist",
        }.get(code or "", f"{code or status}")
        return DestinationError(f"{self.name}: {what}: {detail}", permanent=permanent)


def _code(err: Exception) -> str | None:
    response = getattr(err, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return str(code) if code else None


def _status(err: Exception) -> int:
    response = getattr(err, "response", None) or {}
    return int(response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def _transient(err: Exception) -> bool:
    return _code(err) in TRANSIENT_CODES or _status(err) >= 500


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _composite(part_digests: list[bytes]) -> str:
    """S3's checksum of a multipart object: the SHA-256 of the parts' SHA-256s."""
    return _b64(hashlib.sha256(b"".join(part_digests)).digest())


class _Region(io.RawIOBase):
    """``size`` bytes of an open file from ``offset``, read as they are sent (so a part
    costs no memory), through the bandwidth limit."""

    def __init__(
        self,
        fd: int,
        offset: int,
        size: int,
        throttle: Throttle | None,
        stop: threading.Event | None = None,
    ) -> None:
        super().__init__()
        self._fd, self._offset, self._size = fd, offset, size
        self._throttle = throttle
        self._stop = stop
        self._position = 0

    def __len__(self) -> int:
        return self._size

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, min(self._size, base + offset))
        return self._position

    def read(self, size: int = -1) -> bytes:
        left = self._size - self._position
        count = left if size is None or size < 0 else min(size, left)
        if count <= 0:
            return b""
        if self._stop is not None and self._stop.is_set():
            raise Stopped  # mid-part: the server drops the part; the upload resumes later
        data = os.pread(self._fd, count, self._offset + self._position)
        self._position += len(data)
        if self._throttle is not None:
            self._throttle.take(len(data))
        return data

    def digests(self, *, md5: bool) -> tuple[bytes, bytes]:
        """SHA-256 and (when asked) MD5 of the region: read once for it, unthrottled."""
        sha, second = hashlib.sha256(), hashlib.md5(usedforsecurity=False) if md5 else None
        done = 0
        while done < self._size:
            chunk = os.pread(self._fd, min(CHUNK, self._size - done), self._offset + done)
            if not chunk:
                raise DestinationError("the file ended before the part did (changed?)")
            sha.update(chunk)
            if second is not None:
                second.update(chunk)
            done += len(chunk)
        return sha.digest(), second.digest() if second is not None else b""

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _digests(body: bytes | _Region, *, md5: bool) -> tuple[bytes, bytes]:
    """SHA-256 and (when asked) MD5 of a part."""
    if isinstance(body, _Region):
        return body.digests(md5=md5)
    second = hashlib.md5(body, usedforsecurity=False).digest() if md5 else b""
    return hashlib.sha256(body).digest(), second
