"""The restore drill: prove a backup restorable by opening what HA needs to start.

The HA part is decrypted and unpacked into a private temporary folder (free space checked
first: the HA part's uncompressed size plus 10 %), checked, and removed again, also when the
drill is interrupted; when the library has just unpacked it (its browse copy), that tree is
checked instead, and nothing is unpacked twice.  Add-ons are unpacked one at a time;
folders were already walked to their end by the full verification the drill starts with.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import NasReceiverError, UnsafeArchiveError, one_line
from ..haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive
from ..haformat.extract import ExtractResult, NoRoomToUnpack, extract_backup
from ..haformat.names import inner_base_name, safe_component
from ..haformat.output import chmod_tree
from .compare import Thresholds, compare
from .haconfig import Check, check_addon, check_recorder, check_storage, config_folder
from .hayaml import check_yaml

RESTORABLE = "restorable"
NOT_RESTORABLE = "not restorable"
SPACE_MARGIN = 0.10
_PREFIX = ".nas-receiver-drill-"


@dataclass(frozen=True)
class Unpacked:
    """The HA part already unpacked from these very bytes (``folder/homeassistant``), read
    only, with the members its unpacking refused (links, devices)."""

    folder: Path
    refused: list[str]


class DrillUnavailable(Exception):
    """The drill could not run (no space, no key): nothing was learnt about the backup."""


@dataclass
class DrillReport:
    path: str
    verdict: str
    checks: list[Check]
    counts: dict[str, Any] = field(default_factory=dict)
    suspicious: list[str] = field(default_factory=list)
    sha256: str | None = None
    peak_disk_bytes: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "verdict": self.verdict,
            "suspicious": bool(self.suspicious),
            "changes": list(self.suspicious),
            "checks": [check.to_dict() for check in self.checks],
            "counts": dict(self.counts),
            "peak_disk_bytes": self.peak_disk_bytes,
        }


def run_drill(
    archive: Path,
    keys: KeyRing,
    *,
    work_dir: Path | None = None,
    previous: dict[str, Any] | None = None,
    thresholds: Thresholds | None = None,
    verified: VerifyReport | None = None,
    unpacked: Unpacked | None = None,
) -> DrillReport:
    """Drill one backup.  ``previous`` are the counts of the instance's previous backup;
    ``verified`` a full verification of these very bytes, which is then not done again;
    ``unpacked`` its HA part already unpacked, which is then checked where it is.

    Raise DrillUnavailable when there is not room enough to unpack the HA part.
    """
    report = verified or verify_archive(archive, level=Level.FULL, keys=keys)
    checks = [
        Check(
            "archive",
            report.verdict is Verdict.VALID,
            str(report.verdict) if not report.problems else report.problems[0],
        )
    ]
    counts: dict[str, Any] = {"archive_bytes": report.size, "addons": _addons(report)}
    drill = DrillReport(str(archive), NOT_RESTORABLE, checks, counts, sha256=report.sha256)
    if report.verdict is Verdict.VALID:
        work = work_dir or Path(tempfile.gettempdir())
        work.mkdir(parents=True, exist_ok=True)
        remove_stale_work(work)
        try:
            _check_parts(archive, keys, report, work, drill, unpacked)
        except (DrillUnavailable, NasReceiverError):
            raise
        except Exception as err:  # a file the checks did not foresee: no verdict, no crash
            raise DrillUnavailable(f"the drill could not finish: {one_line(err)}") from err
    if all(check.ok for check in drill.checks):
        drill.verdict = RESTORABLE
    if previous is not None:
        drill.suspicious = compare(previous, drill.counts, thresholds or Thresholds())
    return drill


def remove_stale_work(work: Path) -> None:
    """Remove drill folders left by a process that no longer exists (killed mid-drill)."""
    for folder in work.glob(f"{_PREFIX}*"):
        match = re.match(rf"{re.escape(_PREFIX)}(\d+)-", folder.name)
        if match and not _alive(int(match[1])):
            _make_writable(folder)
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _addons(report: VerifyReport) -> list[str]:
    return sorted(addon.slug for addon in report.backup.addons) if report.backup else []


def _check_parts(
    archive: Path,
    keys: KeyRing,
    report: VerifyReport,
    work: Path,
    drill: DrillReport,
    unpacked: Unpacked | None,
) -> None:
    assert report.backup is not None
    sizes = {inner_base_name(i.name): i.content_bytes or 0 for i in report.inner}
    if report.backup.homeassistant is not None and unpacked is not None:
        excluded = report.backup.homeassistant.exclude_database
        drill.checks += _check_ha_part(
            unpacked.folder / "homeassistant", unpacked.refused, excluded, drill, work
        )
    elif report.backup.homeassistant is not None:
        need = int(sizes.get("homeassistant", 0) * (1 + SPACE_MARGIN))
        free = shutil.disk_usage(work).free
        if need > free:
            raise DrillUnavailable(f"{work}: {free} bytes free, the HA part needs {need}")
        excluded = report.backup.homeassistant.exclude_database
        with _workspace(work) as folder:
            drill.checks += _unpack_and_check(
                archive, keys, folder, "homeassistant", sizes["homeassistant"], excluded, drill
            )
    for slug in _addons(report):
        if safe_component(slug) != slug:  # a slug is a name typed into backup.json: data
            drill.checks.append(Check(f"add-on {slug!r}", False, "slug is not a plain name"))
            continue
        with _workspace(work) as folder:
            bound = sizes.get(slug, 0) + (1 << 20)
            _result, problem = _unpack(archive, folder, keys, slug, bound)
            drill.peak_disk_bytes = max(drill.peak_disk_bytes, _used(folder))
            drill.checks.append(
                check_addon(folder / slug, slug)
                if problem is None
                else Check(f"add-on {slug}", False, problem)
            )
    for inner in report.inner:
        base = inner_base_name(inner.name)
        if base in report.backup.expected_parts() and base not in (
            "homeassistant",
            *_addons(report),
        ):
            drill.checks.append(
                Check(f"folder {base}", True, f"{inner.files} entries walk cleanly")
            )


def _unpack_and_check(
    archive: Path,
    keys: KeyRing,
    folder: Path,
    member: str,
    size: int,
    excluded: bool,
    drill: DrillReport,
) -> list[Check]:
    result, problem = _unpack(archive, folder, keys, member, size + (1 << 20))
    drill.peak_disk_bytes = max(drill.peak_disk_bytes, _used(folder))
    if problem is not None:
        return [Check("unpack", False, problem)]
    return _check_ha_part(folder / member, result.refused, excluded, drill, None)


def _unpack(
    archive: Path, folder: Path, keys: KeyRing, member: str, bound: int
) -> tuple[ExtractResult, str | None]:
    """Unpack one inner archive as HA's restore would (a member replaces an earlier one of
    the same name), and the first thing found wrong in it, a finding about the backup:
    damage, or a refusal as unsafe (a decompression bomb).  Raise DrillUnavailable where
    the disk lacks the room."""
    try:
        result = extract_backup(
            archive, folder, keys, members=[member], max_bytes=bound, force=True
        )
    except NoRoomToUnpack as err:
        raise DrillUnavailable(str(err)) from err
    except UnsafeArchiveError as err:
        return ExtractResult(), f"refused: {err}"
    return result, result.problems[0] if result.problems else None


def _check_ha_part(
    part: Path, refused: list[str], excluded: bool, drill: DrillReport, frozen_work: Path | None
) -> list[Check]:
    """The checks of an unpacked HA part.  ``frozen_work``: the part is a read-only tree
    that must stay as it is (a browse copy); its database is read where it is, and where a
    write-ahead log comes with it, from a private copy in this folder."""
    config = config_folder(part)
    checks = [check_storage(config, drill.counts)]
    loaded = check_yaml(config, _left_out(refused, part, config))
    checks += loaded.checks
    drill.counts["automations"] = loaded.automations()
    checks.append(
        check_recorder(
            config,
            drill.counts,
            excluded=excluded,
            db_url=loaded.recorder_url(),
            frozen_work=frozen_work,
        )
    )
    return checks


def _left_out(refused: list[str], part: Path, config: Path) -> frozenset[str]:
    """The members the unpacking refused (links, devices), relative to the configuration."""
    names = set()
    for line in refused:
        name = line.split(": ", 1)[0].removeprefix("./")
        relative = (part / name).relative_to(part)
        inside = config.relative_to(part)
        if inside == Path() or inside in relative.parents:
            names.add(relative.relative_to(inside).as_posix())
    return frozenset(names)


class _workspace:
    """A private folder (0700) removed on leaving, whatever happens inside."""

    def __init__(self, work: Path) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=work))

    def __enter__(self) -> Path:
        return self._folder

    def __exit__(self, *exc: object) -> None:
        _make_writable(self._folder)
        shutil.rmtree(self._folder, ignore_errors=True)


def _make_writable(folder: Path) -> None:
    chmod_tree(folder, 0o700)


def _used(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
