"""The daemon as a subprocess: systemd notify, signals, the lock, and kills at any moment."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.daemon_helpers import archives_in, cli, partials_in, sha256, wait_for, write_config

MakeBackup = Callable[..., Path]


def _start(config: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    environment = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    environment.update(env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "nas_receiver.cli", "--config", str(config), "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=environment,
    )


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(20)
    yield sock, path
    sock.close()


def _messages(sock: socket.socket, until: str, timeout: float = 20) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = sock.recv(4096).decode()
        seen.extend(data.splitlines())
        if any(line.startswith(until) for line in seen):
            return seen
    raise AssertionError(f"no {until} in {seen}")


def test_systemd_notify_protocol(
    tmp_path: Path, notify_socket: tuple[socket.socket, str], make_backup: MakeBackup
) -> None:
    sock, path = notify_socket
    config = write_config(tmp_path, settle=0.2)
    process = _start(config, {"NOTIFY_SOCKET": path})
    try:
        ready = _messages(sock, "READY=1")
        assert any(line.startswith("STATUS=") for line in ready)
        shutil.copyfile(make_backup(), tmp_path / "share" / "a.tar")
        beats = _messages(sock, "WATCHDOG=1")
        assert "WATCHDOG=1" in beats
        process.send_signal(signal.SIGTERM)
        _messages(sock, "STOPPING=1")
        assert process.wait(30) == 0
    finally:
        process.kill()


def test_silent_without_notify_socket_and_warm_stop(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    process = _start(config)
    wait_for((tmp_path / "data" / "catalog.sqlite3").exists, 20, "start")
    time.sleep(1)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0, output
    assert "ready: watching" in output and "stopped" in output


def test_second_daemon_is_refused_and_list_works_meanwhile(
    tmp_path: Path, make_backup: MakeBackup
) -> None:
    config = write_config(tmp_path, settle=0.2)
    first = _start(config)
    try:
        wait_for((tmp_path / "data" / "catalog.sqlite3").exists, 20, "start")
        second = _start(config)
        output, _ = second.communicate(timeout=30)
        assert second.returncode == 1
        assert "another nas-receiver works on this data folder" in output
        shutil.copyfile(make_backup(), tmp_path / "share" / "a.tar")
        wait_for(lambda: archives_in(tmp_path / "library"), 20, "library")
        listing = cli(config, "list", "--json")
        assert listing.returncode == 0
        assert json.loads(listing.stdout)[0]["copies"][0]["location"] == "library"
        status = cli(config, "status", "--json")
        assert status.returncode == 0
        assert json.loads(status.stdout)["receiver"] == {"running": True, "pid": first.pid}
        assert f"receiver: running (pid {first.pid})" in cli(config, "status").stdout
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(30)
    status = cli(config, "status", "--json")  # stopped: status says so, not "ok" alone
    assert json.loads(status.stdout)["receiver"] == {"running": False, "pid": None}
    assert "receiver: not running" in cli(config, "status").stdout


def test_sighup_reload_keeps_old_config_when_new_one_is_bad(
    tmp_path: Path, make_backup: MakeBackup
) -> None:
    config = write_config(tmp_path, settle=0.2)
    good = config.read_text()
    process = _start(config)
    try:
        _wait_for_line(process, "ready: watching")
        config.write_text(good + "bogus_key: 1\n")
        process.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        shutil.copyfile(make_backup(), tmp_path / "share" / "a.tar")
        wait_for(lambda: archives_in(tmp_path / "library"), 20, "still working")
        second_share = tmp_path / "share2"
        second_share.mkdir()
        config.write_text(
            good.replace(
                "library:",
                f"  - {{name: second, path: {second_share}, settle_seconds: 0.2}}\nlibrary:",
            )
        )
        process.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        shutil.copyfile(make_backup(slug="0000beef"), second_share / "b.tar")
        wait_for(lambda: archives_in(tmp_path / "library" / "second"), 20, "new source")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "reload refused, the old configuration stays" in output
    assert "bogus_key" in output and "configuration reloaded" in output


def test_killed_at_random_moments_loses_and_duplicates_nothing(
    tmp_path: Path, make_backup: MakeBackup
) -> None:
    """SIGKILL the daemon again and again while archives keep arriving; at the end every
    valid archive is in the library exactly once with its SHA-256, every damaged one in
    the quarantine once, and no temporary file is left."""
    rng = random.Random(20261126)
    config = write_config(tmp_path, settle=0.1, reconcile="1s")
    share = tmp_path / "share"
    valid = [make_backup(slug=f"{i:08x}", entities=10 + i) for i in range(10)]
    damaged = []
    for i in range(3):
        bad = make_backup(slug=f"dead{i:04x}", entities=5 + i)
        blob = bytearray(bad.read_bytes())
        blob[len(blob) // 3] ^= 0xFF
        bad.write_bytes(bytes(blob))
        damaged.append(bad)
    arrivals = [(f"valid{i}.tar", p) for i, p in enumerate(valid)]
    arrivals += [(f"damaged{i}.tar", p) for i, p in enumerate(damaged)]
    rng.shuffle(arrivals)
    kills = 0
    while arrivals or kills < 12:
        process = _start(config)
        for _ in range(rng.randint(0, 2)):
            if arrivals:
                name, source = arrivals.pop()
                shutil.copyfile(source, share / name)
        time.sleep(rng.uniform(0.05, 1.2))
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        kills += 1
    process = _start(config)
    try:
        want = {sha256(p) for p in valid}
        wait_for(
            lambda: {sha256(p) for p in archives_in(tmp_path / "library")} == want,
            90,
            "every valid archive in the library",
        )
        wait_for(
            lambda: len(archives_in(tmp_path / "quarantine")) == len(damaged),
            60,
            "every damaged archive in quarantine",
        )
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    library = archives_in(tmp_path / "library")
    assert len(library) == len(valid)  # exactly once each
    assert partials_in(tmp_path / "library", tmp_path / "quarantine") == []
    rows = json.loads(cli(config, "list", "--json").stdout)
    assert len(rows) == len(valid) + len(damaged)
    for row in rows:
        present = [c for c in row["copies"] if c["state"] == "present"]
        assert len(present) == 1, row
        assert (row["verdict"] == "valid") == (present[0]["location"] == "library")
        assert sha256(Path(present[0]["path"])) == row["sha256"]


@pytest.fixture(scope="module")
def big_backup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An unencrypted, uncompressed backup of 400 MiB: slow enough to act during its check."""
    from tests.builders import BackupSpec, write_backup_from

    root = tmp_path_factory.mktemp("big")
    content = root / "content"
    content.mkdir()
    chunk = random.Random(1).randbytes(1 << 20)
    with (content / "big.bin").open("wb") as file:
        for index in range(400):
            file.write(chunk[index % 7 :] + chunk[: index % 7])
    spec = BackupSpec(compressed=False, addons=(), folders=(), homeassistant=True)
    return write_backup_from(root / "big.tar", spec, [("homeassistant", content)])


