"""Backups written with securetar the way HA's supervisor and core write them verify valid."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from securetar import SecureTarArchive

from nas_receiver.haformat import KeyRing, Level, Verdict, verify_archive
from tests.builders import KEY, OTHER_KEY

MakeBackup = Callable[..., Path]


# What each of HA's writers can produce: HA core 2024 never encrypted; the v1 era's SecureTar
# v1 cannot be written by today's securetar (the real corpus file covers it).
WRITTEN = [
    *[(w, c, v) for w in ("supervisor", "core") for c in (True, False) for v in (None, 2, 3)],
    ("core2024", True, None),
    ("v1", True, None),
    ("v1", False, None),
]


@pytest.mark.parametrize(("writer", "compressed", "version"), WRITTEN)
def test_written_backups_are_valid(
    make_backup: MakeBackup, writer: str, compressed: bool, version: int | None
) -> None:
    path = make_backup(
        writer=writer,
        compressed=compressed,
        password=KEY if version else None,
        securetar_version=version or 3,
    )
    report = verify_archive(path, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID, report.problems
    assert report.securetar_versions == ([version] if version else [])
    names = sorted(inner.name for inner in report.inner)
    suffix = ".tar.gz" if compressed else ".tar"
    parts = ["homeassistant"]
    if writer not in ("core", "core2024"):  # HA core backs up its configuration only
        parts += ["core_mosquitto", "share", "ssl"]
    assert names == sorted(f"{n}{suffix}" for n in parts)
    ha = next(i for i in report.inner if i.name.startswith("homeassistant"))
    assert ha.files is not None and ha.files >= 10  # every member of the inner tar was walked
    assert report.backup is not None
    assert report.backup.kind == ("automatic" if writer in ("supervisor", "core") else "manual")
    assert "homeassistant" not in report.backup.folders  # v1 and 2024 listed it; dropped
    assert report.to_dict()["sha256"] == report.sha256


def test_a_v1_era_protected_string_means_encrypted(make_backup: MakeBackup) -> None:
    """Supervisor before 2022 stored ``protected`` as a one-character string."""
    path = make_backup(writer="v1", password=KEY, securetar_version=2)
    report = verify_archive(path, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID, report.problems
    assert report.backup is not None and report.backup.protected is True
    assert report.backup.version == 1


@pytest.mark.parametrize("version", [2, 3])
def test_securetar_itself_reads_what_we_call_valid(make_backup: MakeBackup, version: int) -> None:
    path = make_backup(password=KEY, securetar_version=version)
    with SecureTarArchive(path, "r", password=KEY) as archive:
        member = archive.tar.getmember("homeassistant.tar.gz")
        with (
            archive.extract_tar(member) as stream,
            tarfile.open(fileobj=io.BytesIO(stream.read(1 << 30)), mode="r:gz") as inner,
        ):
            names = [m.name.removeprefix("./") for m in inner]
            assert "data/.storage/core.entity_registry" in names
            assert "homeassistant.json" in names


def test_key_ring_tries_keys_in_order(make_backup: MakeBackup) -> None:
    path = make_backup(password=KEY, securetar_version=3)
    assert verify_archive(path, keys=KeyRing([OTHER_KEY, KEY])).verdict is Verdict.VALID
    assert verify_archive(path, keys=KeyRing([OTHER_KEY])).verdict is Verdict.WRONG_KEY


def test_quick_reads_headers_only(make_backup: MakeBackup) -> None:
    path = make_backup(password=KEY, securetar_version=2)
    report = verify_archive(path, level=Level.QUICK, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID
    assert report.sha256 is None
    assert all(inner.files is None for inner in report.inner)


def test_several_addons_and_folders(make_backup: MakeBackup) -> None:
    path = make_backup(
        addons=("core_mosquitto", "a0d7b954_nodered", "core_zwave_js"),
        folders=("share", "ssl", "media", "addons/local"),
        password=KEY,
    )
    report = verify_archive(path, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID, report.problems
    assert "addons_local.tar.gz" in {inner.name for inner in report.inner}
