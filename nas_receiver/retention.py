"""Retention: which archives a location keeps, and why.  Pure: values in, values out.

The rules follow restic's ``forget``: they are ORed (an archive is kept when any rule keeps
it); a calendar rule ``keep_daily: 7`` keeps the newest archive of each of the last 7 days
*that have archives*; durations (``keep_within``, ``keep_kinds``) count back from the newest
archive of the group, so a pause in backups never ages old ones out.  Buckets use the NAS's
local time zone.  With fewer periods than a calendar rule asks for, the oldest archive is kept
too (as restic does).  No policy, or an empty one, keeps everything.

The safety floors (``apply_floors``) turn deletions into keeps and are applied by the only
function that deletes (``prune.delete_copies``), whatever asked for the deletion.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Literal, NamedTuple

Action = Literal["keep", "delete"]

_CALENDAR: list[tuple[str, str, Callable[[datetime], object]]] = [
    ("keep_hourly", "hourly", lambda d: (d.year, d.month, d.day, d.hour)),
    ("keep_daily", "daily", lambda d: (d.year, d.month, d.day)),
    ("keep_weekly", "weekly", lambda d: d.isocalendar()[:2]),
    ("keep_monthly", "monthly", lambda d: (d.year, d.month)),
    ("keep_yearly", "yearly", lambda d: d.year),
]
_LABEL: dict[str, Callable[[datetime], str]] = {
    "hourly": lambda d: d.strftime("%Y-%m-%d %H:00"),
    "daily": lambda d: d.strftime("%Y-%m-%d"),
    "weekly": lambda d: "{}-W{:02d}".format(*d.isocalendar()[:2]),
    "monthly": lambda d: d.strftime("%Y-%m"),
    "yearly": lambda d: d.strftime("%Y"),
}


@dataclass(frozen=True)
class Policy:
    """A retention policy.  ``keep_kinds`` maps a kind to a duration, None meaning forever."""

    keep_last: int = 0
    keep_within: timedelta | None = None
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_kinds: Mapping[str, timedelta | None] = field(default_factory=dict)
    min_valid: int = 0

    def is_empty(self) -> bool:
        counts = (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )
        return not any(counts) and self.keep_within is None and not self.keep_kinds


class Candidate(NamedTuple):
    """One archive held at the location being pruned (a named tuple: tens of thousands are
    made per prune)."""

    sha256: str
    name: str
    date: datetime
    group: str
    kind: str
    valid: bool  # verified valid (a locked or damaged archive is not)
    pinned: bool = False


class Decision(NamedTuple):
    sha256: str
    name: str
    date: datetime
    group: str
    action: Action
    reasons: tuple[str, ...]


def select(
    candidates: Iterable[Candidate], policy: Policy, *, tz: tzinfo | None = None
) -> list[Decision]:
    """Apply the policy's rules (not the floors) to each group; newest first."""
    by_group: dict[str, list[Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_group[candidate.group].append(candidate)
    decisions: list[Decision] = []
    for group in sorted(by_group):
        decisions += _select_group(by_group[group], policy, tz)
    return decisions


def _select_group(candidates: list[Candidate], policy: Policy, tz: tzinfo | None) -> list[Decision]:
    ordered = sorted(candidates, key=lambda c: (c.date, c.sha256), reverse=True)
    reasons: dict[str, list[str]] = {c.sha256: [] for c in ordered}
    if policy.is_empty():
        for candidate in ordered:
            reasons[candidate.sha256].append("no policy")
    else:
        _apply_rules(ordered, policy, tz, reasons)
    for candidate in ordered:
        if candidate.pinned:
            reasons[candidate.sha256].append("pinned")
    return [
        Decision(
            c.sha256,
            c.name,
            c.date,
            c.group,
            "keep" if reasons[c.sha256] else "delete",
            tuple(reasons[c.sha256]),
        )
        for c in ordered
    ]


def _apply_rules(
    ordered: list[Candidate], policy: Policy, tz: tzinfo | None, reasons: dict[str, list[str]]
) -> None:
    for rank, candidate in enumerate(ordered[: policy.keep_last]):
        reasons[candidate.sha256].append(f"last {rank + 1}")
    newest = ordered[0].date if ordered else None
    if policy.keep_within is not None and newest is not None:
        for candidate in ordered:
            if candidate.date >= newest - policy.keep_within:
                reasons[candidate.sha256].append(f"within {_days(policy.keep_within)}")
    for setting, label, bucket_of in _CALENDAR:
        _keep_calendar(ordered, getattr(policy, setting), label, bucket_of, tz, reasons)
    if newest is not None:
        _keep_kinds(ordered, policy.keep_kinds, newest, reasons)


def _keep_calendar(
    ordered: list[Candidate],
    count: int,
    label: str,
    bucket_of: Callable[[datetime], object],
    tz: tzinfo | None,
    reasons: dict[str, list[str]],
) -> None:
    """Keep the newest archive of each of the last ``count`` periods that have archives."""
    wanted = count
    last_bucket: object = None
    for candidate in ordered:
        if count <= 0:
            return
        local = candidate.date.astimezone(tz)
        bucket = bucket_of(local)
        if bucket != last_bucket:
            reasons[candidate.sha256].append(f"{label} {_LABEL[label](local)}")
            last_bucket = bucket
            count -= 1
    if count > 0 and ordered:
        # As restic: with fewer periods than asked for, the oldest archive is kept too.
        reasons[ordered[-1].sha256].append(f"oldest ({label}: {wanted - count} of {wanted})")


def _keep_kinds(
    ordered: list[Candidate],
    keep_kinds: Mapping[str, timedelta | None],
    newest: datetime,
    reasons: dict[str, list[str]],
) -> None:
    for candidate in ordered:
        if candidate.kind not in keep_kinds:
            continue
        duration = keep_kinds[candidate.kind]
        if duration is None:
            reasons[candidate.sha256].append(f"{candidate.kind}: forever")
        elif candidate.date >= newest - duration:
            reasons[candidate.sha256].append(f"{candidate.kind}: within {_days(duration)}")


def _days(duration: timedelta) -> str:
    if duration.total_seconds() % 86400 == 0:
        return f"{duration.days}d"
    return f"{duration.total_seconds() / 3600:g}h"


# -- safety floors ------------------------------------------------------------------------------


class Holding(NamedTuple):
    """A copy of an archive somewhere (for the floors' view of the whole world)."""

    location: str
    verified: bool  # present and verified valid there


@dataclass(frozen=True)
class World:
    """What the floors need beyond one location: every copy of every archive, and which
    locations are expected to hold which archive (mirror destinations that select it)."""

    holdings: Mapping[str, Sequence[Holding]] = field(default_factory=dict)
    expected: Mapping[str, Sequence[str]] = field(default_factory=dict)
    written_by_us: Callable[[str], bool] = lambda _sha: True


def apply_floors(
    decisions: Sequence[Decision],
    candidates: Sequence[Candidate],
    location: str,
    policy: Policy,
    world: World,
) -> list[Decision]:
    """Turn every deletion that would break a floor into a keep, saying which floor."""
    info = {c.sha256: c for c in candidates}
    result: list[Decision] = []
    deleted: dict[str, int] = defaultdict(int)
    valid_left: dict[str, int] = defaultdict(int)
    for candidate in candidates:
        if candidate.valid:
            valid_left[candidate.group] += 1
    newest_valid = _newest_valid(candidates)
    for decision in sorted(decisions, key=lambda d: (d.date, d.sha256), reverse=True):
        if decision.action == "keep":
            result.append(decision)
            continue
        candidate = info[decision.sha256]
        floor = _floor(candidate, location, policy, world, newest_valid, valid_left)
        if floor:
            result.append(
                Decision(
                    decision.sha256,
                    decision.name,
                    decision.date,
                    decision.group,
                    "keep",
                    (*decision.reasons, f"floor: {floor}"),
                )
            )
            continue
        if candidate.valid:
            valid_left[candidate.group] -= 1
        deleted[candidate.group] += 1
        result.append(decision)
    return sorted(result, key=lambda d: (d.group, d.date, d.sha256), reverse=True)


def _newest_valid(candidates: Sequence[Candidate]) -> dict[str, str]:
    newest: dict[str, Candidate] = {}
    for candidate in candidates:
        if candidate.valid:
            best = newest.get(candidate.group)
            if best is None or (candidate.date, candidate.sha256) > (best.date, best.sha256):
                newest[candidate.group] = candidate
    return {group: c.sha256 for group, c in newest.items()}


def _floor(  # noqa: PLR0911  (one return per floor reads best)
    candidate: Candidate,
    location: str,
    policy: Policy,
    world: World,
    newest_valid: Mapping[str, str],
    valid_left: Mapping[str, int],
) -> str | None:
    sha = candidate.sha256
    if candidate.pinned:
        return "pinned"
    if newest_valid.get(candidate.group) == sha:
        return "newest valid"
    if candidate.valid and valid_left[candidate.group] <= policy.min_valid:
        return f"min_valid {policy.min_valid}"
    if not world.written_by_us(sha):
        return "not written by nas-receiver"
    holdings = [h for h in world.holdings.get(sha, ()) if h.location != location]
    waiting = [
        loc
        for loc in world.expected.get(sha, ())
        if loc != location and not any(h.location == loc and h.verified for h in holdings)
    ]
    if waiting:
        return f"not yet verified at {', '.join(sorted(waiting))}"
    if (
        candidate.valid
        and not any(h.verified for h in holdings)
        and valid_left[candidate.group] <= 1
    ):
        return "only valid copy anywhere"
    return None
