"""The decrypting streams (AES-CBC for SecureTar v1/v2, secretstream for v3) under reads of
any size: every read gets at most what it asked for, and all of them together are the
plaintext.  A longer read once put four padding bytes of a v1 part into its decrypted copy
(a tar member longer than its header said)."""

from __future__ import annotations

import io
import os
import random

import nacl.bindings.crypto_secretstream as nss
import pytest
import securetar
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nas_receiver.haformat.crypto import CbcDecryptStream, DecryptError, SecretstreamDecryptStream
from nas_receiver.haformat.secretstream import SecretstreamReader

KEY, IV = bytes(range(16)), bytes(range(16, 32))


class Pieces:
    """Return the bytes in pieces of random sizes (as reads cut at the file's 1 MiB
    chunks are), never more than asked."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = data
        self._rng = rng

    def read(self, size: int, /) -> bytes:
        cut = min(size, self._rng.choice([self._rng.randint(1, 40), self._rng.randint(1, 5000)]))
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
    plain = os.urandom(rng.choice([rng.randint(0, 3000), 16 * rng.randint(0, 2000)]))
    cipher = _encrypt(plain)
    stream = CbcDecryptStream(Pieces(cipher, rng), KEY, IV, len(cipher))
    assert _read_all(stream, rng, 3000) == plain
    assert stream.read(100) == b""  # and stays ended


class ShortInto:
    """A source whose ``readinto`` fills a random part of the buffer (a raw file or a pipe
    may): the stream asks again until the message is whole."""

    def __init__(self, data: bytes, rng: random.Random) -> None:
        self._data = io.BytesIO(data)
        self._rng = rng

    def read(self, size: int, /) -> bytes:
        return self._data.read(size)

    def readinto(self, buffer: memoryview, /) -> int:
        return self._data.readinto(buffer[: self._rng.randint(1, len(buffer))])


@pytest.mark.parametrize("one_call", [True, False], ids=["one-call", "apart"])
@pytest.mark.parametrize("source", ["readinto", "short-readinto", "reads"])
@pytest.mark.parametrize("seed", range(8))
def test_v3_reads_of_any_size_get_no_more_than_asked_and_the_whole_plaintext(
    seed: int, source: str, one_call: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever the source (one with a full ``readinto``, one with a short one, one with
    reads only) and however the messages are opened (in one ChaCha20-Poly1305 call, or
    apart, as with a cryptography older than 47)."""
    monkeypatch.setattr(SecretstreamReader, "one_call", one_call)
    rng = random.Random(seed)
    chunk = securetar.V3_SECRETSTREAM_CHUNK_SIZE
    plain = os.urandom(rng.choice([2 * chunk, chunk + rng.randint(1, chunk), 100]))
    key = os.urandom(32)
    state = nss.crypto_secretstream_xchacha20poly1305_state()
    header = nss.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    pieces = [plain[at : at + chunk] for at in range(0, len(plain), chunk)]
    cipher = b"".join(
        nss.crypto_secretstream_xchacha20poly1305_push(
            state,
            piece,
            None,
            nss.crypto_secretstream_xchacha20poly1305_TAG_FINAL
            if index == len(pieces) - 1
            else nss.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE,
        )
        for index, piece in enumerate(pieces)
    )
    sources = {
        "readinto": io.BytesIO(cipher),
        "short-readinto": ShortInto(cipher, rng),
        "reads": Pieces(cipher, rng),
    }
    stream = SecretstreamDecryptStream(sources[source], key, header, len(cipher))
    assert _read_all(stream, rng, 3 * chunk) == plain
    assert stream.read(100) == b""


def _read_all(
    stream: CbcDecryptStream | SecretstreamDecryptStream, rng: random.Random, most: int
) -> bytes:
    got = []
    while True:
        size = rng.choice([rng.randint(1, 300), rng.randint(1, most)])
        data = stream.read(size)
        assert len(data) <= size
        if not data:
            return b"".join(got)
        got.append(data)


def test_a_ciphertext_cut_short_is_an_error() -> None:
    cipher = _encrypt(b"x" * 100)
    stream = CbcDecryptStream(Pieces(cipher[:-16], random.Random(1)), KEY, IV, len(cipher))
    with pytest.raises(DecryptError, match="ends 16 bytes early"):
        _drain(stream)


def _drain(stream: CbcDecryptStream) -> None:
    while stream.read(50):
        pass
