"""When is a file finished?  Pure decisions on what the catalog knows of a sighting."""

from __future__ import annotations

from ..catalog import Sighting, SightingState


def is_due(
    sighting: Sighting,
    now: float,
    *,
    settle_seconds: float,
    give_up_seconds: float,
    awaiting_sidecar: bool,
) -> bool:
    """Return True when a sighting should be verified now.

    A waiting file is due once unchanged for ``settle_seconds`` (and, in a folder where HA's
    Synology agent writes ``_meta.json`` sidecars after each successful upload, once its
    sidecar is there, or it has been unchanged for ``give_up_seconds``).  A file verified
    ``incomplete`` is due again only when given up: unchanged for ``give_up_seconds``.  A
    file whose keeping failed is due at its next try.
    """
    quiet = now - sighting.stable_since
    if sighting.state == SightingState.WAITING:
        if awaiting_sidecar:
            return quiet >= give_up_seconds
        return quiet >= settle_seconds
    if sighting.state == SightingState.INCOMPLETE:
        return quiet >= give_up_seconds
    if sighting.state == SightingState.FAILED:  # a failed job waits for its next try
        return now >= (sighting.next_try or 0)
    return False


def given_up(sighting: Sighting, now: float, give_up_seconds: float) -> bool:
    """Return True when an unchanged incomplete file counts as abandoned."""
    return now - sighting.stable_since >= give_up_seconds
