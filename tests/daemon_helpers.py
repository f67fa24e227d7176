"""Helpers for daemon tests: a config on temporary folders, waiting, and looking at results."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nas_receiver.config import Config, load_config


def write_config(
    root: Path,
    *,
    settle: float = 0.5,
    give_up: str = "30s",
    reconcile: str = "1s",
    keys: tuple[Path, ...] = (),
    watch: str = "inotify",
    expect_every: str | None = None,
    extra_source: str = "",
) -> Path:
    """Write ``root/config.yaml`` with share/, library/, quarantine/, data/ under ``root``."""
    key_list = ", ".join(str(k) for k in keys)
    expect = f"\n    expect_every: {expect_every}" if expect_every else ""
    text = f"""
data_dir: {root / "data"}
sources:
  - name: home
    path: {root / "share"}
    keys: [{key_list}]
    watch: {watch}
    settle_seconds: {settle}
    give_up: {give_up}{expect}
{extra_source}
library: {{path: {root / "library"}}}
quarantine: {{path: {root / "quarantine"}}}
reconcile_every: {reconcile}
"""
    (root / "share").mkdir(parents=True, exist_ok=True)
    path = root / "config.yaml"
    path.write_text(text)
    return path


def config_at(root: Path, **kwargs: object) -> Config:
    return load_config(write_config(root, **kwargs))  # type: ignore[arg-type]


def wait_for(predicate: Callable[[], object], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def archives_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.tar") if not p.name.startswith("."))


def partials_in(*folders: Path) -> list[Path]:
    return [p for folder in folders if folder.exists() for p in folder.rglob(".*partial*")]


def cli_command(config: Path, *args: str | Path) -> list[str]:
    """The command line of ``nas-receiver --config CONFIG ARGS...`` from this checkout."""
    return [sys.executable, "-m", "nas_receiver.cli", "--config", str(config), *map(str, args)]


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``nas-receiver --config CONFIG ARGS...`` as a user would; capture its output."""
    return subprocess.run(
        cli_command(config, *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def reflinks(folder: Path) -> bool:
    """Whether files in ``folder`` can share their blocks (FICLONE: btrfs, XFS), as the
    library does where it can instead of writing a copy."""
    import fcntl

    source, clone = folder / ".reflink-probe-a", folder / ".reflink-probe-b"
    source.write_bytes(b"probe")
    try:
        with source.open("rb") as src, clone.open("wb") as dst:
            fcntl.ioctl(dst.fileno(), 0x40049409, src.fileno())  # FICLONE
        return True
    except OSError:
        return False
    finally:
        source.unlink()
        clone.unlink(missing_ok=True)
