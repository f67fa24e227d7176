"""The walk reads a tar header block exactly as tarfile does (HA restores with tarfile): the
same fields from every block tarfile accepts, an error from every block it refuses."""

from __future__ import annotations

import random
import tarfile
from collections.abc import Callable
from typing import Any

import pytest

from nas_receiver.haformat.tarstream import parse_header

FIELDS = ("name", "mode", "size", "mtime", "type", "linkname")
NUMBER_FIELDS = ((100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (148, 156),
                 (329, 337), (337, 345))  # fmt: skip


def _info(name: str, kind: bytes = tarfile.REGTYPE, **fields: Any) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = 1234 if kind in tarfile.REGULAR_TYPES else 0
    info.mtime = 1_700_000_000
    info.mode = 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info


def _blocks() -> list[bytes]:
    """Header blocks as tarfile's writers make them (the first block of each member)."""
    infos = [
        _info("data/.storage/core.config_entries"),
        _info("data/dir/", tarfile.DIRTYPE),
        _info("data/link", tarfile.SYMTYPE, linkname="../target"),
        _info("data/hard", tarfile.LNKTYPE, linkname="data/.storage/core.config_entries"),
        _info("a/" * 60 + "long-enough-to-need-the-ustar-prefix.yaml"),
        _info("data/Küche/licht.yaml"),
        _info("data/big.db", size=9 << 30),
        _info("data/old", mtime=-1),
        _info("data/\udcff-not-utf8"),
    ]
    blocks = []
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        for info in infos:
            try:
                data = info.tobuf(fmt, "utf-8", "surrogateescape")
            except ValueError:  # a field this format cannot hold
                continue
            blocks += [data[i : i + 512] for i in range(0, len(data), 512)][:2]
    v7_directory = bytearray(blocks[0])
    v7_directory[0:100] = b"data/v7dir/".ljust(100, b"\0")
    v7_directory[156:157] = tarfile.AREGTYPE
    sparse = bytearray(blocks[0])
    sparse[156:157] = tarfile.GNUTYPE_SPARSE
    return [bytes(block) for block in blocks] + [
        _with_checksum(v7_directory),
        _with_checksum(sparse),
        _with_checksum(bytearray(blocks[0]), signed=True),
    ]


def _with_checksum(block: bytearray, *, signed: bool = False, form: str = "%06o\0 ") -> bytes:
    block[148:156] = b" " * 8
    total = sum(byte - 256 if signed and byte > 127 else byte for byte in block)
    block[148:156] = (form % (total & 0o777777)).encode()[:8].ljust(8, b"\0")
    return bytes(block)


NASTY = b" \0\t+-_89" + bytes([0x80, 0xC3, 0xFF]) + b"01234567" * 3  # octal digits keep the form


def _mutated(rng: random.Random, block: bytes) -> bytes:
    """``block`` with a few bytes changed, mostly in number fields, with its checksum made
    right again most of the time (else nearly every mutation is a bad checksum)."""
    changed = bytearray(block)
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.8:
            start, end = rng.choice(NUMBER_FIELDS)
            where = rng.randrange(start, end)
        else:
            where = rng.randrange(512)
        changed[where] = rng.choice(NASTY)
        if rng.random() < 0.2:  # a whole field blank or spaced
            start, end = rng.choice(NUMBER_FIELDS)
            filler = rng.choice([b" ", b"\0", b"  644  \0"])
            changed[start:end] = filler.ljust(end - start, filler[-1:])
    if changed[148] == 0o200 or rng.random() < 0.1:
        return bytes(changed)  # the checksum left as it is (or base-256: tarfile's own path)
    form = rng.choice(["%06o\0 "] * 4 + [" %06o\0", "%07o\0", "%o"])
    return _with_checksum(changed, signed=rng.random() < 0.2, form=form)


def _outcome(parse: Callable[[bytes], Any], block: bytes) -> tuple[object, ...]:
    try:
        header = parse(block)
    except tarfile.HeaderError as err:
        return ("refused", type(err).__name__, str(err))
    return tuple(getattr(header, field) for field in FIELDS)


def _tarfiles(block: bytes) -> tarfile.TarInfo:
    return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")


def test_every_writers_header_reads_as_tarfile_reads_it() -> None:
    for block in _blocks():
        assert _outcome(parse_header, block) == _outcome(_tarfiles, block), block[:100]


def test_damaged_headers_are_read_or_refused_as_tarfile_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """20,000 mutations of real headers (number fields with spaces, signs, underscores,
    digits 8 and 9, base-256 marks, high bytes; checksums signed and unsigned, in several
    layouts): each one read to the same fields, or refused, as tarfile does.  Both ways
    through parse_header are taken many times: its own reading and tarfile's."""
    calls = 0
    frombuf = tarfile.TarInfo.frombuf

    def counted(block: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        nonlocal calls
        calls += 1
        return frombuf(block, encoding, errors)

    rng = random.Random(14)
    blocks = _blocks()
    cases = [_mutated(rng, rng.choice(blocks)) for _ in range(20_000)]
    expected = [_outcome(_tarfiles, block) for block in cases]
    monkeypatch.setattr(tarfile.TarInfo, "frombuf", counted)
    for block, wanted in zip(cases, expected, strict=True):
        assert _outcome(parse_header, block) == wanted, block
    refused = sum(1 for outcome in expected if outcome[0] == "refused")
    assert 2_000 < refused < 18_000, refused
    assert 2_000 < calls < 18_000, calls  # many read here, many handed to tarfile


def test_the_usual_header_is_read_without_tarfile(monkeypatch: pytest.MonkeyPatch) -> None:
    block = _info("data/configuration.yaml").tobuf(tarfile.PAX_FORMAT)[:512]
    expected = _outcome(_tarfiles, block)

    def refuse(*_args: object) -> None:
        raise AssertionError("handed to tarfile")

    monkeypatch.setattr(tarfile.TarInfo, "frombuf", refuse)
    assert _outcome(parse_header, block) == expected


def test_a_changed_byte_anywhere_is_caught_by_the_checksum_as_tarfile_does() -> None:
    for block in _blocks()[:3]:
        for where in range(512):
            changed = bytearray(block)
            changed[where] = (changed[where] + 1) % 256
            assert _outcome(parse_header, bytes(changed)) == _outcome(_tarfiles, bytes(changed))
