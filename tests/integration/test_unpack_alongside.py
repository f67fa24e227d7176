"""HA's part unpacked as it is verified (the library's browse copy, see UnpackAlongside):
the same tree as an extraction after the verdict, the same verdicts as a verification
without it, and nothing offered as whole that was not."""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from securetar import SecureTarArchive

from nas_receiver.haformat import KeyRing, Verdict, VerifyReport, verify_archive
from nas_receiver.haformat.extract import ExtractResult, UnpackAlongside, extract_backup
from tests.builders import (
    KEY,
    BackupSpec,
    backup_with_ha_part,
    hostile_ha_entries,
    make_ha_config,
    member_spans,
    tar_file,
)
from tests.conftest import Judge, corpus_file

MakeBackup = Callable[..., Path]


def _tree(folder: Path) -> dict[str, tuple[str, int, bytes]]:
    """Every path under ``folder``: its kind, mode and content (a link's target)."""
    tree = {}
    for path in sorted(folder.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISLNK(mode):
            tree[str(path.relative_to(folder))] = ("link", 0, os.readlink(path).encode())
        elif stat.S_ISDIR(mode):
            tree[str(path.relative_to(folder))] = ("dir", stat.S_IMODE(mode), b"")
        else:
            tree[str(path.relative_to(folder))] = ("file", stat.S_IMODE(mode), path.read_bytes())
    return tree


def _told(result: ExtractResult | None, folder: Path) -> dict[str, object]:
    """What ``result`` reports, with ``folder`` (named in refusals) as ``<folder>``."""
    assert result is not None
    told = result.to_dict()
    told["refused"] = [text.replace(str(folder), "<folder>") for text in result.refused]
    return told


def _alongside(
    path: Path, keys: KeyRing, folder: Path, **unpack: object
) -> tuple[VerifyReport, ExtractResult | None, UnpackAlongside]:
    """Verify ``path`` with HA's part unpacked into ``folder`` meanwhile."""
    folder.mkdir(parents=True)
    alongside = UnpackAlongside(folder, "homeassistant", **unpack)  # type: ignore[arg-type]
    try:
        report = verify_archive(path, keys=keys, unpack=alongside)
        return report, alongside.finish(), alongside
    finally:
        alongside.close()


def _same_report(one: VerifyReport, other: VerifyReport) -> None:
    assert (one.verdict, one.problems, one.notes, one.sha256) == (
        other.verdict,
        other.problems,
        other.notes,
        other.sha256,
    )


CORPUS = [
    ("supervisor_backup_example_sec_v3.tar", "supervisor"),
    ("supervisor_backup_example_enc_v2.tar", "test"),
    ("supervisor_backup_example.tar", None),
]
BUILT = [
    {"writer": "supervisor", "password": KEY, "securetar_version": 3},
    {"writer": "supervisor", "password": KEY, "securetar_version": 2},
    {"writer": "core", "password": KEY, "securetar_version": 3},
    {"writer": "core2024", "password": None},
    {"writer": "core", "password": None},
    {"writer": "supervisor", "password": None, "compressed": False},
    {"writer": "v1", "password": KEY, "securetar_version": 2},
]


@pytest.mark.parametrize(("name", "key"), CORPUS, ids=["v3", "v2", "plain"])
def test_real_supervisor_backups_without_has_part_offer_no_tree(
    tmp_path: Path, name: str, key: str | None
) -> None:
    """Asserts: HA's real supervisor backups (an add-on or a folder, no HA part) are
    verified with the unpacking attached to the same report as without, and it offers no
    tree and unpacks nothing (the extraction finds no HA part either)."""
    path = corpus_file(name)
    keys = KeyRing([key] if key else [])
    report, early, _ = _alongside(path, keys, tmp_path / "early")
    _same_report(report, verify_archive(path, keys=keys))
    assert report.verdict is Verdict.VALID, report.problems
    assert early is None and not (tmp_path / "early" / "homeassistant").exists()
    late = extract_backup(path, tmp_path / "late", keys, members=["homeassistant"])
    assert late.problems == ["homeassistant: no such inner archive"]


@pytest.mark.parametrize("password", [KEY, None], ids=["encrypted", "plain"])
def test_a_backup_written_by_ha_unpacked_while_verified_is_the_tree_extract_writes(
    tmp_path: Path, ha_judge: Judge, password: str | None
) -> None:
    """Asserts: for a backup written by HA core's own writer (HA 2025.4.4: SecureTar v2 with
    a password), the HA part unpacked as the verifier reads it is, file for file (kind,
    mode, bytes) and with backup.json, the tree the extraction after the verdict writes;
    its counts are the same; the verdict is the one a verification without it gives."""
    config = make_ha_config(tmp_path / "config", entities=12)
    path = tmp_path / "ha.tar"
    (written,) = ha_judge(
        [
            {
                "op": "core_write",
                "config_dir": str(config),
                "path": str(path),
                "name": "Backup written by HA",
                "date": "2025-04-20T04:45:00+00:00",
                "slug": "0badc0de",
                "database_included": True,
                "password": password,
            }
        ]
    )
    assert written["ok"], written
    keys = KeyRing([KEY])
    report, early, _ = _alongside(path, keys, tmp_path / "early")
    _same_report(report, verify_archive(path, keys=keys))
    assert report.verdict is Verdict.VALID, report.problems
    assert report.securetar_versions == ([2] if password else [])
    late = extract_backup(path, tmp_path / "late", keys, members=["homeassistant"])
    assert _told(early, tmp_path / "early") == _told(late, tmp_path / "late")
    assert early.files > 5
    assert _tree(tmp_path / "early") == _tree(tmp_path / "late")


@pytest.mark.parametrize("fields", BUILT, ids=lambda f: "-".join(str(v) for v in f.values()))
def test_each_writers_backup_unpacked_while_verified_is_the_tree_extract_writes(
    make_backup: MakeBackup, tmp_path: Path, fields: dict[str, object]
) -> None:
    """Asserts: the same for backups written as each of HA's writers writes them
    (supervisor, core, core 2024, the legacy v1 layout), encrypted or not, compressed or
    not."""
    path = make_backup(**fields)
    keys = KeyRing([KEY])
    report, early, _ = _alongside(path, keys, tmp_path / "early")
    _same_report(report, verify_archive(path, keys=keys))
    assert report.verdict is Verdict.VALID, report.problems
    late = extract_backup(path, tmp_path / "late", keys, members=["homeassistant"])
    assert _told(early, tmp_path / "early") == _told(late, tmp_path / "late")
    assert _tree(tmp_path / "early") == _tree(tmp_path / "late")


@pytest.mark.parametrize("version", [None, 2, 3])
def test_damage_in_has_part_changes_no_verdict_and_leaves_no_tree_to_keep(
    make_backup: MakeBackup, tmp_path: Path, version: int | None
) -> None:
    """Asserts: a byte flipped anywhere in HA's part, or the file cut inside it, gives the
    very report a verification without the unpacking gives, and the unpacking offers its
    tree (``finish``) exactly when the verdict is valid (never a tree of damaged data)."""
    path = make_backup(password=KEY if version else None, securetar_version=version or 3)
    keys = KeyRing([KEY])
    data = path.read_bytes()
    spans = member_spans(path)
    start, size = next(span for name, span in spans.items() if name.startswith("homeassistant"))
    offsets = sorted({start + size * step // 23 for step in range(23)} | {start, start + size - 1})
    for index, offset in enumerate(offsets):
        path.write_bytes(data[:offset] + bytes([data[offset] ^ 0x5A]) + data[offset + 1 :])
        report, early, alongside = _alongside(path, keys, tmp_path / f"flip{index}")
        _same_report(report, verify_archive(path, keys=keys))
        assert (early is not None) == (report.verdict is Verdict.VALID), (
            offset,
            report.problems,
            alongside.failure,
        )
        path.write_bytes(data[:offset])
        report, early, _ = _alongside(path, keys, tmp_path / f"cut{index}")
        _same_report(report, verify_archive(path, keys=keys))
        assert report.verdict is Verdict.INCOMPLETE and early is None, offset


def test_hostile_names_in_has_part_are_refused_as_extract_refuses_them(tmp_path: Path) -> None:
    """Asserts: names in HA's part are data, never paths: ``..``, absolute names, links out
    of the folder, hard links out or to a refused link, and devices are refused while
    verifying exactly as the extraction refuses them, nothing lands outside the folder, no
    link is written, and the trees are the same."""
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = hostile_ha_entries("/etc/evil-absolute-alongside")
    path = backup_with_ha_part(tmp_path / "hostile.tar", entries)
    keys = KeyRing([KEY])
    report, early, _ = _alongside(path, keys, tmp_path / "work" / "early")
    late = extract_backup(path, tmp_path / "work" / "late", keys, members=["homeassistant"])
    assert report.verdict is Verdict.VALID, report.problems
    assert _told(early, tmp_path / "work/early") == _told(late, tmp_path / "work/late")
    assert early is not None
    refusable = ("escape.txt", "escape2.txt", "abs-link", "up-link", "hard-out", "dev/sda")
    for name in (*refusable, "hard-to-shadow"):
        assert name in " ".join(early.refused), early.refused
    assert (tmp_path / "work/early/homeassistant/good.txt").read_bytes() == b"fine"
    assert not Path("/etc/evil-absolute-alongside").exists()
    assert list(outside.iterdir()) == []
    assert [p for p in (tmp_path / "work").rglob("*") if p.is_symlink()] == []
    assert (
        not (tmp_path / "work" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()
    )
    assert _tree(tmp_path / "work" / "early") == _tree(tmp_path / "work" / "late")


def test_a_decompression_bomb_stops_the_unpacking_not_the_verification(tmp_path: Path) -> None:
    """Asserts: an HA part that inflates past MAX_RATIO times its size is unpacked no further
    (what was written stays bounded), the verification goes on to its own verdict, the
    unpacking offers no tree and says why, and no thread is left."""
    path = backup_with_ha_part(tmp_path / "bomb.tar", [tar_file("zeros.bin", bytes(96 << 20))])
    threads = threading.active_count()
    report, early, alongside = _alongside(path, KeyRing([KEY]), tmp_path / "early")
    _same_report(report, verify_archive(path, keys=KeyRing([KEY])))
    assert early is None
    assert alongside.failure is not None and "decompression bomb" in alongside.failure
    assert list((tmp_path / "early" / "homeassistant").iterdir()) == []  # refused before
    assert threading.active_count() == threads


def test_no_room_stops_the_unpacking_not_the_verification(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: where the disk's free room, less what is set aside for copies being written,
    cannot take a file and the margin, the unpacking stops and says so; the verdict is
    the same."""
    path = make_backup(password=KEY)
    keys = KeyRing([KEY])
    report, early, alongside = _alongside(path, keys, tmp_path / "early", aside=lambda: 1 << 62)
    _same_report(report, verify_archive(path, keys=keys))
    assert report.verdict is Verdict.VALID and early is None
    assert alongside.failure is not None and "bytes free" in alongside.failure


def test_a_second_ha_part_is_not_unpacked_alongside(tmp_path: Path) -> None:
    """Asserts: an archive with two inner archives named as HA's part gets no tree from the
    unpacking (which of them would be the browse copy is not its to choose)."""
    spec = BackupSpec(password=KEY, addons=(), folders=())
    path = tmp_path / "twice.tar"
    with SecureTarArchive(path, "w", password=KEY, create_version=3) as archive:
        for content in (b"first", b"second"):
            with archive.create_tar("homeassistant.tar.gz") as tar:
                info, data = tar_file("file.txt", content)
                tar.addfile(info, io.BytesIO(data))
        meta = json.dumps(spec.backup_json()).encode()
        info = tarfile.TarInfo("./backup.json")
        info.size = len(meta)
        archive.tar.addfile(info, io.BytesIO(meta))
    report, early, alongside = _alongside(path, KeyRing([KEY]), tmp_path / "early")
    _same_report(report, verify_archive(path, keys=KeyRing([KEY])))
    assert early is None and alongside.failure is not None and "second" in alongside.failure


def test_a_cancelled_verification_stops_the_unpacking(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a verification cancelled while HA's part is checked (the daemon stopping)
    leaves the unpacking with no tree to offer and no thread running."""

    class Stop(Exception):
        pass

    path = make_backup(password=KEY, entities=4000)
    threads = threading.active_count()
    (tmp_path / "early").mkdir()
    alongside = UnpackAlongside(tmp_path / "early", "homeassistant")

    def cancel_while_unpacking(_count: int) -> None:
        if any(thread.name == "unpack" for thread in threading.enumerate()):
            raise Stop()

    with pytest.raises(Stop):
        verify_archive(path, keys=KeyRing([KEY]), on_bytes=cancel_while_unpacking, unpack=alongside)
    assert alongside.finish() is None
    alongside.close()
    assert threading.active_count() == threads
