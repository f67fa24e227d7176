"""Benchmark `prune --dry-run` over a catalog of many archives (target: 20,000 in <= 1 s).

.venv/bin/python bench/bench_prune.py [--archives 20000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_receiver import prune
from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from tests.daemon_helpers import write_config


def fill_catalog(catalog: Catalog, count: int) -> None:
    """Insert ``count`` archives (4 a day, 3 HA instances) with a present library copy."""
    start = datetime(2026, 11, 26, tzinfo=UTC)
    with catalog.transaction() as db:
        for index in range(count):
            sha = f"{index:064x}"
            date = start - timedelta(hours=6 * index)
            db.execute(
                "INSERT INTO archives (sha256, slug, name, date, source, kind, instance_id,"
                " protected, size, verdict, problems, verified_at, first_seen) VALUES"
                " (?, ?, ?, ?, 'home', 'automatic', ?, 1, 1000, 'valid', '[]', 0, 0)",
                (
                    sha,
                    f"{index:08x}",
                    f"Automatic backup {index}",
                    date.isoformat(),
                    f"instance{index % 3}",
                ),
            )
            db.execute(
                "INSERT INTO copies (sha256, location, state, path, verified, updated_at)"
                " VALUES (?, 'library', 'present', ?, 1, 0)",
                (sha, f"/nowhere/{index}.tar"),
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archives", type=int, default=20000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = write_config(root)
        text = config.read_text().replace(
            "library: {path: ",
            "library: {retention: {keep_daily: 7, keep_weekly: 4, keep_monthly: 12,"
            " keep_yearly: 3, min_valid: 3}, path: ",
        )
        config.write_text(text)
        fill_catalog(Catalog(root / "data" / "catalog.sqlite3"), args.archives)
        command = [
            sys.executable,
            "-m",
            "nas_receiver.cli",
            "--config",
            str(config),
            "prune",
            "--dry-run",
            "--json",
            "--location",
            "library",
        ]
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            result = subprocess.run(command, capture_output=True, text=True, check=True)
            timings.append(time.perf_counter() - started)
        rows = json.loads(result.stdout)
        catalog = Catalog(root / "data" / "catalog.sqlite3")
        settings = load_config(config)
        started = time.perf_counter()
        prune.plan(settings, catalog, "library", now=datetime.now(UTC))
        in_process = time.perf_counter() - started
        kept = sum(row["action"] == "keep" for row in rows)
        print(
            f"prune --dry-run over {len(rows)} archives ({kept} kept): "
            f"{min(timings):.2f} s best of 3, whole command (target <= 1 s); "
            f"the plan itself {in_process:.2f} s"
        )


if __name__ == "__main__":
    main()
