"""Home Assistant's own code judges what nas-receiver writes (HA 2025.4.4, tests/ha_judge.py).

Backups are written as HA's writers write them (tests/builders.py, and HA core's own writer
run in HA's venv), taken in by the receiver as a user's NAS would (library with a decrypted
copy, a local destination), and then HA itself:

- reads every sidecar we wrote with ``AgentBackup.from_dict``, and its ``suggested_filename``
  is the name of the file or object beside it;
- reads every library copy with its own ``read_backup``, which must agree with our sidecar;
- restores every library copy and decrypted copy with ``homeassistant.backup_restore`` to
  the very configuration folder the backup was made from;
- lists the library folders through its Synology DSM backup agent and downloads each
  backup's bytes.

HA 2025.4.4 restores SecureTar v1 and v2 only (v3 came with 2026.3) and only HA core's
``data/`` layout (supervisor restores the v1 layout): those copies are judged by listing,
and their decrypted copies by restoring.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.haformat.model import read_as_written
from nas_receiver.haformat.model_lax import validate
from nas_receiver.report import list_archives
from tests.builders import (
    KEY,
    BackupSpec,
    make_addon_data,
    make_folder,
    make_ha_config,
    write_backup_from,
    write_key,
)
from tests.conftest import Judge, corpus_file
from tests.daemon_helpers import write_config

# HA 2025.4.4 refuses to restore a backup of a newer HA; these are backups of 2025.
HA_VERSION = "2025.4.0"
DATE = datetime(2025, 4, 20, 4, 45, tzinfo=UTC)
# What HA's restore writes or keeps by itself, never part of the configuration compared.
RESTORE_OWN = {".HA_RESTORE_RESULT"}


@dataclass(frozen=True)
class Made:
    """A backup on the share and the configuration folder it was made from."""

    name: str
    tar: Path
    config: Path
    restorable_by_core: bool  # HA 2025.4.4's restore can read it as it is
    encrypted: bool  # so the library also keeps a decrypted copy


VARIANTS: dict[str, tuple[BackupSpec, bool]] = {
    "supervisor-v2": (BackupSpec(writer="supervisor", password=KEY, securetar_version=2), True),
    "supervisor-v3": (BackupSpec(writer="supervisor", password=KEY, securetar_version=3), False),
    "supervisor-plain": (BackupSpec(writer="supervisor"), True),
    "core-v2": (BackupSpec(writer="core", password=KEY, securetar_version=2), True),
    "core2024-plain": (BackupSpec(writer="core2024"), True),
    "v1-plain": (BackupSpec(writer="v1"), False),
    "v1-protected": (BackupSpec(writer="v1", password=KEY, securetar_version=2), False),
}


def _spec(spec: BackupSpec, index: int, name: str) -> BackupSpec:
    return BackupSpec(
        **{
            **spec.__dict__,
            "name": f"Backup {name}",
            "slug": f"{index:08x}",
            "date": DATE + timedelta(days=index),
            "ha_version": HA_VERSION,
            "entities": 12,
        }
    )


def _make(root: Path, index: int, name: str, spec: BackupSpec, by_core: bool) -> Made:
    work = root / "work" / name
    config = make_ha_config(work / "config", entities=12, seed=index, media_kib=8)
    parts: list[tuple[str, Path]] = [("homeassistant", config)]
    if spec.writer not in ("core", "core2024"):
        parts += [
            ("core_mosquitto", make_addon_data(work / "addon", "core_mosquitto")),
            ("share", make_folder(work / "share", "share")),
            ("ssl", make_folder(work / "ssl", "ssl")),
        ]
    tar = write_backup_from(root / "share" / f"{name}.tar", _spec(spec, index, name), parts)
    return Made(name, tar, config, by_core, spec.password is not None)


def _made_by_ha(root: Path, ha_judge: Judge, index: int) -> Made:
    """A backup written by HA core's own writer, from its own manager's backup.json."""
    config = make_ha_config(root / "work" / "ha-core" / "config", entities=12, seed=index)
    tar = root / "share" / "ha-core.tar"
    (result,) = ha_judge(
        [
            {
                "op": "core_write",
                "config_dir": str(config),
                "path": str(tar),
                "name": "Backup written by HA",
                "date": (DATE + timedelta(days=index)).astimezone().isoformat(),
                "slug": f"{index:08x}",
                "database_included": True,
                "password": KEY,
                "extra": {"instance_id": "0123abcd", "with_automatic_settings": True},
            }
        ]
    )
    assert result["ok"], result
    return Made("ha-core", tar, config, True, True)


@dataclass
class Site:
    root: Path
    made: list[Made]
    library: Path
    usb: Path
    rows: list[dict[str, Any]]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, ha_judge: Judge) -> Site:
    """Every variant taken in by one receiver: library (original and decrypted), drill,
    and a local destination in HA's S3 layout."""
    root = tmp_path_factory.mktemp("ha-judged")
    key = write_key(root / "key.txt", KEY)
    usb = root / "usb"
    config_path = write_config(root, settle=0, keys=(key,))
    text = config_path.read_text().replace(
        f"library: {{path: {root / 'library'}}}",
        f"library: {{path: {root / 'library'}, store: both}}",
    )
    config_path.write_text(
        text + f"destinations: [{{name: usb, type: local, path: {usb}, encryption: none}}]\n"
    )
    made = [_make(root, i, name, *VARIANTS[name]) for i, name in enumerate(VARIANTS)]
    made.append(_made_by_ha(root, ha_judge, len(made)))
    config = load_config(config_path)
    assert scan_once(config) == ["valid"] * len(made)
    rows = list_archives(Catalog(config.catalog_path))
    return Site(root, made, config.library.path / "home", usb, rows)


