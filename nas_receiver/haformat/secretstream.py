"""The reading side of libsodium's XChaCha20-Poly1305 secretstream (SecureTar v3), on
OpenSSL's ChaCha20 and Poly1305 through ``cryptography``.

libsodium as PyNaCl ships it runs its portable ChaCha20 here: 1.2 s per GiB against 0.4 s
for OpenSSL's (AVX-512 on the bench machine; OpenSSL also has SSSE3 and NEON code, the CPUs
of NASes).  The construction is libsodium's (``crypto_secretstream_xchacha20poly1305``):

- the stream key is HChaCha20(key, header[0:16]); the 12-byte ChaCha20 nonce is a 4-byte
  little-endian counter, starting at 1, then an 8-byte ``inonce``, first header[16:24];
- a message of ``m`` bytes arrives as 1 tag byte, ``m`` bytes and a 16-byte MAC.  ChaCha20
  block 0 gives the Poly1305 key; block 1, XORed with the first byte, gives the tag; blocks
  2 on decrypt the message.  The MAC covers the (empty) additional data, block 1 with its
  first byte as it came, the ciphertext, ``m & 15`` zero bytes (libsodium's own padding,
  not the usual one), and the two lengths (0 and 64 + m) as 64-bit little-endian numbers;
- after each message ``inonce`` is XORed with the MAC's first 8 bytes and the counter goes
  up; a REKEY tag or a counter that wraps to 0 rekeys: key and ``inonce`` become ChaCha20
  of themselves under the current key and nonce, and the counter starts at 1 again.

tests/unit/test_secretstream.py holds it to libsodium's own push on every tag and size.
"""

from __future__ import annotations

import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.poly1305 import Poly1305

HEADER_BYTES = 24
KEY_BYTES = 32
ABYTES = 17  # the tag byte and the MAC
TAG_MESSAGE, TAG_PUSH, TAG_REKEY, TAG_FINAL = 0, 1, 2, 3
_MASK = 0xFFFFFFFF
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_ZERO_BLOCK = bytes(64)
_AD_LENGTH = struct.pack("<Q", 0)  # no additional data: SecureTar passes none
_BLOCK_ROOM = 63  # before a message in its buffer: block 1 but the byte the message starts with


class SecretstreamError(Exception):
    """A message that does not authenticate, or a stream too short to be one."""


def hchacha20(key: bytes, nonce: bytes) -> bytes:
    """HChaCha20 of a 32-byte key and a 16-byte nonce: ChaCha20's 20 rounds over the state,
    no final addition, words 0-3 and 12-15 (the XChaCha20 subkey)."""
    state = [*_SIGMA, *struct.unpack("<8I", key), *struct.unpack("<4I", nonce)]

    def quarter(a: int, b: int, c: int, d: int) -> None:
        for x, y, z, shift in ((a, b, d, 16), (c, d, b, 12), (a, b, d, 8), (c, d, b, 7)):
            state[x] = (state[x] + state[y]) & _MASK
            mixed = state[z] ^ state[x]
            state[z] = ((mixed << shift) | (mixed >> (32 - shift))) & _MASK

    for _ in range(10):
        quarter(0, 4, 8, 12)
        quarter(1, 5, 9, 13)
        quarter(2, 6, 10, 14)
        quarter(3, 7, 11, 15)
        quarter(0, 5, 10, 15)
        quarter(1, 6, 11, 12)
        quarter(2, 7, 8, 13)
        quarter(3, 4, 9, 14)
    return struct.pack("<8I", *state[0:4], *state[12:16])


