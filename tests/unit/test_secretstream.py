"""Our reader of libsodium's XChaCha20-Poly1305 secretstream (SecureTar v3) against
libsodium itself (PyNaCl, which securetar writes with): every stream libsodium pushes opens
to the same messages and tags, and every altered, cut, reordered or foreign message is
refused."""

from __future__ import annotations

import os
import random

import nacl.bindings.crypto_secretstream as nss
import pytest

from nas_receiver.haformat.secretstream import (
    TAG_FINAL,
    TAG_MESSAGE,
    TAG_PUSH,
    TAG_REKEY,
    SecretstreamError,
    SecretstreamReader,
    hchacha20,
)


def test_hchacha20_gives_the_test_vector_of_the_xchacha_draft() -> None:
    """draft-irtf-cfrg-xchacha-03, section 2.2.1."""
    key = bytes(range(32))
    nonce = bytes.fromhex("000000090000004a0000000031415927")
    expected = bytes.fromhex("82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc")
    assert hchacha20(key, nonce) == expected


def _push(messages: list[tuple[bytes, int]], key: bytes) -> tuple[bytes, list[bytes]]:
    state = nss.crypto_secretstream_xchacha20poly1305_state()
    header = nss.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    return header, [
        nss.crypto_secretstream_xchacha20poly1305_push(state, message, None, tag)
        for message, tag in messages
    ]


@pytest.mark.parametrize("one_call", [True, False], ids=["one-call", "apart"])
@pytest.mark.parametrize("seed", range(20))
def test_what_libsodium_pushes_opens_to_the_same_messages_and_tags(
    seed: int, one_call: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Messages of sizes a multiple of 8 are opened in one call, or apart where ``one_call``
    is off (a cryptography older than 47); other sizes always apart."""
    monkeypatch.setattr(SecretstreamReader, "one_call", one_call)
    rng = random.Random(seed)
    sizes = [0, 1, 15, 16, 17, 63, 64, 65, 1 << 20, rng.randint(0, 5000)]
    tags = [TAG_MESSAGE, TAG_PUSH, TAG_REKEY, TAG_FINAL]  # FINAL rekeys too (its 0x02 bit)
    messages = [
        (os.urandom(rng.choice(sizes)), rng.choice(tags)) for _ in range(rng.randint(1, 12))
    ]
    messages.append((os.urandom(rng.choice(sizes)), TAG_FINAL))
    key = os.urandom(32)
    header, pushed = _push(messages, key)
    reader = SecretstreamReader(key, header)
    assert [reader.pull(message) for message in pushed] == messages


def test_a_wrapping_message_counter_rekeys_as_libsodium_does() -> None:
    """The counter is 32 bits: where it wraps to 0 both sides rekey.  Both start here one
    message before the wrap (libsodium's state holds the key, then the counter)."""
    key = os.urandom(32)
    state = nss.crypto_secretstream_xchacha20poly1305_state()
    header = nss.crypto_secretstream_xchacha20poly1305_init_push(state, key)
    state.statebuf[32:36] = b"\xff\xff\xff\xff"
    messages = [(b"before the wrap", TAG_MESSAGE), (b"after it", TAG_MESSAGE), (b"", TAG_FINAL)]
    pushed = [
        nss.crypto_secretstream_xchacha20poly1305_push(state, message, None, tag)
        for message, tag in messages
    ]
    reader = SecretstreamReader(key, header)
    reader._counter = 0xFFFFFFFF
    assert [reader.pull(message) for message in pushed] == messages
    fresh = SecretstreamReader(key, header)
    with pytest.raises(SecretstreamError):  # and without the wrap the keys differ
        fresh.pull(pushed[0])


@pytest.mark.parametrize("size", [100, 40, 0], ids=["apart", "in-one-call", "empty"])
def test_every_altered_byte_cut_reordered_or_foreign_message_is_refused(size: int) -> None:
    """Asserts it for a first message opened with the two primitives apart (100 bytes), in
    one ChaCha20-Poly1305 call (a multiple of 8), and empty."""
    key = os.urandom(32)
    messages = [(os.urandom(size), TAG_MESSAGE), (os.urandom(40), TAG_REKEY), (b"end", TAG_FINAL)]
    header, pushed = _push(messages, key)
    first = pushed[0]
    for at in range(len(first)):  # the tag byte, the message and the MAC
        altered = bytearray(first)
        altered[at] ^= 0x01
        with pytest.raises(SecretstreamError):
            SecretstreamReader(key, header).pull(bytes(altered))
    with pytest.raises(SecretstreamError):
        SecretstreamReader(key, header).pull(first[:-1])
    with pytest.raises(SecretstreamError):
        SecretstreamReader(key, header).pull(pushed[1])  # the second message first
    with pytest.raises(SecretstreamError):
        SecretstreamReader(os.urandom(32), header).pull(first)  # another key
    with pytest.raises(SecretstreamError, match="too short"):
        SecretstreamReader(key, header).pull(first[:16])
    reader = SecretstreamReader(key, header)
    assert reader.pull(first) == messages[0]  # the right one still opens
    with pytest.raises(SecretstreamError):
        reader.pull(first)  # and the same message again does not
