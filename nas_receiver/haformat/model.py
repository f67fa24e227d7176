"""backup.json, the kind of a backup, and HA's AgentBackup sidecar object."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

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


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class HomeAssistantPart(_Tolerant):
    version: str | None = None
    exclude_database: bool = False
    size: float = 0


class AddonPart(_Tolerant):
    slug: str
    name: str = ""
    version: str = ""
    size: float = 0


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


class BackupJson(_Tolerant):
    """The ``backup.json`` of an HA backup: required keys enforced, unknown keys kept."""

    slug: str
    name: str
    date: datetime
    type: Literal["full", "partial"]
    version: int = 1
    compressed: bool = True
    protected: bool = False
    crypto: str | None = None
    homeassistant: HomeAssistantPart | None = None
    addons: list[AddonPart] = Field(default_factory=list)
    folders: list[str] = Field(default_factory=list)
    repositories: list[Any] = Field(default_factory=list)
    supervisor_version: str | None = None
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("date")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        return within_range(value if value.tzinfo else value.replace(tzinfo=UTC))

    @field_validator("homeassistant", mode="before")
    @classmethod
    def _empty_part(cls, value: Any) -> Any:
        return value or None

    @field_validator("protected", mode="before")
    @classmethod
    def _legacy_protected(cls, value: Any) -> Any:
        # Before March 2022 supervisor stored a one-character string; any string is true.
        return True if isinstance(value, str) else value

    @field_validator("folders", mode="before")
    @classmethod
    def _no_homeassistant_folder(cls, value: Any) -> Any:
        # v1 listed the HA configuration as a folder; supervisor drops it, and HA's
        # AgentBackup refuses it (one such sidecar breaks the listing of a whole location).
        if isinstance(value, list):
            return [folder for folder in value if folder != "homeassistant"]
        return value

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
            "extra_metadata": self.extra,
            "folders": [folder for folder in self.folders if folder in AGENT_FOLDERS],
            "homeassistant_included": included,
            "homeassistant_version": self.homeassistant_version,
            "name": self.name,
            "protected": self.protected if protected is None else protected,
            "size": size,
        }


def parse_backup_json(data: bytes) -> BackupJson:
    """Parse backup.json bytes.  Raise MetadataError with a one-line reason."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise MetadataError(f"backup.json is not JSON ({err})") from err
    if not isinstance(raw, dict):
        raise MetadataError("backup.json is not a JSON object")
    try:  # "\udc80" escapes decode to text no file name, log or sidecar can hold (HA refuses it)
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise MetadataError("backup.json holds text that is not valid Unicode") from err
    try:
        return BackupJson.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise MetadataError(f"backup.json: at '{where}': {first['msg']}") from err
