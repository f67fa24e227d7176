"""The ``nas-receiver`` command: parse arguments, call one action, map errors to exit codes.

Exit codes: 0 ok; 2 usage or config error; 3 an archive is not valid; 4 a destination or
dependency is unavailable; 1 anything else.  Every command that reports has ``--json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .catalog import Catalog
from .config import Config, example_text, find_config
from .daemon import Daemon, scan_once
from .errors import ExitCode, NasReceiverError, UsageError
from .haformat import KeyRing, Level, Verdict, VerifyReport, verify_archive
from .haformat.convert import decrypt_backup, encrypt_backup
from .haformat.extract import DEFAULT_MAX_BYTES, extract_backup
from .logs import setup_logging
from .progress import Progress, human_bytes
from .report import list_archives, source_status

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except NasReceiverError as err:
        print(f"nas-receiver: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"nas-receiver: {where}{err.strerror or err}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        print("nas-receiver: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas-receiver",
        description="Receive, verify, keep and mirror Home Assistant backups.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE", help="configuration file (YAML)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_inspect(commands)
    _add_verify(commands)
    _add_decrypt(commands)
    _add_encrypt(commands)
    _add_extract(commands)
    _add_daemon_commands(commands)
    return parser


def _key_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        action="append",
        default=[],
        metavar="FILE",
        help="file with the backup key (bare, or HA's emergency kit); repeat for a key ring. "
        "$NAS_RECEIVER_KEY is tried too",
    )


def _add_inspect(commands: Any) -> None:
    parser = commands.add_parser("inspect", help="summarise a backup (no key needed)")
    parser.add_argument("archive", type=Path)
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=cmd_inspect)


def _add_verify(commands: Any) -> None:
    parser = commands.add_parser("verify", help="verify backups (exit 3 if any is not valid)")
    parser.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE")
    parser.add_argument("--level", choices=[str(level) for level in Level], default="full")
    _key_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.set_defaults(handler=cmd_verify)


def _add_decrypt(commands: Any) -> None:
    parser = commands.add_parser("decrypt", help="write an unencrypted copy of a backup")
    parser.add_argument("archive", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar")
    _key_options(parser)
    parser.add_argument("--json", action="store_true", help="print the copy's report as JSON")
    parser.set_defaults(handler=cmd_decrypt)


def _add_encrypt(commands: Any) -> None:
    parser = commands.add_parser("encrypt", help="write an HA-encrypted copy of a backup")
    parser.add_argument("archive", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar")
    _key_options(parser)
    parser.add_argument("--securetar-version", type=int, choices=[2, 3], default=3)
    parser.add_argument("--json", action="store_true", help="print the copy's report as JSON")
    parser.set_defaults(handler=cmd_encrypt)


def _add_extract(commands: Any) -> None:
    parser = commands.add_parser("extract", help="extract files for recovery without HA")
    parser.add_argument("archive", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="DIR")
    _key_options(parser)
    parser.add_argument(
        "--member",
        action="append",
        default=[],
        metavar="NAME",
        help="inner archive to extract (homeassistant, an add-on slug, ...)",
    )
    parser.add_argument(
        "--path",
        action="append",
        default=[],
        metavar="GLOB",
        help="only files whose path inside the inner archive matches",
    )
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument(
        "--max-bytes",
        type=int,
        default=DEFAULT_MAX_BYTES,
        help="stop after extracting this many bytes (default 256 GiB)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler=cmd_extract)


def _add_daemon_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the receiver daemon in the foreground")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.set_defaults(handler=cmd_run)
    scan = commands.add_parser(
        "scan", help="process everything pending once, then exit (exit 3 if any is not valid)"
    )
    scan.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    scan.set_defaults(handler=cmd_scan)
    listing = commands.add_parser("list", help="every archive, its verdict and its copies")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=cmd_list)
    status = commands.add_parser("status", help="health per source (exit 3 when unhealthy)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler=cmd_status)
    config = commands.add_parser("config", help="check the configuration, or print an example")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    config_commands.add_parser("check", help="validate the configuration in force").set_defaults(
        handler=cmd_config_check
    )
    config_commands.add_parser("example", help="print a commented example").set_defaults(
        handler=cmd_config_example
    )


# -- commands ---------------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    return find_config(Path(args.config) if args.config else None)


def cmd_run(args: argparse.Namespace) -> int:
    config, where = _config(args)
    setup_logging(config.log_file, verbose=args.verbose)
    logging.getLogger(__name__).info("nas-receiver %s, configuration: %s", __version__, where)
    daemon = Daemon(config, reload=lambda: _config(args)[0])
    daemon.install_signal_handlers()
    daemon.run()
    return ExitCode.OK


def cmd_scan(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    setup_logging(config.log_file)
    verdicts = scan_once(config)
    if args.json:
        _print_json(verdicts)
    valid = all(v == "valid" for v in verdicts)
    return ExitCode.OK if valid else ExitCode.NOT_VALID


def cmd_list(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    rows = list_archives(_read_catalog(config))
    if args.json:
        _print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no archives yet")
    for row in rows:
        print(
            f"{row['date'] or '-':25}  {row['verdict']:12} {row['source']:10} "
            f"{row['name']}  ({row['sha256'][:12]})"
        )
        for copy in row["copies"]:
            mark = "verified" if copy["verified"] else "unverified"
            print(f"    {copy['location']:12} {copy['state']:8} {mark:10} {copy['path']}")
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    status = source_status(config, _read_catalog(config))
    if args.json:
        _print_json(status)
    else:
        for source in status["sources"]:
            state = "ok" if source["healthy"] else "NEEDS ATTENTION"
            print(
                f"{source['name']}: {state} - {source['valid']} valid of {source['archives']}, "
                f"last valid {source['last_valid'] or 'never'}, "
                f"{len(source['pending'])} pending"
            )
            for problem in source["problems"]:
                print(f"  problem: {problem}")
    return ExitCode.OK if status["healthy"] else ExitCode.NOT_VALID


def cmd_config_check(args: argparse.Namespace) -> int:
    config, where = _config(args)
    print(f"{where}: ok ({len(config.sources)} source(s), library {config.library.path})")
    return ExitCode.OK


def cmd_config_example(_args: argparse.Namespace) -> int:
    print(example_text(), end="")
    return ExitCode.OK


def _read_catalog(config: Config) -> Catalog:
    """Open the catalog for reading (works while the daemon runs); create it if new."""
    if not config.catalog_path.exists():
        return Catalog(config.catalog_path)
    return Catalog(config.catalog_path, readonly=True)


def cmd_inspect(args: argparse.Namespace) -> int:
    report = verify_archive(args.archive, level=Level.QUICK)
    if args.json:
        _print_json(report.to_dict())
    else:
        print(format_summary(report))
    return ExitCode.OK


def cmd_verify(args: argparse.Namespace) -> int:
    keys = KeyRing.load(args.key_file)
    level = Level(args.level)
    reports = [_verify_one(path, level, keys) for path in args.archives]
    if args.json:
        _print_json([report.to_dict() for report in reports])
    else:
        for report in reports:
            print(format_verdict(report))
    valid = all(report.verdict is Verdict.VALID for report in reports)
    return ExitCode.OK if valid else ExitCode.NOT_VALID


def cmd_decrypt(args: argparse.Namespace) -> int:
    keys = KeyRing.load(args.key_file)
    progress = Progress(f"decrypt {args.archive.name}", _size(args.archive))
    try:
        report = decrypt_backup(args.archive, args.output, keys, on_bytes=progress.advance)
    finally:
        progress.close()
    return _report_written(args, report)


def cmd_encrypt(args: argparse.Namespace) -> int:
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
            max_bytes=args.max_bytes,
            on_bytes=progress.advance,
        )
    finally:
        progress.close()
    if args.json:
        _print_json(result.to_dict())
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
    return "\n".join(lines)


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
    return "\n".join(lines)


def _verify_one(path: Path, level: Level, keys: KeyRing) -> VerifyReport:
    progress = Progress(f"verify {path.name}", _size(path))
    try:
        return verify_archive(path, level=level, keys=keys, on_bytes=progress.advance)
    finally:
        progress.close()


def _report_written(args: argparse.Namespace, report: VerifyReport) -> int:
    if args.json:
        _print_json(report.to_dict())
    else:
        print(f"{args.output}: written, {report.verdict}, sha256 {report.sha256}")
    return ExitCode.OK


def _size(path: Path) -> int:
    return path.stat().st_size


def _print_json(value: object) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
