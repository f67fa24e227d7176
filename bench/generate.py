"""Generate large HA-style backups for the benchmarks (cached under bench/out/).

Content is a realistic mix: 60 % compressible text (logs, JSON, YAML-like lines) and 40 %
incompressible media, written with securetar the way HA's supervisor writes backups.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.builders import KEY, BackupSpec, write_backup_from  # noqa: E402

OUT = ROOT / "bench" / "out"
MIB = 1 << 20
FILE_MIB = 16
_WORDS = [
    "sensor",
    "light",
    "switch",
    "automation",
    "state",
    "changed",
    "attribute",
    "brightness",
    "temperature",
    "humidity",
    "entity_id",
    "device_class",
    "unit_of_measurement",
    "friendly_name",
    "last_updated",
    "context",
    "user_id",
    "parent_id",
    "zigbee",
    "mqtt",
    "hue",
    "shelly",
    "esphome",
    "template",
    "binary_sensor",
    "on",
    "off",
    "unavailable",
    "unknown",
    "21.5",
    "48",
    "true",
    "false",
    "null",
    "homeassistant",
    "core",
    "event",
    "fired",
]


def _text_block(rng: random.Random) -> bytes:
    lines = []
    size = 0
    while size < MIB:
        words = rng.choices(_WORDS, k=rng.randint(6, 14))
        line = f"2026-11-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
        line += " " + " ".join(words) + f" {rng.random():.6f}\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:MIB]


def make_content(root: Path, total_mib: int, seed: int = 7) -> Path:
    """Lay out ``total_mib`` MiB under ``root``: 60 % text in ha/, 40 % media in media/."""
    rng = random.Random(seed)
    blocks = [_text_block(rng) for _ in range(16)]
    text_mib = total_mib * 6 // 10
    ha = root / "ha"
    (ha / ".storage").mkdir(parents=True, exist_ok=True)
    (ha / ".storage" / "core.entity_registry").write_text(json.dumps({"data": {"entities": []}}))
    (ha / "configuration.yaml").write_text("default_config:\n")
    for index in range(0, text_mib, FILE_MIB):
        with (ha / f"log-{index:05d}.txt").open("wb") as file:
            for _ in range(min(FILE_MIB, text_mib - index)):
                file.write(rng.choice(blocks))
    media = root / "media"
    media.mkdir(exist_ok=True)
    for index in range(0, total_mib - text_mib, FILE_MIB):
        with (media / f"clip-{index:05d}.mp4").open("wb") as file:
            for _ in range(min(FILE_MIB, total_mib - text_mib - index)):
                file.write(rng.randbytes(MIB))
    return root


def make_many_files(root: Path, count: int, seed: int = 11) -> Path:
    """Lay out ``count`` small text files (200 B to 8 KiB, 100 to a folder) under root/ha,
    as a configuration with custom components, blueprints and add-on data has them."""
    rng = random.Random(seed)
    text = b"".join(_text_block(rng) for _ in range(4))
    for index in range(count):
        folder = root / "ha" / "custom_components" / f"component_{index // 100:04d}"
        if index % 100 == 0:
            folder.mkdir(parents=True, exist_ok=True)
        size = rng.randint(200, 8192)
        start = rng.randrange(len(text) - size)
        (folder / f"module_{index % 100:02d}.py").write_bytes(text[start : start + size])
    return root


def many_files_backup(count: int, version: int | None) -> Path:
    """Return the cached backup whose homeassistant.tar.gz holds ``count`` small files."""
    path = OUT / f"backup-{count}files-{'plain' if version is None else f'v{version}'}.tar"
    content = OUT / f"content-{count}files"
    if not path.exists() and not content.exists():
        partial = content.with_suffix(".partial")  # renamed once whole: never half reused
        shutil.rmtree(partial, ignore_errors=True)
        make_many_files(partial, count).rename(content)
    return _write_once(
        path, f"Bench backup {count} files", version, [("homeassistant", content / "ha")]
    )


def backup_path(total_mib: int, version: int | None) -> Path:
    return OUT / f"backup-{total_mib}MiB-{'plain' if version is None else f'v{version}'}.tar"


def ensure_backup(total_mib: int, version: int | None) -> Path:
    """Return the cached backup of ``total_mib`` MiB content, writing it first if needed."""
    path = backup_path(total_mib, version)
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    content = OUT / f"content-{total_mib}MiB"
    if not (content / "media").exists():
        shutil.rmtree(content, ignore_errors=True)
        make_content(content, total_mib)
    parts = [("homeassistant", content / "ha"), ("media", content / "media")]
    return _write_once(path, f"Bench backup {total_mib} MiB", version, parts)


def _write_once(path: Path, name: str, version: int | None, parts: list[tuple[str, Path]]) -> Path:
    """Write the backup of ``parts`` at ``path`` unless it is there already."""
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    spec = BackupSpec(
        name=name,
        password=KEY if version else None,
        securetar_version=version or 3,
        addons=(),
        folders=tuple(part for part, _ in parts if part != "homeassistant"),
    )
    started = time.monotonic()
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    write_backup_from(partial, spec, parts)
    partial.rename(path)
    print(
        f"wrote {path.name}: {path.stat().st_size / MIB:.0f} MiB in "
        f"{time.monotonic() - started:.0f} s",
        file=sys.stderr,
    )
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--version", choices=["plain", "2", "3"], default="plain")
    args = parser.parse_args()
    version = None if args.version == "plain" else int(args.version)
    print(ensure_backup(args.mib, version))


if __name__ == "__main__":
    main()
