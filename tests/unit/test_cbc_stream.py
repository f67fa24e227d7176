"""The AES-CBC stream (SecureTar v1/v2) under reads of any size from a source that returns
pieces of any size: every read gets at most what it asked for, and all of them together
are the plaintext.  A longer read once put four padding bytes of a v1 part into its
decrypted copy (a tar member longer than its header said)."""

from __future__ import annotations

import os
import random

import pytest
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nas_receiver.haformat.crypto import CbcDecryptStream, DecryptError

KEY, IV = bytes(range(16)), bytes(range(16, 32))


class Pieces:
    """Return the bytes in pieces of random sizes (as reads cut at the file's 1 MiB
    chunks are), never more than asked."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = data
        self._rng = rng

    def read(self, size: int, /) -> bytes:
        cut = min(size, self._rng.randint(1, 200))
        piece, self._data = self._data[:cut], self._data[cut:]
        return piece


def _encrypt(plain: bytes) -> bytes:
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(KEY), modes.CBC(IV)).encryptor()
    return encryptor.update(padded) + encryptor.finalize()


@pytest.mark.parametrize("seed", range(40))
def test_reads_of_any_size_get_no_more_than_asked_and_the_whole_plaintext(seed: int) -> None:
    rng = random.Random(seed)
    plain = os.urandom(rng.randint(0, 3000))
    cipher = _encrypt(plain)
    stream = CbcDecryptStream(Pieces(cipher, rng), KEY, IV, len(cipher))
    got = []
    while True:
        size = rng.randint(1, 300)
        data = stream.read(size)
        assert len(data) <= size
        if not data:
            break
        got.append(data)
    assert b"".join(got) == plain


def test_a_ciphertext_cut_short_is_an_error() -> None:
    cipher = _encrypt(b"x" * 100)
    stream = CbcDecryptStream(Pieces(cipher[:-16], random.Random(1)), KEY, IV, len(cipher))
    with pytest.raises(DecryptError, match="ends 16 bytes early"):
        _drain(stream)


def _drain(stream: CbcDecryptStream) -> None:
    while stream.read(50):
        pass
