"""Commands of the receiver: run, scan, list, status, config."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .. import __version__, prune
from ..catalog import Catalog
from ..config import Config, example_text, find_config
from ..errors import ExitCode, UsageError
from ..library import sha256_of
from ..logs import setup_from_config, setup_logging
from ..report import list_archives, source_status
from .output import print_json


def _config(args: argparse.Namespace) -> tuple[Config, str]:
    return find_config(Path(args.config) if args.config else None)


def cmd_run(args: argparse.Namespace) -> int:
    from ..daemon import Daemon

    config, where = _config(args)
    setup_from_config(config, verbose=args.verbose, quiet=args.quiet)
    logging.getLogger(__name__).info("nas-receiver %s, configuration: %s", __version__, where)
    daemon = Daemon(config, reload=lambda: _config(args)[0])
    daemon.install_signal_handlers()
    daemon.run()
    return ExitCode.OK


def cmd_scan(args: argparse.Namespace) -> int:
    from ..daemon import scan_once

    config, _where = _config(args)
    setup_from_config(config)
    verdicts = scan_once(config)
    if args.json:
        print_json(verdicts)
    valid = all(v == "valid" for v in verdicts)
    return ExitCode.OK if valid else ExitCode.NOT_VALID


def cmd_list(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    rows = list_archives(_read_catalog(config))
    if args.json:
        print_json(rows)
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
        print_json(status)
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


def cmd_prune(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    catalog = Catalog(config.catalog_path)
    rows, _deleted = prune.run(config, catalog, only=args.location, dry_run=args.dry_run)
    if args.json:
        print_json([row.to_dict() for row in rows])
    else:
        for row in rows:
            d = row.decision
            print(
                f"{row.location:10} {d.action:6} {d.date:%Y-%m-%d %H:%M}  {d.name}  "
                f"({d.sha256[:12]})  {'; '.join(d.reasons)}"
            )
        if args.dry_run:
            print("dry run: nothing was deleted")
    return ExitCode.OK


def cmd_pin(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    catalog = Catalog(config.catalog_path)
    sha = _find_archive(catalog, args.archive)
    catalog.pin(sha, time.time())
    print(f"pinned {sha}: never deleted anywhere")
    return ExitCode.OK


def cmd_unpin(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    catalog = Catalog(config.catalog_path)
    sha = _find_archive(catalog, args.archive)
    catalog.unpin(sha)
    print(f"unpinned {sha}")
    return ExitCode.OK


def _find_archive(catalog: Catalog, needle: str) -> str:
    path = Path(needle)
    if path.is_file():
        needle = sha256_of(path)
    found = catalog.find_archives(needle)
    if len(found) != 1:
        what = "no archive" if not found else f"{len(found)} archives"
        raise UsageError(f"{needle}: {what} in the catalog match; give more of the SHA-256")
    return str(found[0]["sha256"])


def cmd_mirror(args: argparse.Namespace) -> int:
    from ..mirror import mirror_once

    config, _where = _config(args)
    if args.destination and args.destination not in {d.name for d in config.destinations}:
        raise UsageError(f"{args.destination}: no such destination in the configuration")
    setup_from_config(config)
    outcomes = mirror_once(config, Catalog(config.catalog_path), only=args.destination)
    if args.json:
        print_json([outcome.to_dict() for outcome in outcomes])
    else:
        for outcome in outcomes:
            print(
                f"{outcome.destination}: {outcome.result} {outcome.name}"
                f"{': ' + outcome.detail if outcome.detail else ''}"
            )
        if not outcomes:
            print("every destination holds every valid archive")
    failed = any(outcome.result == "failed" for outcome in outcomes)
    return ExitCode.UNAVAILABLE if failed else ExitCode.OK


def cmd_drill(args: argparse.Namespace) -> int:
    from ..drill import RESTORABLE, DrillUnavailable
    from ..drills import drill_and_record
    from ..haformat import KeyRing

    config, _where = _config(args)
    keys = KeyRing.load(args.key_file)
    if not keys:  # the configured sources' keys, all of them
        keys = KeyRing(key for source in config.sources for key in KeyRing.load(source.keys))
    catalog = Catalog(config.catalog_path)
    setup_logging(None)  # the drill's findings as log lines on stderr
    try:
        report = drill_and_record(
            config, catalog, args.archive, keys, _known_sha(catalog, args.archive)
        )
    except DrillUnavailable as err:
        print(f"nas-receiver: drill not possible: {err}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"{args.archive}: {report.verdict}")
        for check in report.checks:
            print(f"  {'ok  ' if check.ok else 'FAIL'} {check.name}: {check.detail}")
        for change in report.suspicious:
            print(f"  suspicious: {change}")
    return ExitCode.OK if report.verdict == RESTORABLE else ExitCode.NOT_VALID


def _known_sha(catalog: Catalog, archive: Path) -> str | None:
    found = catalog.find_archives(sha256_of(archive)) if archive.is_file() else []
    return str(found[0]["sha256"]) if len(found) == 1 else None


def cmd_keys_check(args: argparse.Namespace) -> int:
    from ..drills import prove_keys

    config, _where = _config(args)
    result = prove_keys(config, _read_catalog(config))
    if args.json:
        print_json(result)
    else:
        for source in result["sources"]:
            for key in source["keys"]:
                state = "proves" if key["proves"] else "does NOT open"
                print(f"{source['name']}: {key['key_file']} {state} the newest backup")
            days = source["days_since_restorable"]
            print(
                f"{source['name']}: last proven restorable "
                f"{'never' if days is None else f'{days} days ago'}"
            )
            for warning in source["warnings"]:
                print(f"  warning: {warning}")
    return ExitCode.OK if result["ok"] else ExitCode.NOT_VALID


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


def cmd_reverify(args: argparse.Namespace) -> int:
    from ..notify import channels_from, deliver
    from ..progress import Progress
    from ..reverify import library_copies, reverify_library

    config, _where = _config(args)
    setup_from_config(config)
    catalog = Catalog(config.catalog_path)
    total = sum(int(archive.get("size") or 0) for _copy, archive in library_copies(catalog))
    progress = Progress("re-verify library", total)
    try:
        rows = reverify_library(config, catalog, on_bytes=progress.advance)
    finally:
        progress.close()
    try:
        deliver(catalog, channels_from(config.notify))
    except OSError as err:
        logging.getLogger(__name__).error("notifications are off: %s", err)
    bad = [row for row in rows if not row["ok"]]
    if args.json:
        print_json(rows)
    else:
        for row in bad:
            print(f"NOT OK  {row['path']}: {row['problem']}")
        print(f"{len(rows) - len(bad)} of {len(rows)} library copies still match what was verified")
    return ExitCode.NOT_VALID if bad else ExitCode.OK


def cmd_dsm_setup(args: argparse.Namespace) -> int:
    import os

    from ..dsm import write_package_config

    path, written = write_package_config(args.var, args.shares, os.environ)
    print(f"{'wrote' if written else 'kept'} {path}")
    return ExitCode.OK
