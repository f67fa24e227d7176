"""Retention as restic's forget does it, plus the safety floors; tables and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from nas_receiver.retention import (
    Candidate,
    Holding,
    Policy,
    World,
    apply_floors,
    select,
)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def _archives(
    dates: list[datetime], *, kind: str = "automatic", group: str = "home", valid: bool = True
) -> list[Candidate]:
    return [
        Candidate(f"{i:064x}", f"backup {d:%Y-%m-%d %H:%M}", d, group, kind, valid)
        for i, d in enumerate(dates)
    ]


def _kept(candidates: list[Candidate], policy: Policy) -> set[datetime]:
    by_sha = {c.sha256: c.date for c in candidates}
    return {by_sha[d.sha256] for d in select(candidates, policy, tz=UTC) if d.action == "keep"}


def _daily(days: int, hour: int = 4) -> list[datetime]:
    return [NOW.replace(hour=hour) - timedelta(days=i) for i in range(days)]


def test_no_policy_keeps_everything() -> None:
    archives = _archives(_daily(30))
    decisions = select(archives, Policy(), tz=UTC)
    assert all(d.action == "keep" and d.reasons == ("no policy",) for d in decisions)


def test_keep_last() -> None:
    archives = _archives(_daily(10))
    assert _kept(archives, Policy(keep_last=3)) == set(_daily(3))


def test_keep_daily_keeps_newest_of_each_day_that_has_archives() -> None:
    # two a day for 10 days, with a 3-day gap: the gap does not count as days
    dates = [d for day in _daily(14) for d in (day, day.replace(hour=20))]
    dates = [d for d in dates if not 4 <= (NOW - d).days <= 6]
    kept = _kept(_archives(dates), Policy(keep_daily=5))
    days_with_archives = sorted({d.date() for d in dates}, reverse=True)[:5]
    assert {d.date() for d in kept} == set(days_with_archives)
    assert all(d.hour == 20 or d.date() == NOW.date() for d in kept)  # the newest of each day
    assert len(kept) == 5


def test_restic_documented_hundred_years_example() -> None:
    """restic's docs: one backup a day for 100 years, forget --keep-daily 7 --keep-weekly 5
    --keep-monthly 12 --keep-yearly 75 keeps the 7 newest dailies, 4 more last-days-of-the-
    week (the dailies hold one), 11 or 12 more last-days-of-the-month, and yearly ones.
    "The dailies hold one" weekly when the newest backup is on a Sunday, as here."""
    sunday = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)
    dates = [sunday - timedelta(days=i) for i in range(365 * 100)]
    archives = _archives(dates)
    decisions = select(
        archives, Policy(keep_daily=7, keep_weekly=5, keep_monthly=12, keep_yearly=75), tz=UTC
    )
    kept = [d for d in decisions if d.action == "keep"]
    rules = {
        rule: [d for d in kept if any(r.startswith(rule) for r in d.reasons)]
        for rule in ("daily", "weekly", "monthly", "yearly")
    }
    assert [len(rules[r]) for r in ("daily", "weekly", "monthly", "yearly")] == [7, 5, 12, 75]
    only_weekly = [d for d in rules["weekly"] if d not in rules["daily"]]
    assert len(only_weekly) == 4
    monthly_new = [d for d in rules["monthly"] if d not in rules["daily"] + rules["weekly"]]
    assert len(monthly_new) in (11, 12)
    assert len(kept) == len({d.sha256 for d in kept})
    assert all(d.action == "delete" for d in decisions if d not in kept)


def test_keep_within_counts_from_the_newest_archive_not_now() -> None:
    old = [NOW - timedelta(days=100 + i) for i in range(20)]  # backups stopped 100 days ago
    kept = _kept(_archives(old), Policy(keep_within=timedelta(days=14)))
    assert kept == {d for d in old if d >= old[0] - timedelta(days=14)}


def test_fewer_periods_than_asked_keeps_the_oldest_too() -> None:
    dates = _daily(3)
    decisions = select(_archives(dates), Policy(keep_monthly=6), tz=UTC)
    reasons = {d.date: d.reasons for d in decisions}
    assert reasons[dates[0]] == ("monthly 2026-11",)
    assert reasons[dates[-1]] == ("oldest (monthly: 1 of 6)",)


def test_keep_kinds() -> None:
    manual = _archives([NOW - timedelta(days=400)], kind="manual")
    pre = _archives([NOW - timedelta(days=10), NOW - timedelta(days=60)], kind="pre-update")
    pre = [Candidate(f"p{i}", c.name, c.date, c.group, c.kind, True) for i, c in enumerate(pre)]
    auto = _archives([NOW], kind="automatic")
    auto = [Candidate("a0", c.name, c.date, c.group, c.kind, True) for c in auto]
    policy = Policy(keep_last=1, keep_kinds={"manual": None, "pre-update": timedelta(days=30)})
    decisions = {d.sha256: d for d in select(manual + pre + auto, policy, tz=UTC)}
    assert decisions[manual[0].sha256].reasons == ("manual: forever",)
    assert decisions["p0"].reasons == ("pre-update: within 30d",)
    assert decisions["p1"].action == "delete"


def test_buckets_use_local_time() -> None:
    # 23:30 UTC on the 1st is already the 2nd in UTC+2: two different local days
    tz = timezone(timedelta(hours=2))
    dates = [datetime(2026, 3, 1, 23, 30, tzinfo=UTC), datetime(2026, 3, 1, 21, 0, tzinfo=UTC)]
    archives = _archives(dates)
    local = {
        d.date
        for d in select(archives, Policy(keep_daily=5), tz=tz)
        if any(r.startswith("daily") for r in d.reasons)
    }
    utc = {
        d.date
        for d in select(archives, Policy(keep_daily=5), tz=UTC)
        if any(r.startswith("daily") for r in d.reasons)
    }
    assert local == set(dates) and utc == {dates[0]}


def test_groups_are_separate() -> None:
    archives = _archives(_daily(5), group="home") + [
        Candidate(f"{i:064x}x", "cabin", d, "cabin", "automatic", True)
        for i, d in enumerate(_daily(5))
    ]
    decisions = select(archives, Policy(keep_last=2), tz=UTC)
    for group in ("home", "cabin"):
        assert sum(d.action == "keep" for d in decisions if d.group == group) == 2


# -- floors -------------------------------------------------------------------------------------


def _plan(
    candidates: list[Candidate],
    policy: Policy,
    world: World | None = None,
    location: str = "library",
) -> dict[str, tuple[str, tuple[str, ...]]]:
    decisions = apply_floors(
        select(candidates, policy, tz=UTC), candidates, location, policy, world or World()
    )
    return {d.sha256: (d.action, d.reasons) for d in decisions}


def test_floor_newest_valid_survives_even_when_newer_ones_are_damaged() -> None:
    damaged = _archives(_daily(3), valid=False)
    good = [Candidate("g" * 64, "good", NOW - timedelta(days=10), "home", "automatic", True)]
    plan = _plan(damaged + good, Policy(keep_last=1))
    assert plan["g" * 64] == ("keep", ("floor: newest valid",))


def test_floor_min_valid() -> None:
    archives = _archives(_daily(6))
    plan = _plan(archives, Policy(keep_last=1, min_valid=3))
    assert sum(action == "keep" for action, _ in plan.values()) == 3
    assert any("floor: min_valid 3" in r for _, r in plan.values())


def test_floor_pinned() -> None:
    archives = _archives(_daily(4))
    pinned = Candidate(
        archives[3].sha256, "old", archives[3].date, "home", "automatic", True, pinned=True
    )
    plan = _plan([*archives[:3], pinned], Policy(keep_last=1))
    assert plan[pinned.sha256][0] == "keep" and "pinned" in plan[pinned.sha256][1]


def test_floor_not_yet_at_destination_and_not_ours() -> None:
    archives = _archives(_daily(3))
    old = archives[2].sha256
    world = World(expected={old: ["offsite"]}, holdings={old: [Holding("offsite", False)]})
    assert _plan(archives, Policy(keep_last=1), world)[old] == (
        "keep",
        ("floor: not yet verified at offsite",),
    )
    world = World(expected={old: ["offsite"]}, holdings={old: [Holding("offsite", True)]})
    assert _plan(archives, Policy(keep_last=1), world)[old][0] == "delete"
    foreign = World(written_by_us=lambda sha: sha != old)
    assert _plan(archives, Policy(keep_last=1), foreign)[old] == (
        "keep",
        ("floor: not written by nas-receiver",),
    )


# -- properties ---------------------------------------------------------------------------------

_dates = st.lists(st.integers(0, 3 * 365 * 24), min_size=1, max_size=40, unique=True).map(
    lambda hours: [NOW - timedelta(hours=h) for h in hours]
)
_policies = st.builds(
    Policy,
    keep_last=st.integers(0, 5),
    keep_hourly=st.integers(0, 5),
    keep_daily=st.integers(0, 10),
    keep_weekly=st.integers(0, 6),
    keep_monthly=st.integers(0, 12),
    keep_yearly=st.integers(0, 3),
    keep_within=st.one_of(st.none(), st.integers(1, 60).map(lambda d: timedelta(days=d))),
    min_valid=st.integers(0, 4),
)


def _candidates(dates: list[datetime], validity: list[bool]) -> list[Candidate]:
    return [
        Candidate(f"{i:064x}", "b", d, "home", "automatic", validity[i % len(validity)])
        for i, d in enumerate(dates)
    ]


@settings(max_examples=200, deadline=None)
@given(_dates, _policies, st.lists(st.booleans(), min_size=1, max_size=5))
def test_floors_always_hold(dates: list[datetime], policy: Policy, validity: list[bool]) -> None:
    candidates = _candidates(dates, validity)
    decisions = apply_floors(
        select(candidates, policy, tz=UTC), candidates, "library", policy, World()
    )
    kept = {d.sha256 for d in decisions if d.action == "keep"}
    valid = [c for c in candidates if c.valid]
    if valid:
        newest = max(valid, key=lambda c: (c.date, c.sha256))
        assert newest.sha256 in kept
        assert len([c for c in valid if c.sha256 in kept]) >= min(policy.min_valid, len(valid))
    assert select(candidates, policy, tz=UTC) == select(candidates, policy, tz=UTC)


@settings(max_examples=200, deadline=None)
@given(
    _dates,
    _policies,
    st.sampled_from(["keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly"]),
)
def test_adding_a_rule_never_deletes_more(dates: list[datetime], policy: Policy, rule: str) -> None:
    candidates = _candidates(dates, [True])
    before = {d.sha256 for d in select(candidates, policy, tz=UTC) if d.action == "keep"}
    more = Policy(**{**policy.__dict__, rule: getattr(policy, rule) + 1})
    after = {d.sha256 for d in select(candidates, more, tz=UTC) if d.action == "keep"}
    if not policy.is_empty():
        assert before <= after


@settings(max_examples=200, deadline=None)
@given(_dates, _policies)
def test_a_second_prune_deletes_nothing_more(dates: list[datetime], policy: Policy) -> None:
    candidates = _candidates(dates, [True])
    first = apply_floors(select(candidates, policy, tz=UTC), candidates, "library", policy, World())
    kept = {d.sha256 for d in first if d.action == "keep"}
    remaining = [c for c in candidates if c.sha256 in kept]
    second = apply_floors(select(remaining, policy, tz=UTC), remaining, "library", policy, World())
    assert all(d.action == "keep" for d in second)


def test_the_readme_worked_example() -> None:
    today = datetime(2026, 11, 26, 4, 45, tzinfo=UTC)  # a Thursday
    archives = _archives([today - timedelta(days=i) for i in range(200)])
    kept = _kept(archives, Policy(keep_daily=7, keep_weekly=4, keep_monthly=3))
    expected = [f"2026-11-{d:02d}" for d in (26, 25, 24, 23, 22, 21, 20, 15, 8)]
    expected += ["2026-10-31", "2026-09-30"]
    assert sorted(d.date().isoformat() for d in kept) == sorted(expected)
