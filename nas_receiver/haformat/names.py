"""Names in HA backups: inner archive names, the file name HA gives a backup, and turning
any of them into one safe path component.

A backup's ``name`` is free text typed by a user ("Before upgrade 1/2", "../x"), and member
names come from whoever wrote the archive: they are data, never paths.  Every path we build
from them goes through ``safe_component``.

Kept apart from ``model`` so that code needing only names loads the least.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime

# Room left for what we append to a base name: "_" + 16 hex of the SHA-256, the longest
# suffix we write (".tar.reason.json", 16 bytes) and a temporary name around it while it is
# written (".<name>.partial-" + 8 random characters, 18 bytes): 51, rounded up.
SUFFIX_ROOM = 64
NAME_MAX = 255  # bytes in one path component, on ext4, btrfs and every common filesystem


def inner_base_name(member_name: str) -> str | None:
    """Return ``homeassistant`` for ``homeassistant.tar.gz`` (or ``.tar``); None otherwise.

    Only names that are one safe component qualify: ``..tar.gz`` or ``a/b.tar.gz`` do not.
    """
    name = member_name.removeprefix("./")
    for suffix in (".tar.gz", ".tar"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            return base if base and safe_component(base) == base else None
    return None


def ha_base_name(name: str, date: datetime) -> str:
    """Return the file base name HA suggests (and its S3 agent recomputes) for a backup.

    This is HA's own formula, so it may hold a ``/`` or control characters; a path is made
    from it only through ``safe_component``."""
    return "_".join(f"{name} {date:%Y-%m-%d %H.%M %S%f}".split())


def safe_component(text: str, *, room: int = 0) -> str:
    """Return ``text`` as one path component that names a plain entry in its folder.

    Separators and control characters become ``_``; ``.``/``..`` and leading dots (hidden,
    and ignored by HA's loader) are replaced; the result fits ``NAME_MAX - room`` bytes of
    UTF-8 without splitting a character.  Equal inputs give equal outputs."""
    chars = ["_" if _unsafe(char) else char for char in text]
    cleaned = "".join(chars).strip()
    stripped = cleaned.lstrip(".")
    cleaned = "_" * (len(cleaned) - len(stripped)) + stripped if stripped else "_"
    limit = NAME_MAX - room
    encoded = cleaned.encode("utf-8")
    if len(encoded) > limit:
        cleaned = encoded[:limit].decode("utf-8", errors="ignore").rstrip() or "_"
    return cleaned


def safe_base(name: str, date: datetime) -> str:
    """HA's suggested base name, made one safe component with room for our suffixes."""
    return safe_component(ha_base_name(name, date), room=SUFFIX_ROOM)


def _unsafe(char: str) -> bool:
    return char in "/\\" or unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp")


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def shown(text: str) -> str:
    """``text`` for one line of a log or a terminal: control and format characters (C0, C1,
    line and paragraph separators, bidi overrides) as escapes, so a name typed by a user
    can neither forge a line nor repaint a terminal."""
    if text.isprintable():
        return text
    return "".join(
        _NAMED.get(char) or (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        if _unsafe(char) and char not in "/\\"
        else char
        for char in text
    )
