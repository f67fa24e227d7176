"""Commands on backup files: inspect, verify, decrypt, encrypt, extract (no daemon needed)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ExitCode, UsageError
from ..haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive
from ..haformat.names import shown
from ..haformat.sources import HashingReader
from ..progress import Progress, human_bytes
from .output import print_json


def cmd_inspect(args: argparse.Namespace) -> int:
    report = verify_archive(args.archive, level=Level.QUICK)
    if args.json:
        print_json(report.to_dict())
    else:
        print(format_summary(report))
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    keys = KeyRing.load(args.key_file)
    level = Level(args.level)
    first = getattr(args, "first_opened", None)  # see cli.hash_first_archive
    reports = [
        _verify_one(path, level, keys, first if index == 0 else None)
        for index, path in enumerate(args.archives)
    ]
    if args.json:
        print_json([report.to_dict() for report in reports])
    else:
        for report in reports:
            print(format_verdict(report))
    valid = all(report.verdict is Verdict.VALID for report in reports)
    return ExitCode.OK if valid else ExitCode.NOT_VALID


def cmd_decrypt(args: argparse.Namespace) -> int:
    from ..haformat.convert import decrypt_backup  # not loaded by verify: its start-up counts

    keys = KeyRing.load(args.key_file)
    progress = Progress(f"decrypt {args.archive.name}", _size(args.archive))
    try:
        report = decrypt_backup(args.archive, args.output, keys, on_bytes=progress.advance)
    finally:
        progress.close()
    return _report_written(args, report)


def cmd_encrypt(args: argparse.Namespace) -> int:
    from ..haformat.convert import encrypt_backup

    keys = KeyRing.load(args.key_file)
    if not keys:
        raise UsageError("encrypt needs a key: --key-file FILE or $NAS_RECEIVER_KEY")
    progress = Progress(f"encrypt {args.archive.name}", _size(args.archive))
    try:
        report = encrypt_backup(
            args.archive,
            args.output,
            keys[0],
            version=args.securetar_version,
            on_bytes=progress.advance,
        )
    finally:
        progress.close()
    return _report_written(args, report)


def cmd_extract(args: argparse.Namespace) -> int:
    from ..haformat.extract import DEFAULT_MAX_BYTES, extract_backup

    keys = KeyRing.load(args.key_file)
    progress = Progress(f"extract {args.archive.name}", _size(args.archive))
    try:
        result = extract_backup(
            args.archive,
            args.output,
            keys,
            members=args.member,
            paths=args.path,
            force=args.force,
            max_bytes=args.max_bytes if args.max_bytes is not None else DEFAULT_MAX_BYTES,
            on_bytes=progress.advance,
        )
    finally:
        progress.close()
    if args.json:
        print_json(result.to_dict())
    else:
        print(
            f"{args.output}: {result.files} files, {human_bytes(result.bytes)} "
            f"from {', '.join(result.archives) or 'no inner archive'}"
        )
        for line in result.refused:
            print(f"  refused: {line}")
        for line in result.problems:
            print(f"  problem: {line}")
    clean = not result.problems and not result.refused
    return ExitCode.OK if clean else ExitCode.NOT_VALID


# -- output -----------------------------------------------------------------------------------


def format_verdict(report: VerifyReport) -> str:
    """Return the human lines for one verified archive."""
    backup = report.backup
    line = f"{report.path}: {report.verdict}"
    if backup:
        line += f"  ({backup.name}, {backup.date:%Y-%m-%d %H:%M}, {backup.kind}, {backup.slug})"
    line += f"  in {report.seconds:.1f} s"
    lines = [line]
    if report.sha256:
        lines.append(f"  sha256 {report.sha256}")
    lines += [f"  problem: {problem}" for problem in report.problems]
    lines += [f"  note: {note}" for note in report.notes]
    return "\n".join(shown(line) for line in lines)


def format_summary(report: VerifyReport) -> str:
    """Return the human summary ``inspect`` prints."""
    backup = report.backup
    rows: list[tuple[str, str]] = [("file", report.path), ("size", human_bytes(report.size))]
    if backup:
        rows += [
            ("name", backup.name),
            ("slug", backup.slug),
            ("date", backup.date.isoformat()),
            ("kind", backup.kind),
            ("type", backup.type),
            ("HA version", backup.homeassistant_version or "-"),
            ("add-ons", ", ".join(f"{a.slug} {a.version}".strip() for a in backup.addons) or "-"),
            ("folders", ", ".join(backup.folders) or "-"),
            ("protected", "yes" if backup.protected else "no"),
        ]
    versions = report.securetar_versions
    rows.append(("SecureTar", ", ".join(f"v{v}" for v in versions) if versions else "none"))
    for inner in report.inner:
        rows.append((f"  {inner.name}", human_bytes(inner.size)))
    rows.append(("structure", f"{report.verdict} (quick check, no key)"))
    width = max(len(key) for key, _ in rows)
    lines = [f"{key:<{width}}  {value}" for key, value in rows]
    lines += [f"problem: {problem}" for problem in report.problems]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(shown(line) for line in lines)


def _verify_one(
    path: Path, level: Level, keys: KeyRing, opened: HashingReader | None
) -> VerifyReport:
    progress = Progress(f"verify {path.name}", opened.size if opened else _size(path))
    try:
        return verify_archive(
            path, level=level, keys=keys, on_bytes=progress.advance, opened=opened
        )
    finally:
        progress.close()


def _report_written(args: argparse.Namespace, report: VerifyReport) -> int:
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"{args.output}: written, {report.verdict}, sha256 {report.sha256}")
    return ExitCode.OK


def _size(path: Path) -> int:
    return path.stat().st_size
