"""The real HA backup files in ../shared/corpus/real give the verdicts SOURCES.md states."""

from __future__ import annotations

import pytest

from nas_receiver.haformat import KeyRing, Level, Verdict, verify_archive
from nas_receiver.haformat.extract import extract_backup
from tests.conftest import CORPUS_KEYS, corpus_file

ENCRYPTED = [name for name, key in CORPUS_KEYS.items() if key and name.startswith("supervisor")]


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("name", [n for n in CORPUS_KEYS if n.startswith("supervisor")])
def test_supervisor_files_are_valid_with_their_key(name: str, level: Level) -> None:
    key = CORPUS_KEYS[name]
    report = verify_archive(corpus_file(name), level=level, keys=KeyRing([key] if key else []))
    assert report.verdict is Verdict.VALID, report.problems
    assert report.problems == []
    if level is Level.FULL:
        assert report.sha256 is not None and len(report.sha256) == 64
        assert all(inner.files for inner in report.inner)


@pytest.mark.parametrize("level", list(Level))
@pytest.mark.parametrize("name", ENCRYPTED)
def test_another_key_is_wrong_key(name: str, level: Level) -> None:
    report = verify_archive(corpus_file(name), level=level, keys=KeyRing(["not-the-key"]))
    assert report.verdict is Verdict.WRONG_KEY


@pytest.mark.parametrize("name", ENCRYPTED)
def test_without_key_full_says_key_required_and_quick_checks_structure(name: str) -> None:
    full = verify_archive(corpus_file(name), level=Level.FULL)
    assert full.verdict is Verdict.KEY_REQUIRED
    quick = verify_archive(corpus_file(name), level=Level.QUICK)
    assert quick.verdict is Verdict.KEY_REQUIRED
    assert quick.backup is not None and quick.backup.protected
    assert quick.securetar_versions == [2] if "v2" in name else [3]


def test_key_ring_finds_the_right_key_among_others() -> None:
    ring = KeyRing(["wrong-1", "supervisor", "test"])
    for name in ENCRYPTED:
        assert verify_archive(corpus_file(name), keys=ring).verdict is Verdict.VALID


def test_habackuptool_file_is_corrupt_as_a_whole_but_its_v1_member_is_sound() -> None:
    name = "habackuptool_test_protected_v1.tar"
    report = verify_archive(corpus_file(name), keys=KeyRing([CORPUS_KEYS[name] or ""]))
    assert report.verdict is Verdict.CORRUPT
    assert any("homeassistant: listed in backup.json but missing" in p for p in report.problems)
    assert any("ssl: listed" in p for p in report.problems)
    assert any("test.tar.gz" in note and "not listed" in note for note in report.notes)
    (inner,) = report.inner
    assert inner.securetar == 1
    assert inner.legacy_trailer  # the split v1 trailer was understood, and its CRC checked
    assert inner.crc32 is not None and inner.files


def test_habackuptool_v1_member_extracts(tmp_path: pytest.TempPathFactory) -> None:
    name = "habackuptool_test_protected_v1.tar"
    out = tmp_path / "out"  # type: ignore[operator]
    result = extract_backup(
        corpus_file(name), out, KeyRing([CORPUS_KEYS[name] or ""]), members=["test.tar.gz"]
    )
    assert result.problems == []
    assert result.files >= 1
    extracted = [p for p in (out / "test").rglob("*") if p.is_file()]
    assert extracted and all(p.stat().st_size > 0 for p in extracted)


def test_plain_corpus_file_has_no_securetar() -> None:
    report = verify_archive(corpus_file("supervisor_backup_example.tar"))
    assert report.securetar_versions == []
    assert report.backup is not None and report.backup.addons[0].slug == "a0d7b954_example"
