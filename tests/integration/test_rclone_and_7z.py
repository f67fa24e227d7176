"""Off-site copies through the real rclone binary (a local remote, and SFTP to a loopback
OpenSSH server), 7z copies opened by the real 7-Zip, and fetch for disaster recovery."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from tests.builders import KEY, write_key
from tests.daemon_helpers import archives_in, cli, sha256, wait_for, write_config
from tests.tools import require_tool

MakeBackup = Callable[..., Path]
BASE = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)
PASSWORD = "correct horse battery staple"


def _site(tmp_path: Path, make_backup: MakeBackup, destination: str) -> tuple[Path, Path]:
    """Two archives (one HA-encrypted, one not) and ``destination``."""
    key = write_key(tmp_path / "key.txt", KEY)
    config_path = write_config(tmp_path, settle=0, keys=(key,))
    config_path.write_text(config_path.read_text() + "destinations:\n" + destination)
    share = tmp_path / "share"
    make_backup(slug="00000001", date=BASE, entities=5, password=KEY).rename(share / "a.tar")
    plain = make_backup(slug="00000002", date=BASE + timedelta(days=1), entities=5)
    plain.rename(share / "b.tar")
    return config_path, share


def _password_file(tmp_path: Path) -> Path:
    path = tmp_path / "7z-password.txt"
    path.write_text(PASSWORD + "\n")
    return path


def _rclone_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "rclone.conf"
    path.write_text(body)
    return path


def test_rclone_local_remote_with_7z(make_backup: MakeBackup, tmp_path: Path) -> None:
    require_tool("rclone")
    seven = require_tool("7z", "7zz")
    remote = tmp_path / "remote"
    conf = _rclone_config(tmp_path, "[nas2]\ntype = local\n")
    config_path, _share = _site(
        tmp_path,
        make_backup,
        f"""  - name: gdrive
    type: rclone
    remote: "nas2:{remote}"
    rclone_config: {conf}
    encryption: 7z
    password_file: {_password_file(tmp_path)}
    retention: {{keep_last: 1}}
""",
    )
    config = load_config(config_path)
    assert scan_once(config) == ["valid", "valid"]
    stored = sorted(p.relative_to(remote).as_posix() for p in remote.rglob("*") if p.is_file())
    base = "homeassistant/Automatic_backup_2026.11.1_2026-11-02_04.45_00000000"
    # keep_last: 1 pruned the older copy; the newest, unencrypted by HA, went as 7z
    assert stored == [f"{base}.tar.7z", f"{base}.tar.7z.json"]
    sidecar = json.loads((remote / f"{base}.tar.7z.json").read_text())
    assert (
        sidecar["protected"] is True
        and sidecar["size"] == (remote / f"{base}.tar.7z").stat().st_size
    )

    # 7-Zip opens it with the password and holds the library's archive byte for byte
    out = tmp_path / "7z-out"
    subprocess.run(
        [seven, "x", f"-p{PASSWORD}", f"-o{out}", str(remote / f"{base}.tar.7z")],
        check=True,
        capture_output=True,
    )
    (unpacked,) = out.iterdir()
    newest = max(archives_in(config.library.path), key=lambda p: p.name)
    assert sha256(unpacked) == sha256(newest)
    wrong = subprocess.run(
        [seven, "x", "-pwrong", f"-o{tmp_path / 'nope'}", str(remote / f"{base}.tar.7z")],
        capture_output=True,
        check=False,
    )
    assert wrong.returncode != 0  # headers are encrypted too: nothing opens without it
    assert not (tmp_path / "outbox").exists() or not any((tmp_path / "outbox").rglob("*.7z"))

    restored = tmp_path / "restored.tar"
    fetched = cli(config_path, "fetch", "00000002", "--from", "gdrive", "-o", str(restored))
    assert fetched.returncode == 0, fetched.stderr
    assert sha256(restored) == sha256(newest)

    (remote / f"{base}.tar.7z").unlink()  # lost at the remote
    report = cli(config_path, "reconcile", "--destination", "gdrive", "--json")
    assert report.returncode == 3
    assert [m["key"] for m in json.loads(report.stdout)["missing"]] == [f"{base}.tar.7z"]


def test_local_destination_may_encrypt_with_securetar(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    usb = tmp_path / "usb"
    config_path, _share = _site(
        tmp_path,
        make_backup,
        f"  - {{name: usb, type: local, path: {usb}, encryption: securetar}}\n",
    )
    config = load_config(config_path)
    assert scan_once(config) == ["valid", "valid"]
    copies = sorted((usb / "homeassistant").glob("*.tar"))
    assert len(copies) == 2
    key = str(tmp_path / "key.txt")
    result = cli(config_path, "verify", *map(str, copies), "--key-file", key, "--json")
    assert result.returncode == 0, result.stdout
    reports = json.loads(result.stdout)
    assert [r["verdict"] for r in reports] == ["valid", "valid"]
    assert all(r["protected"] for r in reports)  # the plain one was encrypted for the disk


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def sftp_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An OpenSSH server on 127.0.0.1 for this user, key authentication only."""
    sshd = require_tool("sshd", "/usr/sbin/sshd")
    keygen = require_tool("ssh-keygen")
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host", "client"):
        subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True
        )
    shutil.copy(folder / "client.pub", folder / "authorized_keys")
    os.chmod(folder / "authorized_keys", 0o600)
    port = _free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPidFile {folder / 'sshd.pid'}\n"
        "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "PermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", str(folder / "sshd_config")],
        stderr=subprocess.PIPE,
    )

    def listening() -> bool:
        with socket.socket() as probe:
            return probe.connect_ex(("127.0.0.1", port)) == 0

    try:
        wait_for(lambda: listening() or process.poll() is not None, timeout=20, what="sshd")
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.fail(f"sshd did not start: {process.stderr.read().decode()[-500:]}")
        yield port, folder / "client"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_rclone_sftp_remote(
    make_backup: MakeBackup, tmp_path: Path, sftp_server: tuple[int, Path]
) -> None:
    require_tool("rclone")
    port, client_key = sftp_server
    remote = tmp_path / "sftp-remote"
    remote.mkdir()
    user = os.environ.get("USER") or __import__("pwd").getpwuid(os.getuid()).pw_name
    conf = _rclone_config(
        tmp_path,
        f"[box]\ntype = sftp\nhost = 127.0.0.1\nport = {port}\nuser = {user}\n"
        f"key_file = {client_key}\n",
    )
    config_path, _share = _site(
        tmp_path,
        make_backup,
        f"""  - name: box
    type: rclone
    remote: "box:{remote}"
    rclone_config: {conf}
""",
    )
    config = load_config(config_path)
    started = time.monotonic()
    assert scan_once(config) == ["valid", "valid"]
    copies = sorted((remote / "homeassistant").glob("*.tar"))
    assert len(copies) == 2 and time.monotonic() - started < 120
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    assert [[c["state"] for c in r["copies"] if c["location"] == "box"] for r in rows] == [
        ["verified"],
        ["verified"],
    ]
    # the HA-encrypted one byte for byte; the other SecureTar-encrypted with the source's key
    library = sorted(archives_in(config.library.path), key=lambda p: p.name)
    assert sha256(copies[0]) == sha256(library[0])
    result = cli(config_path, "verify", str(copies[1]), "--key-file", str(tmp_path / "key.txt"))
    assert result.returncode == 0, result.stdout
