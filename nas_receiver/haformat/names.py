"""Names in HA backups: inner archive names and the file name HA gives a backup.

Kept apart from ``model`` (pydantic) so that code needing only names loads fast.
"""

from __future__ import annotations

from datetime import datetime


def inner_base_name(member_name: str) -> str | None:
    """Return ``homeassistant`` for ``homeassistant.tar.gz`` (or ``.tar``); None otherwise."""
    for suffix in (".tar.gz", ".tar"):
        if member_name.endswith(suffix) and "/" not in member_name:
            return member_name[: -len(suffix)]
    return None


def ha_base_name(name: str, date: datetime) -> str:
    """Return the file base name HA suggests (and its S3 agent recomputes) for a backup."""
    return "_".join(f"{name} {date:%Y-%m-%d %H.%M %S%f}".split())
