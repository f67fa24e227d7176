"""Benchmark the restore drill on a backup with a large recorder database (default 500 MB):
time, peak disk use, and the bound the drill promises (HA part uncompressed + 10 %).

    .venv/bin/python bench/bench_drill.py [--db-mib 500]
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generate import MIB, OUT
from nas_receiver.drill import run_drill
from nas_receiver.haformat import KeyRing, verify_archive
from tests.builders import KEY, BackupSpec, make_ha_config, write_backup_from


def grow_database(path: Path, mib: int) -> None:
    """Fill the recorder database with state rows until it is ``mib`` MiB."""
    rng = random.Random(5)
    words = [f"sensor.thing_{i}" for i in range(500)]
    with sqlite3.connect(path) as db:
        while path.stat().st_size < mib * MIB:
            rows = [
                (rng.choice(words), f"{rng.random():.6f}", time.time(), rng.randbytes(64).hex())
                for _ in range(20000)
            ]
            db.executemany(
                "INSERT INTO states (entity_id, state, ts) VALUES (?, ?, ?)", [r[:3] for r in rows]
            )
            db.executemany(
                "INSERT INTO states (entity_id, state, ts) VALUES (?, ?, ?)",
                [(r[0], r[3], r[2]) for r in rows],
            )
            db.commit()
    db.close()


def ensure_backup(mib: int) -> Path:
    path = OUT / f"drill-{mib}MiB-db.tar"
    if path.exists():
        return path
    work = OUT / f"drill-{mib}MiB-content"
    config = make_ha_config(work / "ha", entities=400)
    grow_database(config / "home-assistant_v2.db", mib)
    spec = BackupSpec(password=KEY, addons=(), folders=())
    partial = path.with_suffix(".partial")
    write_backup_from(partial, spec, [("homeassistant", config)])
    partial.rename(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db-mib", type=int, default=500)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    backup = ensure_backup(args.db_mib)
    keys = KeyRing([KEY])
    ha = next(
        i for i in verify_archive(backup, keys=keys).inner if i.name.startswith("homeassistant")
    )
    started = time.perf_counter()
    report = run_drill(backup, keys, work_dir=OUT / "drill-work")
    seconds = time.perf_counter() - started
    bound = (ha.content_bytes or 0) * 1.10
    print(
        f"drill of {backup.name} ({backup.stat().st_size / MIB:.0f} MiB archive, database "
        f"{report.counts.get('database_bytes', 0) / MIB:.0f} MiB): {report.verdict} in "
        f"{seconds:.1f} s; peak disk {report.peak_disk_bytes / MIB:.0f} MiB "
        f"(bound: HA part {(ha.content_bytes or 0) / MIB:.0f} MiB + 10 % = {bound / MIB:.0f} MiB)"
    )


if __name__ == "__main__":
    main()
