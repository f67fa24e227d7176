"""The configuration: one YAML file, validated by pydantic, explained by path when wrong.

Lookup order: ``--config``, then ``$NAS_RECEIVER_CONFIG``, then ``/etc/nas-receiver/config.yaml``;
with none of them, the embedded default: everything under ``./nas-receiver-data/``.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError
from .retention import Policy

ENV_CONFIG = "NAS_RECEIVER_CONFIG"
SYSTEM_CONFIG = Path("/etc/nas-receiver/config.yaml")
DEFAULT_DATA_DIR = Path("nas-receiver-data")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(value: Any) -> timedelta:
    """Parse ``30``, ``30s``, ``5m``, ``2h``, ``8d`` or ``1w`` into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return timedelta(seconds=value)
        except (OverflowError, ValueError):
            raise ValueError(f"{value!r} is not a usable duration") from None
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError(f"not a duration: {value!r} (use e.g. 30s, 5m, 2h, 8d)")
    try:
        return timedelta(seconds=float(match[1]) * _UNITS[match[2]])
    except OverflowError:
        raise ValueError(f"{value!r} is too long a duration") from None


def _not_negative(value: timedelta) -> timedelta:
    if value < timedelta(0):
        raise ValueError("a duration cannot be negative")
    return value


def _key_file(value: Any) -> Any:
    """A key file's path, never the key itself (it would be printed in messages)."""
    if isinstance(value, str) and _INLINE_KEY.search(value.upper()):
        raise ValueError(
            "this is an encryption key, not a key file: put the key in a file readable "
            "only by nas-receiver (chmod 600) and give that file's path"
        )
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(_not_negative)]
KeyFile = Annotated[Path, BeforeValidator(_key_file)]
_INLINE_KEY = re.compile(r"[A-Z0-9]{4}(?:\s*-\s*[A-Z0-9]{4}){6}")  # HA's key, however typed


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Section):
    """One folder HA writes backups to (one HA instance, one share)."""

    name: str = Field(
        description="short name of this HA instance; a folder name in the library",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
    )
    path: Path = Field(description="the folder (NFS/SMB export) HA writes its backups to")
    keys: list[KeyFile] = Field(
        default_factory=list, description="key files (bare key or emergency kit), tried in order"
    )
    watch: Literal["inotify", "poll"] = Field(
        "inotify", description="inotify on the NAS itself; poll for network mounts"
    )
    settle_seconds: float = Field(
        30,
        ge=0,
        allow_inf_nan=False,
        description="a file unchanged this long is a candidate for verification",
    )
    give_up: Duration = Field(
        timedelta(hours=6),
        description="an incomplete file unchanged this long is abandoned and quarantined",
    )
    expect_every: Duration | None = Field(
        None, description="alarm when no new backup arrives within this time (e.g. 8d)"
    )


def _forever_or_duration(value: Any) -> timedelta | None:
    if value is None or (isinstance(value, str) and value.strip().lower() == "forever"):
        return None
    return _not_negative(parse_duration(value))


KeepFor = Annotated[timedelta | None, BeforeValidator(_forever_or_duration)]


class RetentionConfig(_Section):
    """A retention policy; rules are ORed, like restic's forget.  Empty keeps everything."""

    keep_last: int = Field(0, ge=0, description="keep the newest N archives")
    keep_within: Duration | None = Field(
        None, description="keep archives this close to the newest one (e.g. 14d)"
    )
    keep_hourly: int = Field(0, ge=0, description="newest archive of each of the last N hours")
    keep_daily: int = Field(0, ge=0, description="newest archive of each of the last N days")
    keep_weekly: int = Field(0, ge=0, description="newest archive of each of the last N weeks")
    keep_monthly: int = Field(0, ge=0, description="newest archive of each of the last N months")
    keep_yearly: int = Field(0, ge=0, description="newest archive of each of the last N years")
    keep_kinds: dict[Literal["automatic", "manual", "pre-update"], KeepFor] = Field(
        default_factory=dict,
        description="per kind of backup: a duration, or forever (e.g. {manual: forever})",
    )
    min_valid: int = Field(0, ge=0, description="never fewer verified-valid archives than this")

    def policy(self) -> Policy:
        return Policy(**self.model_dump())


