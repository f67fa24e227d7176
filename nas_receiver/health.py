"""Daily health checks that raise alerts: a source gone quiet (the dead-man alarm) and keys
that no longer open the newest backup.  Each alert is recorded once a day at most."""

from __future__ import annotations

import time

from .catalog import Catalog
from .config import Config
from .drills import prove_keys
from .report import source_status

DAY = 86400.0


def daily_checks(config: Config, catalog: Catalog, now: float | None = None) -> int:
    """Record ``overdue`` and ``keys`` events where due; return how many were recorded."""
    now = now or time.time()
    recorded = 0
    status = source_status(config, catalog, now)
    for source in status["sources"]:
        quiet = [
            p
            for p in source["problems"]
            if p.startswith(("no new valid backup", "no valid backup"))
        ]
        if quiet and _due(catalog, "overdue", source["name"], now):
            catalog.event(
                "overdue",
                f"{source['name']}: {quiet[0]}",
                level="warning",
                source=source["name"],
                now=now,
            )
            recorded += 1
    for source in prove_keys(config, catalog, now)["sources"]:
        if source["warnings"] and _due(catalog, "keys", source["name"], now):
            catalog.event(
                "keys",
                f"{source['name']}: {'; '.join(source['warnings'])}",
                level="warning",
                source=source["name"],
                now=now,
            )
            recorded += 1
    return recorded


def _due(catalog: Catalog, kind: str, source: str, now: float) -> bool:
    last = catalog.last_event_at(kind, source)
    return last is None or now - last >= DAY
