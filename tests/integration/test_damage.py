"""Real damage: truncation, flipped bytes, broken metadata, missing parts, HA's own half-writes."""

from __future__ import annotations

import io
import json
import random
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from securetar import SecureTarArchive, atomic_contents_add

from nas_receiver.haformat import KeyRing, Level, Verdict, verify_archive
from tests.builders import KEY, BackupSpec, make_ha_config, member_spans, write_backup

MakeBackup = Callable[..., Path]
RING = KeyRing([KEY])
VERSIONS = [None, 2, 3]


def _backup(make_backup: MakeBackup, version: int | None, **fields: object) -> Path:
    return make_backup(password=KEY if version else None, securetar_version=version or 3, **fields)


def _end_of_archive(path: Path) -> int:
    """Return the byte offset just past the end-of-archive marker."""
    with tarfile.open(path) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + last.size + (-last.size % 512) + 1024


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as file:
        file.seek(offset)
        byte = file.read(1)
        file.seek(offset)
        file.write(bytes([byte[0] ^ 0xFF]))


def _rebuild(
    path: Path, *, drop: frozenset[str] = frozenset(), replace: dict[str, bytes] | None = None
) -> None:
    """Rewrite ``path`` without the members in ``drop`` and with ``replace``d contents."""
    replace = replace or {}
    source = path.with_suffix(".orig")
    shutil.move(path, source)
    with tarfile.open(source) as old, tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as new:
        for member in old.getmembers():
            name = member.name.removeprefix("./")
            if name in drop:
                continue
            data = replace.get(name)
            if data is None:
                new.addfile(member, old.extractfile(member))
            else:
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("writer", ["supervisor", "core"])
def test_truncation_at_many_offsets_is_never_valid(
    make_backup: MakeBackup, version: int | None, writer: str
) -> None:
    path = _backup(make_backup, version, writer=writer)
    data = path.read_bytes()
    end = _end_of_archive(path)
    rng = random.Random(version or 0)
    offsets = sorted({*range(0, end, 4096), *(rng.randrange(1, end) for _ in range(25)), end - 1})
    for offset in offsets:
        path.write_bytes(data[:offset])
        report = verify_archive(path, keys=RING)
        assert report.verdict is Verdict.INCOMPLETE, (offset, report.problems)
        quick = verify_archive(path, level=Level.QUICK, keys=RING)
        assert quick.verdict is not Verdict.VALID, (offset, quick.problems)


@pytest.mark.parametrize("version", VERSIONS)
def test_one_flipped_byte_inside_an_inner_archive_is_corrupt(
    make_backup: MakeBackup, version: int | None
) -> None:
    path = _backup(make_backup, version)
    offset, size = member_spans(path)["homeassistant.tar.gz"]
    _flip(path, offset + size // 2)
    report = verify_archive(path, keys=RING)
    assert report.verdict is Verdict.CORRUPT, report.problems
    assert any(p.startswith("homeassistant.tar.gz (at byte") for p in report.problems)


def test_flip_in_plain_gzip_is_caught_by_the_crc(make_backup: MakeBackup) -> None:
    path = _backup(make_backup, None)
    offset, size = member_spans(path)["homeassistant.tar.gz"]
    _flip(path, offset + size - 6)  # inside the stored CRC-32 of the gzip trailer
    report = verify_archive(path)
    assert report.verdict is Verdict.CORRUPT
    assert any("CRC mismatch" in p for p in report.problems), report.problems


def test_broken_backup_json_is_corrupt(make_backup: MakeBackup) -> None:
    path = _backup(make_backup, 3)
    _rebuild(path, replace={"backup.json": b'{"slug": "a1b2c3d4", "name": '})
    report = verify_archive(path, keys=RING)
    assert report.verdict is Verdict.CORRUPT
    assert any("backup.json" in p and "not JSON" in p for p in report.problems)


def test_backup_json_without_required_key_is_corrupt(make_backup: MakeBackup) -> None:
    path = _backup(make_backup, None)
    meta = BackupSpec().backup_json()
    del meta["date"]
    _rebuild(path, replace={"backup.json": json.dumps(meta).encode()})
    report = verify_archive(path)
    assert report.verdict is Verdict.CORRUPT
    assert any("at 'date'" in p for p in report.problems), report.problems


@pytest.mark.parametrize("version", VERSIONS)
def test_listed_part_missing_is_corrupt(make_backup: MakeBackup, version: int | None) -> None:
    path = _backup(make_backup, version)
    _rebuild(path, drop=frozenset({"share.tar.gz"}))
    report = verify_archive(path, keys=RING)
    assert report.verdict is Verdict.CORRUPT
    assert "share: listed in backup.json but missing from the archive" in report.problems


def test_protected_flag_disagreeing_with_the_data_is_corrupt(make_backup: MakeBackup) -> None:
    path = _backup(make_backup, 2)
    meta = {**BackupSpec(password=KEY).backup_json(), "protected": False}
    _rebuild(path, replace={"backup.json": json.dumps(meta).encode()})
    report = verify_archive(path, keys=RING)
    assert report.verdict is Verdict.CORRUPT
    assert any("but backup.json says not protected" in p for p in report.problems)


def test_unlisted_member_is_reported_not_fatal(make_backup: MakeBackup) -> None:
    path = _backup(make_backup, None)
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read() if m.isfile() else None) for m in tar]  # type: ignore[union-attr]
    path.unlink()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member, data in members:
            tar.addfile(member, io.BytesIO(data) if data is not None else None)
        extra = tarfile.TarInfo("notes.txt")
        extra.size = 2
        tar.addfile(extra, io.BytesIO(b"hi"))
    report = verify_archive(path)
    assert report.verdict is Verdict.VALID
    assert any("unlisted member 'notes.txt'" in note for note in report.notes)


