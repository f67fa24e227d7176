"""reverify: every library copy read in full again; bit rot reported, alerted, left in place."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from tests.daemon_helpers import archives_in, cli, sha256, write_config

MakeBackup = Callable[..., Path]


def test_reverify_finds_rot_and_keeps_the_copy(make_backup: MakeBackup, tmp_path: Path) -> None:
    config_path = write_config(tmp_path, settle=0)
    config = load_config(config_path)
    shutil.copyfile(make_backup(), config.sources[0].path / "a.tar")
    assert scan_once(config) == ["valid"]

    healthy = cli(config_path, "reverify", "--json")
    assert healthy.returncode == 0, healthy.stderr
    (row,) = json.loads(healthy.stdout)
    assert row["ok"] is True
    assert row["verdict"] == "valid"

    (copy,) = archives_in(config.library.path)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit in the middle of the archive
    copy.write_bytes(bytes(data))
    rotten = sha256(copy)

    result = cli(config_path, "reverify")
    assert result.returncode == 3
    assert f"NOT OK  {copy}:" in result.stdout
    assert "0 of 1 library copies still match" in result.stdout
    assert sha256(copy) == rotten  # left exactly as found
    events = Catalog(config.catalog_path).events()
    assert [e["kind"] for e in events if e["kind"] == "rot"] == ["rot"]

    copy.unlink()
    missing = cli(config_path, "reverify", "--json")
    assert missing.returncode == 3
    assert json.loads(missing.stdout)[0]["problem"] == "the library copy is missing"