class NotifyConfig(_Section):
    """Where alerts go: DSM's desktop and any apprise URL."""

    dsm: bool = Field(True, description="DSM desktop notifications (when synodsmnotify exists)")
    dsm_command: str | None = Field(None, description="path of synodsmnotify, if not the usual")
    dsm_target: str = Field("@administrators", description="DSM user or @group to notify")
    urls: list[str] = Field(
        default_factory=list, description="apprise URLs (they hold tokens: prefer urls_file)"
    )
    urls_file: Path | None = Field(None, description="file with one apprise URL per line")


class DrillConfig(_Section):
    """The restore drill: prove each backup restorable by opening what HA needs."""

    after_arrival: bool = Field(
        True,
        description="drill each valid archive once it is kept; false: once a day, "
        "every kept archive not drilled yet",
    )
    work_dir: Path | None = Field(
        None, description="folder for the drill's private unpacking (default: data_dir/tmp)"
    )
    count_drop: float = Field(
        0.30, ge=0, le=1, description="suspicious when entities/devices/entries drop this much"
    )
    database_shrink: float = Field(
        0.90, ge=0, le=1, description="suspicious when the database shrinks this much"
    )


class LibraryConfig(_Section):
    """The NAS's own verified copies."""

    path: Path = Field(description="folder of the library; one sub-folder per source")
    store: Literal["original", "decrypted", "both"] = Field(
        "original", description="keep the archive as HA wrote it, a decrypted copy, or both"
    )
    browse: bool = Field(
        False, description="also unpack the HA configuration so single files can be recovered"
    )
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="which library archives to keep"
    )


class QuarantineConfig(_Section):
    """Where damaged and abandoned archives are copied (never deleted automatically)."""

    path: Path = Field(description="folder of the quarantine")
    max_age: Duration | None = Field(
        None, description="delete quarantined archives older than this (off by default)"
    )


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?)b?\s*(?:/s)?\s*$", re.IGNORECASE)


