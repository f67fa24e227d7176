"""Random SIGKILLs over a daemon fed with archives, with retention on both ends.

The daemon keeps a library (original and decrypted copies) and a local destination that
keeps the 3 newest; archives arrive the way HA writes them (straight to the final name, a
part at a time), a few of them damaged.  It is killed with SIGKILL at random moments, at
least ``KILLS`` times, restarted each time, and finally left to finish its work and stopped.

After every kill: nothing outside the site's folders changed, and every file HA wrote is
byte for byte as written.  At the end, the whole site is checked for consistency (see
``check_site``).  The seed is printed: a failing run is repeated with
``NAS_RECEIVER_FAULT_SEED``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import signal
import sqlite3
import subprocess
import tarfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.builders import KEY, write_key
from tests.daemon_helpers import cli, cli_command, write_config

MakeBackup = Callable[..., Path]
KILLS = int(os.environ.get("NAS_RECEIVER_KILLS", "32"))
ARCHIVES = 10
DAMAGED = {3, 7}  # these arrive cut short: quarantined once HA's give-up time has passed
BASE = datetime(2026, 11, 1, 4, 45, tzinfo=UTC)


def _site(tmp_path: Path) -> Path:
    key = write_key(tmp_path / "key.txt", KEY)
    site = tmp_path / "site"
    config_path = write_config(site, settle=0.3, give_up="3s", reconcile="1s", keys=(key,))
    library = site / "library"
    text = config_path.read_text().replace(
        f"library: {{path: {library}}}",
        f"library: {{path: {library}, store: both, browse: true,"
        " retention: {keep_last: 4, min_valid: 2}}",
    )
    usb = site / "usb"
    config_path.write_text(
        text + f"destinations: [{{name: usb, type: local, path: {usb}, encryption: none,"
        " retention: {keep_last: 3}}]\n"
    )
    return config_path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(root: Path, skip: Path) -> dict[str, float]:
    """Every file under ``root`` outside ``skip``, with its modification time."""
    return {
        str(p): p.stat().st_mtime for p in root.rglob("*") if p.is_file() and skip not in p.parents
    }


def _members_end(data: bytes) -> int:
    """Where the end-of-archive marker begins: after the last member's data."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        last = tar.getmembers()[-1]
    return last.offset_data + last.size + (-last.size % 512)


class Feeder:
    """Writes archives into the share as HA does: final name, a part at a time.

    The end-of-archive marker and the record padding after it come in one write, as
    tarfile's ``close`` writes them back to back: a file that ends right after the marker
    is a whole tar, verified valid, and would become another archive once its padding came
    more than ``settle_seconds`` later (never so with HA's writers)."""

    def __init__(self, share: Path, backups: list[bytes]) -> None:
        self.share = share
        self.backups = backups
        self.tails = [_members_end(data) for data in backups]
        self.written: dict[str, str] = {}  # name -> sha256 of what HA wrote, once complete
        self._current: tuple[int, int] | None = None  # (index, bytes written)
        self._next = 0

    def step(self, rng: random.Random) -> None:
        if self._current is None:
            if self._next >= len(self.backups):
                return
            self._current, self._next = (self._next, 0), self._next + 1
        index, done = self._current
        data = self.backups[index]
        end = len(data) if index in DAMAGED else min(len(data), done + rng.randrange(1, len(data)))
        if end > self.tails[index]:  # the marker and the padding: one write
            end = len(data)
        if index in DAMAGED:
            end = len(data) // 2  # abandoned mid-write, as after a dropped mount
        with (self.share / f"backup{index:02d}.tar").open("ab") as file:
            file.write(data[done:end])
        if end >= len(data) or index in DAMAGED:
            self.written[f"backup{index:02d}.tar"] = hashlib.sha256(data[:end]).hexdigest()
            self._current = None
        else:
            self._current = (index, end)

    @property
    def finished(self) -> bool:
        return self._current is None and self._next >= len(self.backups)


def test_random_kills_lose_nothing_and_leave_nothing(
    make_backup: MakeBackup, tmp_path: Path
) -> None:
    seed = int(os.environ.get("NAS_RECEIVER_FAULT_SEED", str(random.randrange(1 << 30))))
    print(f"fault seed {seed}")
    rng = random.Random(seed)
    config_path = _site(tmp_path)
    site = tmp_path / "site"
    backups = [
        make_backup(
            password=KEY, slug=f"{i:08x}", date=BASE + timedelta(days=i), entities=4
        ).read_bytes()
        for i in range(ARCHIVES)
    ]
    feeder = Feeder(site / "share", backups)
    outside = _tree(tmp_path, site)
    kills = 0
    log = (site / "daemon.log").open("a")  # inside the site: everything outside is watched
    while kills < KILLS or not feeder.finished:
        feeder.step(rng)
        process = subprocess.Popen(cli_command(config_path, "run"), stdout=log, stderr=log)
        time.sleep(rng.uniform(0.2, 1.6))
        if rng.random() < 0.5:
            feeder.step(rng)
            time.sleep(rng.uniform(0.0, 1.0))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        kills += 1
        assert _tree(tmp_path, site) == outside, "something was written outside the site"
        for name, digest in feeder.written.items():
            assert _sha(site / "share" / name) == digest, f"{name} on the share was altered"
    _run_until_done(config_path, site, feeder, log)
    check_site(config_path, site, feeder)
    print(f"{kills} kills, {ARCHIVES} archives ({len(DAMAGED)} damaged): consistent")


