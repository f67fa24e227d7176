"""Write HA backups the way HA writes them, with the ``securetar`` library HA uses.

Each writer follows HA's own code (read, not imagined):

- ``supervisor`` (HA OS / Supervised, supervisor ``backups/backup.py`` and
  ``homeassistant/module.py``): ``SecureTarArchive`` + ``create_tar`` per part; the HA part
  holds ``.`` and ``./homeassistant.json`` (supervisor's own settings), then the configuration
  folder under ``data/``; ``./backup.json`` is written last.
- ``core`` (HA core 2025.x on Container/Core, ``backup/manager.py``
  ``_mkdir_and_generate_backup_contents``): ``./backup.json`` first, holding only what core
  writes (no add-ons, no folders, ``type: partial``), then ``./homeassistant.tar.gz`` with the
  configuration under ``data/``.
- ``core2024`` (HA core 2024.x): as ``core``, but never encrypted, and its backup.json lists
  ``folders: ["homeassistant"]`` with no ``version`` and no ``protected``.
- ``v1`` (supervisor before 2022): a ``.`` member and ``./`` names in the outer tar, the
  configuration at the top of the HA part, no ``version``, ``folders`` listing
  ``homeassistant``, and ``protected`` as a one-character string when encrypted.

``make_ha_config`` lays out a realistic HA configuration folder.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import random
import sqlite3
import tarfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePath
from typing import Any, Literal

from securetar import SecureTarArchive, atomic_contents_add

KEY = "ABCD-EFGH-IJKL-MNOP-QRST-UVWX-YZ12"
# The keys of HA's AgentBackup JSON (the sidecars), all of which HA's from_dict reads.
AGENT_BACKUP_KEYS = frozenset(
    {
        "addons",
        "backup_id",
        "date",
        "database_included",
        "extra_metadata",
        "folders",
        "homeassistant_included",
        "homeassistant_version",
        "name",
        "protected",
        "size",
    }
)
OTHER_KEY = "ZZZZ-YYYY-XXXX-WWWW-VVVV-UUUU-TTTT"


def make_ha_config(root: Path, *, entities: int = 40, seed: int = 1, media_kib: int = 64) -> Path:
    """Create an HA config folder: .storage registries, YAML, a recorder database, media."""
    rng = random.Random(seed)
    storage = root / ".storage"
    storage.mkdir(parents=True, exist_ok=True)
    entries = [
        {"entry_id": f"e{i:04d}", "domain": domain, "title": f"{domain} {i}", "data": {}}
        for i, domain in enumerate(["hue", "zha", "mqtt", "met", "shelly"])
    ]
    devices = [
        {"id": f"d{i:04d}", "name": f"Device {i}", "config_entries": [entries[i % 5]["entry_id"]]}
        for i in range(max(entities // 4, 1))
    ]
    entity_rows = [
        {
            "entity_id": f"sensor.thing_{i}",
            "unique_id": f"u{i}",
            "platform": entries[i % 5]["domain"],
            "device_id": devices[i % len(devices)]["id"],
        }
        for i in range(entities)
    ]
    _storage_file(storage / "core.config_entries", "core.config_entries", {"entries": entries})
    _storage_file(storage / "core.device_registry", "core.device_registry", {"devices": devices})
    _storage_file(
        storage / "core.entity_registry", "core.entity_registry", {"entities": entity_rows}
    )
    (root / "configuration.yaml").write_text(
        "default_config:\n"
        "homeassistant:\n  name: Home\n  latitude: !secret latitude\n"
        "automation: !include automations.yaml\n"
        "script: !include scripts.yaml\n"
        "http:\n  server_port: 8123\n"
    )
    (root / "automations.yaml").write_text(
        "- id: '1'\n  alias: Lights on at sunset\n  trigger:\n    - platform: sun\n"
        "      event: sunset\n  action:\n    - service: light.turn_on\n"
    )
    (root / "scripts.yaml").write_text("")
    (root / "secrets.yaml").write_text("latitude: 52.37\n")
    _recorder_db(root / "home-assistant_v2.db", rows=entities * 20, rng=rng)
    media = root / "www"
    media.mkdir(exist_ok=True)
    (media / "floorplan.png").write_bytes(rng.randbytes(media_kib * 1024))
    return root


def _storage_file(path: Path, key: str, data: dict[str, Any]) -> None:
    path.write_text(json.dumps({"version": 1, "minor_version": 1, "key": key, "data": data}))


def _recorder_db(path: Path, *, rows: int, rng: random.Random) -> None:
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")  # as HA's recorder runs SQLite
        db.execute("CREATE TABLE schema_changes (change_id INTEGER PRIMARY KEY, schema_version)")
        db.execute("INSERT INTO schema_changes (schema_version) VALUES (48)")
        db.execute("CREATE TABLE states (state_id INTEGER PRIMARY KEY, entity_id, state, ts)")
        db.executemany(
            "INSERT INTO states (entity_id, state, ts) VALUES (?, ?, ?)",
            [(f"sensor.thing_{i % 40}", str(rng.random()), time.time()) for i in range(rows)],
        )
    db.close()


def make_addon_data(root: Path, slug: str, *, seed: int = 2) -> Path:
    """Create what the supervisor puts in an add-on archive: addon.json and data/."""
    rng = random.Random(seed)
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "addon.json").write_text(
        json.dumps({"name": slug, "slug": slug, "version": "1.0.0", "options": {}})
    )
    (root / "data" / "options.json").write_text("{}")
    (root / "data" / "state.bin").write_bytes(rng.randbytes(4096))
    return root


def make_folder(root: Path, name: str, *, seed: int = 3) -> Path:
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    stem = name.replace("/", "_")
    (root / f"{stem}-readme.txt").write_text(f"{name} folder\n" * 50)
    (root / f"{stem}.bin").write_bytes(rng.randbytes(2048))
    return root


@dataclass
class BackupSpec:
    """What to put in a generated backup."""

    name: str = "Automatic backup 2026.11.1"
    slug: str = "a1b2c3d4"
    date: datetime = field(default_factory=lambda: datetime(2026, 11, 20, 4, 45, tzinfo=UTC))
    password: str | None = None
    securetar_version: int = 3
    compressed: bool = True
    homeassistant: bool = True
    addons: tuple[str, ...] = ("core_mosquitto",)
    folders: tuple[str, ...] = ("share", "ssl")
    writer: Literal["supervisor", "core", "core2024", "v1"] = "supervisor"
    automatic: bool = True
    entities: int = 40
    extra: dict[str, Any] = field(default_factory=dict)
    ha_version: str = "2026.11.1"

    def backup_json(self) -> dict[str, Any]:
        extra = {"instance_id": "0123abcd", "with_automatic_settings": self.automatic}
        if self.writer == "core":
            return {
                "compressed": True,
                "date": self.date.isoformat(),
                "extra": {**extra, **self.extra},
                "homeassistant": {"exclude_database": False, "version": self.ha_version},
                "name": self.name,
                "protected": self.password is not None,
                "slug": self.slug,
                "type": "partial",
                "version": 2,
            }
        if self.writer == "core2024":
            return {
                "slug": self.slug,
                "name": self.name,
                "date": self.date.isoformat(),
                "type": "partial",
                "folders": ["homeassistant"],
                "homeassistant": {"version": self.ha_version},
                "compressed": True,
            }
        if self.writer == "v1":
            return {
                "slug": self.slug,
                "type": "full" if self.addons else "partial",
                "name": self.name,
                "date": self.date.isoformat(),
                "compressed": True,
                "protected": "c" if self.password else False,
                "crypto": "aes128" if self.password else None,
                "homeassistant": {"version": self.ha_version, "boot": True, "ssl": False},
                "addons": [
                    {"slug": slug, "name": slug, "version": "1.0.0", "size": 0.0}
                    for slug in self.addons
                ],
                "folders": ["homeassistant", *self.folders],
                "repositories": [],
            }
        return {
            "slug": self.slug,
            "version": 2,
            "name": self.name,
            "date": self.date.isoformat(),
            "type": "full" if self.addons else "partial",
            "supervisor_version": "2026.11.0",
            "extra": {**extra, **self.extra},
            "homeassistant": {"version": self.ha_version, "exclude_database": False, "size": 0.1}
            if self.homeassistant
            else None,
            "addons": [
                {"slug": slug, "name": slug, "version": "1.0.0", "size": 0.0}
                for slug in self.addons
            ],
            "folders": list(self.folders),
            "repositories": [],
            "compressed": self.compressed,
            "protected": self.password is not None,
            "crypto": "aes128" if self.password and self.securetar_version == 2 else None,
            "some_future_key": {"tolerated": True},
        }


def write_backup(path: Path, spec: BackupSpec, workdir: Path) -> Path:
    """Write ``path`` as an HA backup of freshly generated content under ``workdir``."""
    parts: list[tuple[str, Path]] = []
    if spec.homeassistant:
        parts.append(("homeassistant", make_ha_config(workdir / "ha", entities=spec.entities)))
    if spec.writer not in ("core", "core2024"):  # HA core backs up its configuration only
        for slug in spec.addons:
            parts.append((slug, make_addon_data(workdir / "addons" / slug, slug)))
        for folder in spec.folders:
            parts.append(
                (folder.replace("/", "_"), make_folder(workdir / "folders" / folder, folder))
            )
    return write_backup_from(path, spec, parts)


def write_backup_from(path: Path, spec: BackupSpec, parts: list[tuple[str, Path]]) -> Path:
    """Write ``path`` as an HA backup whose inner archives hold the given folders.

    The folder given for ``homeassistant`` is HA's configuration folder: it goes under
    ``data/`` as HA's writers put it (at the top for ``v1``)."""
    metadata = json.dumps(spec.backup_json()).encode()
    suffix = ".tar.gz" if spec.compressed else ".tar"
    core = spec.writer in ("core", "core2024")
    prefix = "./" if spec.writer != "supervisor" else ""
    archive = SecureTarArchive(
        path,
        "w",
        password=spec.password,
        create_version=spec.securetar_version if spec.password else None,
    )
    with archive:
        if spec.writer == "v1":
            _add_dot(archive.tar)
        if core:
            _add_bytes(archive.tar, "./backup.json", metadata)
        for name, folder in parts:
            with archive.create_tar(f"{prefix}{name}{suffix}", gzip=spec.compressed) as tar:
                if name != "homeassistant" or spec.writer == "v1":
                    atomic_contents_add(tar, folder, file_filter=lambda _p: False, arcname=".")
                    continue
                if spec.writer == "supervisor":
                    _add_supervisor_settings(tar)
                atomic_contents_add(tar, folder, file_filter=_core_excludes, arcname="data")
        if not core:
            _add_bytes(archive.tar, "./backup.json", metadata)
    return path