def parse_bytes(value: Any) -> int:
    """Parse ``1048576``, ``64MiB``, ``10MB/s`` or ``800k`` into a number of bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 64MiB, 10MB/s)")
    power = " kmgt".index(match[2].lower() or " ")
    return int(float(match[1]) * (1024 if match[3] else 1000) ** power)


Bytes = Annotated[int, BeforeValidator(parse_bytes)]
_CLOCK = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class BandwidthWindow(_Section):
    """A bandwidth limit for part of the day (NAS local time); may wrap past midnight."""

    start: str = Field(alias="from", description="HH:MM", pattern=_CLOCK.pattern)
    end: str = Field(alias="to", description="HH:MM", pattern=_CLOCK.pattern)
    limit: Bytes | None = Field(description="bytes per second (e.g. 2MB/s); null: unlimited")


class SendFilter(_Section):
    """Which library archives a destination receives."""

    kinds: list[Literal["automatic", "manual", "pre-update"]] | None = Field(
        None, description="only these kinds of backup (default: all)"
    )
    newest_per_day: bool = Field(False, description="only the newest archive of each day")


CLOUD_TYPES = ("s3", "rclone")


class DestinationConfig(_Section):
    """A place for off-site copies: a folder (``local``), S3 or an S3-compatible (``s3``),
    or any rclone remote (``rclone``)."""

    name: str = Field(
        description="short name, shown in list and status", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
    )
    type: Literal["local", "s3", "rclone"] = Field(description="local, s3 or rclone")
    prefix: str = Field("homeassistant", description="folder inside the destination")
    encryption: Literal["none", "securetar", "7z"] | None = Field(
        None,
        description="for archives HA did not encrypt: securetar (HA restores it with the key), "
        "7z (<name>.tar.7z, AES-256) or none (local only); default: securetar for s3 and "
        "rclone, none for local",
    )
    key_file: KeyFile | None = Field(
        None, description="securetar key (default: the first key of the archive's source)"
    )
    securetar_version: Literal[2, 3] = Field(3, description="SecureTar version written")
    password_file: Path | None = Field(None, description="7z password file")
    send: SendFilter = Field(default_factory=SendFilter, description="which archives go")
    retention: RetentionConfig = Field(
        default_factory=RetentionConfig, description="which copies this destination keeps"
    )
    # local
    path: Path | None = Field(None, description="local: the folder copies go to")
    # s3
    bucket: str | None = Field(None, description="s3: the bucket")
    endpoint_url: str | None = Field(None, description="s3: the endpoint (omit for AWS)")
    region: str | None = Field(None, description="s3: the region")
    access_key_id_file: Path | None = Field(
        None, description="s3: file with the access key id (else the environment, ~/.aws)"
    )
    secret_access_key_file: Path | None = Field(None, description="s3: file with the secret key")
    storage_class: str | None = Field(None, description="s3: e.g. STANDARD_IA, GLACIER_IR")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        "auto", description="s3: path for most S3-compatibles on a custom endpoint"
    )
    checksums: Literal["sha256", "compat"] = Field(
        "sha256",
        description="s3: sha256 sends a SHA-256 checksum with every part; compat sends "
        "Content-MD5 only and no x-amz-checksum headers, for servers that reject them",
    )
    sse: Literal["AES256", "aws:kms"] | None = Field(None, description="s3: server-side encryption")
    sse_kms_key_id: str | None = Field(None, description="s3: the KMS key for aws:kms")
    part_size: Bytes = Field(
        16 << 20,
        ge=5 << 20,
        description="s3: multipart part size (an archive encrypted on the way holds "
        "part_size x concurrency in memory; a file's parts are read as they are sent)",
    )
    concurrency: int = Field(4, ge=1, le=16, description="s3: parts in flight at once")
    timeout: Duration = Field(
        timedelta(seconds=60), description="s3: a request that stalls this long is retried"
    )
    # s3 and rclone
    bandwidth: Bytes | None = Field(None, description="bytes per second (e.g. 5MB/s)")
    bandwidth_schedule: list[BandwidthWindow] = Field(
        default_factory=list, description="limits for parts of the day, before bandwidth"
    )
    # rclone
    remote: str | None = Field(None, description="rclone: remote:path, e.g. gdrive:HomeAssistant")
    rclone_config: Path | None = Field(None, description="rclone: its config file")
    rclone_binary: str = Field("rclone", description="rclone: the program")

    @field_validator("name")
    @classmethod
    def _not_reserved(cls, name: str) -> str:
        if name.startswith(("library", "quarantine")):
            raise ValueError("library and quarantine are names of the NAS's own locations")
        return name

    @model_validator(mode="after")
    def _complete(self) -> DestinationConfig:
        needed = {"local": "path", "s3": "bucket", "rclone": "remote"}[self.type]
        if getattr(self, needed) in (None, ""):
            raise ValueError(f"a {self.type} destination needs '{needed}'")
        if self.cloud and self.encryption == "none":
            raise ValueError(
                f"a {self.type} destination only ever receives encrypted data: "
                "encryption must be securetar (a key) or 7z (password_file)"
            )
        if self.cipher == "7z" and self.password_file is None:
            raise ValueError("encryption 7z needs password_file")
        return self

    @property
    def cloud(self) -> bool:
        return self.type in CLOUD_TYPES

    @property
    def cipher(self) -> str:
        """How archives HA did not encrypt are encrypted here (``none`` keeps them plain)."""
        if self.encryption is not None:
            return self.encryption
        return "securetar" if self.cloud else "none"


class Config(_Section):
    """The whole configuration file."""

    data_dir: Path = Field(DEFAULT_DATA_DIR, description="catalog, state, lock and logs")
    sources: list[SourceConfig] = Field(min_length=1, description="folders HA writes to")
    library: LibraryConfig = Field(description="the library of verified backups")
    quarantine: QuarantineConfig = Field(description="the quarantine of damaged backups")
    destinations: list[DestinationConfig] = Field(
        default_factory=list, description="where off-site copies of the library go"
    )
    drill: DrillConfig = Field(default_factory=DrillConfig, description="the restore drill")
    notify: NotifyConfig = Field(default_factory=NotifyConfig, description="alerts")
    workers: int = Field(1, ge=1, le=8, description="archives verified at the same time")
    reconcile_every: Duration = Field(
        timedelta(minutes=5), description="full rescan of every source (events are only hints)"
    )
    log_file: Path | None = Field(None, description="also log to this file (rotated)")
    log_rotate: bool = Field(
        True,
        description="rotate log_file at 5 MiB; false when logrotate does it (as on DSM)",
    )
    log_copy: Path | None = Field(
        None,
        description="a second copy of the log, e.g. in a shared folder for File Station "
        "(rotated at 1 MiB)",
    )

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[SourceConfig]) -> list[SourceConfig]:
        names = [source.name for source in sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {', '.join(duplicates)}")
        return sources

    @field_validator("destinations")
    @classmethod
    def _unique_destinations(cls, found: list[DestinationConfig]) -> list[DestinationConfig]:
        names = [d.name for d in found]
        if len(set(names)) != len(names):
            raise ValueError("destination names must be unique")
        return found

    @model_validator(mode="after")
    def _destinations_can_encrypt(self) -> Config:
        keyless = [s.name for s in self.sources if not s.keys]
        for destination in self.destinations:
            if destination.cipher == "securetar" and not destination.key_file and keyless:
                raise ValueError(
                    f"destination '{destination.name}' encrypts with securetar but has no "
                    f"key_file and source '{keyless[0]}' has no key to lend it"
                )
        return self

    @model_validator(mode="after")
    def _separate_folders(self) -> Config:
        kept = {"library": self.library.path, "quarantine": self.quarantine.path}
        for source in self.sources:
            for label, folder in kept.items():
                if _overlaps(source.path, folder):
                    raise ValueError(
                        f"source '{source.name}' and the {label} must not share a folder"
                    )
        return self

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.sqlite3"

    @property
    def drill_dir(self) -> Path:
        return self.drill.work_dir or self.data_dir / "tmp"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "daemon.lock"

    def source(self, name: str) -> SourceConfig:
        for source in self.sources:
            if source.name == name:
                return source
        raise KeyError(name)


def _overlaps(a: Path, b: Path) -> bool:
    a, b = a.absolute(), b.absolute()
    return a == b or a in b.parents or b in a.parents


def default_config(base: Path | None = None) -> Config:
    """Return the embedded default: everything under ``./nas-receiver-data/``: incoming/,
    library/, quarantine/, a local "off-site" folder offsite/, the catalog and the log
    (which ``serve`` shows)."""
    data = (base or Path.cwd()) / DEFAULT_DATA_DIR
    return Config(
        data_dir=data,
        log_file=data / "nas-receiver.log",
        sources=[
            SourceConfig(name="incoming", path=data / "incoming", settle_seconds=5, watch="inotify")
        ],
        library=LibraryConfig(path=data / "library"),
        quarantine=QuarantineConfig(path=data / "quarantine"),
        destinations=[DestinationConfig(name="offsite", type="local", path=data / "offsite")],
    )


def example_text() -> str:
    """Return the commented example configuration."""
    return resources.files("nas_receiver").joinpath("config_example.yaml").read_text()


def load_config(path: Path) -> Config:
    """Read and validate ``path``.  Raise ConfigError naming the file and the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from err
    return parse_config(text, str(path), base=path.parent)


