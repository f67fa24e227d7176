"""Mirror jobs: every valid library archive gets a verified copy at each destination.

The catalog records an upload before it starts and its result after (``present`` once the
destination has checked the SHA-256, ``failed`` with the reason), so a stopped run is simply
done again: a put is idempotent by SHA-256.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .catalog import Catalog, CopyState
from .config import Config, DestinationConfig
from .destinations.base import Destination, DestinationError
from .destinations.local import LocalDestination
from .haformat.model import parse_backup_json
from .haformat.names import ha_base_name

log = logging.getLogger(__name__)

LIBRARY = "library"


@dataclass(frozen=True)
class Outcome:
    destination: str
    sha256: str
    name: str
    result: str  # "copied", "failed"
    detail: str = ""
    permanent: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def open_destination(settings: DestinationConfig) -> Destination:
    return LocalDestination(settings.name, settings.path)


def object_key(settings: DestinationConfig, archive: dict[str, Any]) -> str:
    """``<prefix>/<HA base name>.tar``: the name HA's own agents compute from the sidecar."""
    base = ha_base_name(archive["name"], datetime.fromisoformat(archive["date"]))
    return f"{settings.prefix.strip('/')}/{base}.tar" if settings.prefix else f"{base}.tar"


def mirror_once(config: Config, catalog: Catalog, only: str | None = None) -> list[Outcome]:
    """Copy every valid library archive a destination lacks; return what happened."""
    outcomes: list[Outcome] = []
    for settings in config.destinations:
        if only is None or settings.name == only:
            outcomes += _mirror_to(settings, catalog)
    return outcomes


def _mirror_to(settings: DestinationConfig, catalog: Catalog) -> list[Outcome]:
    destination = open_destination(settings)
    outcomes = []
    for archive, source in _library_archives(catalog):
        held = [
            c
            for c in catalog.copies(archive["sha256"], settings.name)
            if c.state == CopyState.PRESENT
        ]
        if held:
            continue
        outcome = _copy_one(destination, settings, catalog, archive, source)
        outcomes.append(outcome)
        if outcome.permanent:
            break  # the same refusal would meet every other archive
    return outcomes


def _copy_one(
    destination: Destination,
    settings: DestinationConfig,
    catalog: Catalog,
    archive: dict[str, Any],
    source: Path,
) -> Outcome:
    sha = archive["sha256"]
    key = object_key(settings, archive)
    backup = parse_backup_json(archive["backup_json"].encode())
    copy_id = catalog.begin_copy(sha, settings.name, time.time(), key=key)
    try:
        stored = destination.put(source, key, backup.agent_backup(archive["size"]), sha)
    except DestinationError as err:
        catalog.fail_copy(copy_id, str(err), time.time())
        catalog.event(
            "mirror",
            f"{archive['name']}: copy to {settings.name} failed: {err}",
            level="warning",
            sha256=sha,
        )
        log.warning("mirror: %s to %s failed: %s", archive["name"], settings.name, err)
        return Outcome(settings.name, sha, archive["name"], "failed", str(err), err.permanent)
    catalog.finish_copy(copy_id, stored.key, sha, verified=True, now=time.time(), detail="checked")
    log.info("mirror: %s copied to %s as %s", archive["name"], settings.name, key)
    return Outcome(settings.name, sha, archive["name"], "copied")


def _library_archives(catalog: Catalog) -> list[tuple[dict[str, Any], Path]]:
    """Valid archives with a present, verified library copy (the original), oldest first."""
    found = []
    for archive in catalog.archives():
        if archive["verdict"] != "valid" or not archive["backup_json"]:
            continue
        copy = next(
            (
                c
                for c in catalog.copies(archive["sha256"], LIBRARY)
                if c.state == CopyState.PRESENT and c.verified and c.path
            ),
            None,
        )
        if copy is not None and copy.path and Path(copy.path).exists():
            found.append((archive, Path(copy.path)))
    return found
