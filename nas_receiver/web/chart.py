"""The backups timeline as SVG: one mark per backup, a lane per source, time across.

A mark's colour is its verdict and drill result, its area its size; each links to the
backup's page and names it in a tooltip.  Drawn here, so the page needs nothing from the
internet (a NAS may be offline)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape, quoteattr

WIDTH = 960
LANE = 46
LEFT = 120
RIGHT = 20
TOP = 10
AXIS = 28
R_MIN, R_MAX = 3.0, 11.0
MAX_TICKS = 8

# (class, legend): the CSS colours them (app.css), so the page and the legend agree
KINDS = (
    ("restorable", "valid, drill passed"),
    ("valid", "valid, not drilled"),
    ("warning", "valid, drill failed or suspicious"),
    ("invalid", "not valid (quarantined)"),
)


def mark_class(row: dict[str, Any]) -> str:
    """The class of a backup's mark: its verdict, refined by its drill."""
    if row["verdict"] != "valid":
        return "invalid"
    drill = row.get("drill")
    if drill is None:
        return "valid"
    if drill["verdict"] != "restorable" or drill["suspicious"]:
        return "warning"
    return "restorable"


def timeline(rows: list[dict[str, Any]], now: datetime | None = None) -> str:
    """The SVG of ``rows`` (as ``list_archives`` gives them) over the span they cover."""
    now = now or datetime.now(UTC)
    # a date typed on another machine may be anything: the chart spans at most from 2000 to
    # a month ahead, and a mark outside sits at its edge
    first, last = datetime(2000, 1, 1, tzinfo=UTC), now + timedelta(days=31)
    dated = [(row, min(max(at, first), last)) for row in rows if (at := _date(row)) is not None]
    sources = sorted({row["source"] for row, _at in dated}) or ["-"]
    height = TOP + LANE * len(sources) + AXIS
    end = max([at for _row, at in dated] + [now])
    start = min([at for _row, at in dated], default=end - timedelta(days=28))
    start = min(start, end - timedelta(days=28))  # at least four weeks across
    span = (end - start).total_seconds()
    biggest = max((row["size"] for row, _at in dated), default=1) or 1

    def x(at: datetime) -> float:
        return LEFT + (WIDTH - LEFT - RIGHT) * (at - start).total_seconds() / span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="timeline" role="img" '
        f'viewBox="0 0 {WIDTH} {height}" aria-label="backups over time">'
    ]
    for index, source in enumerate(sources):
        y = TOP + LANE * index + LANE / 2
        parts.append(f'<text class="lane" x="4" y="{y + 4:.0f}">{escape(source[:16])}</text>')
        parts.append(f'<line class="lane" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y}" y2="{y}"/>')
    parts += _ticks(start, end, x, TOP + LANE * len(sources))
    lane_of = {source: index for index, source in enumerate(sources)}
    for row, at in sorted(dated, key=lambda item: -item[0]["size"]):  # small ones on top
        y = TOP + LANE * lane_of[row["source"]] + LANE / 2
        radius = R_MIN + (R_MAX - R_MIN) * math.sqrt(row["size"] / biggest)
        title = f"{row['name']} — {at:%Y-%m-%d %H:%M} — {row['verdict']}"
        if row.get("drill"):
            title += f", drill: {row['drill']['verdict']}"
        parts.append(
            f"<a href={quoteattr('?view=backup&id=' + row['sha256'])}>"
            f'<circle class="mark {mark_class(row)}" cx="{x(at):.1f}" cy="{y:.1f}" '
            f'r="{radius:.1f}"><title>{escape(title)}</title></circle></a>'
        )
    parts.append("</svg>")
    return "".join(parts)


def instant(text: str | None) -> datetime | None:
    """An ISO date as written in a backup.json (naive is UTC); None when it is not one."""
    try:
        at = datetime.fromisoformat(text or "")
    except ValueError:
        return None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def _date(row: dict[str, Any]) -> datetime | None:
    """The backup's date; for one whose date is missing or unreadable, when it was verified."""
    return instant(row["date"]) or instant(row["verified_at"])


def _ticks(start: datetime, end: datetime, x: Any, bottom: float) -> list[str]:
    """At most about eight marks: months (every n-th), or weeks when the span is short."""
    days = (end - start).days
    if days < 100:
        step = max(1, math.ceil(days / 7 / MAX_TICKS))
        at = datetime(start.year, start.month, start.day, tzinfo=UTC)
        at -= timedelta(days=at.weekday())  # Mondays
        marks = []
        while at <= end:
            marks.append((at, f"{at:%d %b}"))
            at += timedelta(weeks=step)
    else:
        step = max(1, math.ceil(days / 30.4 / MAX_TICKS))
        at = datetime(start.year, start.month, 1, tzinfo=UTC)
        marks = []
        while at <= end:
            marks.append((at, f"{at:%b %Y}"))
            month = at.month - 1 + step
            at = datetime(at.year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    parts = []
    for at, label in marks:
        if at >= start:
            parts.append(
                f'<line class="tick" x1="{x(at):.1f}" x2="{x(at):.1f}" y1="{TOP}" '
                f'y2="{bottom}"/><text class="tick" x="{x(at):.1f}" y="{bottom + 16}" '
                f'text-anchor="middle">{label}</text>'
            )
    return parts
