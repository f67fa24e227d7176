"""backup.json: every field HA has written, unknown keys tolerated, kinds, the sidecar."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from nas_receiver.haformat import model_lax
from nas_receiver.haformat.model import (
    AddonPart,
    BackupJson,
    HomeAssistantPart,
    MetadataError,
    _Unusual,
    parse_backup_json,
    read_as_written,
)
from nas_receiver.haformat.model_lax import validate
from nas_receiver.haformat.names import ha_base_name, inner_base_name
from tests.builders import AGENT_BACKUP_KEYS

BASE = {
    "slug": "7fed74c8",
    "name": "Example",
    "date": "2024-11-21T17:58:38.135597+00:00",
    "type": "partial",
}


def _parse(**changes: object) -> object:
    return parse_backup_json(json.dumps({**BASE, **changes}).encode())


def test_minimal_backup_json_gets_defaults() -> None:
    backup = parse_backup_json(json.dumps(BASE).encode())
    assert backup.compressed is True and backup.protected is False
    assert backup.addons == [] and backup.folders == [] and backup.homeassistant is None
    assert backup.expected_parts() == []


@pytest.mark.parametrize("missing", ["slug", "name", "date", "type"])
def test_required_keys_are_enforced(missing: str) -> None:
    raw = {k: v for k, v in BASE.items() if k != missing}
    with pytest.raises(MetadataError, match=f"at '{missing}'"):
        parse_backup_json(json.dumps(raw).encode())


def test_unknown_keys_are_kept_and_nested_too() -> None:
    backup = _parse(future={"x": 1}, homeassistant={"version": "2026.3.0", "new": True})
    assert backup.unknown_keys == {"future": {"x": 1}}  # type: ignore[attr-defined]
    assert backup.homeassistant_version == "2026.3.0"  # type: ignore[attr-defined]


def test_date_keeps_its_offset_and_microseconds_may_be_missing() -> None:
    backup = _parse(date="2025-02-08T04:45:00+01:00")
    assert backup.date.utcoffset() == timedelta(hours=1)  # type: ignore[attr-defined]
    naive = _parse(date="2021-05-01T10:00:00")
    assert naive.date.tzinfo is UTC  # type: ignore[attr-defined]


def test_duplicated_key_keeps_the_last_like_json_parsers() -> None:
    raw = (
        b'{"slug": "a", "slug": "b", "name": "n", '
        b'"date": "2025-01-01T00:00:00+00:00", "type": "full"}'
    )
    assert parse_backup_json(raw).slug == "b"


@pytest.mark.parametrize(
    ("extra", "name", "kind"),
    [
        ({"with_automatic_settings": True}, "Automatic backup 2025.2.1", "automatic"),
        ({"supervisor.addon_update": "core_mosquitto"}, "addon_core_mosquitto_6.4.1", "pre-update"),
        ({}, "core_2025.1.4", "pre-update"),
        ({}, "Pre-update backup", "pre-update"),
        ({"with_automatic_settings": False}, "My backup", "manual"),
        ({}, "Custom backup 2025.5.1", "manual"),
    ],
)
def test_kind(extra: dict[str, object], name: str, kind: str) -> None:
    assert _parse(extra=extra, name=name).kind == kind  # type: ignore[attr-defined]


def test_expected_parts_and_folder_names() -> None:
    backup = _parse(
        homeassistant={"version": "2025.1.0"},
        addons=[{"slug": "core_ssh", "name": "SSH", "version": "9"}],
        folders=["share", "addons/local"],
    )
    assert backup.expected_parts() == ["homeassistant", "core_ssh", "share", "addons_local"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"slug": ' + b"1" * 5000 + b"}", "not JSON"),
        (b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
    ids=["a number of 5000 digits", "nested 100000 deep"],
)
def test_backup_json_python_cannot_hold_is_metadata_error_not_a_crash(
    data: bytes, message: str
) -> None:
    """verify never raises for what a file holds: these were tracebacks."""
    with pytest.raises(MetadataError, match=message):
        parse_backup_json(data)


def test_not_json_and_not_object() -> None:
    with pytest.raises(MetadataError, match="not JSON"):
        parse_backup_json(b"{")
    with pytest.raises(MetadataError, match="not a JSON object"):
        parse_backup_json(b"[]")


def test_agent_backup_has_every_key_ha_reads() -> None:
    backup = _parse(
        homeassistant={"version": "2025.1.0", "exclude_database": True},
        addons=[{"slug": "core_ssh", "name": "SSH", "version": "9"}],
        folders=["ssl"],
        protected=True,
        extra={"instance_id": "abc"},
    )
    sidecar = backup.agent_backup(1234)  # type: ignore[attr-defined]
    assert set(sidecar) == AGENT_BACKUP_KEYS
    assert sidecar["addons"] == [{"name": "SSH", "slug": "core_ssh", "version": "9"}]
    assert sidecar["database_included"] is False and sidecar["homeassistant_included"] is True
    assert sidecar["size"] == 1234 and sidecar["protected"] is True
    assert backup.agent_backup(1, protected=False)["protected"] is False  # type: ignore[attr-defined]


def test_a_sidecar_is_json_ha_can_read_even_from_nan_in_backup_json() -> None:
    """Python reads NaN and Infinity in a backup.json; HA's JSON reader refuses them, and
    one such sidecar breaks HA's listing of a whole location."""
    raw = b'{"slug": "a", "name": "n", "date": "2025-01-01T00:00:00+00:00", "type": "full", '
    raw += b'"extra": {"x": NaN, "y": [Infinity, 1.5], "z": {"w": -Infinity}}}'
    sidecar = parse_backup_json(raw).agent_backup(1)
    assert sidecar["extra_metadata"] == {"x": None, "y": [None, 1.5], "z": {"w": None}}
    json.dumps(sidecar, allow_nan=False)  # raises on any non-finite number