def parse_config(text: str, where: str, *, base: Path | None = None) -> Config:
    """Validate YAML ``text``; relative paths are taken from ``base``."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{where}: not valid YAML{line}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of settings")
    try:
        config = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_explain(where, err)) from err
    return _absolute(config, base or Path.cwd())


def _explain(where: str, err: ValidationError) -> str:
    lines = []
    for error in err.errors():
        path = ""
        for part in error["loc"]:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        lines.append(f"{where}: at '{path or '(top)'}': {message}")
    return "\n".join(lines)


_DESTINATION_FILES = (
    "path",
    "key_file",
    "password_file",
    "access_key_id_file",
    "secret_access_key_file",
    "rclone_config",
)


def _absolute(config: Config, base: Path) -> Config:
    def fix(path: Path) -> Path:
        if path.is_absolute() or str(path).startswith("credential:"):
            return path
        return base / path

    return config.model_copy(
        update={
            "data_dir": fix(config.data_dir),
            "sources": [
                s.model_copy(update={"path": fix(s.path), "keys": [fix(k) for k in s.keys]})
                for s in config.sources
            ],
            "library": config.library.model_copy(update={"path": fix(config.library.path)}),
            "quarantine": config.quarantine.model_copy(
                update={"path": fix(config.quarantine.path)}
            ),
            "log_file": fix(config.log_file) if config.log_file else None,
            "log_copy": fix(config.log_copy) if config.log_copy else None,
            "destinations": [
                d.model_copy(
                    update={
                        field: fix(value)
                        for field in _DESTINATION_FILES
                        if (value := getattr(d, field)) is not None
                    }
                )
                for d in config.destinations
            ],
            "drill": config.drill.model_copy(
                update={"work_dir": fix(config.drill.work_dir) if config.drill.work_dir else None}
            ),
        }
    )


def find_config(explicit: Path | None) -> tuple[Config, str]:
    """Return the configuration in force and where it came from."""
    if explicit is not None:
        return load_config(explicit), str(explicit)
    env = os.environ.get(ENV_CONFIG)
    if env:
        return load_config(Path(env)), f"${ENV_CONFIG} ({env})"
    if SYSTEM_CONFIG.exists():
        return load_config(SYSTEM_CONFIG), str(SYSTEM_CONFIG)
    return default_config(), "embedded default (./nas-receiver-data/)"