class SecretstreamReader:
    """Open the messages of one secretstream in order: ``pull`` returns (plaintext, tag).

    A message whose size is a multiple of 8 (every one of SecureTar's but the last) is
    opened with OpenSSL's ChaCha20-Poly1305 (RFC 8439) in one call, which releases the GIL
    (the inflate thread of another inner archive then runs meanwhile) and passes over the
    bytes once: it is that construction over block 1 and the ciphertext, as libsodium's
    padding (``m & 15`` zeros) is RFC 8439's (``-(64 + m) & 15``) for those sizes.  For
    that the message is put 63 bytes into a buffer (``message_buffer``), where block 1 then
    goes in front of it, and its plaintext comes as a bytearray that nothing writes to
    (cutting block 1's 64 bytes off its front moves its start: no copy).  Other messages
    are opened with the two primitives apart (all of them, where ``one_call`` is False: the
    bench times both ways, and a cryptography older than 47 has no ``decrypt_into``).
    """

    one_call = hasattr(ChaCha20Poly1305, "decrypt_into")

    def __init__(self, key: bytes, header: bytes) -> None:
        if len(key) != KEY_BYTES or len(header) != HEADER_BYTES:
            raise SecretstreamError(f"a key of {len(key)} and a header of {len(header)} bytes")
        self._key = hchacha20(key, header[:16])
        self._inonce = header[16:24]
        self._counter = 1
        self._aead = ChaCha20Poly1305(self._key)
        self._sealed = bytearray()  # block 1, then the message (see message_buffer)
        self._size = 0

    def pull(self, message: bytes) -> tuple[bytes, int]:
        """The plaintext and tag of the next message; raise SecretstreamError where it does
        not authenticate (nothing of it is returned then)."""
        self.message_buffer(len(message))[:] = message
        return self.pull_buffer()

    def message_buffer(self, size: int) -> memoryview:
        """Where to put the next message, of ``size`` bytes, for ``pull_buffer``."""
        if len(self._sealed) != _BLOCK_ROOM + size:
            self._sealed = bytearray(_BLOCK_ROOM + size)
        self._size = size
        return memoryview(self._sealed)[_BLOCK_ROOM:]

    def pull_buffer(self) -> tuple[bytes, int]:
        """``pull`` of the message put in ``message_buffer``."""
        size = self._size - ABYTES
        if size < 0:
            raise SecretstreamError(f"a message of {self._size} bytes is too short")
        sealed = memoryview(self._sealed)
        first = sealed[_BLOCK_ROOM]  # the tag byte, as it came
        nonce = self._nonce(block=0)
        cipher = Cipher(algorithms.ChaCha20(self._key, nonce), None).decryptor()
        poly_key = cipher.update(_ZERO_BLOCK)[:32]
        second = cipher.update(_ZERO_BLOCK)  # block 1: the tag's key stream
        tag = first ^ second[0]
        mac = bytes(sealed[-16:])
        plain: bytes
        if self.one_call and size & 7 == 0:
            sealed[0] = first
            sealed[1:64] = second[1:]
            opened = bytearray(64 + size)
            try:
                self._aead.decrypt_into(nonce[4:], sealed, None, opened)
            except InvalidTag:
                raise SecretstreamError("the message does not authenticate") from None
            del opened[:64]  # block 1's plaintext
            plain = opened  # type: ignore[assignment]  # read as bytes are, never written
        else:
            check = Poly1305(poly_key)
            check.update(bytes([first]))
            check.update(second[1:])
            check.update(sealed[64 : 64 + size])
            check.update(bytes(size & 15))
            check.update(_AD_LENGTH)
            check.update(struct.pack("<Q", 64 + size))
            if not hmac.compare_digest(check.finalize(), mac):
                raise SecretstreamError("the message does not authenticate")
            plain = cipher.update(sealed[64 : 64 + size])  # from block 2 on
        self._inonce = bytes(a ^ b for a, b in zip(self._inonce, mac[:8], strict=True))
        self._counter = (self._counter + 1) & _MASK
        if tag & TAG_REKEY or self._counter == 0:
            self._rekey()
        return plain, tag

    def _nonce(self, *, block: int) -> bytes:
        """OpenSSL's 16-byte ChaCha20 IV: the block counter, then libsodium's 12-byte nonce
        (the message counter and ``inonce``)."""
        return struct.pack("<II", block, self._counter) + self._inonce

    def _rekey(self) -> None:
        mixed = Cipher(algorithms.ChaCha20(self._key, self._nonce(block=0)), None).encryptor()
        fresh = mixed.update(self._key + self._inonce)
        self._key, self._inonce = fresh[:32], fresh[32:]
        self._counter = 1
        self._aead = ChaCha20Poly1305(self._key)
