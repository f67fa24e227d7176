"""The systemd unit: clean under systemd-analyze verify, and what the issue asks of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas_receiver.config import parse_config

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "nas-receiver.service"


def _analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing under CI")
        pytest.skip("systemd-analyze is not installed")
    return tool


def test_unit_verifies_clean(tmp_path: Path) -> None:
    tool = _analyze()
    binary = Path(sys.executable).parent / "nas-receiver"
    unit = tmp_path / "nas-receiver.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/nas-receiver/.venv/bin/nas-receiver", str(binary))
    )
    result = subprocess.run(
        [tool, "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == ""


def test_unit_has_what_the_daemon_relies_on() -> None:
    lines = {
        line.split("=", 1)[0]: line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if "=" in line and not line.startswith("#")
    }
    assert lines["Type"] == "notify" and lines["NotifyAccess"] == "main"
    assert lines["Restart"] == "on-failure" and lines["WatchdogSec"]
    for hardening in (
        "ProtectSystem",
        "ReadWritePaths",
        "NoNewPrivileges",
        "PrivateTmp",
        "ProtectHome",
        "LoadCredential",
    ):
        assert hardening in lines
    assert lines["ExecReload"] == "/bin/kill -HUP $MAINPID"


def test_credential_keys_stay_as_written_in_the_config() -> None:
    text = """
sources: [{name: home, path: /srv/ha-backups, keys: ["credential:home-key", keys/old.txt]}]
library: {path: /srv/ha-library}
quarantine: {path: /srv/ha-quarantine}
"""
    config = parse_config(text, "c.yaml", base=Path("/etc/nas-receiver"))
    assert [str(k) for k in config.sources[0].keys] == [
        "credential:home-key",
        "/etc/nas-receiver/keys/old.txt",
    ]
