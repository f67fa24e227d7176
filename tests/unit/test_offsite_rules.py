"""The pure parts of off-site copying: bandwidth windows, the throttle, the send filter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from nas_receiver.config import BandwidthWindow, DestinationConfig, SendFilter
from nas_receiver.destinations.throttle import Throttle, rate_for
from nas_receiver.mirror import selected

DAY = BandwidthWindow.model_validate({"from": "08:00", "to": "23:00", "limit": 1000})
NIGHT = BandwidthWindow.model_validate({"from": "23:00", "to": "06:00", "limit": None})


@pytest.mark.parametrize(
    ("clock", "expected"),
    [
        ("07:59", 5000),
        ("08:00", 1000),
        ("22:59", 1000),
        ("23:00", None),
        ("02:30", None),
        ("06:00", 5000),
    ],
)
def test_bandwidth_windows(clock: str, expected: int | None) -> None:
    hour, minute = map(int, clock.split(":"))
    assert rate_for(5000, [DAY, NIGHT], datetime(2026, 11, 26, hour, minute)) == expected


def test_throttle_spreads_bytes_over_time() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    throttle = Throttle(1000, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        throttle.take(1000)
    assert sum(slept) == pytest.approx(5.0)  # 5000 bytes at 1000 bytes/s
    now[0] += 60  # idle for a minute: at most one second of it is saved up as a burst
    throttle.take(2000)
    assert sum(slept) == pytest.approx(6.0)
    unlimited = Throttle(None, clock=lambda: now[0], sleep=sleep)
    unlimited.take(10**9)
    assert sum(slept) == pytest.approx(6.0)


def _archive(date: str, kind: str) -> dict[str, Any]:
    return {"sha256": date + kind, "date": date, "kind": kind}


def test_send_filter() -> None:
    archives = [
        _archive("2026-11-24T04:45:00+00:00", "automatic"),
        _archive("2026-11-24T20:00:00+00:00", "manual"),
        _archive("2026-11-25T04:45:00+00:00", "automatic"),
        _archive("2026-11-25T09:00:00+00:00", "pre-update"),
        _archive("2026-11-25T10:00:00+00:00", "automatic"),
    ]
    base = {"name": "c2", "type": "s3", "bucket": "b"}
    every = DestinationConfig.model_validate(base)
    assert selected(every, archives) == archives
    automatic = DestinationConfig.model_validate({**base, "send": {"kinds": ["automatic"]}})
    assert [a["date"][:13] for a in selected(automatic, archives)] == [
        "2026-11-24T04",
        "2026-11-25T04",
        "2026-11-25T10",
    ]
    daily = DestinationConfig.model_validate(
        {**base, "send": SendFilter(kinds=["automatic"], newest_per_day=True).model_dump()}
    )
    assert [a["date"][:13] for a in selected(daily, archives)] == ["2026-11-24T04", "2026-11-25T10"]