def _core_excludes(path: PurePath) -> bool:
    """What HA core and supervisor leave out of the configuration folder."""
    return any(fnmatch.fnmatch(str(path), f"data/{pattern}") for pattern in CORE_EXCLUDES)


CORE_EXCLUDES = ("**/__pycache__/*", "*.db-shm", "*.log", "*.log.*", "OZW_Log.txt")


def _add_supervisor_settings(tar: tarfile.TarFile) -> None:
    """Supervisor's ``backup.add(temp, arcname=".")`` of a folder holding its settings."""
    _add_dot(tar, mode=0o700)
    settings = {"version": "2026.11.1", "boot": True, "image": "homeassistant", "port": 8123}
    _add_bytes(tar, "./homeassistant.json", json.dumps(settings).encode())


def _add_dot(tar: tarfile.TarFile, *, mode: int = 0o755) -> None:
    folder = tarfile.TarInfo(".")
    folder.type = tarfile.DIRTYPE
    folder.mode = mode
    folder.mtime = int(time.time())
    tar.addfile(folder)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = time.time()
    tar.addfile(info, io.BytesIO(data))


def write_key(path: Path, key: str = KEY, *, kit: bool = False) -> Path:
    """Write a key file: the bare key, or an emergency kit like HA's."""
    if kit:
        path.write_text(
            "Home Assistant backup emergency kit\n\n"
            "This is your encryption key for Home Assistant backups.\n\n"
            f"Encryption key: \n{key}\n\n"
            "Keep it in a safe place.\n"
        )
    else:
        path.write_text(key + "\n")
    os.chmod(path, 0o600)
    return path


