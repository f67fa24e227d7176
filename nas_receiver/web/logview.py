"""The daemon's log file as the page shows it: the newest lines, filtered, and the lines
written since the page last looked (by byte offset, so following costs no re-read)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TAIL_BYTES = 512 << 10  # the page shows at most the last 512 KiB (a few thousand lines)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,\d+)? ([A-Z]+) (.*)$")


@dataclass(frozen=True)
class LogLine:
    at: str  # as written (local time of the NAS), empty for a traceback's continuation
    level: str
    text: str


@dataclass(frozen=True)
class LogPage:
    lines: list[LogLine]  # newest first
    end: int  # the file's size when read: where the next look starts
    truncated: bool  # older lines were left out


def read_log(
    path: Path | None, *, after: int | None = None, level: str = "", text: str = ""
) -> LogPage:
    """The lines of ``path`` (after byte ``after``, else its tail), newest first, keeping
    those at ``level`` or above that contain ``text`` (case-insensitive).  A rotated file
    (smaller than ``after``) is read from its start."""
    if path is None:
        return LogPage([], 0, False)
    try:
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if after is None:
                start = max(0, size - TAIL_BYTES)
            else:
                start = after if 0 <= after <= size else 0  # rotated: a new file
                start = max(start, size - TAIL_BYTES)  # never more than a tail at once
            handle.seek(start)
            data = handle.read(size - start)
    except FileNotFoundError:
        return LogPage([], 0, False)
    truncated = start > 0 and start != after
    if truncated:
        data = data.split(b"\n", 1)[1] if b"\n" in data else b""
    lines = [_parse(raw) for raw in data.decode("utf-8", "replace").splitlines() if raw]
    wanted = [line for line in lines if _keep(line, level, text.lower())]
    return LogPage(wanted[::-1], size, truncated)


def _parse(raw: str) -> LogLine:
    match = _LINE.match(raw)
    if match is None:
        return LogLine("", "", raw)
    return LogLine(match[1], match[2], match[3])


def _keep(line: LogLine, level: str, needle: str) -> bool:
    if (
        level in LEVELS
        and line.level
        and LEVELS.index(line.level if line.level in LEVELS else "INFO") < LEVELS.index(level)
    ):
        return False
    return not needle or needle in line.text.lower() or needle in line.level.lower()