def test_ha_base_name_matches_ha_s3_agent() -> None:
    date = datetime(2025, 2, 8, 4, 45, 0, tzinfo=timezone(timedelta(hours=1)))
    assert ha_base_name("Automatic backup 2025.2.1", date) == (
        "Automatic_backup_2025.2.1_2025-02-08_04.45_00000000"
    )


def test_inner_base_name() -> None:
    assert inner_base_name("homeassistant.tar.gz") == "homeassistant"
    assert inner_base_name("share.tar") == "share"
    assert inner_base_name("backup.json") is None
    assert inner_base_name("sub/x.tar.gz") is None


@pytest.mark.parametrize("value", ["c", "x", "", "yes"])
def test_a_v1_era_protected_string_is_true(value: str) -> None:
    """Supervisor before March 2022 stored a one-character string; any string is true."""
    backup = _parse(protected=value)
    assert backup.protected is True  # type: ignore[attr-defined]
    assert backup.agent_backup(1)["protected"] is True  # type: ignore[attr-defined]


def test_homeassistant_is_dropped_from_folders_and_version_defaults_to_1() -> None:
    backup = _parse(folders=["homeassistant", "ssl"], homeassistant={"version": "2024.6.1"})
    assert backup.folders == ["ssl"]  # type: ignore[attr-defined]
    assert backup.version == 1  # type: ignore[attr-defined]
    assert backup.expected_parts() == ["homeassistant", "ssl"]  # type: ignore[attr-defined]


def test_sidecar_follows_ha_core_read_backup() -> None:
    """What HA's read_backup derives: HA included only with a version; unknown folders, which
    AgentBackup.from_dict refuses, are left out; the date is HA's display date."""
    sidecar = _parse(
        homeassistant={"exclude_database": True},
        folders=["ssl", "some_future_folder"],
        extra={"supervisor.backup_request_date": "2024-11-21T18:58:30.000001+01:00"},
    ).agent_backup(5)  # type: ignore[attr-defined]
    assert sidecar["homeassistant_included"] is False and sidecar["database_included"] is False
    assert sidecar["folders"] == ["ssl"]
    assert sidecar["date"] == "2024-11-21T18:58:30.000001+01:00"


def test_names_come_from_the_request_date_when_there_is_one() -> None:
    backup = _parse(extra={"supervisor.backup_request_date": "2024-11-21T18:58:30.000001+01:00"})
    assert backup.base_name == "Example_2024-11-21_18.58_30000001"  # type: ignore[attr-defined]
    unreadable = _parse(extra={"supervisor.backup_request_date": "soon"})
    assert unreadable.display_date == BASE["date"]  # type: ignore[attr-defined]


# -- the reader of backup.json as HA writes it, against the lax model ------------------------

_VALUES: list[object] = [
    *("x", "", "1", "0", "true", "yes", "full", "partial", "homeassistant", "ssl"),
    *(0, 1, -1, 7, 2**53, 2**53 + 1, 10**30, 0.0, 1.0, 1.5, -2.5, 1e308),
    *(True, False, None, float("nan"), float("inf")),
    *([], ["x"], ["homeassistant", "ssl"], [1], [None], [{"slug": "a"}], [{"slug": 1}], ["a", 2]),
    *({}, {"x": 1}, {"version": "1"}, {"slug": "a"}, {"version": 1}, {"size": "2"}),
]
_DATES: list[object] = [
    "2024-11-21T17:58:38.135597+00:00",
    "2024-11-21T17:58:38Z",
    "2024-11-21T17:58:38.5+01:00",
    "2024-11-21T17:58:38-09:30",
    "2024-11-21T17:58:38",
    "2024-11-21T17:58:38.1234567+00:00",
    "2024-11-21T17:58:38,5+00:00",
    "2024-11-21 17:58:38",
    "2024-11-21",
    "2024-11-21T17:58",
    "2024-11-21T17:58:38+0100",
    "2024-11-21T17:58:38+01",
    "2024-02-30T00:00:00",
    "2024-11-21T24:00:00",
    "2024-11-21T23:59:60",
    "2024-11-21T17:58:38+24:00",
    "2024-11-21T17:58:38+12:99",
    "2024-11-21T17:58:38-05:60",
    "2024-11-21T17:58:38+23:59",
    "2024-11-21T17:58:38-23:59",
    "0001-01-01T00:00:00+01:00",
    "9999-12-31T23:59:59-01:00",
    "20241121T175838",
    1700000000,
    1.7e12,
]
_PART_KEYS = {
    "homeassistant": ["version", "exclude_database", "size", "new"],
    "addons": ["slug", "name", "version", "size", "new"],
}
_TOP_KEYS = [
    *("slug", "name", "date", "type", "version", "compressed", "protected", "crypto"),
    *("homeassistant", "addons", "folders", "repositories", "supervisor_version", "extra"),
    *("future", "unknown_keys"),
]
_FULL = {
    **BASE,
    "homeassistant": {"version": "2025.1.0", "exclude_database": False, "size": 1.5},
    "addons": [{"slug": "core_ssh", "name": "SSH", "version": "9", "size": 10}],
}


