"""Commands of the receiver: run, scan, list, status, config."""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .. import __version__, prune
from ..catalog import Catalog
from ..config import Config, DestinationConfig, example_text, find_config
from ..errors import ExitCode, UsageError
from ..haformat.keys import KeyRing
from ..library import sha256_of
from ..logs import setup_from_config, setup_logging
from ..progress import Progress
from ..report import list_archives, receiver_state, source_status
from .output import print_json, say


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
    from ..daemon import AlreadyRunning, scan_once

    config, _where = _config(args)
    setup_from_config(config)
    try:
        verdicts = scan_once(config)
    except AlreadyRunning:  # the daemon takes the share in by itself: nothing is wrong
        message = "the daemon is running and takes in the share itself; nothing to do"
        print(message, file=sys.stderr if args.json else sys.stdout)
        if args.json:
            print_json([])
        return ExitCode.OK
    if args.json:
        print_json(verdicts)
    valid = all(v == "valid" for v in verdicts)
    return ExitCode.OK if valid else ExitCode.NOT_VALID


def cmd_list(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    rows = list_archives(_read_catalog(config), config)
    if args.json:
        print_json(rows)
        return ExitCode.OK
    if not rows:
        print("no archives yet")
    for row in rows:
        say(
            f"{row['date'] or '-':25}  {row['verdict']:12} {row['source']:10} "
            f"{row['name']}  ({row['sha256'][:12]})"
        )
        for copy in row["copies"]:
            mark = "verified" if copy["verified"] else "unverified"
            where = copy["path"] or ""
            if copy.get("reason"):
                where = f"{copy['reason']} (next try {copy['next_try']})"
            say(f"    {copy['location']:12} {copy['state']:9} {mark:10} {where}")
    return ExitCode.OK


def cmd_serve(args: argparse.Namespace) -> int:
    from ..web.auth import token
    from ..web.serve import parse_listen, serve

    config, _where = _config(args)
    try:
        host, port = parse_listen(args.listen)
    except ValueError as err:
        raise UsageError(str(err)) from None
    setup_logging(quiet=True)
    secret = token(config.data_dir)  # a data folder we cannot write is said as such

    def announce(url: str) -> None:
        print(url, flush=True)  # the first line: the URL to open, token included
        print("(the token is kept in the data folder; Ctrl+C stops)", file=sys.stderr)
        if host not in ("127.0.0.1", "localhost", "::1"):
            print(
                f"listening on {host}: the token travels in plain HTTP; use this on a "
                "network you trust (or a reverse proxy with HTTPS)",
                file=sys.stderr,
            )

    try:
        serve(secret, lambda: _config(args)[0], (host, port), announce)
    except OSError as err:
        raise UsageError(f"--listen {args.listen}: {err.strerror or err}") from None
    except KeyboardInterrupt:
        pass
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    config, _where = _config(args)
    status = source_status(config, _read_catalog(config))
    status["receiver"] = receiver = receiver_state(config)
    if args.json:
        print_json(status)
    else:
        if receiver["running"]:
            say(f"receiver: running (pid {receiver['pid']})")
        elif receiver["running"] is False:
            say(
                f"receiver: not running (no nas-receiver run or scan holds {config.lock_path}; "
                "nothing takes new backups in)"
            )
        for source in status["sources"]:
            state = "ok" if source["healthy"] else "NEEDS ATTENTION"
            say(
                f"{source['name']}: {state} - {source['valid']} valid of {source['archives']}, "
                f"last valid {source['last_valid'] or 'never'}, "
                f"{len(source['pending'])} pending"
            )
            for problem in source["problems"]:
                say(f"  problem: {problem}")
        for destination in status["destinations"]:
            state = "ok" if destination["healthy"] else "NEEDS ATTENTION"
            say(
                f"{destination['name']} ({destination['type']}): {state} - "
                f"{destination['verified']} verified, {destination['pending']} pending, "
                f"{destination['failed']} failed, last copy {destination['last_copy'] or 'never'}"
            )
            for problem in destination["problems"]:
                say(f"  problem: {problem}")
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
            say(
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
    from ..mirror import MirrorBusy, mirror_once

    config, _where = _config(args)
    _destination(config, args.destination)
    setup_from_config(config)
    bars: list[Progress] = []

    def progress(label: str, total: int) -> Callable[[int], None]:
        for bar in bars:
            bar.close()
        bars.append(Progress(label, total))
        return bars[-1].advance

    try:
        outcomes = mirror_once(
            config,
            Catalog(config.catalog_path),
            only=args.destination,
            waits=False,
            progress=progress,
        )
    except MirrorBusy:
        print("the daemon (or another mirror command) is mirroring right now; nothing to do")
        return ExitCode.OK
    finally:
        for bar in bars:
            bar.close()
    if args.json:
        print_json([outcome.to_dict() for outcome in outcomes])
    else:
        for outcome in outcomes:
            what = f" {outcome.name}" if outcome.name else ""
            detail = f": {outcome.detail}" if outcome.detail else ""
            say(f"{outcome.destination}: {outcome.result}{what}{detail}")
        if not outcomes:
            print("every destination holds every archive it should")
    failed = any(outcome.result in ("failed", "unreachable") for outcome in outcomes)
    return ExitCode.UNAVAILABLE if failed else ExitCode.OK


def _destination(config: Config, name: str | None) -> DestinationConfig | None:
    if name is None:
        return None
    for destination in config.destinations:
        if destination.name == name:
            return destination
    raise UsageError(f"{name}: no such destination in the configuration")


def cmd_reconcile(args: argparse.Namespace) -> int:
    from ..destinations.base import DestinationError
    from ..reconcile import reconcile

    config, _where = _config(args)
    settings = _destination(config, args.destination)
    assert settings is not None
    setup_from_config(config)
    try:
        report = reconcile(config, settings, Catalog(config.catalog_path))
    except DestinationError as err:
        print(f"nas-receiver: {err}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    if args.json:
        print_json(report)
    else:
        for kind in ("missing", "mismatched", "unknown"):
            for item in report[kind]:
                print(f"{kind:10} {item['key']}: {item['detail']}")
        print(
            f"{settings.name}: {report['matching']} copies match the catalog, "
            f"{len(report['missing'])} missing (queued again), "
            f"{len(report['mismatched'])} mismatched, {len(report['unknown'])} unknown objects"
        )
    return ExitCode.NOT_VALID if report["missing"] or report["mismatched"] else ExitCode.OK


def cmd_fetch(args: argparse.Namespace) -> int:
    from ..destinations.base import DestinationError
    from ..reconcile import fetch

    config, _where = _config(args)
    settings = _destination(config, args.source)
    assert settings is not None
    setup_from_config(config)
    keys = KeyRing.load(args.key_file) or KeyRing(
        key for source in config.sources for key in KeyRing.load(source.keys)
    )
    progress = Progress(f"fetch from {settings.name}", 0)
    try:
        report = fetch(
            config,
            settings,
            Catalog(config.catalog_path),
            args.archive,
            args.output,
            keys,
            progress.advance,
        )
    except DestinationError as err:
        print(f"nas-receiver: {err}", file=sys.stderr)
        return ExitCode.UNAVAILABLE
    finally:
        progress.close()
    if args.json:
        print_json(report.to_dict())
    else:
        print(f"{args.output}: {report.verdict}")
    return ExitCode.OK if str(report.verdict) == "valid" else ExitCode.NOT_VALID


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
        say(f"{args.archive}: {report.verdict}")
        for check in report.checks:
            mark = "skip" if check.skipped else "ok  " if check.ok else "FAIL"
            say(f"  {mark} {check.name}: {check.detail}")
        for change in report.suspicious:
            say(f"  suspicious: {change}")
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


CREATING_WAIT = 10.0  # seconds a reader waits for a catalog the daemon is creating


def _read_catalog(config: Config) -> Catalog:
    """Open the catalog for reading (works while the daemon runs); create it if new.  A
    catalog the daemon has just begun to create has no tables yet: wait for them."""
    if not config.catalog_path.exists():
        return Catalog(config.catalog_path)
    catalog = Catalog(config.catalog_path, readonly=True)
    deadline = time.monotonic() + CREATING_WAIT
    while _being_created(catalog) and time.monotonic() < deadline:
        time.sleep(0.05)
    return catalog


def _being_created(catalog: Catalog) -> bool:
    try:
        return catalog.schema_version() is None
    except sqlite3.OperationalError:  # no schema_version table yet
        return True


def cmd_reverify(args: argparse.Namespace) -> int:
    from ..notify import channels_from, deliver
    from ..progress import Progress
    from ..reverify import library_copies, reverify_library

    config, _where = _config(args)
    setup_from_config(config)
    catalog = Catalog(config.catalog_path)
    copies = library_copies(catalog)
    total = sum(int(archive.get("size") or 0) for _copy, archive in copies)
    progress = Progress("re-verify library", total)
    try:
        rows = reverify_library(config, catalog, copies, on_bytes=progress.advance)
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
