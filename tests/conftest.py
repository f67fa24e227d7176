"""Shared fixtures: the real HA corpus, key files, and backups written like HA writes them."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import settings

from tests.builders import KEY, OTHER_KEY, BackupSpec, write_backup, write_key

# CI runs the property tests on a fixed sequence of examples, so a landing never depends on
# luck; a developer's run explores new ones each time (and hypothesis keeps what failed).
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "real"
CORPUS_KEYS = {
    "supervisor_backup_example.tar": None,
    "supervisor_backup_example_enc_v2.tar": "test",
    "supervisor_backup_example_sec_v3.tar": "supervisor",
    "habackuptool_test_protected_v1.tar": "XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX",
}


def corpus_file(name: str) -> Path:
    """Return a real HA backup from ../shared/corpus/real; fail (never skip) when absent."""
    path = CORPUS / name
    if not path.exists():
        pytest.fail(f"real corpus file missing: {path} (the repo expects ../shared beside it)")
    return path


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