def _variants() -> list[dict[str, object]]:
    """backup.json with one value changed (or removed) at a time, in every place."""
    variants: list[dict[str, object]] = []
    for key in _TOP_KEYS:
        variants.append({k: v for k, v in _FULL.items() if k != key})
        for value in [*_VALUES, *(_DATES if key == "date" else [])]:
            variants.append({**_FULL, key: value})
    for key in _PART_KEYS["homeassistant"]:
        part: dict[str, object] = dict(_FULL["homeassistant"])  # type: ignore[call-overload]
        variants.append({**_FULL, "homeassistant": {k: v for k, v in part.items() if k != key}})
        variants += [{**_FULL, "homeassistant": {**part, key: value}} for value in _VALUES]
    for key in _PART_KEYS["addons"]:
        addon = {"slug": "core_ssh", "name": "SSH", "version": "9", "size": 10}
        variants.append({**_FULL, "addons": [{k: v for k, v in addon.items() if k != key}]})
        variants += [{**_FULL, "addons": [{**addon, key: value}]} for value in _VALUES]
    return variants


def test_the_reader_of_what_ha_writes_agrees_with_the_lax_model_wherever_it_reads() -> None:
    """Every backup.json the quick reader accepts, the pydantic model (which decides the
    rest) reads to the same BackupJson: no verdict depends on which of the two read it.
    And the quick reader takes every form HA and supervisor write."""
    read, unusual = 0, 0
    for raw in _variants():
        try:
            quick = read_as_written(raw)
        except _Unusual:
            unusual += 1
            continue
        read += 1
        lax = validate(raw)
        assert quick == lax, raw
        assert quick.to_json() == lax.to_json(), raw
        assert quick.date.utcoffset() == lax.date.utcoffset(), raw
        assert [type(a.size) for a in quick.addons] == [type(a.size) for a in lax.addons], raw
    assert read > 150 and unusual > 150  # both sides of the line were exercised


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(_FULL, id="HA core"),
        pytest.param({**BASE, "protected": "c", "crypto": "aes128"}, id="supervisor 2021"),
        pytest.param(
            {
                **BASE,
                "version": 2,
                "compressed": True,
                "protected": True,
                "crypto": None,
                "date": "2025-02-08T04:45:00.123456Z",
                "homeassistant": {"version": "2025.2.1", "exclude_database": True, "size": 0.5},
                "addons": [{"slug": "a0d7b954_ssh", "name": "SSH", "version": "18", "size": 0}],
                "folders": ["share", "ssl", "addons/local", "media"],
                "repositories": ["https://github.com/hassio-addons/repository"],
                "supervisor_version": "2025.02.1",
                "extra": {"supervisor.backup_request_date": "2025-02-08T05:45:00+01:00"},
            },
            id="supervisor 2025",
        ),
    ],
)
def test_backup_json_as_ha_writes_it_is_read_without_the_lax_model(raw: dict[str, object]) -> None:
    assert read_as_written(raw) == validate(raw)


def test_the_lax_model_has_the_fields_of_backup_json() -> None:
    for lax, model in [
        (model_lax.BackupJson, BackupJson),
        (model_lax.AddonPart, AddonPart),
        (model_lax.HomeAssistantPart, HomeAssistantPart),
    ]:
        assert list(lax.model_fields) == list(model.__dataclass_fields__)[:-1]  # unknown_keys


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"homeassistant": "x"},
            "at 'homeassistant': Input should be a valid dictionary or instance of "
            "HomeAssistantPart",
        ),
        (
            {"addons": [1]},
            "at 'addons.0': Input should be a valid dictionary or instance of AddonPart",
        ),
        ({"date": "2024-11-21T17:58:38+05:75"}, "at 'date': Input should be a valid datetime"),
    ],
)
def test_the_lax_model_s_messages_are_those_users_saw_before(
    changes: dict[str, object], message: str
) -> None:
    """Where backup.json is wrong, the message (in verify's problems, the catalog and the
    page) is pydantic's as before, naming the classes it always named."""
    with pytest.raises(MetadataError, match=re.escape(message)):
        _parse(**changes)


def test_to_json_reads_back_to_the_same_backup_json() -> None:
    backup = _parse(**{k: v for k, v in _FULL.items() if k not in BASE}, future=[1, "ü"])
    assert parse_backup_json(backup.to_json().encode()) == backup  # type: ignore[attr-defined]
