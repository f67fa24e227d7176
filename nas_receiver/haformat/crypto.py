"""SecureTar v1/v2/v3 through the ``securetar`` library: detection by magic, key selection.

The format of each inner archive is read from its first bytes, never from backup.json's
``protected``.  A key ring is tried in order; the v3 Argon2id derivation runs once per key
per backup (all inner archives of one backup share the root salt), and a key that failed
is not tried again for the same salt.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import securetar
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from securetar import (
    InvalidPasswordError,
    SecureTarHeader,
    SecureTarRootKeyContext,
)

from .gzipstream import GZIP_MAGIC
from .keys import KeyRing
from .secretstream import ABYTES, TAG_FINAL, SecretstreamError, SecretstreamReader
from .tarstream import ByteSource, ShortReads, read_full, take

PREFIX_SIZE = 4096
_MAGIC = securetar.SECURETAR_MAGIC
_TAR_MAGIC_AT = 257


class UnsupportedFormat(Exception):
    """A SecureTar version (or header form) this program does not know."""


class NotRecognised(Exception):
    """The bytes are neither gzip, tar nor a SecureTar stream."""


class WrongKey(Exception):
    """No key of the ring opens the stream."""


class DecryptError(Exception):
    """The ciphertext is damaged: authentication, padding or framing failed."""


@dataclass(frozen=True)
class InnerFormat:
    """How an inner archive is stored: ``securetar`` 0 means not encrypted."""

    securetar: int
    plaintext_size: int | None
    header_size: int

    @property
    def encrypted(self) -> bool:
        return self.securetar > 0


def looks_plain(data: bytes) -> bool:
    """Return True when ``data`` starts like a gzip stream or a tar archive."""
    return data[:3] == GZIP_MAGIC or data[_TAR_MAGIC_AT : _TAR_MAGIC_AT + 5] == b"ustar"


def sniff(prefix: bytes, member_size: int) -> InnerFormat:
    """Return the format of an inner archive from its first bytes.

    Raise UnsupportedFormat for an unknown SecureTar version, NotRecognised for bytes that
    are nothing we know.
    """
    if prefix.startswith(_MAGIC):
        header = parse_header(prefix)
        return InnerFormat(header.version, header.plaintext_size, header.size)
    if looks_plain(prefix):
        return InnerFormat(0, None, 0)
    if member_size >= 32 and member_size % 16 == 0:
        return InnerFormat(1, None, securetar.SECURETAR_LEGACY_HEADER_SIZE)
    raise NotRecognised("neither gzip, tar nor SecureTar")


def parse_header(prefix: bytes) -> SecureTarHeader:
    """Parse a SecureTar header.  Raise UnsupportedFormat or NotRecognised."""
    try:
        header = SecureTarHeader.from_bytes(io.BytesIO(prefix))
    except ValueError as err:
        raise UnsupportedFormat(str(err)) from err
    except Exception as err:  # struct.error on a header cut short
        raise NotRecognised(f"SecureTar header cut short ({err})") from err
    if len(prefix) < header.size:
        raise NotRecognised("SecureTar header cut short")
    return header


def expected_ciphertext_size(fmt: InnerFormat) -> int | None:
    """Return the member size a v2/v3 header implies, None when it implies nothing."""
    plain = fmt.plaintext_size
    if plain is None:
        return None
    if fmt.securetar == 2:
        return fmt.header_size + plain + 16 - plain % 16
    if fmt.securetar == 3:
        return fmt.header_size + plain + securetar._secretstream_overhead(plain)
    return None


class ChainedSource:
    """Read ``first`` then ``rest``: a read that crosses from ``first`` into ``rest`` is
    filled from both, and after that each read is one of ``rest``'s, short only where
    ``rest``'s are (securetar's v3 reader needs whole 1 MiB chunks: its ``rest`` reads
    full; the inflater and the walk take short reads).
    """

    def __init__(self, first: bytes, rest: ByteSource) -> None:
        self._first = first
        self._rest = rest

    def read(self, size: int, /) -> bytes:
        if not self._first:
            return self._rest.read(size)
        data, self._first = self._first[:size], self._first[size:]
        if len(data) < size:
            data += self._rest.read(size - len(data))
        return data

    def readinto(self, buffer: memoryview, /) -> int:
        """Fill ``buffer`` as ``read`` would return (short only at the end)."""
        count = min(len(self._first), len(buffer))
        buffer[:count] = self._first[:count]
        self._first = self._first[count:]
        if count < len(buffer):
            count += read_into(self._rest, buffer[count:])
        return count


def read_into(source: ByteSource, buffer: memoryview) -> int:
    """Fill ``buffer`` from ``source`` (short only at its end): with its ``readinto`` where
    it has one (no copy of its own; asked again where it is short), else from its reads."""
    readinto: Callable[[memoryview], int] | None = getattr(source, "readinto", None)
    if readinto is None:
        data = read_full(source, len(buffer))
        buffer[: len(data)] = data
        return len(data)
    filled = 0
    while filled < len(buffer) and (count := readinto(buffer[filled:])):
        filled += count
    return filled


class _AtMost:
    """A decrypting stream whose reads never return more than asked (``tarfile`` writes all a
    read returns into a member of a fixed size): plaintext made past a read's size is held
    and handed out by the next reads."""

    def __init__(self) -> None:
        self._over = memoryview(b"")

    def _held(self, size: int) -> bytes:
        data = take(self._over, size)
        self._over = self._over[len(data) :]
        return data

    def _at_most(self, plain: bytes, size: int) -> bytes:
        if len(plain) <= size:
            return plain
        self._over = memoryview(plain)[size:]
        return plain[:size]


class CbcDecryptStream(_AtMost):
    """AES-128-CBC decryption (SecureTar v1/v2) with the key material securetar derived.

    securetar's own reader copies its buffer on every read and does not check the padding;
    this one passes each decrypted chunk on as it is and checks the PKCS#7 padding at the
    end.  The ciphertext's size is known, so the last read is known, and it always holds the
    whole last block (CBC returns whole blocks only).  Reads may be short, never longer than
    asked; ``b""`` is the end.
    """

    def __init__(self, source: ByteSource, key: bytes, iv: bytes, ciphertext_size: int) -> None:
        if ciphertext_size <= 0 or ciphertext_size % 16:
            raise DecryptError(f"ciphertext of {ciphertext_size} bytes is not whole AES blocks")
        super().__init__()  # a block held back and the next piece can exceed a read's size
        self._source = source
        self._decryptor = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
        self._left = ciphertext_size

    def read(self, size: int, /) -> bytes:
        if self._over:
            return self._held(size)
        while self._left:
            data = self._source.read(min(max(size, 16), self._left))
            if not data:
                raise DecryptError(f"ciphertext ends {self._left} bytes early")
            self._left -= len(data)
            plain = self._decryptor.update(data)
            if not self._left:
                plain = self._unpad(plain + self._decryptor.finalize())
            if plain or not self._left:
                return self._at_most(plain, size)
        return b""

    @staticmethod
    def _unpad(last: bytes) -> bytes:
        pad = last[-1] if last else 0
        if not 1 <= pad <= 16 or last[-pad:] != bytes([pad]) * pad:
            raise DecryptError("bad padding at the end of the ciphertext")
        return last[:-pad]


class SecretstreamDecryptStream(_AtMost):
    """XChaCha20-Poly1305 secretstream decryption (SecureTar v3), one 1 MiB chunk at a time
    and no copy of its output where a read takes a whole chunk (securetar's own reader
    copies its buffer on every read).  Every chunk is authenticated; the final tag must come
    with the last chunk and only there.  Reads may be short, never longer than asked;
    ``b""`` is the end.  The stream is opened with OpenSSL's primitives (see secretstream.py):
    three times as fast as the libsodium securetar calls.  Each message is read straight into
    the reader's buffer (``readinto`` where the source has it: no copy of its own), and most
    plaintexts come as bytearrays that nothing writes to (see SecretstreamReader).
    """

    def __init__(self, source: ByteSource, key: bytes, header: bytes, ciphertext_size: int) -> None:
        super().__init__()
        self._source = source
        try:
            self._reader = SecretstreamReader(key, header)
        except SecretstreamError as err:
            raise DecryptError(f"decryption failed ({err})") from err
        self._left = ciphertext_size
        self._chunks = 0
        self._done = False

    def read(self, size: int, /) -> bytes:
        if self._over:
            return self._held(size)
        if self._done:
            return b""
        want = min(securetar.V3_SECRETSTREAM_CHUNK_SIZE + ABYTES, self._left)
        got = read_into(self._source, self._reader.message_buffer(want))
        if got != want:
            raise DecryptError(f"ciphertext ends {self._left - got} bytes early")
        self._left -= want
        self._chunks += 1
        try:
            plain, tag = self._reader.pull_buffer()
        except SecretstreamError as err:
            raise DecryptError(
                f"decryption failed: chunk {self._chunks} of the stream does not authenticate "
                "(its bytes are damaged or altered)"
            ) from err
        final = tag == TAG_FINAL
        if final != (self._left == 0):
            where = "before the end" if final else "missing at the end"
            raise DecryptError(f"decryption failed (the stream's final tag is {where})")
        self._done = final
        return self._at_most(plain, size)


class KeySession:
    """Open the encrypted inner archives of one backup with the first key that fits."""

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._contexts: dict[tuple[int, int, bytes], SecureTarRootKeyContext | None] = {}
        self._preferred = 0

    def find_key(self, prefix: bytes) -> int:
        """Return the index of the key that opens the stream starting with ``prefix``.

        Raise WrongKey when none does.  v3 proves the key with its validation key; v1/v2
        only by decrypting the first block and seeing gzip or tar.
        """
        header = parse_header(prefix)
        order = [self._preferred, *(i for i in range(len(self._ring)) if i != self._preferred)]
        for index in order:
            if index >= len(self._ring):
                continue
            context = self._context(index, header)
            if context is None:
                continue
            if header.version == 3 or self._first_block_ok(context, header, prefix):
                self._preferred = index
                return index
        raise WrongKey(f"none of {len(self._ring)} key(s) opens it")

    def open(self, prefix: bytes, rest: ByteSource, member_size: int) -> ByteSource:
        """Return a reader of the decrypted stream of a member whose first bytes are ``prefix``.

        Raise WrongKey when no key fits; reads raise DecryptError on damaged ciphertext.
        """
        header = parse_header(prefix)
        context = self._context(self.find_key(prefix), header)
        assert context is not None  # find_key returned a key whose context exists
        material = context.restore_key_material(header)
        if header.version in (1, 2):
            # The CBC stream takes short reads, so it reads without the copies a full read makes.
            some = ShortReads(getattr(rest, "read_some", rest.read))
            body = ChainedSource(prefix[header.size :], some)
            return CbcDecryptStream(body, material.key, material.iv, member_size - header.size)
        body = ChainedSource(prefix[header.size :], rest)
        return SecretstreamDecryptStream(body, material.key, material.iv, member_size - header.size)

    def _context(self, index: int, header: SecureTarHeader) -> SecureTarRootKeyContext | None:
        salt = header.cipher_initialization[:16] if header.version == 3 else b""
        cache_key = (index, header.version, salt)
        if cache_key not in self._contexts:
            context: SecureTarRootKeyContext | None = SecureTarRootKeyContext(self._ring[index])
            try:
                context.restore_key_material(header)  # type: ignore[union-attr]  # v3: Argon2id
            except InvalidPasswordError:
                context = None
            self._contexts[cache_key] = context
        return self._contexts[cache_key]

    @staticmethod
    def _first_block_ok(
        context: SecureTarRootKeyContext, header: SecureTarHeader, prefix: bytes
    ) -> bool:
        """Whether the first block decrypts to gzip or tar: securetar's own test of a v1/v2
        key (its reader makes it on the first read), without that reader, which loads
        cryptography's backends module on its first use (20 ms of a command's start)."""
        body = prefix[header.size : header.size + 512]
        material = context.restore_key_material(header)
        decryptor = Cipher(algorithms.AES(material.key), modes.CBC(material.iv)).decryptor()
        return looks_plain(decryptor.update(body))
