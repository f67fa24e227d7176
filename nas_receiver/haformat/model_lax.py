"""backup.json as pydantic reads it: the rules for every value HA does not write itself.

``model.read_as_written`` reads backup.json as HA writes it; whatever it finds unusual (a
number in a string, a timestamp for a date, a key missing) is judged here, by pydantic's
lax coercions and with its messages.  The result is the same BackupJson either way.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from . import model
from .model import MetadataError, within_range


class _Tolerant(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


# Each class has the name of its counterpart in model: pydantic's messages name them ("Input
# should be a valid dictionary or instance of HomeAssistantPart").


class HomeAssistantPart(_Tolerant):
    version: str | None = None
    exclude_database: bool = False
    size: float = 0


class AddonPart(_Tolerant):
    slug: str
    name: str = ""
    version: str = ""
    size: float = 0


class BackupJson(_Tolerant):
    """The fields of BackupJson (a test holds the two to the same names)."""

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
        # See model.read_as_written.
        if isinstance(value, list):
            return [folder for folder in value if folder != "homeassistant"]
        return value


def validate(raw: dict[str, Any]) -> model.BackupJson:
    """Return the BackupJson of ``raw``.  Raise MetadataError saying where it is wrong."""
    try:
        lax = BackupJson.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise MetadataError(f"backup.json: at '{where}': {first['msg']}") from err
    part = lax.homeassistant
    return model.BackupJson(
        **_fields(lax, exclude=frozenset({"homeassistant", "addons"})),
        homeassistant=model.HomeAssistantPart(**_fields(part)) if part is not None else None,
        addons=[model.AddonPart(**_fields(addon)) for addon in lax.addons],
    )


def _fields(lax: BaseModel, exclude: frozenset[str] = frozenset()) -> dict[str, Any]:
    names = [name for name in type(lax).model_fields if name not in exclude]
    values = {name: getattr(lax, name) for name in names}
    return {**values, "unknown_keys": dict(lax.model_extra or {})}
