"""backup.json, the kind of a backup, and HA's AgentBackup sidecar object.

backup.json as HA and supervisor write it (strings, booleans, numbers and lists of them
where each belongs, dates in ISO 8601) is read here directly.  Anything else (``"1"`` for a
number, a timestamp for a date, a missing key) goes to the pydantic model in ``model_lax``,
whose coercions and messages decide; both give the same BackupJson, as a test checks over
a table of values.  Loading pydantic takes a fifth of a second of one core, a sixth of a
full verification of 1 GiB, so the verifier does not load it for a backup HA wrote.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NoReturn

from .names import ha_base_name

BackupKind = Literal["automatic", "pre-update", "manual"]

# Supervisor names the backups it takes before an update "addon_<slug>_<version>" and
# "core_<version>"; HA's update dialog and users say "pre-update" or "before update".
_PRE_UPDATE_NAME = re.compile(r"^(addon_\S+_\S+|core_\S+)$|pre[-_ ]?update|before[-_ ]update", re.I)


REQUEST_DATE = "supervisor.backup_request_date"
# The folders HA's AgentBackup knows (its Folder enum); any other makes from_dict raise.
AGENT_FOLDERS = ("share", "addons/local", "ssl", "media")


class MetadataError(ValueError):
    """backup.json is not JSON or does not describe a backup."""


# A date typed by hand may be anything: kept a day inside datetime's range, where it can be
# shown in every time zone (year 9999 west of UTC, or year 1 east of it, would overflow).
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


def within_range(value: datetime) -> datetime:
    """``value`` (naive is UTC), or the nearest of EARLIEST and LATEST beyond them."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if value < EARLIEST:
        return EARLIEST
    if value > LATEST:
        return LATEST
    return value


@dataclass(frozen=True)
class HomeAssistantPart:
    version: str | None = None
    exclude_database: bool = False
    size: float = 0
    unknown_keys: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AddonPart:
    slug: str
    name: str = ""
    version: str = ""
    size: float = 0
    unknown_keys: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackupJson:
    """The ``backup.json`` of an HA backup: required keys enforced, unknown keys kept (in
    ``unknown_keys``, as they came)."""

    slug: str
    name: str
    date: datetime
    type: Literal["full", "partial"]
    version: int = 1
    compressed: bool = True
    protected: bool = False
    crypto: str | None = None
    homeassistant: HomeAssistantPart | None = None
    addons: list[AddonPart] = field(default_factory=list)
    folders: list[str] = field(default_factory=list)
    repositories: list[Any] = field(default_factory=list)
    supervisor_version: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    unknown_keys: dict[str, Any] = field(default_factory=dict)

    @property
    def display_date(self) -> str:
        """The date HA shows and names the backup by: when HA asked for it (local time),
        else ``date``.  Kept as HA's string, as its ``AgentBackup.date`` is."""
        requested = self.extra.get(REQUEST_DATE)
        if isinstance(requested, str):
            try:
                datetime.fromisoformat(requested)
            except ValueError:
                pass
            else:
                return requested
        return self.date.isoformat()

    @property
    def base_name(self) -> str:
        """HA's suggested file base name (``<name>_<date>_<time>_<sec+us>``), as HA's agents
        compute it; not yet a safe path component (see ``names.safe_base``)."""
        return ha_base_name(self.name, datetime.fromisoformat(self.display_date))

    @property
    def kind(self) -> BackupKind:
        if self.extra.get("with_automatic_settings") is True:
            return "automatic"
        if self.extra.get("supervisor.addon_update") or _PRE_UPDATE_NAME.search(self.name):
            return "pre-update"
        return "manual"

    @property
    def instance_id(self) -> str | None:
        value = self.extra.get("instance_id")
        return value if isinstance(value, str) and value else None

    @property
    def homeassistant_version(self) -> str | None:
        return self.homeassistant.version if self.homeassistant else None

    def expected_parts(self) -> list[str]:
        """Return the base names of the inner archives this backup lists (no extension)."""
        parts = ["homeassistant"] if self.homeassistant is not None else []
        parts += [addon.slug for addon in self.addons]
        parts += [folder.replace("/", "_") for folder in self.folders]
        return parts

    def agent_backup(self, size: int, *, protected: bool | None = None) -> dict[str, Any]:
        """Return HA's AgentBackup JSON object for a stored copy of ``size`` bytes, as HA
        core's own ``read_backup`` derives it from backup.json."""
        included = self.homeassistant_version is not None  # HA requires its version
        return {
            "addons": [{"name": a.name, "slug": a.slug, "version": a.version} for a in self.addons],
            "backup_id": self.slug,
            "date": self.display_date,
            "database_included": bool(
                included and self.homeassistant and not self.homeassistant.exclude_database
            ),
            "extra_metadata": _finite(self.extra),
            "folders": [folder for folder in self.folders if folder in AGENT_FOLDERS],
            "homeassistant_included": included,
            "homeassistant_version": self.homeassistant_version,
            "name": self.name,
            "protected": self.protected if protected is None else protected,
            "size": size,
        }

    def to_json(self) -> str:
        """Return backup.json as read (each object's known keys, then its unknown ones):
        what ``parse_backup_json`` reads back to an equal BackupJson."""
        return json.dumps(_json_object(self), ensure_ascii=False, default=_json_value)


