"""Benchmarks of the receiver daemon: idle cost, arrival-to-library time, reconcile scan.

.venv/bin/python bench/bench_daemon.py [--idle-seconds 60] [--archives 5000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import MIB, make_content
from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.haformat import verify_archive
from nas_receiver.intake.sightings import Intake
from tests.builders import BackupSpec, write_backup_from
from tests.daemon_helpers import write_config

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "real"
TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _start(config: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "nas_receiver.cli", "--config", str(config), "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def bench_idle(root: Path, seconds: float) -> None:
    config = write_config(root, settle=30, reconcile="5m")
    process = _start(config)
    try:
        time.sleep(5)  # start-up and the first scan are not idling
        before = _cpu_seconds(process.pid)
        time.sleep(seconds)
        used = _cpu_seconds(process.pid) - before
        rss = _rss_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"idle daemon over {seconds:.0f} s: {used:.2f} s CPU, RSS {rss:.0f} MiB "
        f"(targets: <= 0.5 s, <= 80 MiB)"
    )


def bench_arrival(root: Path, mib: int) -> None:
    content = root / "content"
    make_content(content, mib)
    backup = root / "source.tar"
    spec = BackupSpec(addons=(), folders=("media",), name="Arrival bench")
    write_backup_from(
        backup, spec, [("homeassistant", content / "ha"), ("media", content / "media")]
    )
    verify_seconds = verify_archive(backup).seconds
    config = write_config(root, settle=5, reconcile="5m")
    share = root / "share"
    process = _start(config)
    try:
        time.sleep(3)
        shutil.copyfile(backup, share / "arrived.tar")
        written = time.time()
        library = root / "library" / "home"
        while not any(library.glob("*_meta.json")) if library.exists() else True:
            time.sleep(0.02)
        took = time.time() - written
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"arrival to library, {backup.stat().st_size / MIB:.0f} MB backup, settle 5 s: "
        f"{took:.2f} s (target <= settle + verify {verify_seconds:.2f} s + 1 s = "
        f"{5 + verify_seconds + 1:.2f} s)"
    )


def bench_reconcile(root: Path, count: int) -> None:
    config_path = write_config(root, settle=0)
    share = root / "share"
    sample = CORPUS / "supervisor_backup_example.tar"
    for index in range(count):
        os.link(sample, share / f"backup-{index:05d}.tar")
    config = load_config(config_path)
    started = time.perf_counter()
    scan_once(config)  # brings all of them into the catalog (one archive, many sightings)
    print(
        f"  (first scan of {count} files with verification: {time.perf_counter() - started:.1f} s)"
    )
    catalog = Catalog(config.catalog_path)
    intake = Intake(catalog)
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        seen = intake.reconcile(config.sources[0])
        timings.append(time.perf_counter() - started)
    print(
        f"reconcile scan of {seen} archives already in the catalog: "
        f"{min(timings):.2f} s best of 3 (target <= 2 s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--idle-seconds", type=float, default=60)
    parser.add_argument("--arrival-mib", type=int, default=100)
    parser.add_argument("--archives", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        bench_reconcile(Path(tmp) / "reconcile", args.archives)
    with tempfile.TemporaryDirectory() as tmp:
        bench_arrival(Path(tmp) / "arrival", args.arrival_mib)
    with tempfile.TemporaryDirectory() as tmp:
        bench_idle(Path(tmp) / "idle", args.idle_seconds)


if __name__ == "__main__":
    main()
