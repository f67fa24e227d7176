"""When a file counts as finished: a table of cases."""

from __future__ import annotations

import pytest

from nas_receiver.catalog import Sighting
from nas_receiver.intake.stability import is_due


def _sighting(state: str, stable_since: float) -> Sighting:
    return Sighting(
        id=1,
        source="s",
        path="a.tar",
        size=10,
        mtime_ns=0,
        state=state,
        stable_since=stable_since,
        first_seen=0,
        sha256=None,
        verdict=None,
        attempts=0,
        sidecar=None,
    )


@pytest.mark.parametrize(
    ("state", "quiet", "awaiting_sidecar", "due"),
    [
        ("waiting", 29, False, False),
        ("waiting", 30, False, True),
        ("waiting", 31, True, False),  # DSM agent folder: its sidecar has not come yet
        ("waiting", 3600, True, True),  # ... and never will: verify anyway
        ("incomplete", 31, False, False),  # incomplete: only again when given up
        ("incomplete", 3600, False, True),
        ("verifying", 9999, False, False),
        ("done", 9999, False, False),
        ("gone", 9999, False, False),
    ],
)
def test_is_due(state: str, quiet: float, awaiting_sidecar: bool, due: bool) -> None:
    sighting = _sighting(state, stable_since=1000)
    assert (
        is_due(
            sighting,
            1000 + quiet,
            settle_seconds=30,
            give_up_seconds=3600,
            awaiting_sidecar=awaiting_sidecar,
        )
        is due
    )