def _sidecar_of(tar: Path) -> Any:
    return json.loads(tar.with_name(tar.stem + "_meta.json").read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name not in RESTORE_OWN
    }


def _sidecars(folder: Path, suffix: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"*{suffix}") if not p.name.startswith("."))


def _copies(site: Site, made: Made, location: str) -> Path:
    row = next(r for r in site.rows if r["sha256"] == _sha256(made.tar))
    (copy,) = [c for c in row["copies"] if c["location"] == location]
    return Path(copy["path"])


def test_backup_json_of_every_writer_is_read_without_the_lax_model(site: Site) -> None:
    """backup.json as HA core's own writer (run in HA's venv) and our builders of each
    writer make it is read as written: the pydantic model (slow to load) is for the rest."""
    for made in site.made:
        with tarfile.open(made.tar) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("backup.json"))
            raw = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
        assert read_as_written(raw) == validate(raw), made.name
    assert any(made.name == "ha-core" for made in site.made)


def test_ha_reads_every_sidecar_we_write(site: Site, ha_judge: Judge) -> None:
    """AgentBackup.from_dict accepts every _meta.json and .metadata.json, and HA's suggested
    file name for it is the name of the .tar beside it (which HA's S3 agent recomputes)."""
    sidecars = [
        *((p, "_meta.json") for p in _sidecars(site.library, "_meta.json")),
        *((p, "_meta.json") for p in _sidecars(site.library / "decrypted", "_meta.json")),
        *((p, ".metadata.json") for p in _sidecars(site.usb / "homeassistant", ".metadata.json")),
    ]
    assert len(sidecars) == 2 * len(site.made) + sum(m.encrypted for m in site.made)
    verdicts = ha_judge(
        [{"op": "agent_backup", "json": json.loads(path.read_text())} for path, _ in sidecars]
    )
    for (path, suffix), verdict in zip(sidecars, verdicts, strict=True):
        assert verdict["ok"], f"{path.name}: HA refuses it: {verdict['error']}"
        tar_name = path.name.removesuffix(suffix) + ".tar"
        assert verdict["suggested_filename"] == tar_name
        assert (path.parent / tar_name).is_file()


def test_ha_reads_each_library_copy_as_our_sidecar_says(site: Site, ha_judge: Judge) -> None:
    """HA's own read_backup of each copy (original and decrypted) equals what our sidecar
    tells HA about it: HA lists the folder exactly as it would list the files."""
    tars = [
        *sorted(site.library.glob("*.tar")),
        *sorted((site.library / "decrypted").glob("*.tar")),
    ]
    assert len(tars) == len(site.made) + sum(m.encrypted for m in site.made)
    read = ha_judge([{"op": "read_backup", "path": str(t)} for t in tars])
    told = ha_judge(
        [
            {
                "op": "agent_backup",
                "json": json.loads(t.with_name(t.stem + "_meta.json").read_text()),
            }
            for t in tars
        ]
    )
    for tar, by_ha, ours in zip(tars, read, told, strict=True):
        assert by_ha["ok"], f"{tar.name}: {by_ha['error']}"
        assert _truthful(by_ha["backup"]) == ours["backup"], tar.name


