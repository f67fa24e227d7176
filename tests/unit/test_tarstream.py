"""The tar walker: names, long names, sizes, the end marker, truncation."""

from __future__ import annotations

import io
import tarfile

import pytest

from nas_receiver.haformat.tarstream import (
    FileLike,
    MemberCut,
    TarFormatError,
    TarTruncated,
    TarWalker,
    normalise_name,
)


def _tar(*members: tuple[str, bytes], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _walk(blob: bytes) -> tuple[list[tuple[str, bytes]], TarWalker]:
    walker = TarWalker(io.BytesIO(blob))
    seen = [(entry.name, walker.member_stream().read()) for entry in walker]
    return seen, walker


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_walks_members_and_sees_the_end(fmt: int) -> None:
    seen, walker = _walk(_tar(("./backup.json", b"{}"), ("a.tar.gz", b"x" * 1000), fmt=fmt))
    assert seen == [("backup.json", b"{}"), ("a.tar.gz", b"x" * 1000)]
    assert walker.ended


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
def test_long_names(fmt: int) -> None:
    name = "deep/" * 40 + "file.txt"
    seen, _ = _walk(_tar((name, b"data"), fmt=fmt))
    assert seen == [(name, b"data")]


def test_unread_data_is_skipped() -> None:
    walker = TarWalker(io.BytesIO(_tar(("a", b"1" * 5000), ("b", b"2"))))
    assert [entry.name for entry in walker] == ["a", "b"]
    assert walker.ended


def test_no_end_marker() -> None:
    blob = _tar(("a", b"123"))
    _, walker = _walk(blob[:1024])
    assert not walker.ended


@pytest.mark.parametrize("cut", [100, 600, 1100])
def test_truncated_inside_header_or_data(cut: int) -> None:
    blob = _tar(("a", b"x" * 1000))
    with pytest.raises((TarTruncated, MemberCut)):
        _walk(blob[:cut])


def test_bad_checksum() -> None:
    blob = bytearray(_tar(("a", b"x")))
    blob[0] ^= 1
    with pytest.raises(TarFormatError, match="not a valid tar header"):
        _walk(bytes(blob))


def test_normalise_name() -> None:
    assert normalise_name("./backup.json") == "backup.json"
    assert normalise_name("././x/") == "x"
    assert normalise_name(".") == ""
    assert normalise_name("./") == ""


@pytest.mark.parametrize(
    ("key", "value"), [("mtime", "\x00795713115.43"), ("size", "12x"), ("size", "-5")]
)
def test_damaged_pax_numbers_are_format_errors(key: str, value: str) -> None:
    """Found by the hypothesis test: a flipped byte in a PAX record's number."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a")
        info.size = 1
        info.pax_headers = {key: value}
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(TarFormatError, match=f"PAX {key}"):
        _walk(buffer.getvalue())


def test_a_file_like_refuses_a_read_longer_than_asked() -> None:
    """tarfile writes all a read returns into a member of a fixed size: a source that
    returns more than asked would make a member longer than its header says."""

    class TooLong:
        def read(self, size: int, /) -> bytes:
            return bytes(size + 1)

    with pytest.raises(ValueError, match="a read of 10 bytes returned 11"):
        FileLike(TooLong()).read(10)
