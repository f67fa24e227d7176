"""Walk a tar stream from front to back, without seeking back and without extracting.

The same walker reads the outer backup archive (from a file) and every inner archive (from a
decrypting, decompressing stream), so a byte offset in a problem always means the same thing:
the position in the stream the walker reads.
"""

from __future__ import annotations

import re
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from zlib_ng import zlib_ng

BLOCK = 512
ZERO_BLOCK = bytes(BLOCK)
SKIP_CHUNK = 4 << 20  # big reads while skipping data cost fewer inflate calls
MAX_META_SIZE = 1 << 20  # PAX and GNU long-name records are small; bigger ones are damage


class ByteSource(Protocol):
    """Anything with ``read(size)`` that returns at most ``size`` bytes, ``b""`` at the end."""

    def read(self, size: int, /) -> bytes: ...


class ShortReads:
    """A ByteSource made of a ``read`` that may return fewer bytes than asked before the
    end (for ``read_full``, or a reader that takes short reads as they come)."""

    def __init__(self, read: Callable[[int], bytes]) -> None:
        self.read = read


def take(view: memoryview, size: int) -> bytes:
    """The first ``size`` bytes of ``view``: the object it views when all of it is wanted
    (no copy of a megabyte per read; a bytearray only ever comes from a decryption that
    writes it once, see SecretstreamReader), else a copy of the part."""
    whole = view.obj
    if size >= len(view) and isinstance(whole, bytes | bytearray) and len(whole) == len(view):
        return whole  # type: ignore[return-value]  # a bytearray nobody writes to
    return bytes(view[:size])


def read_full(source: ByteSource, size: int) -> bytes:
    """Return ``size`` bytes from ``source``, fewer only where it ends."""
    data = source.read(size)
    if len(data) == size or not data:
        return data
    parts = [data]
    got = len(data)
    while got < size and (more := source.read(size - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


class FileLike:
    """A source as a file object for ``tarfile`` and ``securetar``: ``read`` is full, and
    never longer than asked (tarfile writes all a read returns into a member of a fixed
    size: a longer read would make a member longer than its header says)."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source

    def read(self, size: int = -1, /) -> bytes:
        want = size if size >= 0 else 1 << 62
        data = read_full(self._source, want)
        if len(data) > want:
            raise ValueError(f"a read of {want} bytes returned {len(data)}")
        return data


class Counted:
    """Pass reads on, counting their bytes, and with ``crc`` making their CRC-32 (zlib-ng:
    about 12 ms a GiB where the bytes are in the cache, as decrypted ones are; 20 ms of a
    plain 1 GiB backup's verification where they are not)."""

    def __init__(self, source: ByteSource, *, crc: bool) -> None:
        self._source = source
        self._crc = crc
        self.count = 0
        self.crc = 0

    def read(self, size: int, /) -> bytes:
        data = self._source.read(size)
        self.count += len(data)
        if self._crc:
            self.crc = zlib_ng.crc32(data, self.crc)
        return data


class TarFormatError(Exception):
    """The stream is not a well-formed tar at ``offset``."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(f"at byte {offset}: {message}")
        self.offset = offset
        self.message = message


class TarTruncated(TarFormatError):
    """The stream ended inside a header or inside a member's data."""


class MemberCut(Exception):
    """Raised through a member stream when the stream under the walker ends too soon.

    Kept apart from TarFormatError so that a reader several layers up (decryption,
    inflation, an inner tar) cannot mistake the outer file's end for its own damage.
    """

    def __init__(self, cause: TarTruncated) -> None:
        super().__init__(str(cause))
        self.offset = cause.offset
        self.message = cause.message


@dataclass(frozen=True)
class TarEntry:
    """One member of a tar stream, as its headers describe it."""

    name: str
    raw_name: str
    size: int
    typeflag: bytes
    linkname: str
    mode: int
    mtime: float
    header_offset: int
    data_offset: int

    @property
    def is_file(self) -> bool:
        return self.typeflag in tarfile.REGULAR_TYPES

    @property
    def is_dir(self) -> bool:
        return self.typeflag == tarfile.DIRTYPE


def normalise_name(name: str) -> str:
    """Return the member name as HA looks it up: no leading ``./``, no trailing ``/``."""
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    return "" if name == "." else name


def parse_pax_records(data: bytes, offset: int) -> dict[str, str]:
    """Parse PAX extended-header records (``"<len> <key>=<value>\\n"``)."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data) and data[pos] != 0:
        space = data.find(b" ", pos)
        if space < 0:
            raise TarFormatError(offset, "malformed PAX record")
        try:
            length = int(data[pos:space])
        except ValueError as err:
            raise TarFormatError(offset, "malformed PAX record length") from err
        record = data[space + 1 : pos + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError(offset, "malformed PAX record")
        key, _, value = record[:-1].partition(b"=")
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return records


class Header(NamedTuple):
    """What the walk takes from a tar header block, as ``tarfile.TarInfo.frombuf`` reads it."""

    name: str
    mode: int
    size: int
    mtime: float
    type: bytes
    linkname: str


# The number fields as tarfile (HA's writers) and GNU tar write them: mode, uid, gid, size,
# mtime and checksum in octal digits, each ended by a NUL (the checksum by NUL and space);
# devmajor and devminor the same, or NULs.
_USUAL_NUMBERS = re.compile(
    rb"([0-7]{7})\0[0-7]{7}\0[0-7]{7}\0([0-7]{11})\0([0-7]{11})\0([0-7]{6})\0 "
)
_USUAL_DEVICES = re.compile(rb"(?:[0-7]{7}\0|\0{8}){2}")


def parse_header(block: bytes) -> Header:
    """Read a 512-byte header block exactly as ``tarfile.TarInfo.frombuf`` (HA's restore)
    does, raising its HeaderError where it would.

    The usual header (number fields as ``_USUAL_NUMBERS`` has them, the unsigned checksum
    right, not GNU sparse) is read here, at about a quarter of frombuf's cost (8.5 against
    37 us): a backup of many small files has two headers per file (PAX and ustar), and
    frombuf was most of the time spent walking them.  Any other header goes to frombuf
    itself, so its rules (other number forms, base-256, signed checksums, its errors) stay
    tarfile's own."""
    if len(block) != BLOCK:
        return _parsed_by_tarfile(block)
    numbers = _USUAL_NUMBERS.match(block, 100, 156)
    kind = block[156:157]
    if (
        numbers is None
        or _USUAL_DEVICES.match(block, 329, 345) is None
        or kind == tarfile.GNUTYPE_SPARSE
    ):
        return _parsed_by_tarfile(block)
    mode, size, mtime, checksum = numbers.groups()
    if int(checksum, 8) != 256 + _byte_sum(block) - sum(block[148:156]):
        return _parsed_by_tarfile(block)  # a signed checksum (accepted), or a wrong one
    name = _text(block, 0, 100)
    if kind == tarfile.AREGTYPE and name.endswith("/"):
        kind = tarfile.DIRTYPE  # a V7 directory
    if kind == tarfile.DIRTYPE:
        name = name.rstrip("/")
    prefix = _text(block, 345, 500)
    if prefix and kind not in tarfile.GNU_TYPES:
        name = prefix + "/" + name
    linkname = _text(block, 157, 257)
    return Header(name, int(mode, 8), int(size, 8), int(mtime, 8), kind, linkname)


def _byte_sum(block: bytes) -> int:
    """``sum(block)``, quicker for ASCII: 512 bytes of ASCII sum to at most 65024, below
    Adler-32's modulus, so the sum is the low half of the Adler-32 less one."""
    if block.isascii():
        return (zlib.adler32(block) & 0xFFFF) - 1
    return sum(block)


def _parsed_by_tarfile(block: bytes) -> Header:
    info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    return Header(info.name, info.mode, info.size, info.mtime, info.type, info.linkname)


def _text(block: bytes, start: int, end: int) -> str:
    """The NUL-terminated field at ``start:end`` as tarfile decodes it."""
    nul = block.find(b"\0", start, end)
    if nul == start:
        return ""  # most prefixes and link names
    return block[start : end if nul < 0 else nul].decode("utf-8", "surrogateescape")


class TarWalker:
    """Iterate the members of a tar stream; read a member's data before asking for the next.

    Data a caller does not read is skipped (read and discarded, or ``skip``ped when the source
    has a ``skip`` method).  After iteration, ``ended`` tells whether the end-of-archive marker
    (two zero blocks) was seen; a stream that simply stops has ``ended == False``.
    """

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._skip = getattr(source, "skip", None)
        self.offset = 0
        self.ended = False
        self._remaining = 0
        self._padding = 0
        self._entry: TarEntry | None = None

    def __iter__(self) -> Iterator[TarEntry]:
        overrides: dict[str, str] = {}
        while True:
            self._finish_entry()
            header_offset = self.offset
            block = self._read_exact(BLOCK, "header", allow_eof=True)
            if not block:
                return
            if block == ZERO_BLOCK:
                self._read_end_marker()
                return
            info = self._parse_header(block, header_offset)
            if info.type in (tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                overrides.update(self._read_meta(info, header_offset))
                continue
            if info.type == tarfile.XGLTYPE:
                self._read_meta(info, header_offset)
                continue
            entry = self._make_entry(info, overrides, header_offset)
            overrides = {}
            self._entry = entry
            self._remaining = entry.size
            self._padding = -entry.size % BLOCK
            yield entry

    def read_data(self, size: int) -> bytes:
        """Return up to ``size`` bytes of the current member's data; ``b""`` at its end.

        Raise TarTruncated when the stream ends before the member does.
        """
        if self._remaining <= 0:
            return b""
        data = self._source.read(min(size, self._remaining))
        if not data:
            entry = self._entry
            name = entry.name if entry else "?"
            claimed = entry.size if entry else 0
            raise TarTruncated(
                self.offset,
                f"stream ends inside '{name}' ({claimed - self._remaining} of {claimed} bytes)",
            )
        self._remaining -= len(data)
        self.offset += len(data)
        return data

    def member_stream(self) -> _MemberStream:
        """Return a file-like view of the current member's data (``read`` only)."""
        return _MemberStream(self)

    def _finish_entry(self) -> None:
        while self._remaining > 0:
            if self._skip is not None:
                skipped = self._skip(self._remaining)
                if skipped < self._remaining:
                    self.offset += skipped
                    self._remaining -= skipped
                    self.read_data(1)  # raises TarTruncated with the member's name
                self.offset += skipped
                self._remaining = 0
            else:
                self.read_data(SKIP_CHUNK)
        if self._padding:
            padding = self._read_exact(self._padding, "padding after a member")
            del padding
            self._padding = 0

    def _read_end_marker(self) -> None:
        second = self._read_exact(BLOCK, "header", allow_eof=True)
        if not second:
            raise TarTruncated(self.offset, "stream ends inside the end-of-archive marker")
        if second != ZERO_BLOCK:
            raise TarFormatError(self.offset - BLOCK, "a zero block followed by data")
        self.ended = True

    def _read_exact(self, size: int, what: str, *, allow_eof: bool = False) -> bytes:
        if size == 0:  # an empty PAX or long-name record: no read (not every source takes 0)
            return b""
        data = self._source.read(size)
        if len(data) == size:  # nearly always: no loop, no join
            self.offset += size
            return data
        parts, got = [data], len(data)
        while data and got < size:
            data = self._source.read(size - got)
            parts.append(data)
            got += len(data)
        self.offset += got
        if got == size:
            return b"".join(parts)
        if got == 0 and allow_eof:
            return b""
        raise TarTruncated(self.offset, f"stream ends inside a {what} ({got} of {size} bytes)")

    def _parse_header(self, block: bytes, offset: int) -> Header:
        try:
            return parse_header(block)
        except tarfile.HeaderError as err:
            raise TarFormatError(offset, f"not a valid tar header ({err})") from err

    def _read_meta(self, info: Header, offset: int) -> dict[str, str]:
        if info.size > MAX_META_SIZE:
            raise TarFormatError(offset, f"extended header of {info.size} bytes")
        data = self._read_exact(info.size + (-info.size % BLOCK), "extended header")[: info.size]
        if info.type in (tarfile.XHDTYPE, tarfile.XGLTYPE):
            return parse_pax_records(data, offset)
        text = data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        return {"path" if info.type == tarfile.GNUTYPE_LONGNAME else "linkpath": text}

    def _make_entry(self, info: Header, overrides: dict[str, str], header_offset: int) -> TarEntry:
        raw_name = overrides.get("path", info.name)
        size = info.size
        if "size" in overrides:
            size = int(_pax_number(overrides["size"], "size", header_offset))
        if info.type not in tarfile.REGULAR_TYPES and info.type != tarfile.CONTTYPE:
            size = 0 if info.type != tarfile.GNUTYPE_SPARSE else size
        mtime = (
            _pax_number(overrides["mtime"], "mtime", header_offset)
            if "mtime" in overrides
            else float(info.mtime)
        )
        return TarEntry(
            name=normalise_name(raw_name),
            raw_name=raw_name,
            size=size,
            typeflag=info.type,
            linkname=overrides.get("linkpath", info.linkname),
            mode=info.mode,
            mtime=mtime,
            header_offset=header_offset,
            data_offset=self.offset,
        )


def _pax_number(value: str, key: str, offset: int) -> float:
    try:
        number = float(value) if key == "mtime" else int(value)
    except ValueError as err:
        raise TarFormatError(offset, f"PAX {key} is not a number") from err
    if number < 0:
        raise TarFormatError(offset, f"PAX {key} is negative")
    return number


class _MemberStream:
    """File-like ``read`` over the walker's current member, with file semantics: a short
    read only at the member's end (securetar's v3 reader needs whole chunks)."""

    def __init__(self, walker: TarWalker) -> None:
        self._walker = walker

    def read(self, size: int = -1, /) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        try:
            return read_full(ShortReads(self._walker.read_data), size)
        except TarTruncated as err:
            raise MemberCut(err) from err

    def read_some(self, size: int, /) -> bytes:
        """Like ``read`` but may return fewer bytes before the end (no copy to fill up)."""
        try:
            return self._walker.read_data(size)
        except TarTruncated as err:
            raise MemberCut(err) from err
