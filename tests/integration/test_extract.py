"""Extraction for recovery: what was asked, nothing outside the folder, nothing overwritten."""

from __future__ import annotations

import json
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.errors import OutputExistsError, UnsafeArchiveError
from nas_receiver.haformat import KeyRing
from nas_receiver.haformat.extract import extract_backup
from tests.builders import (
    KEY,
    backup_with_ha_part,
    hostile_ha_entries,
    link_chain,
    tar_file,
    tar_link,
    tar_member,
)

MakeBackup = Callable[..., Path]


def test_extracts_everything_by_default(make_backup: MakeBackup, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = extract_backup(make_backup(password=KEY), out, KeyRing([KEY]))
    assert result.problems == [] and result.refused == []
    assert json.loads((out / "homeassistant/data/.storage/core.entity_registry").read_text())
    assert (out / "core_mosquitto/addon.json").exists()
    assert (out / "ssl").is_dir() and (out / "backup.json").exists()
    assert result.files > 10


def test_member_and_path_choose(make_backup: MakeBackup, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = extract_backup(
        make_backup(password=KEY, securetar_version=2),
        out,
        KeyRing([KEY]),
        members=["homeassistant"],
        paths=[".storage/*"],
    )
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert files == [
        "homeassistant/data/.storage/core.config_entries",
        "homeassistant/data/.storage/core.device_registry",
        "homeassistant/data/.storage/core.entity_registry",
    ]
    assert result.archives == ["homeassistant.tar.gz"]


def test_hostile_members_are_refused_and_nothing_lands_outside(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    entries = hostile_ha_entries("/etc/evil-absolute")
    backup = backup_with_ha_part(tmp_path / "hostile.tar", entries)
    out = tmp_path / "work" / "out"
    result = extract_backup(backup, out, KeyRing([KEY]))
    assert (out / "homeassistant/good.txt").read_bytes() == b"fine"
    refused = " ".join(result.refused)
    for name in ("escape.txt", "escape2.txt", "abs-link", "up-link", "hard-out"):
        assert name in refused, result.refused
    # an absolute name is kept inside the folder (leading "/" stripped), never written at /
    assert (out / "homeassistant/etc/evil-absolute").read_bytes() == b"x"
    assert not Path("/etc/evil-absolute").exists()
    assert "dev/sda" in refused
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "work" / "escape.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    inside = [p for p in out.rglob("*") if p.is_symlink() or p.is_char_device()]
    assert inside == []


def test_decompression_bomb_stops_at_the_cap(tmp_path: Path) -> None:
    backup = backup_with_ha_part(tmp_path / "bomb.tar", [tar_file("zeros.bin", bytes(8 << 20))])
    assert backup.stat().st_size < 200_000  # 8 MiB of zeros compresses to almost nothing
    threads = threading.active_count()
    with pytest.raises(UnsafeArchiveError, match="cap"):
        extract_backup(backup, tmp_path / "out", KeyRing([KEY]), max_bytes=1 << 20)
    written = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written <= 1 << 20
    assert threading.active_count() == threads  # the thread inflating ahead was stopped


def test_never_overwrites_without_force(make_backup: MakeBackup, tmp_path: Path) -> None:
    backup = make_backup()
    out = tmp_path / "out"
    (out / "homeassistant/data").mkdir(parents=True)
    (out / "homeassistant/data/configuration.yaml").write_text("mine")
    with pytest.raises(OutputExistsError, match="--force"):
        extract_backup(backup, out, KeyRing(), members=["homeassistant"])
    assert (out / "homeassistant/data/configuration.yaml").read_text() == "mine"
    extract_backup(backup, out, KeyRing(), members=["homeassistant"], force=True)
    assert "default_config" in (out / "homeassistant/data/configuration.yaml").read_text()


def test_damaged_inner_archive_is_reported_and_others_still_extract(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    backup = make_backup(password=KEY)
    with tarfile.open(backup) as tar:
        member = tar.getmember("share.tar.gz")
    with backup.open("r+b") as file:
        file.seek(member.offset_data + member.size // 2)
        file.write(b"\xff\xff")
    threads = threading.active_count()
    result = extract_backup(backup, tmp_path / "out", KeyRing([KEY]))
    assert threading.active_count() == threads  # each inner archive's inflating thread ended
    assert any(p.startswith("share.tar.gz") for p in result.problems)
    assert (tmp_path / "out/homeassistant/data/configuration.yaml").exists()
    assert (tmp_path / "out/ssl").is_dir()


def test_unknown_member_name_is_a_problem(make_backup: MakeBackup, tmp_path: Path) -> None:
    result = extract_backup(make_backup(), tmp_path / "o", KeyRing(), members=["nope"])
    assert result.problems == ["nope: no such inner archive"]


def test_a_hard_link_to_a_refused_link_is_refused_too(tmp_path: Path) -> None:
    """Asserts: a hard link naming a symbolic link the filter refused (to /etc/shadow, to
    /dev/zero) is refused as well, never written as that link (tarfile makes a hard link
    whose target is missing from the member it names); a hard link to a file unpacked
    before it is a file with that content."""
    entries = [
        tar_link("data/s", "/etc/shadow"),
        tar_link("data/hl", "data/s", tarfile.LNKTYPE),
        tar_link("data/z", "/dev/zero"),
        tar_link("data/configuration.yaml", "data/z", tarfile.LNKTYPE),
        tar_link("data/missing-hl", "data/nothing-there", tarfile.LNKTYPE),
        tar_file("data/real.txt", b"real"),
        tar_link("data/real-hl", "data/real.txt", tarfile.LNKTYPE),
    ]
    backup = backup_with_ha_part(tmp_path / "links.tar", entries)
    out = tmp_path / "out"
    result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"])
    links = [p for p in out.rglob("*") if p.is_symlink()]
    assert links == []
    refused = " ".join(result.refused)
    for name in ("data/s", "data/hl", "data/z", "data/configuration.yaml", "data/missing-hl"):
        assert f"{name}:" in refused, result.refused
    assert (out / "homeassistant/data/real-hl").read_bytes() == b"real"


def test_a_name_the_disk_cannot_hold_is_left_out_and_the_rest_unpacked(tmp_path: Path) -> None:
    """Asserts: a member whose name is too long for the filesystem, and a file under a name
    that is already a file, are left out (each said), and every other member is
    unpacked: the extraction does not fail for one member's name."""
    folder = tarfile.TarInfo("data/clash")
    folder.type = tarfile.DIRTYPE
    entries = [
        tar_file("data/" + "n" * 300, b"long"),
        tar_file("data/clash", b"a file"),
        (folder, None),
        tar_file("data/clash/inside.txt", b"x"),
        tar_file("data/after.txt", b"after"),
    ]
    backup = backup_with_ha_part(tmp_path / "names.tar", entries)
    out = tmp_path / "out"
    result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"])
    assert (out / "homeassistant/data/after.txt").read_bytes() == b"after"
    assert (out / "homeassistant/data/clash").read_bytes() == b"a file"
    refused = " ".join(result.refused)
    assert "nnnn" in refused and "File name too long" in refused, result.refused
    assert "data/clash/inside.txt: not written" in refused, result.refused
    assert result.problems == []


def test_a_hard_link_whose_own_link_fails_never_falls_back_to_the_member_it_names(
    tmp_path: Path,
) -> None:
    """Asserts: a hard link whose name is taken already (so the link itself fails) is never
    written as tarfile's fallback writes it, from the last member of the name it links to,
    unfiltered: here that member is a symbolic link to /etc/shadow the filter refused.
    Without --force the taken name is an error, as for a file; with it, the hard link is
    made to the file unpacked under that name, and no symbolic link is written."""
    entries = [
        tar_file("data/s", b"x"),
        tar_link("data/s", "/etc/shadow"),
        tar_file("data/hl", b"y"),
        tar_link("data/hl", "data/s", tarfile.LNKTYPE),
    ]
    backup = backup_with_ha_part(tmp_path / "fallback.tar", entries)
    with pytest.raises(OutputExistsError):
        extract_backup(backup, tmp_path / "strict", KeyRing([KEY]), members=["homeassistant"])
    out = tmp_path / "forced"
    extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"], force=True)
    assert [p for p in out.rglob("*") if p.is_symlink()] == []
    assert (out / "homeassistant/data/hl").read_bytes() == b"x"
    assert (out / "homeassistant/data/hl").stat().st_ino == (
        out / "homeassistant/data/s"
    ).stat().st_ino


def test_a_link_never_replaces_a_users_file_without_force(tmp_path: Path) -> None:
    """Asserts: extracting into a folder that holds the user's file, a member that is a
    symbolic link of the same name is refused like a file would be (tarfile would remove
    the file to make the link); the user's file is as it was."""
    backup = backup_with_ha_part(tmp_path / "link.tar", [tar_link("data/user.txt", "other.txt")])
    out = tmp_path / "out"
    (out / "homeassistant/data").mkdir(parents=True)
    (out / "homeassistant/data/user.txt").write_text("MY NOTES")
    with pytest.raises(OutputExistsError):
        extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"])
    user = out / "homeassistant/data/user.txt"
    assert not user.is_symlink() and user.read_text() == "MY NOTES"


def test_a_link_onto_a_folder_never_falls_back_to_the_member_it_names(tmp_path: Path) -> None:
    """Asserts: a symbolic link whose name is a folder unpacked before it is never written
    as tarfile's fallback writes it (from the member the link names, unfiltered: here a
    refused symbolic link to /etc/shadow); without force the taken name is an error, with
    it the link is refused and the folder stays."""
    folder = tarfile.TarInfo("data/d")
    folder.type = tarfile.DIRTYPE
    entries = [
        tar_link("data/f", "/etc/shadow"),
        (folder, None),
        tar_file("data/d/kept.txt", b"kept"),
        tar_link("data/d", "f"),
    ]
    backup = backup_with_ha_part(tmp_path / "onto.tar", entries)
    with pytest.raises(OutputExistsError):
        extract_backup(backup, tmp_path / "strict", KeyRing([KEY]), members=["homeassistant"])
    out = tmp_path / "forced"
    result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"], force=True)
    assert [p for p in out.rglob("*") if p.is_symlink()] == []
    assert (out / "homeassistant/data/d/kept.txt").read_bytes() == b"kept"
    assert "data/d: a symbolic link where a folder" in " ".join(result.refused)


def test_a_chain_of_links_past_what_realpath_resolves_writes_nothing_outside(
    tmp_path: Path,
) -> None:
    """Asserts: the CVE-2025-4517 chain (links whose resolved path outgrows what realpath
    follows, so tarfile's data filter judges it as text while the kernel follows the
    links) writes nothing outside the folder, with or without force: links that climb
    with '..' are refused whatever they resolve to."""
    outside = tmp_path / "outside"
    outside.mkdir()
    entries, via = link_chain("")
    deep_link = f"{via}/{'l' * 254}"
    entries += [
        tar_member(deep_link, tarfile.SYMTYPE, linkname="../" * 16),
        tar_member("escape", tarfile.SYMTYPE, linkname=deep_link + "/.." * 17 + str(outside)),
        tar_file("escape/pwned.txt", b"written outside\n"),
    ]
    backup = backup_with_ha_part(tmp_path / "chain.tar", entries)
    for force in (False, True):
        out = tmp_path / f"out-{force}"
        result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"], force=force)
        assert list(outside.iterdir()) == []
        assert "escape: " in " ".join(result.refused), result.refused


def test_a_link_that_cannot_be_made_writes_nothing_in_its_place(tmp_path: Path) -> None:
    """Asserts: a link the system cannot make (a target over 4096 bytes that climbs and
    comes back) is refused, and nothing else is written in its place: not the refused
    link to outside nor the device it would name (tarfile's fallback wrote either)."""
    outside = tmp_path / "outside"
    long_way = "../" + "x/../" * 1000 + "data/evil"
    for evil in (
        tar_link("data/evil", str(outside)),
        tar_member("data/evil", tarfile.CHRTYPE, devmajor=1, devminor=3),
    ):
        backup = backup_with_ha_part(
            tmp_path / "fall.tar",
            [tar_file("data/ok.txt", b"ok"), evil, tar_link("data/s", long_way)],
        )
        out = tmp_path / f"out-{evil[0].type!r}"
        result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"])
        made = [p for p in out.rglob("*") if p.is_symlink() or p.is_char_device()]
        assert made == [], made
        assert (out / "homeassistant/data/ok.txt").read_bytes() == b"ok"
        assert "data/s: " in " ".join(result.refused), result.refused


def test_a_member_deeper_than_a_path_can_reach_is_left_out_and_the_tree_stays_walkable(
    tmp_path: Path,
) -> None:
    """Asserts: a file whose place (through links that only lead down) lies deeper than a
    path the system takes is left out, and said; the rest is unpacked, and the tree can
    be made read-only and removed (the daemon's own walks take it)."""
    from nas_receiver.library import make_read_only, remove_path

    entries, via = link_chain("data")
    entries += [
        tar_file(f"data/{via}/{'f' * 200}", b"deep\n"),
        tar_file("data/after.txt", b"after\n"),
    ]
    backup = backup_with_ha_part(tmp_path / "deep.tar", entries)
    out = tmp_path / "out"
    result = extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"])
    assert (out / "homeassistant/data/after.txt").read_bytes() == b"after\n"
    assert "fffff" in " ".join(result.refused) and "bytes or more" in " ".join(result.refused)
    make_read_only(out)
    remove_path(out)
    assert not out.exists()


def _with_pax(
    name: str, headers: dict[str, str], kind: bytes = tarfile.REGTYPE
) -> tuple[tarfile.TarInfo, bytes | None]:
    """A member whose PAX records say ``headers`` (a path, a link, a time)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.pax_headers = headers
    if kind != tarfile.REGTYPE:
        return info, None
    info.size = 1
    return info, b"x"


ODD_MEMBERS = {
    "a NUL in a name": [_with_pax("data/nul", {"path": "data/a\x00b"})],
    "a NUL in a link": [_with_pax("data/l", {"linkpath": "ok\x00/x"}, tarfile.SYMTYPE)],
    "a time of 1e300": [_with_pax("data/big-time", {"mtime": "1e300"})],
    "a time that is not a number": [_with_pax("data/nan-time", {"mtime": "nan"})],
    "a file under a link to nothing": [tar_link("data/s", "y"), tar_file("data/s/sub/f", b"f")],
    "a folder under a refused link": [
        tar_link("data/a", "/etc"),
        tar_link("data/b", "a"),
        tar_member("data/b/x/d", tarfile.DIRTYPE),
    ],
    "a link to the empty name": [tar_link("data/e", "")],
    "a name ending in /.": [
        tar_file("data/real/f", b"f"),
        tar_link("data/l", "real"),
        tar_file("data/l/.", b"x"),
    ],
}


@pytest.mark.parametrize("case", list(ODD_MEMBERS))
def test_a_member_the_system_refuses_is_left_out_and_the_rest_unpacked(
    tmp_path: Path, case: str
) -> None:
    """Asserts: members whose values the system refuses (a NUL in a name or link, a time
    out of range, a place under a link that leads nowhere, an empty link, a '.' inside a
    name) never end the unpacking: each such member is left out (said) or written with a
    time of 0, and the members after it are unpacked, with and without force (the browse
    copy of such a valid backup failed its job at every try)."""
    entries = [tar_file("data/ok", b"ok"), *ODD_MEMBERS[case], tar_file("data/after", b"after")]
    backup = backup_with_ha_part(tmp_path / "odd.tar", entries)
    for force in (False, True):
        out = tmp_path / f"out-{force}"
        extract_backup(backup, out, KeyRing([KEY]), members=["homeassistant"], force=force)
        assert (out / "homeassistant/data/after").read_bytes() == b"after"
        assert [
            p for p in out.rglob("*") if p.is_symlink() and p.resolve().is_relative_to("/etc")
        ] == []
