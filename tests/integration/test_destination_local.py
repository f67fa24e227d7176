"""The local destination: HA's layout, our marker, checked copies, foreign objects untouched."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from nas_receiver.destinations.base import MARKER, DestinationError, Payload
from nas_receiver.destinations.local import LocalDestination
from nas_receiver.errors import OutputExistsError
from nas_receiver.haformat import verify_archive
from nas_receiver.library import sha256_of
from tests.builders import AGENT_BACKUP_KEYS

MakeBackup = Callable[..., Path]
KEY = "homeassistant/Automatic_backup_2026.11.1_2026-11-20_04.45_00000000.tar"


def _put(tmp_path: Path, make_backup: MakeBackup) -> tuple[LocalDestination, Path, str]:
    backup = make_backup()
    report = verify_archive(backup)
    assert report.backup is not None and report.sha256 is not None
    usb = LocalDestination("usb", tmp_path / "usb")
    stored = usb.put(
        Payload.file(backup, report.sha256), KEY, report.backup.agent_backup(report.size)
    )
    assert stored.ours and stored.size == backup.stat().st_size
    return usb, backup, report.sha256


def test_put_lays_out_like_ha_and_marks_ours(make_backup: MakeBackup, tmp_path: Path) -> None:
    usb, backup, sha = _put(tmp_path, make_backup)
    stored = tmp_path / "usb" / KEY
    assert sha256_of(stored) == sha
    sidecar = json.loads(stored.with_name(stored.name[:-4] + ".metadata.json").read_text())
    assert set(sidecar) >= AGENT_BACKUP_KEYS
    assert sidecar[MARKER] == {"sha256": sha}
    assert usb.verify(KEY, sha)
    assert [(o.key, o.ours) for o in usb.list()] == [(KEY, True)]
    again = usb.put(Payload.file(backup, sha), KEY, sidecar)  # idempotent
    assert again.sha256 == sha
    assert [p.name for p in stored.parent.iterdir() if p.name.startswith(".")] == []


def test_get_and_never_overwrite(make_backup: MakeBackup, tmp_path: Path) -> None:
    usb, _backup, sha = _put(tmp_path, make_backup)
    out = tmp_path / "restored.tar"
    usb.get(KEY, out)
    assert sha256_of(out) == sha
    with pytest.raises(OutputExistsError):
        usb.get(KEY, out)


def test_damage_is_seen_and_delete_removes_both(make_backup: MakeBackup, tmp_path: Path) -> None:
    usb, _backup, sha = _put(tmp_path, make_backup)
    stored = tmp_path / "usb" / KEY
    blob = bytearray(stored.read_bytes())
    blob[1000] ^= 1
    stored.write_bytes(bytes(blob))
    assert not usb.verify(KEY, sha)
    usb.delete(KEY)
    assert list((tmp_path / "usb" / "homeassistant").iterdir()) == []


def test_objects_we_did_not_write_are_never_touched(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    usb = LocalDestination("usb", tmp_path / "usb")
    foreign = tmp_path / "usb" / KEY
    foreign.parent.mkdir(parents=True)
    foreign.write_bytes(b"the user's own file")
    assert [(o.key, o.ours) for o in usb.list()] == [(KEY, False)]
    with pytest.raises(DestinationError, match="not written by nas-receiver") as err:
        usb.delete(KEY)
    assert err.value.permanent
    backup = make_backup()
    with pytest.raises(DestinationError, match="did not write; not replaced"):
        usb.put(Payload.file(backup, sha256_of(backup)), KEY, {})
    assert foreign.read_bytes() == b"the user's own file"
    with pytest.raises(DestinationError, match="leaves the folder"):
        usb.verify("../outside.tar", "0" * 64)


def test_reconcile_flags_a_changed_copy(make_backup: Callable[..., Path], tmp_path: Path) -> None:
    from nas_receiver.config import load_config
    from nas_receiver.daemon import scan_once
    from tests.daemon_helpers import cli, write_config

    usb = tmp_path / "usb"
    config_path = write_config(tmp_path, settle=0)
    config_path.write_text(
        config_path.read_text() + f"destinations: [{{name: usb, type: local, path: {usb}}}]\n"
    )
    shutil.copyfile(make_backup(), tmp_path / "share" / "a.tar")
    assert scan_once(load_config(config_path)) == ["valid"]
    (sidecar,) = (usb / "homeassistant").glob("*.metadata.json")
    changed = json.loads(sidecar.read_text())
    changed["nas_receiver"]["sha256"] = "f" * 64  # the copy there is not the one we sent
    sidecar.write_text(json.dumps(changed))
    result = cli(config_path, "reconcile", "--destination", "usb", "--json")
    assert result.returncode == 3
    (mismatch,) = json.loads(result.stdout)["mismatched"]
    assert "SHA-256" in mismatch["detail"]
    assert cli(config_path, "mirror").returncode == 0  # sent again over our own copy
    assert cli(config_path, "reconcile", "--destination", "usb").returncode == 0
