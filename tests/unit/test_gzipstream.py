"""Inflating with the CRC checked, including SecureTar v1's split trailer."""

from __future__ import annotations

import gzip
import io
import struct
import tracemalloc
import zlib

import pytest

from nas_receiver.haformat.gzipstream import GzipError, InflatingReader

DATA = b"homeassistant " * 5000


def _read_all(blob: bytes, chunk: int = 4096, *, legacy: bool = False) -> bytes:
    reader = InflatingReader(io.BytesIO(blob), legacy=legacy)
    parts = []
    while part := reader.read(chunk):
        parts.append(part)
    return b"".join(parts)


def _legacy(blob: bytes, pad: int) -> bytes:
    """Re-frame a gzip stream the way securetar <= 2024.11 wrote v1 (trailer split)."""
    crc, size = blob[-8:-4], blob[-4:]
    return blob[:-8] + bytes([pad]) * pad + crc + b"\x0c" * 12 + size


def test_standard_gzip() -> None:
    assert _read_all(gzip.compress(DATA)) == DATA


def test_gzip_with_file_name_header() -> None:
    buffer = io.BytesIO()
    with gzip.GzipFile("homeassistant.tar", "wb", fileobj=buffer) as file:
        file.write(DATA)
    assert _read_all(buffer.getvalue()) == DATA


@pytest.mark.parametrize("pad", [0, 4, 15])
def test_legacy_v1_trailer_is_accepted_and_its_crc_checked(pad: int) -> None:
    blob = _legacy(gzip.compress(DATA), pad)
    reader = InflatingReader(io.BytesIO(blob), legacy=True)
    while reader.read(65536):
        pass
    assert reader.legacy_trailer
    bad = bytearray(blob)
    bad[-20] ^= 1  # inside the CRC
    with pytest.raises(GzipError, match="CRC mismatch"):
        _read_all(bytes(bad), legacy=True)


def test_legacy_trailer_with_its_final_padding_still_there() -> None:
    assert _read_all(_legacy(gzip.compress(DATA), 4) + b"\x0c" * 12, legacy=True) == DATA


def test_legacy_trailer_is_refused_outside_v1() -> None:
    with pytest.raises(GzipError):
        _read_all(_legacy(gzip.compress(DATA), 4))


@pytest.mark.parametrize("legacy", [False, True])
def test_crc_and_length_mismatch(legacy: bool) -> None:
    blob = bytearray(gzip.compress(DATA))
    blob[-8] ^= 1
    with pytest.raises(GzipError, match="CRC mismatch"):
        _read_all(bytes(blob), legacy=legacy)
    blob = bytearray(gzip.compress(DATA))
    blob[-1] ^= 1
    with pytest.raises(GzipError, match="length mismatch"):
        _read_all(bytes(blob), legacy=legacy)


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("cut", [5, 50, -30, -8, -1])
def test_truncated(cut: int, legacy: bool) -> None:
    blob = gzip.compress(DATA)
    with pytest.raises(GzipError):
        _read_all(blob[:cut], legacy=legacy)


@pytest.mark.parametrize("legacy", [False, True])
def test_garbage_after_trailer_and_not_gzip(legacy: bool) -> None:
    with pytest.raises(GzipError, match="unexpected"):
        _read_all(gzip.compress(DATA) + b"x" * 100, legacy=legacy)
    with pytest.raises(GzipError, match="not a gzip"):
        _read_all(b"hello world, certainly not gzip", legacy=legacy)


def test_memory_is_bounded_per_read() -> None:
    reader = InflatingReader(io.BytesIO(gzip.compress(bytes(50 << 20))))
    assert len(reader.read(1 << 16)) <= 1 << 16


def test_raw_deflate_with_hand_made_header() -> None:
    body = zlib.compress(DATA)[2:-4]
    header = b"\x1f\x8b\x08\x00" + b"\x00" * 4 + b"\x00\xff"
    trailer = struct.pack("<II", zlib.crc32(DATA), len(DATA))
    assert _read_all(header + body + trailer) == DATA
    assert _read_all(header + body + trailer, legacy=True) == DATA


@pytest.mark.parametrize("legacy", [False, True])
def test_small_reads_are_served_from_what_was_inflated_ahead(legacy: bool) -> None:
    """A tar walk reads 512-byte headers, small files and paddings: each read returns
    exactly the next bytes, never more than asked, and the trailer is still checked (its
    CRC over every byte inflated) after the last of them."""
    data = bytes(range(256)) * 4096 + DATA * 40  # 1 MiB, then text: more than one READ_CHUNK
    standard = gzip.compress(data)
    blob = _legacy(standard, 3) if legacy else standard
    sizes = [512, 1, 700, 511, 4 << 20, 3, 65536]
    reader = InflatingReader(io.BytesIO(blob), legacy=legacy)
    got = bytearray()
    turn = 0
    while part := reader.read(sizes[turn % len(sizes)]):
        assert len(part) <= sizes[turn % len(sizes)]
        got += part
        turn += 1
    assert bytes(got) == data
    assert reader.size == len(data)
    assert reader.crc == (zlib.crc32(data) if legacy else 0)  # zlib checks it otherwise
    damaged = standard[:-8] + struct.pack("<I", zlib.crc32(data) ^ 1) + standard[-4:]
    damaged = _legacy(damaged, 3) if legacy else damaged
    with pytest.raises(GzipError, match="CRC mismatch"):
        _read_all(damaged, 512, legacy=legacy)


@pytest.mark.parametrize("legacy", [False, True])
def test_skip_inflates_and_checks_what_it_passes(legacy: bool) -> None:
    """``skip`` (the tar walk passing data it does not read) moves exactly as far as asked,
    says so, stops short only at the end, and the trailer is checked all the same."""
    data = bytes(range(256)) * 8192 + DATA * 40
    standard = gzip.compress(data)
    reader = InflatingReader(
        io.BytesIO(_legacy(standard, 3) if legacy else standard), legacy=legacy
    )
    assert reader.read(100) == data[:100]
    assert reader.skip(1_500_000) == 1_500_000
    assert reader.read(10) == data[1_500_100:1_500_110]
    assert reader.skip(len(data)) == len(data) - 1_500_110
    assert reader.read(10) == b""
    assert reader.size == len(data)
    damaged = standard[:-8] + struct.pack("<I", zlib.crc32(data) ^ 1) + standard[-4:]
    reader = InflatingReader(io.BytesIO(_legacy(damaged, 3) if legacy else damaged), legacy=legacy)
    with pytest.raises(GzipError, match="CRC mismatch"):
        reader.skip(len(data) + 1)


def test_memory_is_bounded_while_skipping() -> None:
    """Skipping a member of 256 MiB of zeros (a thousandfold compression) never holds more
    than a few MiB of it."""
    reader = InflatingReader(io.BytesIO(gzip.compress(bytes(256 << 20), compresslevel=1)))
    tracemalloc.start()
    try:
        assert reader.skip(256 << 20) == 256 << 20
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak
