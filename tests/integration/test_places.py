"""Names are data, and every place belongs to one archive.

A backup's ``name`` is typed by a user; names derived from it become one safe path component
in the library, the decrypted copy, the browse folder and every destination key.  Two
different archives whose HA name and date coincide each get a place of their own, and a
place holding anything we did not write is never written.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.catalog import Catalog, PlaceTaken
from tests.builders import KEY, write_key
from tests.daemon_helpers import cli, sha256, write_config

MakeBackup = Callable[..., Path]
PLAIN = "Automatic_backup_2026.11.1_2026-11-20_04.45_00000000"


def _site(tmp_path: Path, *, browse: bool = True) -> Path:
    """A receiver keeping everything it can: original, decrypted, browse, a destination."""
    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path / "site", settle=0, keys=(key,))
    library = tmp_path / "site" / "library"
    text = config_path.read_text().replace(
        f"library: {{path: {library}}}",
        f"library: {{path: {library}, store: both, browse: {str(browse).lower()}}}",
    )
    usb = tmp_path / "site" / "usb"
    config_path.write_text(
        text + f"destinations: [{{name: usb, type: local, path: {usb}, encryption: none}}]\n"
    )
    return config_path


def _files(folder: Path) -> set[Path]:
    return {p for p in folder.rglob("*") if not p.is_dir()}


@pytest.mark.parametrize(
    "name",
    [
        "Before upgrade 1/2",
        "../../../../escaped",
        "x/../../../../../escaped",
        "line\n2026-11-20 04:45:00 INFO forged: all backups deleted",
        "Sicherung der Küche " * 20,  # over 255 bytes with HA's date suffix
        ".",
    ],
)
def test_names_from_backup_json_stay_inside_their_folders(
    make_backup: MakeBackup, tmp_path: Path, name: str
) -> None:
    """Asserts: the scan succeeds; every file it writes is inside the site's own folders;
    each place is one plain component; no log line is forged by the name."""
    config_path = _site(tmp_path)
    site = tmp_path / "site"
    shutil.copyfile(make_backup(name=name, password=KEY), site / "share" / "a.tar")
    outside_before = _files(tmp_path) - _files(site)
    result = cli(config_path, "scan", "--json")
    assert result.returncode == 0, result.stderr
    assert _files(tmp_path) - _files(site) == outside_before  # nothing written outside
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    (row,) = rows
    places = [Path(c["path"]) for c in row["copies"] if c["location"] != "usb"]
    assert {c["location"] for c in row["copies"]} == {
        "library",
        "library-decrypted",
        "library-browse",
        "usb",
    }
    for place in places:
        assert place.parent in (site / "library/home", site / "library/home/decrypted")
        assert not place.name.startswith(".") and len(place.name.encode()) <= 255
        assert place.exists()
    usb_key = next(c["path"] for c in row["copies"] if c["location"] == "usb")
    assert usb_key.count("/") == 1 and (site / "usb" / usb_key).is_file()
    for line in result.stderr.splitlines():
        assert not line.startswith("2026-11-20 04:45:00 INFO forged"), line


def test_two_archives_with_one_ha_name_get_places_of_their_own(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: both archives are kept whole in every location, each at its own place, the
    first under HA's suggested name; each sidecar describes the archive beside it."""
    config_path = _site(tmp_path)
    site = tmp_path / "site"
    first = make_backup(password=KEY, slug="aaaaaaaa")
    second = make_backup(password=KEY, slug="bbbbbbbb", entities=7)  # same name and date
    shutil.copyfile(first, site / "share" / "first.tar")
    assert cli(config_path, "scan").returncode == 0
    shutil.copyfile(second, site / "share" / "second.tar")
    assert cli(config_path, "scan").returncode == 0
    rows = {r["slug"]: r for r in json.loads(cli(config_path, "list", "--json").stdout)}
    for location in ("library", "library-decrypted", "library-browse", "usb"):
        places = [
            next(c["path"] for c in rows[slug]["copies"] if c["location"] == location)
            for slug in ("aaaaaaaa", "bbbbbbbb")
        ]
        assert len(set(places)) == 2, (location, places)
        assert PLAIN in places[0] and f"_{rows['bbbbbbbb']['sha256'][:8]}" in places[1]
    for slug in ("aaaaaaaa", "bbbbbbbb"):  # one archive, one name in every location
        stems = {Path(c["path"]).name.removesuffix(".tar") for c in rows[slug]["copies"]}
        assert len(stems) == 1, stems
    library = site / "library" / "home"
    assert sha256(library / f"{PLAIN}.tar") == sha256(first)
    (other,) = (p for p in library.glob("*.tar") if p.name != f"{PLAIN}.tar")
    assert sha256(other) == sha256(second)
    for tar, slug in ((library / f"{PLAIN}.tar", "aaaaaaaa"), (other, "bbbbbbbb")):
        meta = json.loads(tar.with_name(tar.stem + "_meta.json").read_text())
        assert meta["backup_id"] == slug
    usb = site / "usb" / "homeassistant"
    for slug in ("aaaaaaaa", "bbbbbbbb"):
        key = next(c["path"] for c in rows[slug]["copies"] if c["location"] == "usb")
        meta = json.loads((site / "usb" / key.replace(".tar", ".metadata.json")).read_text())
        assert meta["backup_id"] == slug
    assert len(list(usb.glob("*.tar"))) == 2


def test_a_place_holding_what_we_did_not_write_is_never_written(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: files a user put where HA's name would go are left byte for byte; our copies
    take the next place."""
    config_path = _site(tmp_path)
    site = tmp_path / "site"
    theirs = {
        site / "library/home" / f"{PLAIN}.tar": b"the user's own file",
        site / "library/home/decrypted" / f"{PLAIN}.tar": b"another one",
        site / "library/home" / PLAIN: b"a file where the browse folder would go",
    }
    for path, data in theirs.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    shutil.copyfile(make_backup(password=KEY), site / "share" / "a.tar")
    assert cli(config_path, "scan").returncode == 0
    for path, data in theirs.items():
        assert path.read_bytes() == data
    (row,) = json.loads(cli(config_path, "list", "--json").stdout)
    for copy in row["copies"]:
        if copy["location"] != "usb":
            assert Path(copy["path"]) not in theirs and Path(copy["path"]).exists()


def test_the_catalog_refuses_two_archives_at_one_place(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.db")
    first = catalog.begin_copy("a" * 64, "library", 0, key="/lib/x.tar")
    catalog.finish_copy(first, "/lib/x.tar", "a" * 64, verified=True, now=0)
    assert catalog.holder("library", "/lib/x.tar") == "a" * 64
    with pytest.raises(PlaceTaken):
        catalog.begin_copy("b" * 64, "library", 1, key="/lib/x.tar")
    other = catalog.begin_copy("b" * 64, "library", 1, key="/lib/y.tar")
    with pytest.raises(PlaceTaken):
        catalog.finish_copy(other, "/lib/x.tar", "b" * 64, verified=True, now=1)
    catalog.begin_copy("a" * 64, "usb", 2, key="/lib/x.tar")  # another location: its own


def test_long_colliding_names_fit_with_their_temporary_names(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: two archives whose 300-character names differ only at the end are both
    kept, with sidecars, in every location (255 bytes hold a name, its suffix and the
    temporary name it is written under)."""
    config_path = _site(tmp_path)
    site = tmp_path / "site"
    for letter in "AB":
        backup = make_backup(password=KEY, name="L" * 300 + letter, slug=f"{letter * 8}")
        shutil.copyfile(backup, site / "share" / f"{letter}.tar")
    result = cli(config_path, "scan")
    assert result.returncode == 0, result.stderr
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    assert len(rows) == 2
    for row in rows:
        assert {c["location"] for c in row["copies"]} == {
            "library",
            "library-decrypted",
            "library-browse",
            "usb",
        }
    for tar in (site / "library").rglob("*.tar"):
        assert tar.with_name(tar.stem + "_meta.json").is_file()
    assert len(list((site / "usb").rglob("*.metadata.json"))) == 2


def test_store_decrypted_mirrors_the_decrypted_copy_encrypted(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: with ``store: decrypted`` the library keeps no original, and the destination
    still gets every archive, encrypted again on its way (SecureTar, HA's key)."""
    from nas_receiver.haformat import KeyRing, Verdict, verify_archive

    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path / "site", settle=0, keys=(key,))
    library = tmp_path / "site" / "library"
    usb = tmp_path / "site" / "usb"
    config_path.write_text(
        config_path.read_text().replace(
            f"library: {{path: {library}}}", f"library: {{path: {library}, store: decrypted}}"
        )
        + f"destinations: [{{name: usb, type: local, path: {usb}, encryption: securetar}}]\n"
    )
    shutil.copyfile(make_backup(password=KEY), tmp_path / "site" / "share" / "a.tar")
    assert cli(config_path, "scan").returncode == 0
    (copy,) = usb.rglob("*.tar")
    report = verify_archive(copy, keys=KeyRing([KEY]))
    assert report.verdict is Verdict.VALID and report.securetar_versions
    meta = json.loads(copy.with_name(copy.stem + ".metadata.json").read_text())
    assert meta["protected"] is True


def test_a_second_catalog_never_replaces_another_archives_copy(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    """Asserts: a reinstalled receiver (a new catalog) sending a different archive under the
    same HA name to the same destination leaves the first one's copy as it was."""
    usb = tmp_path / "usb"
    destination = f"destinations: [{{name: usb, type: local, path: {usb}, encryption: none}}]\n"
    digests = []
    for index, slug in enumerate(("aaaaaaaa", "bbbbbbbb")):
        config_path = write_config(tmp_path / f"site{index}", settle=0)
        config_path.write_text(config_path.read_text() + destination)
        backup = make_backup(slug=slug, entities=5 + index)  # same name and date
        shutil.copyfile(backup, tmp_path / f"site{index}" / "share" / "a.tar")
        assert cli(config_path, "scan").returncode == 0
        digests.append(sha256(backup))
    stored = {sha256(p) for p in usb.rglob("*.tar")}
    assert stored == set(digests)  # both there, side by side