def _truthful(backup: dict[str, Any]) -> dict[str, Any]:
    """HA's read_backup passes a v1-era ``protected: "c"`` through as it is; supervisor and
    we read any string as true."""
    return {**backup, "protected": bool(backup["protected"])}


def test_ha_restores_every_copy_to_the_original_configuration(site: Site, ha_judge: Judge) -> None:
    """homeassistant.backup_restore restores the library copy and the decrypted copy of each
    backup to the configuration folder it was made from, byte for byte."""
    operations, expected = [], []
    for made in site.made:
        if made.name.startswith("v1"):
            continue  # the v1 layout is supervisor's to restore; the drill covers it
        copies = [("library-decrypted", None)] if made.encrypted else []
        if made.restorable_by_core:
            copies.append(("library", KEY if made.encrypted else None))
        for location, password in copies:
            target = site.root / "restored" / made.name / location
            operations.append(
                {
                    "op": "restore",
                    "path": str(_copies(site, made, location)),
                    "config_dir": str(target),
                    "password": password,
                }
            )
            expected.append((made, target))
    assert len(operations) >= 9
    for (made, target), verdict in zip(expected, ha_judge(operations), strict=True):
        assert verdict["ok"] and verdict["result"]["success"], (made.name, verdict)
        assert _tree(target) == _tree(made.config), f"{made.name}: restored config differs"


def test_ha_dsm_agent_lists_and_downloads_every_library_backup(site: Site, ha_judge: Judge) -> None:
    """HA's Synology DSM backup agent, pointed at the library folder (and at the decrypted
    copies), lists every backup and downloads the very bytes of each."""
    folders = [site.library, site.library / "decrypted"]
    verdicts = ha_judge(
        [
            {
                "op": "dsm_list",
                "root": str(site.root),
                "share": "library",
                "path": str(folder.relative_to(site.root / "library")),
            }
            for folder in folders
        ]
    )
    for folder, verdict in zip(folders, verdicts, strict=True):
        assert verdict["ok"], verdict
        listed = {(b["file"], b["sha256"]) for b in verdict["backups"]}
        assert listed == {(t.name, _sha256(t)) for t in folder.glob("*.tar")}
    assert len(verdicts[0]["backups"]) == len(site.made)


def test_the_drill_finds_each_backup_restorable(site: Site) -> None:
    for row in site.rows:
        assert row["drill"]["verdict"] == "restorable", (row["name"], row["drill"])


def test_real_supervisor_backups_give_sidecars_ha_reads(tmp_path: Path, ha_judge: Judge) -> None:
    """The real supervisor files (../shared/corpus/real) through the receiver: HA accepts the
    sidecars and agrees with them."""
    keys = [write_key(tmp_path / f"k{i}.txt", k) for i, k in enumerate(("test", "supervisor"))]
    config = load_config(write_config(tmp_path, settle=0, keys=tuple(keys)))
    for name in (
        "supervisor_backup_example.tar",
        "supervisor_backup_example_enc_v2.tar",
        "supervisor_backup_example_sec_v3.tar",
    ):
        shutil.copyfile(corpus_file(name), config.sources[0].path / name)
    assert scan_once(config) == ["valid"] * 3
    tars = sorted((config.library.path / "home").glob("*.tar"))
    operations = [{"op": "read_backup", "path": str(t)} for t in tars] + [
        {"op": "agent_backup", "json": _sidecar_of(t)} for t in tars
    ]
    verdicts = ha_judge(operations)
    for tar, by_ha, ours in zip(tars, verdicts[: len(tars)], verdicts[len(tars) :], strict=True):
        assert by_ha["ok"] and ours["ok"], (tar.name, by_ha, ours)
        assert by_ha["backup"] == ours["backup"]