def _run_until_done(config_path: Path, site: Path, feeder: Feeder, log: object) -> None:
    """Start the daemon once more and let it finish: every file verified and kept, every
    copy the destination should have made, then a warm stop."""
    process = subprocess.Popen(cli_command(config_path, "run"), stdout=log, stderr=log)  # type: ignore[call-overload]
    try:
        deadline = time.monotonic() + 120
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            time.sleep(0.5)
            status = cli(config_path, "list", "--json")
            rows = json.loads(status.stdout) if status.returncode == 0 else []
            valid = sum(r["verdict"] == "valid" for r in rows)
            at_usb = sum(_at_usb(r) for r in rows)
            waiting = [  # cut short and not yet given up on (the damaged end in quarantine)
                r
                for r in rows
                if r["verdict"] != "valid"
                and not any(c["location"] == "quarantine" for c in r["copies"])
            ]
            settled = (
                len(rows) == len(feeder.written)
                and not waiting
                and at_usb == min(3, valid)  # the destination's plan carried out
            )
            if settled and not _waiting(site):
                break
        else:
            raise AssertionError(f"the daemon did not finish its work in 120 s: {rows}")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    finally:
        process.kill()


def _at_usb(row: dict[str, Any]) -> bool:
    """Whether the archive has a checked copy at the destination (not one to be sent)."""
    return any(c["location"] == "usb" and c["state"] == "verified" for c in row["copies"])


def _waiting(site: Path) -> bool:
    with sqlite3.connect(site / "data" / "catalog.sqlite3") as db:
        busy = db.execute(
            "SELECT COUNT(*) FROM sightings WHERE state NOT IN ('done', 'gone')"
        ).fetchone()[0]
        placing = db.execute("SELECT COUNT(*) FROM copies WHERE state = 'placing'").fetchone()[0]
    return bool(busy or placing)


def check_site(config_path: Path, site: Path, feeder: Feeder) -> None:
    """The whole site agrees with itself and with what HA wrote:

    - the share holds exactly what HA wrote, byte for byte;
    - every complete archive is valid and the damaged ones were quarantined, each once;
    - no temporary or partial file is left anywhere (library, quarantine, destination);
    - every copy the catalog calls present exists with the SHA-256 it records, and every
      archive file in the library, quarantine and destination is one the catalog knows;
    - no job is left half-done (nothing verifying, nothing placing);
    - the destination holds what its retention keeps, and nothing retention removed from it
      was sent again;
    - the library never lost the newest valid archive nor fell below its floor.
    """
    for name, digest in feeder.written.items():
        assert _sha(site / "share" / name) == digest
    rows = json.loads(cli(config_path, "list", "--json").stdout)
    by_name = {Path(c["path"]).name: r for r in rows for c in r["copies"] if c["path"]}
    assert len(rows) == len(feeder.written), "an archive was lost or counted twice"
    quarantined = [r for r in rows if r["verdict"] != "valid"]
    assert len(quarantined) == len(DAMAGED)
    for row in quarantined:
        assert [c["location"] for c in row["copies"]] == ["quarantine"]
    leftovers = [p for p in site.rglob("*") if ".partial-" in p.name or p.name.startswith(".tmp")]
    assert leftovers == [], "partial files left behind"
    usb_states = {c["state"] for r in rows for c in r["copies"] if c["location"] == "usb"}
    assert usb_states <= {"verified"}, f"copies at the destination not done: {usb_states}"
    for row in rows:
        for copy in row["copies"]:
            remote = copy["location"] == "usb"
            path = site / "usb" / copy["path"] if remote else Path(copy["path"])
            assert path.exists(), f"catalog says present, but {path} is gone"
            if copy["location"] in ("library", "quarantine", "usb"):
                assert _sha(path) == row["sha256"], f"{path} does not hold its archive"
    for folder in (site / "library", site / "quarantine", site / "usb"):
        for tar in folder.rglob("*.tar"):
            assert tar.name in by_name, f"{tar} is not in the catalog"
    with sqlite3.connect(site / "data" / "catalog.sqlite3") as db:
        resent = db.execute(
            "SELECT sha256 FROM copies WHERE location = 'usb' GROUP BY sha256"
            " HAVING SUM(state = 'deleted') > 0 AND SUM(state != 'deleted') > 0"
        ).fetchall()
        stuck = db.execute(
            "SELECT COUNT(*) FROM sightings WHERE state IN ('verifying', 'waiting')"
        ).fetchone()[0]
    assert resent == [], "archives retention removed from the destination were sent again"
    assert stuck == 0
    valid = sorted((r for r in rows if r["verdict"] == "valid"), key=lambda r: r["date"])
    at_usb = [r for r in valid if _at_usb(r)]
    assert [r["slug"] for r in at_usb] == [r["slug"] for r in valid[-3:]]
    in_library = [r for r in valid if any(c["location"] == "library" for c in r["copies"])]
    assert valid[-1] in in_library and len(in_library) >= 2
