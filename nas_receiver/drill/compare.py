"""Compare a backup with the previous one of the same HA instance: flag what dropped."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

COUNTED = ("entities", "devices", "config_entries", "automations")


@dataclass(frozen=True)
class Thresholds:
    """How much may drop before a backup is suspicious (fractions of the previous value)."""

    count_drop: float = 0.30  # e.g. 30 % fewer entities
    database_shrink: float = 0.90  # the database lost 90 % of its size
    archive_shrink: float = 0.50


def compare(previous: dict[str, Any], current: dict[str, Any], limits: Thresholds) -> list[str]:
    """Return one line per suspicious change from ``previous`` to ``current`` (pure)."""
    changes = []
    for key in COUNTED:
        before, after = previous.get(key), current.get(key)
        if (
            isinstance(before, int)
            and isinstance(after, int)
            and before > 0
            and after < before * (1 - limits.count_drop)
        ):
            changes.append(
                f"{key.replace('_', ' ')}: {before} -> {after} "
                f"({100 * (before - after) / before:.0f} % fewer)"
            )
    gone = sorted(set(previous.get("addons", [])) - set(current.get("addons", [])))
    if gone:
        changes.append(f"add-on(s) gone: {', '.join(gone)}")
    for key, limit, label in (
        ("database_bytes", limits.database_shrink, "database"),
        ("archive_bytes", limits.archive_shrink, "archive"),
    ):
        before, after = previous.get(key), current.get(key)
        if (
            isinstance(before, int)
            and isinstance(after, int)
            and before > 0
            and after < before * (1 - limit)
        ):
            changes.append(f"{label} shrank from {before} to {after} bytes")
    return changes