def _finite(value: Any) -> Any:
    """``value`` with null for NaN and the infinities, which Python's JSON reader takes from
    a backup.json and writes back, but HA's own reader refuses (in one sidecar, that breaks
    HA's listing of the whole location)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _json_object(value: BackupJson | HomeAssistantPart | AddonPart) -> dict[str, Any]:
    fields = {name: getattr(value, name) for name in value.__dataclass_fields__}
    unknown = fields.pop("unknown_keys")
    return {**fields, **unknown}


def _json_value(value: datetime | HomeAssistantPart | AddonPart) -> Any:
    """What json.dumps cannot write itself: the date, and the parts."""
    return value.isoformat() if isinstance(value, datetime) else _json_object(value)


def parse_backup_json(data: bytes) -> BackupJson:
    """Parse backup.json bytes.  Raise MetadataError with a one-line reason."""
    try:  # ValueError: also a number of more than 4300 digits, which Python refuses
        raw = json.loads(data)
    except (UnicodeDecodeError, ValueError) as err:
        raise MetadataError(f"backup.json is not JSON ({err})") from err
    except RecursionError as err:
        raise MetadataError("backup.json is nested too deeply to read") from err
    if not isinstance(raw, dict):
        raise MetadataError("backup.json is not a JSON object")
    try:  # "\udc80" escapes decode to text no file name, log or sidecar can hold (HA refuses it)
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise MetadataError("backup.json holds text that is not valid Unicode") from err
    except RecursionError as err:
        raise MetadataError("backup.json is nested too deeply to read") from err
    try:
        return read_as_written(raw)
    except _Unusual:
        from .model_lax import validate  # pydantic: see the module's docstring

        return validate(raw)


# -- backup.json as HA writes it --------------------------------------------------------------


class _Unusual(Exception):
    """A value (or a missing key) that the lax model has to judge."""


def _unusual() -> NoReturn:
    raise _Unusual()


# A date as HA and supervisor write it (Python's isoformat): the fraction of 1 to 6 digits,
# the offset optional, "Z" accepted.  Every other form is the lax model's to judge.  The
# offset's hours and minutes are held in range here: fromisoformat takes "+05:75".
_ISO_DATE = re.compile(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)?"
)
_EXACT_FLOAT = 1 << 53
_BACKUP_KEYS = frozenset(BackupJson.__dataclass_fields__) - {"unknown_keys"}
_HOMEASSISTANT_KEYS = frozenset(HomeAssistantPart.__dataclass_fields__) - {"unknown_keys"}
_ADDON_KEYS = frozenset(AddonPart.__dataclass_fields__) - {"unknown_keys"}


def read_as_written(raw: dict[str, Any]) -> BackupJson:
    """Return the BackupJson of ``raw`` when each value has the JSON type HA writes for it.
    Raise _Unusual otherwise (the lax model decides then)."""
    protected = raw.get("protected", False)
    homeassistant = raw.get("homeassistant") or None  # {} is "no HA part", as for the model
    folders = _each(raw.get("folders", []), _text)
    return BackupJson(
        slug=_text(raw.get("slug", _Unusual)),
        name=_text(raw.get("name", _Unusual)),
        date=_date(raw.get("date", _Unusual)),
        type=raw["type"] if raw.get("type") in ("full", "partial") else _unusual(),
        version=_whole(raw.get("version", 1)),
        compressed=_flag(raw.get("compressed", True)),
        # Before March 2022 supervisor stored a one-character string; any string is true.
        protected=True if type(protected) is str else _flag(protected),
        crypto=_text_or_none(raw.get("crypto")),
        homeassistant=None if homeassistant is None else _homeassistant(homeassistant),
        addons=_each(raw.get("addons", []), _addon),
        # v1 listed the HA configuration as a folder; supervisor drops it, and HA's
        # AgentBackup refuses it (one such sidecar breaks the listing of a whole location).
        folders=[folder for folder in folders if folder != "homeassistant"],
        repositories=_each(raw.get("repositories", []), lambda value: value),
        supervisor_version=_text_or_none(raw.get("supervisor_version")),
        extra=dict(_object(raw.get("extra", {}))),
        unknown_keys=_unknown(raw, _BACKUP_KEYS),
    )


def _homeassistant(value: object) -> HomeAssistantPart:
    part = _object(value)
    return HomeAssistantPart(
        version=_text_or_none(part.get("version")),
        exclude_database=_flag(part.get("exclude_database", False)),
        size=_number(part["size"]) if "size" in part else 0,  # the model's default: int 0
        unknown_keys=_unknown(part, _HOMEASSISTANT_KEYS),
    )


def _addon(value: object) -> AddonPart:
    part = _object(value)
    return AddonPart(
        slug=_text(part.get("slug", _Unusual)),
        name=_text(part.get("name", "")),
        version=_text(part.get("version", "")),
        size=_number(part["size"]) if "size" in part else 0,  # the model's default: int 0
        unknown_keys=_unknown(part, _ADDON_KEYS),
    )


def _text(value: object) -> str:
    return value if type(value) is str else _unusual()


def _text_or_none(value: object) -> str | None:
    return None if value is None else _text(value)


def _flag(value: object) -> bool:
    return value if type(value) is bool else _unusual()


def _whole(value: object) -> int:
    return value if type(value) is int else _unusual()


def _number(value: object) -> float:
    """A finite JSON number, as a float (an int beyond a float's exact ones is unusual)."""
    if type(value) is int and abs(value) <= _EXACT_FLOAT:
        return float(value)
    if type(value) is float and math.isfinite(value):
        return value
    _unusual()


def _date(value: object) -> datetime:
    if type(value) is not str or not _ISO_DATE.fullmatch(value):
        _unusual()
    try:
        return within_range(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        _unusual()


def _object(value: object) -> dict[str, Any]:
    return value if type(value) is dict else _unusual()


def _each(value: object, read: Any) -> list[Any]:
    if type(value) is not list:
        _unusual()
    return [read(item) for item in value]


def _unknown(raw: dict[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in raw.items() if key not in known}
