"""Names typed by users and member names from archives become one safe path component."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nas_receiver.haformat.names import (
    NAME_MAX,
    SUFFIX_ROOM,
    inner_base_name,
    safe_base,
    safe_component,
)

DATE = datetime(2026, 11, 20, 4, 45, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Automatic_backup_2026.11.1", "Automatic_backup_2026.11.1"),
        ("Before upgrade 1/2", "Before upgrade 1_2"),
        ("../x", "___x"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("   ", "_"),
        (".hidden", "_hidden"),
        ("a\\b", "a_b"),
        ("line\nforged INFO done", "line_forged INFO done"),
        ("bell\x07\x1b[31m", "bell__[31m"),
        ("rtl\u202etxt", "rtl_txt"),
        ("Küche \u2013 Sicherung", "Küche \u2013 Sicherung"),
    ],
)
def test_safe_component(text: str, expected: str) -> None:
    assert safe_component(text) == expected


@given(st.text())
def test_any_text_becomes_one_plain_component(text: str) -> None:
    name = safe_component(text, room=SUFFIX_ROOM)
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert all(ord(char) >= 0x20 and char != "\x7f" for char in name)
    assert len(name.encode("utf-8")) <= NAME_MAX - SUFFIX_ROOM


def test_long_names_keep_room_for_suffixes_and_whole_characters() -> None:
    base = safe_base("Sicherung für die Küche " * 30, DATE)
    assert len(base.encode()) <= NAME_MAX - SUFFIX_ROOM
    assert len(f"{base}_0123abcd.tar.7z.json".encode()) <= NAME_MAX
    base.encode("utf-8").decode("utf-8")  # no character cut in half


def test_ha_names_that_are_safe_stay_exactly_as_ha_makes_them() -> None:
    """HA's S3 agent recomputes the key from the sidecar: a plain name must not change."""
    assert safe_base("Automatic backup 2026.11.1", DATE) == (
        "Automatic_backup_2026.11.1_2026-11-20_04.45_00000000"
    )


@pytest.mark.parametrize(
    ("member", "base"),
    [
        ("homeassistant.tar.gz", "homeassistant"),
        ("./homeassistant.tar.gz", "homeassistant"),
        ("addons_local.tar", "addons_local"),
        ("..tar.gz", None),
        ("...tar.gz", None),
        ("a/b.tar.gz", None),
        (".tar.gz", None),
        ("x\n.tar.gz", None),
        ("backup.json", None),
    ],
)
def test_inner_base_names_are_plain(member: str, base: str | None) -> None:
    assert inner_base_name(member) == base


def test_destination_keys_keep_has_time_and_fall_back_to_sha_suffixes() -> None:
    """HA's times hold dots (04.45): the variants add to the whole name, never cut it."""
    import json

    from nas_receiver.config import DestinationConfig
    from nas_receiver.mirror import object_keys

    settings = DestinationConfig.model_validate(
        {"name": "usb", "type": "local", "path": "/x", "encryption": "none"}
    )
    archive = {
        "sha256": "0123456789abcdef" * 4,
        "backup_json": json.dumps(
            {"slug": "a", "name": "Automatic backup", "date": DATE.isoformat(), "type": "full"}
        ),
    }
    base = "homeassistant/Automatic_backup_2026-11-20_04.45_00000000"
    assert object_keys(settings, archive, packed=False) == [
        f"{base}.tar",
        f"{base}_01234567.tar",
        f"{base}_0123456789abcdef.tar",
    ]
    named = {**archive, "library_name": "Automatic_backup_2026-11-20_04.45_00000000_aa.tar"}
    assert object_keys(settings, named, packed=True)[0] == f"{base}_aa.tar.7z"