def backup_with_ha_part(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    """Write an encrypted (v3) backup whose homeassistant archive holds ``entries`` exactly
    as given, names included (for names a share's other writers may type: ``..``, links,
    a name twice), with backup.json after it, as supervisor writes it."""
    spec = BackupSpec(password=KEY, addons=(), folders=())
    with SecureTarArchive(path, "w", password=KEY, create_version=3) as archive:
        with archive.create_tar("homeassistant.tar.gz") as tar:
            for info, data in entries:
                info.mtime = time.time()
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        meta = json.dumps(spec.backup_json()).encode()
        info = tarfile.TarInfo("./backup.json")
        info.size = len(meta)
        archive.tar.addfile(info, io.BytesIO(meta))
    return path


def tar_file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A regular file for ``backup_with_ha_part``."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def tar_link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    """A symbolic link (or, with ``kind=tarfile.LNKTYPE``, a hard link) for
    ``backup_with_ha_part``."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


def tar_member(name: str, kind: bytes, **fields: object) -> tuple[tarfile.TarInfo, None]:
    """A member of any other kind (folder, device, FIFO) for ``backup_with_ha_part``."""
    info = tarfile.TarInfo(name)
    info.type = kind
    for key, value in fields.items():
        setattr(info, key, value)
    return info, None


def link_chain(top: str) -> tuple[list[tuple[tarfile.TarInfo, bytes | None]], str]:
    """Sixteen nested folders of 247-byte names under ``top``, each with a one-letter
    link to it (short names, long places: past the 4096 bytes of a path), and the path
    of links that reaches the deepest."""
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    place, letters = top, "abcdefghijklmnop"
    for letter in letters:
        entries.append(tar_member(f"{place}/{'d' * 247}".lstrip("/"), tarfile.DIRTYPE))
        link = f"{place}/{letter}".lstrip("/")
        entries.append(tar_member(link, tarfile.SYMTYPE, linkname="d" * 247))
        place = f"{place}/{'d' * 247}"
    return entries, "/".join(letters)


def hostile_ha_entries(absolute: str) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    """Members of an HA part that must not land where their names say: a good file, the
    absolute name ``absolute``, ``..`` names, links out, a hard link out, a hard link to a
    refused link, a device."""
    device = tarfile.TarInfo("dev/sda")
    device.type = tarfile.CHRTYPE
    return [
        tar_file("good.txt", b"fine"),
        tar_file(absolute, b"x"),
        tar_file("../escape.txt", b"x"),
        tar_file("a/../../escape2.txt", b"x"),
        tar_link("abs-link", "/etc/passwd"),
        tar_link("up-link", "../../outside"),
        tar_link("hard-out", "../outside/x", tarfile.LNKTYPE),
        tar_link("shadow", "/etc/shadow"),
        tar_link("hard-to-shadow", "shadow", tarfile.LNKTYPE),  # not the link refused
        (device, None),
    ]


def member_spans(path: Path) -> dict[str, tuple[int, int]]:
    """Return ``name -> (data offset, size)`` of each member of a tar file."""
    with tarfile.open(path) as tar:
        return {m.name.removeprefix("./"): (m.offset_data, m.size) for m in tar.getmembers()}


def inner_files(path: Path, password: str | None = None) -> dict[str, dict[str, bytes]]:
    """Return ``{inner archive: {file: content}}``, read with securetar as HA reads it."""
    result: dict[str, dict[str, bytes]] = {}
    with SecureTarArchive(path, "r", password=password) as archive:
        for member in archive.tar.getmembers():
            if not member.name.endswith(".tar.gz"):
                continue
            if password:
                with archive.extract_tar(member) as stream:
                    blob = stream.read(1 << 30)
            else:
                blob = archive.tar.extractfile(member).read()  # type: ignore[union-attr]
            with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as inner:
                result[member.name] = {
                    m.name: inner.extractfile(m).read()  # type: ignore[union-attr]
                    for m in inner.getmembers()
                    if m.isfile()
                }
    return result