def test_not_a_tar_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "photo.tar"
    path.write_bytes(random.Random(1).randbytes(20_000))
    assert verify_archive(path).verdict is Verdict.UNSUPPORTED
    text = tmp_path / "notes.tar"
    text.write_text("this is not a backup\n" * 100)
    assert verify_archive(text).verdict is Verdict.UNSUPPORTED


def test_a_tar_without_backup_json_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "other.tar"
    with tarfile.open(path, "w") as tar:
        info = tarfile.TarInfo("readme.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    report = verify_archive(path)
    assert report.verdict is Verdict.UNSUPPORTED
    assert "not an HA backup" in report.problems[0]


def test_empty_file_is_incomplete(tmp_path: Path) -> None:
    path = tmp_path / "empty.tar"
    path.write_bytes(b"")
    report = verify_archive(path)
    assert report.verdict is Verdict.INCOMPLETE
    assert "empty file" in report.problems[0]


@pytest.mark.parametrize("version", [None, 2, 3])
def test_what_ha_leaves_when_cut_off_mid_write_is_incomplete(
    tmp_path: Path, version: int | None
) -> None:
    """Snapshot the file while the supervisor's writer is inside an inner archive: the
    member header still says size 0, SecureTar's plaintext_size is 0, no backup.json."""
    config = make_ha_config(tmp_path / "ha")
    path = tmp_path / "partial.tar"
    snapshot = tmp_path / "snapshot.tar"
    archive = SecureTarArchive(path, "w", password=KEY if version else None, create_version=version)
    with archive, archive.create_tar("homeassistant.tar.gz") as tar:
        atomic_contents_add(tar, config, file_filter=lambda _p: False, arcname=".")
        archive.tar.fileobj.flush()  # type: ignore[union-attr]
        shutil.copyfile(path, snapshot)
    report = verify_archive(snapshot, keys=RING)
    assert report.verdict is Verdict.INCOMPLETE, report.problems


def test_plaintext_size_inconsistent_with_member_size_is_incomplete(
    make_backup: MakeBackup,
) -> None:
    path = _backup(make_backup, 2)
    offset, _size = member_spans(path)["homeassistant.tar.gz"]
    with path.open("r+b") as file:  # plaintext_size is a big-endian u64 at bytes 16-23
        file.seek(offset + 16)
        value = int.from_bytes(file.read(8), "big")
        file.seek(offset + 16)
        file.write((value + 4096).to_bytes(8, "big"))
    report = verify_archive(path, level=Level.QUICK, keys=RING)
    assert report.verdict is Verdict.INCOMPLETE
    assert any("plaintext_size" in p for p in report.problems)


# -- property tests ------------------------------------------------------------------------

_PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# Bytes no check can cover, because nothing reads them: the gzip header's time, flags and
# file name of a plain inner archive, and SecureTar's 8 reserved metadata bytes.
_UNCHECKED_PLAIN_HEAD = 64
_SECURETAR_RESERVED = range(24, 32)


def _checked_offsets(path: Path, version: int | None) -> list[int]:
    offsets: list[int] = []
    for name, (start, size) in member_spans(path).items():
        if not name.endswith(".tar.gz"):
            continue
        for rel in range(size):
            if version is None and rel < _UNCHECKED_PLAIN_HEAD:
                continue
            if version and rel in _SECURETAR_RESERVED:
                continue
            offsets.append(start + rel)
    return offsets


@pytest.fixture(scope="module")
def damage_sources(tmp_path_factory: pytest.TempPathFactory) -> dict[int | None, Path]:
    root = tmp_path_factory.mktemp("damage")
    sources: dict[int | None, Path] = {}
    for version in VERSIONS:
        spec = BackupSpec(
            password=KEY if version else None,
            securetar_version=version or 3,
            addons=(),
            folders=("ssl",),
            entities=10,
        )
        sources[version] = write_backup(root / f"v{version}.tar", spec, root / f"w{version}")
    return sources


@_PROPERTY
@given(data=st.data())
def test_any_flip_inside_inner_archive_data_is_never_valid(
    damage_sources: dict[int | None, Path], tmp_path: Path, data: st.DataObject
) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    source = damage_sources[version]
    offsets = _checked_offsets(source, version)
    picks = data.draw(st.lists(st.sampled_from(offsets), min_size=1, max_size=3, unique=True))
    blob = bytearray(source.read_bytes())
    for offset in picks:
        blob[offset] ^= data.draw(st.integers(1, 255))
    path = tmp_path / "mutated.tar"
    path.write_bytes(blob)
    assert verify_archive(path, keys=RING).verdict is not Verdict.VALID


@_PROPERTY
@given(data=st.data())
def test_random_mutations_never_raise(
    damage_sources: dict[int | None, Path], tmp_path: Path, data: st.DataObject
) -> None:
    version = data.draw(st.sampled_from(VERSIONS))
    blob = bytearray(damage_sources[version].read_bytes())
    for _ in range(data.draw(st.integers(1, 8))):
        offset = data.draw(st.integers(0, len(blob) - 1))
        blob[offset] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    path = tmp_path / "mutated.tar"
    path.write_bytes(bytes(blob[:cut]))
    for level in Level:
        report = verify_archive(path, level=level, keys=RING)
        assert report.verdict in set(Verdict)
        if report.verdict is not Verdict.VALID:
            assert report.problems
