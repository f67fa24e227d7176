"""Shared fixtures: the real HA corpus, key files, and backups written like HA writes them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import settings

from tests.builders import KEY, OTHER_KEY, BackupSpec, write_backup, write_key

# CI runs the property tests on a fixed sequence of examples, so a landing never depends on
# luck; a developer's run explores new ones each time (and hypothesis keeps what failed).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "corpus" / "real"
CORPUS_KEYS = {
    "supervisor_backup_example.tar": None,
    "supervisor_backup_example_enc_v2.tar": "test",
    "supervisor_backup_example_sec_v3.tar": "supervisor",
    "habackuptool_test_protected_v1.tar": "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX",
}


def corpus_file(name: str) -> Path:
    """Return a real HA backup from ../shared/corpus/real.  A clone outside the team's
    workspace has no ../shared: skip, saying so; under CI that is a failure."""
    path = CORPUS / name
    if not path.exists():
        missing(
            f"real corpus file {path} is absent (the team's ../shared/ is not beside the clone)"
        )
    return path


def missing(reason: str) -> NoReturn:
    """Skip for a missing prerequisite, or fail under CI, where nothing may be missing."""
    if os.environ.get("CI"):
        pytest.fail(f"under CI: {reason}")
    pytest.skip(reason)


HA_JUDGE = Path(__file__).with_name("ha_judge.py")
Judge = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


@pytest.fixture(scope="session")
def ha_judge() -> Judge:
    """Run operations through Home Assistant's own code (tests/ha_judge.py) in its Python
    3.13 venv, made by ``scripts/ha-venv`` (``scripts/test`` runs it first)."""
    found = subprocess.run(
        [str(ROOT / "scripts" / "ha-venv"), "--check"], capture_output=True, text=True, check=False
    )
    if found.returncode != 0:
        missing("Home Assistant's venv is not there: run ./scripts/ha-venv (needs Python 3.13)")
    python = found.stdout.strip()

    def judge(operations: list[dict[str, Any]]) -> list[dict[str, Any]]:
        run = subprocess.run(
            [python, str(HA_JUDGE)],
            input=json.dumps(operations),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        if run.returncode != 0:
            pytest.fail(f"HA's judge crashed: {run.stderr[-3000:]}")
        results: list[dict[str, Any]] = json.loads(run.stdout)
        return results

    return judge


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    return write_key(tmp_path / "key.txt", KEY)


@pytest.fixture
def other_key_file(tmp_path: Path) -> Path:
    return write_key(tmp_path / "other.txt", OTHER_KEY)


@pytest.fixture(autouse=True)
def _no_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NAS_RECEIVER_KEY", raising=False)


_CACHE: dict[tuple[object, ...], Path] = {}


@pytest.fixture(scope="session")
def backup_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backups")


@pytest.fixture
def make_backup(backup_cache: Path, tmp_path: Path) -> Callable[..., Path]:
    """Return a factory: ``make_backup(**spec fields)`` -> a fresh copy of such a backup.

    Archives are written once per session per spec and copied, so damage tests can mutate
    their copy freely.
    """

    def factory(**fields: object) -> Path:
        spec = BackupSpec(**fields)  # type: ignore[arg-type]
        key = tuple(sorted((k, repr(v)) for k, v in fields.items()))
        if key not in _CACHE:
            index = len(_CACHE)
            work = backup_cache / f"work{index}"
            path = backup_cache / f"backup{index}.tar"
            write_backup(path, spec, work)
            _CACHE[key] = path
        copy = tmp_path / f"copy{len(os.listdir(tmp_path))}-{_CACHE[key].name}"
        shutil.copyfile(_CACHE[key], copy)
        return copy

    return factory


@pytest.fixture
def btrfs_volume(tmp_path: Path) -> Iterator[Path]:
    """A fresh btrfs filesystem (Synology's default) of 256 MiB on a loop device: mounting
    needs root, mkfs.btrfs (btrfs-progs, which scripts/system-tools installs) and loop
    devices."""
    if os.geteuid() != 0:
        missing("a btrfs loop mount needs root")
    if shutil.which("mkfs.btrfs") is None:
        missing("mkfs.btrfs (btrfs-progs) is not installed")
    image, mount = tmp_path / "btrfs.img", tmp_path / "btrfs"
    with image.open("wb") as file:
        file.truncate(256 << 20)
    mount.mkdir()
    for command in (
        ["mkfs.btrfs", "-q", str(image)],
        ["mount", "-o", "loop", str(image), str(mount)],
    ):
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            missing(f"{command[0]} failed here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)  # lazily: a catalog may be open
