"""decrypt and encrypt round trips; securetar itself reads what they write."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.errors import BackupError, OutputExistsError
from nas_receiver.haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive
from nas_receiver.haformat.convert import decrypt_backup, encrypt_backup
from tests.builders import KEY, OTHER_KEY, inner_files
from tests.conftest import CORPUS_KEYS, corpus_file

MakeBackup = Callable[..., Path]


def _metadata(path: Path) -> dict[str, object]:
    with tarfile.open(path) as tar:
        name = next(n for n in tar.getnames() if n.endswith("backup.json"))
        return json.loads(tar.extractfile(name).read())  # type: ignore[union-attr,no-any-return]


@pytest.mark.parametrize("version", [2, 3])
def test_decrypt_then_verify_and_read_plain(
    make_backup: MakeBackup, tmp_path: Path, version: int
) -> None:
    source = make_backup(password=KEY, securetar_version=version)
    out = tmp_path / "plain.tar"
    report = decrypt_backup(source, out, KeyRing([OTHER_KEY, KEY]))
    assert report.verdict is Verdict.VALID
    assert verify_archive(out).verdict is Verdict.VALID  # no key needed any more
    assert verify_archive(out).securetar_versions == []
    meta = _metadata(out)
    assert meta["protected"] is False and meta["some_future_key"] == {"tolerated": True}
    assert inner_files(out) == inner_files(source, KEY)


def test_decrypt_real_v2_and_v3(tmp_path: Path) -> None:
    for name in ("supervisor_backup_example_enc_v2.tar", "supervisor_backup_example_sec_v3.tar"):
        out = tmp_path / f"{name}.plain.tar"
        decrypt_backup(corpus_file(name), out, KeyRing([CORPUS_KEYS[name] or ""]))
        assert inner_files(out) == inner_files(corpus_file(name), CORPUS_KEYS[name])


@pytest.mark.parametrize("version", [2, 3])
def test_encrypt_then_decrypt_gives_identical_content(
    make_backup: MakeBackup, tmp_path: Path, version: int
) -> None:
    plain = make_backup()
    encrypted = tmp_path / "enc.tar"
    report = encrypt_backup(plain, encrypted, KEY, version=version)
    assert report.verdict is Verdict.VALID
    assert report.securetar_versions == [version]
    assert _metadata(encrypted)["protected"] is True
    # securetar (HA's reader) opens it with the key, and the content is the original's
    assert inner_files(encrypted, KEY) == inner_files(plain)
    assert verify_archive(encrypted, keys=KeyRing([OTHER_KEY])).verdict is Verdict.WRONG_KEY
    back = tmp_path / "back.tar"
    decrypt_backup(encrypted, back, KeyRing([KEY]))
    assert inner_files(back) == inner_files(plain)


def test_encrypt_refuses_an_encrypted_backup(make_backup: MakeBackup, tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="encrypted already"):
        encrypt_backup(make_backup(password=KEY), tmp_path / "x.tar", KEY)
    assert not (tmp_path / "x.tar").exists()


def test_decrypt_with_wrong_key_writes_nothing(make_backup: MakeBackup, tmp_path: Path) -> None:
    source = make_backup(password=KEY)
    before = source.read_bytes()
    with pytest.raises(BackupError, match="wrong_key"):
        decrypt_backup(source, tmp_path / "out.tar", KeyRing([OTHER_KEY]))
    assert list(tmp_path.glob("*out.tar*")) == []
    assert source.read_bytes() == before


def test_never_overwrites(make_backup: MakeBackup, tmp_path: Path) -> None:
    out = tmp_path / "exists.tar"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError):
        decrypt_backup(make_backup(password=KEY), out, KeyRing([KEY]))
    with pytest.raises(OutputExistsError):
        encrypt_backup(make_backup(), out, KEY)
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_decrypt_trusts_a_verification_only_of_the_same_content(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: given the arrival's full verification, decrypt does not verify the source
    again, yet a source swapped since that verification (another backup under the same
    name) is refused, and no output is left; the right one is decrypted."""
    first = make_backup(password=KEY, entities=40, slug="00000001")
    verified = verify_archive(first, keys=KeyRing([KEY]))
    swapped = make_backup(password=KEY, entities=10, slug="00000002")
    out = tmp_path / "plain.tar"
    with pytest.raises(BackupError, match="changed since"):
        decrypt_backup(swapped, out, KeyRing([KEY]), verified=verified)
    alike = make_backup(password=KEY, entities=40, slug="00000003")  # the same sizes
    with pytest.raises(BackupError, match="changed since"):
        decrypt_backup(alike, out, KeyRing([KEY]), verified=verified)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    report = decrypt_backup(first, out, KeyRing([KEY]), verified=verified)
    assert report.verdict is Verdict.VALID
    assert inner_files(out) == inner_files(first, KEY)


