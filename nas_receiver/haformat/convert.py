"""Decrypt an HA backup into a plain one, and encrypt a plain one the way HA does.

Both verify their input in full first (a backup is converted only when it is ``valid``),
stream the conversion into a temporary file beside the output, verify the result, and only
then give it its name.  Neither writes plaintext anywhere but the output of ``decrypt``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import struct
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

from securetar import SecureTarEncryptStream, SecureTarRootKeyContext

from ..errors import BackupError, UsageError
from .crypto import PREFIX_SIZE, ChainedSource, DecryptError, KeySession
from .keys import KeyRing
from .names import inner_base_name
from .output import atomic_output
from .sources import FileChanged, HashingReader, SeekingFileSource
from .tarstream import ByteSource, Counted, FileLike, TarEntry, TarWalker
from .verify import METADATA_NAMES, InnerArchive, Level, Verdict, VerifyReport, verify_archive

OnBytes = Callable[[int], None] | None


def decrypt_backup(
    source: Path,
    output: Path,
    keys: KeyRing,
    *,
    on_bytes: OnBytes = None,
    verified: VerifyReport | None = None,
) -> VerifyReport:
    """Write ``output``: ``source`` as an unencrypted HA backup.  Return the output's report.

    ``verified``: a full verification of these bytes (the arrival's), which is then not
    done again.  The source is hashed as it is read: bytes other than the verified ones
    (a file changed since) raise BackupError and leave no output.  Raise BackupError too
    when ``source`` is not valid with these keys, OutputExistsError when ``output`` exists.

    The output is not read back and inflated again: each inner archive written must be, by
    length and CRC-32, the very stream the source's full verification decrypted, inflated
    and walked, and a quick verification checks the output's structure and metadata; its
    SHA-256 is made as it is written.  Only a SecureTar v1 part, whose gzip trailer is
    rewritten, has the output verified in full instead.
    """
    if verified is not None and verified.level is Level.FULL:
        _require(verified, str(source))
        report = verified
    else:
        report = _require_valid(source, keys, on_bytes)
    inner = {i.offset: i for i in report.inner}  # by place: two may have one name
    session = KeySession(keys)
    written: list[tuple[InnerArchive, Counted]] = []

    def content(entry: TarEntry, walker: TarWalker) -> tuple[int, ByteSource]:
        found = inner.get(entry.header_offset)
        if found is None or (found.name, found.size) != (entry.name, entry.size):
            raise BackupError(
                f"{source}: {entry.name} is not where or what it was when verified (at byte "
                f"{entry.header_offset}, {entry.size} bytes): the source changed since"
            )
        size, stream = _decrypted_member(entry, walker, found, session)
        checked = Counted(stream, crc=True)
        written.append((found, checked))
        return size, checked

    def metadata(raw: dict[str, Any]) -> dict[str, Any]:
        return {**raw, "protected": False, "crypto": None}

    with atomic_output(output) as pending:
        names = {i.name for i in report.inner}
        sink = _HashingWriter(pending.file)
        try:
            _rewrite(source, cast(BinaryIO, sink), content, metadata, names, sha256=report.sha256)
        except DecryptError as err:  # it decrypted whole when verified
            raise BackupError(
                f"{source}: {err}, though it decrypted whole when verified: it changed since"
            ) from err
        pending.file.flush()
        if _provable(report):
            _require_verified_streams(written)
            result = verify_archive(pending.path, level=Level.QUICK)
            _require(result, "decrypted copy")
            _take_content(result, report, sink.hexdigest())
        else:
            result = verify_archive(pending.path, level=Level.FULL)
            _require(result, "decrypted copy")
            _require_same_content(report, result)
    result.path = str(output)
    return result


class _HashingWriter:
    """Write to ``file``, making the SHA-256 of what is written (``tell`` for tarfile)."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._sha = hashlib.sha256()
        self._position = file.tell()

    def write(self, data: bytes) -> int:
        self._sha.update(data)
        self._file.write(data)  # a buffered file writes all of it, or raises
        self._position += len(data)
        return len(data)

    def tell(self) -> int:
        return self._position

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def _provable(report: VerifyReport) -> bool:
    """Whether a decrypted copy can be proven as it is written: the verification kept the
    CRC-32 of every encrypted inner archive's stream, and no v1 trailer is rewritten."""
    return all(
        (i.stream_crc32 is not None or not i.securetar) and not i.legacy_trailer
        for i in report.inner
    )


def _require_verified_streams(written: list[tuple[InnerArchive, Counted]]) -> None:
    """Each encrypted inner archive written is the stream the source's verification
    checked: as many bytes, the same CRC-32 (a plain one is its source's bytes, hashed as
    they are read)."""
    for inner, checked in written:
        if not inner.securetar:
            continue
        if (checked.count, checked.crc) != (inner.decrypted_size, inner.stream_crc32):
            raise BackupError(
                f"decrypted copy: {inner.name} (at byte {inner.offset}) was written as "
                f"{checked.count} bytes with CRC-32 {checked.crc:08x}, not the "
                f"{inner.decrypted_size} bytes with CRC-32 {inner.stream_crc32 or 0:08x} "
                "that were verified"
            )


def _take_content(copy: VerifyReport, source: VerifyReport, sha256: str) -> None:
    """Complete the quick report of a decrypted copy with what the source's full verification
    found inside the very streams it holds, and the SHA-256 made as it was written."""
    if [i.name for i in copy.inner] != [i.name for i in source.inner]:
        raise BackupError(
            f"decrypted copy: its inner archives {[i.name for i in copy.inner]} are not the "
            f"source's {[i.name for i in source.inner]}"
        )
    for made, found in zip(copy.inner, source.inner, strict=True):
        made.files = found.files
        made.content_bytes = found.content_bytes
        made.decrypted_size = found.decrypted_size
    copy.sha256 = sha256
    copy.notes.append(
        "not read back: its decrypted inner archives were checked as written against the "
        "source's full verification (the same bytes: length and CRC-32)"
        if any(i.securetar for i in source.inner)
        else "not read back: it holds the source's bytes, hashed as they were read"
    )


def _require_same_content(source: VerifyReport, copy: VerifyReport) -> None:
    """The copy is of the same backup (slug) and its inner archives hold what the source's
    verification found in them (as many files and bytes): the source was not swapped
    between its verification and now."""

    def content(report: VerifyReport) -> list[object]:
        slug = report.backup.slug if report.backup else None
        return [slug, *((i.name, i.files, i.content_bytes) for i in report.inner)]

    found, made = content(source), content(copy)
    if found != made:
        raise BackupError(
            f"decrypted copy: its content differs from the verified source's ({made} against "
            f"{found}): the source changed since it was verified"
        )


def encrypt_backup(
    source: Path,
    output: Path,
    key: str,
    *,
    version: int = 3,
    on_bytes: OnBytes = None,
) -> VerifyReport:
    """Write ``output``: the unencrypted backup ``source`` encrypted with SecureTar ``version``.

    HA restores the result with ``key`` (the emergency-kit key).  Raise BackupError when
    ``source`` is not a valid unencrypted backup.
    """
    if version not in (2, 3):
        raise UsageError(f"SecureTar version {version} cannot be written (use 2 or 3)")
    quick = verify_archive(source, level=Level.QUICK)
    if quick.securetar_versions or (quick.backup and quick.backup.protected):
        raise BackupError(f"{source}: is encrypted already")
    report = _require_valid(source, KeyRing(), on_bytes)
    content, metadata = _encryption(key, version)
    inner_names = {i.name for i in report.inner}
    with atomic_output(output) as pending:
        _rewrite(source, pending.file, content, metadata, inner_names, sha256=report.sha256)
        pending.file.flush()
        result = verify_archive(pending.path, level=Level.FULL, keys=KeyRing([key]))
        _require(result, "encrypted copy")
    result.path = str(output)
    return result


def encrypt_stream(source: Path, sink: BinaryIO, key: str, *, version: int = 3) -> None:
    """Write to ``sink`` (``write`` and ``tell``) the unencrypted backup ``source`` encrypted
    with SecureTar ``version``, as ``encrypt_backup`` writes it, without a file: for a copy
    streamed to a destination.  ``source`` must be a verified unencrypted backup (checked
    here by its structure only; the caller verified it in full before)."""
    quick = verify_archive(source, level=Level.QUICK)
    if quick.securetar_versions or (quick.backup and quick.backup.protected):
        raise BackupError(f"{source}: is encrypted already")
    _require(quick, str(source))
    content, metadata = _encryption(key, version)
    _rewrite(source, sink, content, metadata, {i.name for i in quick.inner})


def _encryption(
    key: str, version: int
) -> tuple[
    Callable[[TarEntry, TarWalker], tuple[int, ByteSource]],
    Callable[[dict[str, Any]], dict[str, Any]],
]:
    """How ``_rewrite`` encrypts: each inner archive, and backup.json (``protected``)."""
    if version not in (2, 3):
        raise UsageError(f"SecureTar version {version} cannot be written (use 2 or 3)")
    context = SecureTarRootKeyContext(key)

    def content(entry: TarEntry, walker: TarWalker) -> tuple[int, ByteSource]:
        stream = SecureTarEncryptStream(
            cast(IO[bytes], walker.member_stream()),
            create_version=version,
            derived_key_id=None,
            plaintext_size=entry.size,
            root_key_context=context,
        )
        framed = stream.__enter__()
        return framed.ciphertext_size, framed

    def metadata(raw: dict[str, Any]) -> dict[str, Any]:
        updated = {**raw, "protected": True}
        if version == 2:
            updated["crypto"] = "aes128"
        else:
            updated.pop("crypto", None)
        return updated

    return content, metadata


def _require_valid(source: Path, keys: KeyRing, on_bytes: OnBytes) -> VerifyReport:
    report = verify_archive(source, level=Level.FULL, keys=keys, on_bytes=on_bytes)
    _require(report, str(source))
    return report


def _require(report: VerifyReport, what: str) -> None:
    if report.verdict is not Verdict.VALID:
        detail = report.problems[0] if report.problems else ""
        raise BackupError(f"{what}: {report.verdict}: {detail}")


def _decrypted_member(
    entry: TarEntry, walker: TarWalker, inner: InnerArchive, session: KeySession
) -> tuple[int, ByteSource]:
    prefix = walker.member_stream().read(min(entry.size, PREFIX_SIZE))
    rest = walker.member_stream()
    if not inner.securetar:
        return entry.size, ChainedSource(prefix, rest)
    stream = session.open(prefix, rest, entry.size)
    if inner.legacy_trailer and inner.deflate_end is not None and inner.crc32 is not None:
        # SecureTar v1's split gzip trailer becomes a standard one, so plain readers accept it.
        assert inner.content_bytes is not None
        trailer = struct.pack("<II", inner.crc32, inner.content_bytes & 0xFFFFFFFF)
        return inner.deflate_end + 8, _Spliced(stream, inner.deflate_end, trailer)
    assert inner.decrypted_size is not None
    return inner.decrypted_size, stream


def _rewrite(
    source: Path,
    file: BinaryIO,
    content: Callable[[TarEntry, TarWalker], tuple[int, ByteSource]],
    metadata: Callable[[dict[str, Any]], dict[str, Any]],
    inner_names: set[str],
    *,
    sha256: str | None = None,
) -> None:
    """Copy ``source``'s members to ``file`` in order, converting inner archives and metadata.

    ``sha256``: the source as it was verified.  It is hashed as it is read (on a second
    thread, as verification reads it), and other bytes raise BackupError at the end."""
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(
            tarfile.TarFile(fileobj=file, mode="w", format=tarfile.PAX_FORMAT, copybufsize=1 << 20)
        )
        if sha256 is None:
            handle = stack.enter_context(source.open("rb"))
            reader: ByteSource = SeekingFileSource(handle, source.stat().st_size)
        else:
            hashing = stack.enter_context(HashingReader(source))
            reader = hashing
        walker = TarWalker(reader)
        for entry in walker:
            info = _tarinfo(entry)
            if entry.name in METADATA_NAMES:
                raw = json.loads(walker.member_stream().read(entry.size))
                data = json.dumps(metadata(raw), ensure_ascii=False).encode()
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
            elif entry.name in inner_names and inner_base_name(entry.name):
                info.size, stream = content(entry, walker)
                out.addfile(info, FileLike(stream))
            else:
                out.addfile(info, FileLike(walker.member_stream()) if entry.size else None)
        if sha256 is not None:
            _require_same_bytes(source, hashing, sha256)


def _require_same_bytes(source: Path, hashing: HashingReader, sha256: str) -> None:
    try:
        found = hashing.finish()
    except FileChanged as err:
        raise BackupError(f"{source}: changed while it was read ({err})") from err
    if found != sha256:
        raise BackupError(
            f"{source}: its SHA-256 is {found}, not the {sha256} verified: it changed since"
        )


def _tarinfo(entry: TarEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.raw_name)
    info.size = entry.size
    info.mode = entry.mode
    info.mtime = entry.mtime
    info.type = entry.typeflag
    info.linkname = entry.linkname
    return info


class _Spliced:
    """The first ``keep`` bytes of ``source``, then ``tail``; the rest of ``source`` is read
    (so the decryptor finishes and checks it) and dropped."""

    def __init__(self, source: ByteSource, keep: int, tail: bytes) -> None:
        self._source = source
        self._left = keep
        self._tail = tail

    def read(self, size: int, /) -> bytes:
        if self._left > 0:
            data = self._source.read(min(size, self._left))
            if data:
                self._left -= len(data)
                return data
        while self._source.read(1 << 20):
            pass
        data, self._tail = self._tail[:size], self._tail[size:]
        return data