def _wait_for_line(process: subprocess.Popen[str], needle: str, timeout: float = 30) -> None:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if needle in line:
            return
    raise AssertionError(f"no log line with {needle!r}")


def test_second_signal_stops_cold_and_the_archive_is_verified_next_time(
    tmp_path: Path, big_backup: Path
) -> None:
    config = write_config(tmp_path, settle=0.1)
    shutil.copyfile(big_backup, tmp_path / "share" / "big.tar")
    process = _start(config)
    _wait_for_line(process, "verifying big.tar")
    process.send_signal(signal.SIGTERM)
    _wait_for_line(process, "stopping: finishing the current verification")
    process.send_signal(signal.SIGTERM)  # a second one (two at once would merge into one)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "stopping at once" in output and "placed in library" not in output
    assert archives_in(tmp_path / "library") == []
    assert partials_in(tmp_path / "library") == []
    process = _start(config)
    try:
        wait_for(lambda: archives_in(tmp_path / "library"), 60, "verified after restart")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_file_deleted_while_being_verified(tmp_path: Path, big_backup: Path) -> None:
    config = write_config(tmp_path, settle=0.1)
    arrived = tmp_path / "share" / "big.tar"
    shutil.copyfile(big_backup, arrived)
    process = _start(config)
    try:
        _wait_for_line(process, "verifying big.tar")
        arrived.unlink()  # HA's retention strikes mid-check
        wait_for(
            lambda: (
                json.loads(cli(config, "status", "--json").stdout)["sources"][0]["pending"] == []
            ),
            30,
            "nothing pending",
        )
        assert process.poll() is None  # still running
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
    assert "Traceback" not in output
    assert partials_in(tmp_path / "library", tmp_path / "quarantine") == []
