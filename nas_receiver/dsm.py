"""Synology DSM: the package's configuration from the install wizard, and running as the
package's user when DSM Task Scheduler starts a command as root.

The wizard's answers reach ``postinst`` as environment variables (``wizard_*``).  On the
first install ``write_package_config`` turns them into ``var/config.yaml`` plus secret files
under ``var/keys/`` (mode 0600); on an upgrade the existing configuration is kept untouched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import ConfigError

# DSM shared folder names: no slashes or the characters DSM refuses.
_SHARE_NAME = re.compile(r"^[^/\\:*?\"<>|=+,;\[\]`]{1,32}$")
ENV_RUN_AS_OWNER_OF = "NAS_RECEIVER_RUN_AS_OWNER_OF"

_HEADER = """\
# nas-receiver on Synology DSM: written from the install wizard's answers on first install
# and kept on upgrades.  Edit it here, then restart the package in Package Center.
# Every setting: /var/packages/nas-receiver/target/bin/nas-receiver config example
"""


def write_package_config(var: Path, shares: Path, answers: Mapping[str, str]) -> tuple[Path, bool]:
    """Write ``var/config.yaml`` from the wizard ``answers`` unless it exists.

    Return the path and whether it was written.  Raise ConfigError (one line, naming the
    wizard field) for an answer that cannot work; nothing is written then.
    """
    config_path = var / "config.yaml"
    if config_path.exists():
        return config_path, False
    import yaml  # only here: every command imports this module (run_as_package_owner)

    settings, secrets = package_settings(var, shares, answers)
    text = _HEADER + yaml.safe_dump(
        settings, sort_keys=False, default_flow_style=False, width=1 << 16
    )
    from .config import parse_config  # pydantic: loaded only by the commands that need it

    parse_config(text, str(config_path))  # never leave a configuration the daemon refuses
    for path, content in secrets.items():
        _write_secret(path, content)
    tmp = config_path.with_name(".config.yaml.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, config_path)
    return config_path, True


def package_settings(
    var: Path, shares: Path, answers: Mapping[str, str]
) -> tuple[dict[str, Any], dict[Path, str]]:
    """The configuration (as a mapping) and the secret files it refers to."""
    ha_share = _share(answers, "wizard_ha_share")
    library_share = _share(answers, "wizard_library_share")
    folder = answers.get("wizard_ha_folder", "").strip().strip("/")
    if ".." in folder.split("/"):
        raise ConfigError("wizard_ha_folder: must stay inside the shared folder")
    keys_dir = var / "keys"
    secrets: dict[Path, str] = {}

    source: dict[str, Any] = {
        "name": "homeassistant",
        "path": str(shares / ha_share / folder) if folder else str(shares / ha_share),
        "expect_every": "2d",
    }
    key = answers.get("wizard_backup_key", "").strip()
    if key:
        secrets[keys_dir / "home.txt"] = key + "\n"
        source["keys"] = [str(keys_dir / "home.txt")]

    library_root = shares / library_share
    settings: dict[str, Any] = {
        "data_dir": str(var / "data"),
        "log_file": str(var / "nas-receiver.log"),
        "log_rotate": False,  # DSM's logrotate does it (conf/resource, syslog-config)
        "log_copy": str(library_root / "nas-receiver" / "nas-receiver.log"),
        "sources": [source],
        "library": {
            "path": str(library_root / "library"),
            "retention": {"keep_daily": 7, "keep_weekly": 8, "keep_monthly": 12, "min_valid": 3},
        },
        "quarantine": {"path": str(library_root / "quarantine")},
        "notify": {"dsm": True},
    }
    bucket = answers.get("wizard_s3_bucket", "").strip()
    if bucket:
        settings["destinations"] = [_s3_destination(answers, bucket, keys_dir, secrets, key)]
    url = answers.get("wizard_notify_url", "").strip()
    if url:
        secrets[keys_dir / "notify-urls.txt"] = url + "\n"
        settings["notify"]["urls_file"] = str(keys_dir / "notify-urls.txt")
    return settings, secrets


def _s3_destination(
    answers: Mapping[str, str], bucket: str, keys_dir: Path, secrets: dict[Path, str], key: str
) -> dict[str, Any]:
    """The optional off-site S3 copy the wizard asked for (SecureTar with the backup key)."""
    if not key:
        raise ConfigError(
            "wizard_s3_bucket: off-site copies are always encrypted: give the backup key too"
        )
    key_id = answers.get("wizard_s3_access_key_id", "").strip()
    secret = answers.get("wizard_s3_secret_access_key", "").strip()
    if not key_id or not secret:
        raise ConfigError("wizard_s3_access_key_id: the access key and its secret are required")
    secrets[keys_dir / "s3-id"] = key_id + "\n"
    secrets[keys_dir / "s3-secret"] = secret + "\n"
    destination: dict[str, Any] = {
        "name": "offsite",
        "type": "s3",
        "bucket": bucket,
        "prefix": "homeassistant",
        "access_key_id_file": str(keys_dir / "s3-id"),
        "secret_access_key_file": str(keys_dir / "s3-secret"),
        "encryption": "securetar",
        "retention": {"keep_daily": 7, "keep_weekly": 8, "keep_monthly": 12},
    }
    endpoint = answers.get("wizard_s3_endpoint", "").strip()
    if endpoint:
        if not endpoint.startswith(("https://", "http://")):
            endpoint = "https://" + endpoint
        destination["endpoint_url"] = endpoint
        destination["addressing_style"] = "path"
    region = answers.get("wizard_s3_region", "").strip()
    if region:
        destination["region"] = region
    return destination


def _share(answers: Mapping[str, str], key: str) -> str:
    name = answers.get(key, "").strip()
    if not name:
        raise ConfigError(f"{key}: a shared folder name is required")
    if not _SHARE_NAME.match(name) or name in {".", ".."}:
        raise ConfigError(f"{key}: {name!r} is not a valid shared folder name")
    return name


def _write_secret(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(content)
    os.chmod(path, 0o600)


def run_as_package_owner(environ: Mapping[str, str] | None = None) -> None:
    """Started as root with ``$NAS_RECEIVER_RUN_AS_OWNER_OF`` set (the package's command on
    DSM, from Task Scheduler), become the owner of that folder, so a root-run command leaves
    no root-owned file in the package's folders and reads only what the package may."""
    environ = os.environ if environ is None else environ
    folder = environ.get(ENV_RUN_AS_OWNER_OF)
    if not folder or os.geteuid() != 0:
        return
    info = os.stat(folder)
    if info.st_uid == 0:
        return
    os.setgroups([info.st_gid])
    os.setgid(info.st_gid)
    os.setuid(info.st_uid)
