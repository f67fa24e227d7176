"""The DSM helpers: the configuration written from the install wizard, and a command run
as root (Task Scheduler) continuing as the package's user."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from nas_receiver.config import load_config
from nas_receiver.dsm import write_package_config
from nas_receiver.errors import ConfigError

WIZARD = {
    "wizard_ha_share": "ha-backups",
    "wizard_ha_folder": "homeassistant/",
    "wizard_library_share": "ha-library",
    "wizard_backup_key": "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ12",
    "wizard_notify_url": "ntfy://secret-token@ntfy.example/ha",
}


def test_wizard_answers_become_a_working_config(tmp_path: Path) -> None:
    var, shares = tmp_path / "var", tmp_path / "shares"
    var.mkdir()
    path, written = write_package_config(var, shares, WIZARD)
    assert written
    config = load_config(path)
    assert config.sources[0].path == shares / "ha-backups/homeassistant"
    assert config.library.path == shares / "ha-library/library"
    assert config.quarantine.path == shares / "ha-library/quarantine"
    assert config.log_file == var / "nas-receiver.log"
    assert config.log_rotate is False
    assert config.log_copy == shares / "ha-library/nas-receiver/nas-receiver.log"
    text = path.read_text()
    assert WIZARD["wizard_backup_key"] not in text
    assert "secret-token" not in text
    key = config.sources[0].keys[0]
    assert key.read_text().strip() == WIZARD["wizard_backup_key"]
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert config.notify.urls_file is not None
    assert config.notify.urls_file.read_text().strip() == WIZARD["wizard_notify_url"]


def test_the_wizard_s3_answers_make_an_encrypted_destination(tmp_path: Path) -> None:
    answers = {
        **WIZARD,
        "wizard_s3_bucket": "ha-offsite",
        "wizard_s3_endpoint": "eu-002.s3.synologyc2.net",
        "wizard_s3_region": "eu-002",
        "wizard_s3_access_key_id": "AKIAWIZARD",
        "wizard_s3_secret_access_key": "wizard-secret-value",
    }
    path, _written = write_package_config(tmp_path, tmp_path / "shares", answers)
    (offsite,) = load_config(path).destinations
    assert offsite.type == "s3" and offsite.bucket == "ha-offsite"
    assert offsite.endpoint_url == "https://eu-002.s3.synologyc2.net"
    assert offsite.cipher == "securetar" and offsite.region == "eu-002"
    assert "wizard-secret-value" not in path.read_text()
    assert offsite.secret_access_key_file is not None
    assert offsite.secret_access_key_file.read_text().strip() == "wizard-secret-value"
    assert stat.S_IMODE(offsite.secret_access_key_file.stat().st_mode) == 0o600
    keyless = {**answers, "wizard_backup_key": ""}
    with pytest.raises(ConfigError, match="always encrypted: give the backup key too"):
        write_package_config(tmp_path / "other", tmp_path / "shares", keyless)


def test_an_existing_config_is_kept(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("# mine\n")
    path, written = write_package_config(tmp_path, tmp_path / "shares", {})
    assert not written
    assert path.read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        ({"wizard_library_share": "lib"}, "wizard_ha_share: a shared folder name is required"),
        (
            {"wizard_ha_share": "a/b", "wizard_library_share": "lib"},
            "wizard_ha_share: 'a/b' is not a valid shared folder name",
        ),
        (
            {"wizard_ha_share": "ha", "wizard_library_share": "lib", "wizard_ha_folder": "../x"},
            "wizard_ha_folder: must stay inside the shared folder",
        ),
        (
            {"wizard_ha_share": "same", "wizard_library_share": "same"},
            "must not share a folder",
        ),
    ],
)
def test_a_bad_answer_writes_nothing(tmp_path: Path, answers: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        write_package_config(tmp_path, tmp_path / "shares", answers)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: checks a root command drops to a user")
def test_a_root_command_leaves_no_root_owned_files() -> None:
    nobody = 65534
    with tempfile.TemporaryDirectory() as scratch:
        os.chmod(scratch, 0o755)  # noqa: S103 - the dropped-to user must reach var/
        var = Path(scratch) / "var"
        var.mkdir()
        os.chown(var, nobody, nobody)
        made = var / "made-by-the-command"
        code = (
            "import os, sys; from nas_receiver.dsm import run_as_package_owner; "
            "run_as_package_owner(); open(sys.argv[1], 'w').close(); print(os.getuid())"
        )
        result = subprocess.run(
            [sys.executable, "-c", code, str(made)],
            env={**os.environ, "NAS_RECEIVER_RUN_AS_OWNER_OF": str(var)},
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )
        assert result.stdout.strip() == str(nobody)
        assert made.stat().st_uid == nobody


UPGRADE_WIZARD = Path(__file__).resolve().parents[2] / "spk/WIZARD_UIFILES/upgrade_uifile.sh"


def _upgrade_wizard(var: Path) -> list[dict[str, object]]:
    """The upgrade wizard's fields, as DSM gets them from the script."""
    output = var / "wizard.json"
    env = {
        "PATH": os.environ["PATH"],
        "SYNOPKG_PKGVAR": str(var),
        "SYNOPKG_TEMP_LOGFILE": str(output),
        "SYNOPKG_PKGDEST": str(var / "no-target"),
    }
    subprocess.run(["sh", str(UPGRADE_WIZARD)], env=env, check=True, timeout=30)
    steps = json.loads(output.read_text())  # valid JSON, whatever the names hold
    return [sub for step in steps for item in step["items"] for sub in item["subitems"]]


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        ('ha_share=HA backups\nlibrary_share=lib "x" \\ y\n', ["HA backups", 'lib "x" \\ y']),
        ("ha_share=tab\there\nlibrary_share=lib\n", [None, "lib"]),
        (None, [None, None]),
    ],
    ids=["odd-but-valid-names", "control-character", "unknown"],
)
def test_the_upgrade_wizard_gives_back_known_shares_and_asks_for_unknown_ones(
    tmp_path: Path, saved: str | None, expected: list[str | None]
) -> None:
    """Asserts: a known share name goes back to DSM as a hidden field (nothing to answer);
    one that is unknown or not a share name (a control character) is asked again, with the
    install wizard's own rule, never handed to DSM empty (the shares would lose their grant)."""
    if saved is not None:
        (tmp_path / "wizard-shares").write_text(saved)
    fields = _upgrade_wizard(tmp_path)
    assert [f["key"] for f in fields] == ["wizard_ha_share", "wizard_library_share"]
    install = json.loads((UPGRADE_WIZARD.parent / "install_uifile").read_text())
    rule = install[0]["items"][0]["subitems"][0]["validator"]
    for field, value in zip(fields, expected, strict=True):
        if value is None:
            assert not field.get("hidden") and field["defaultValue"] == ""
            assert field["validator"] == rule
        else:
            assert field["hidden"] is True and field["defaultValue"] == value