def test_decrypt_an_archive_with_two_inner_archives_of_one_name(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: inner archives are told apart by their place, not their name: a valid
    backup holding two members named alike is decrypted (found by a review)."""
    source = make_backup(password=KEY, securetar_version=2)
    twice = tmp_path / "twice.tar"
    with tarfile.open(source) as old, tarfile.open(twice, "w", format=tarfile.PAX_FORMAT) as new:
        members = old.getmembers()
        share = next(m for m in members if m.name.endswith("share.tar.gz"))
        for member in members:
            if member.name.endswith("backup.json"):
                new.addfile(share, old.extractfile(share))
            new.addfile(member, old.extractfile(member))
    verified = verify_archive(twice, keys=KeyRing([KEY]))
    assert verified.verdict is Verdict.VALID
    assert [i.name for i in verified.inner].count("share.tar.gz") == 2
    out = tmp_path / "plain.tar"
    report = decrypt_backup(twice, out, KeyRing([KEY]), verified=verified)
    assert report.verdict is Verdict.VALID
    assert [i.name for i in report.inner] == [i.name for i in verified.inner]


def test_decrypt_refuses_bytes_changed_in_place_since_verified(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a source rewritten in place after its verification, keeping every size and
    place (backup.json with another name of the same length), is refused by its SHA-256,
    which decrypt makes as it reads; no output is left."""
    source = make_backup(password=KEY, securetar_version=2)
    verified = verify_archive(source, keys=KeyRing([KEY]))
    data = source.read_bytes()
    assert data.count(b"Automatic backup") == 1
    source.write_bytes(data.replace(b"Automatic backup", b"Automatic BACKUP"))
    out = tmp_path / "plain.tar"
    with pytest.raises(BackupError, match="changed since"):
        decrypt_backup(source, out, KeyRing([KEY]), verified=verified)
    assert not out.exists()


@pytest.mark.parametrize("version", [2, 3])
def test_a_decrypted_copy_is_proven_as_written_not_read_back(
    make_backup: MakeBackup, tmp_path: Path, version: int
) -> None:
    """Asserts: the decrypted copy's report has the SHA-256 of the file as it lies on disk
    (made while writing) and, for each inner archive, what the source's full verification
    found in the very stream written; a full verification of the copy finds the same."""
    source = make_backup(password=KEY, securetar_version=version, entities=200)
    verified = verify_archive(source, keys=KeyRing([KEY]))
    out = tmp_path / "plain.tar"
    report = decrypt_backup(source, out, KeyRing([KEY]), verified=verified)
    assert report.verdict is Verdict.VALID
    assert any("not read back" in note for note in report.notes)
    assert report.sha256 == hashlib.sha256(out.read_bytes()).hexdigest()
    again = verify_archive(out)
    assert again.verdict is Verdict.VALID
    assert again.sha256 == report.sha256

    def content(found: VerifyReport) -> list[tuple[object, ...]]:
        return [(i.name, i.files, i.content_bytes, i.stream_crc32) for i in found.inner]

    assert content(report) == content(again)
    assert inner_files(out) == inner_files(source, KEY)
    # zlib checked each standard gzip trailer itself: no CRC is reported that was not read
    assert [i.crc32 for i in verified.inner + report.inner] == [None] * 2 * len(report.inner)


def test_a_decrypted_stream_unlike_the_verified_one_is_refused(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: where an inner archive decrypts to other bytes than its verification read
    (told here by a verification that saw another CRC-32), no copy is made: the copy is
    never of bytes that were not checked."""
    source = make_backup(password=KEY, securetar_version=3)
    verified = verify_archive(source, keys=KeyRing([KEY]))
    share = next(i for i in verified.inner if i.name == "share.tar.gz")
    assert share.stream_crc32 is not None
    share.stream_crc32 ^= 1
    out = tmp_path / "plain.tar"
    with pytest.raises(BackupError, match=r"share\.tar\.gz .* not the .* that were verified"):
        decrypt_backup(source, out, KeyRing([KEY]), verified=verified)
    assert [p.name for p in tmp_path.iterdir() if "plain" in p.name] == []


def test_a_securetar_v1_copy_is_read_back_in_full(tmp_path: Path) -> None:
    """Asserts: a v1 part's gzip trailer is rewritten in the copy, so the copy is not the
    stream verified: it is verified in full instead, and holds the same files.  The backup
    is the real v1 file with its backup.json listing what it holds (as written, it lists
    parts it lacks: see test_corpus)."""
    name = "habackuptool_test_protected_v1.tar"
    key = CORPUS_KEYS[name] or ""
    source = tmp_path / "v1.tar"
    with tarfile.open(corpus_file(name)) as old, tarfile.open(source, "w") as new:
        for member in old.getmembers():
            data = old.extractfile(member).read()  # type: ignore[union-attr]
            if member.name == "backup.json":
                data = json.dumps({**json.loads(data), "homeassistant": None, "folders": ["test"]})
                data = data.encode()
                member.size = len(data)
            new.addfile(member, io.BytesIO(data))
    verified = verify_archive(source, keys=KeyRing([key]))
    assert verified.verdict is Verdict.VALID, verified.problems
    assert verified.inner[0].legacy_trailer
    out = tmp_path / "plain.tar"
    report = decrypt_backup(source, out, KeyRing([key]), verified=verified)
    assert report.verdict is Verdict.VALID
    assert report.level is Level.FULL
    assert not any("not read back" in note for note in report.notes)
    assert inner_files(out) == inner_files(source, key)


def test_a_v3_source_altered_since_verified_is_refused_as_changed(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a v3 source whose ciphertext changed after its verification (one byte in
    the middle of an inner archive) stops the copy where it no longer authenticates, with
    a message that says the source changed; no output is left, the source is untouched."""
    source = make_backup(password=KEY, securetar_version=3, entities=400)
    verified = verify_archive(source, keys=KeyRing([KEY]))
    inner = next(i for i in verified.inner if i.name == "homeassistant.tar.gz")
    data = bytearray(source.read_bytes())
    data[inner.offset + 512 + inner.size // 2] ^= 0xFF  # after the tar header of the member
    source.write_bytes(bytes(data))
    out = tmp_path / "plain.tar"
    with pytest.raises(BackupError, match=r"does not authenticate.*it changed since"):
        decrypt_backup(source, out, KeyRing([KEY]), verified=verified)
    assert [p.name for p in tmp_path.iterdir() if "plain" in p.name] == []
    assert source.read_bytes() == bytes(data)


def test_a_plain_backup_copied_by_decrypt_says_what_proves_it(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: decrypt of an unencrypted backup writes its bytes as they are, and its note
    says so, not that decrypted streams were checked (none were)."""
    source = make_backup()
    out = tmp_path / "plain.tar"
    report = decrypt_backup(source, out, KeyRing())
    assert report.verdict is Verdict.VALID
    assert report.notes == ["not read back: it holds the source's bytes, hashed as they were read"]
    assert inner_files(out) == inner_files(source)
