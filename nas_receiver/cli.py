"""The ``nas-receiver`` command: parse arguments, call one action, map errors to exit codes.

Exit codes: 0 ok; 2 usage or config error; 3 an archive is not valid; 4 a destination or
dependency is unavailable; 1 anything else.  Every command that reports has ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import stat
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from . import __version__
from .dsm import run_as_package_owner
from .errors import ExitCode, NasReceiverError

Handler = Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(_command_word(argv)).parse_args(argv)
    try:
        run_as_package_owner()
        if (begin := getattr(args, "begin", None)) is not None:
            begin(args)
        code = resolve(args.handler)(args)
        if sys.stdout is not None:  # None when started with stdout closed (">&-")
            sys.stdout.flush()  # a reader gone away shows here, not as a traceback at exit
        return code
    except NasReceiverError as err:
        print(f"nas-receiver: {err}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError as err:
        if not _stdout_gone():
            print(f"nas-receiver: {err.strerror or err}", file=sys.stderr)
        return ExitCode.FAILURE
    except OSError as err:
        where = f"{err.filename}: " if err.filename else ""
        print(f"nas-receiver: {where}{err.strerror or err}", file=sys.stderr)
        return ExitCode.FAILURE
    except KeyboardInterrupt:
        print("nas-receiver: interrupted", file=sys.stderr)
        return 130


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader went away (``list | head``): then
    there is no one to tell, and what is still buffered goes to /dev/null, so that Python's
    flush at exit does not print a traceback either.  (A broken pipe may also be another
    pipe's, such as a tool's input: that one is an error to report.)"""
    try:
        fd = sys.stdout.fileno()
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        gone = any(events & (select.POLLERR | select.POLLHUP) for _fd, events in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no file behind it
        return False
    if gone:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, fd)
        os.close(devnull)
    return gone


def resolve(name: str) -> Handler:
    """Import a handler (``module:function`` in ``commands``) only when its command runs, so
    a quick ``verify`` does not pay for loading the daemon."""
    module_name, _, function = name.partition(":")
    module = importlib.import_module(f"{__package__}.commands.{module_name}")
    handler: Handler = getattr(module, function)
    return handler


def _command_word(argv: list[str]) -> str | None:
    """The command ``argv`` names, when nothing before it but ``--config`` could change how
    it reads (None for --help, which lists every command, an abbreviated option, ...)."""
    if "-h" in argv or "--help" in argv:
        return None
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)  # its value, never a command
        elif not word.startswith("-"):
            return word
        elif not word.startswith("--config="):
            return None
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or when ``command`` is one of the commands on backup files, only
    that command's: a quick ``verify`` does not spend 15 ms on the daemon's twenty."""
    parser = argparse.ArgumentParser(
        prog="nas-receiver",
        description="Receive, verify, keep and mirror Home Assistant backups.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--config", metavar="FILE", help="configuration file (YAML)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    if command in ON_FILES:
        ON_FILES[command](commands)
        return parser
    for add in (*ON_FILES.values(), _add_daemon_commands, _add_offsite_commands, _add_dsm):
        add(commands)
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
    parser.set_defaults(handler="archives:cmd_inspect")


def _add_verify(commands: Any) -> None:
    parser = commands.add_parser("verify", help="verify backups (exit 3 if any is not valid)")
    parser.add_argument("archives", type=Path, nargs="+", metavar="ARCHIVE")
    parser.add_argument("--level", choices=["quick", "full"], default="full")
    _key_options(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON array")
    parser.set_defaults(handler="archives:cmd_verify", begin=hash_first_archive)


def hash_first_archive(args: argparse.Namespace) -> None:
    """A full verification hashes the whole file on a thread that needs nothing but
    hashlib: it starts on the first archive now, while the rest of the program loads (a
    third of a second of one core, the other core idle otherwise)."""
    if args.level != "full":
        return
    try:
        info = os.stat(args.archives[0])
    except OSError:
        return  # verify says what is wrong with it, as for any other archive
    if stat.S_ISREG(info.st_mode) and info.st_size:  # never open a FIFO: it would block
        from .haformat.sources import HashingReader

        with contextlib.suppress(OSError):
            args.first_opened = HashingReader(args.archives[0]).start()


def _add_decrypt(commands: Any) -> None:
    parser = commands.add_parser("decrypt", help="write an unencrypted copy of a backup")
    parser.add_argument("archive", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar")
    _key_options(parser)
    parser.add_argument("--json", action="store_true", help="print the copy's report as JSON")
    parser.set_defaults(handler="archives:cmd_decrypt")


def _add_encrypt(commands: Any) -> None:
    parser = commands.add_parser("encrypt", help="write an HA-encrypted copy of a backup")
    parser.add_argument("archive", type=Path)
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar")
    _key_options(parser)
    parser.add_argument("--securetar-version", type=int, choices=[2, 3], default=3)
    parser.add_argument("--json", action="store_true", help="print the copy's report as JSON")
    parser.set_defaults(handler="archives:cmd_encrypt")


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
        default=None,
        help="stop after extracting this many bytes (default 256 GiB)",
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(handler="archives:cmd_extract")


ON_FILES: dict[str, Callable[[Any], None]] = {
    "inspect": _add_inspect,
    "verify": _add_verify,
    "decrypt": _add_decrypt,
    "encrypt": _add_encrypt,
    "extract": _add_extract,
}


def _add_daemon_commands(commands: Any) -> None:
    run = commands.add_parser("run", help="run the receiver daemon in the foreground")
    run.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    run.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="only warnings on stderr when log_file is set (the file has everything)",
    )
    run.set_defaults(handler="receiver:cmd_run")
    scan = commands.add_parser(
        "scan", help="process everything pending once, then exit (exit 3 if any is not valid)"
    )
    scan.add_argument("--json", action="store_true", help="print the verdicts as JSON")
    scan.set_defaults(handler="receiver:cmd_scan")
    listing = commands.add_parser("list", help="every archive, its verdict and its copies")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler="receiver:cmd_list")
    serve = commands.add_parser(
        "serve", help="serve the live page (status, backups, jobs, log) to a browser"
    )
    serve.add_argument(
        "--listen",
        default="127.0.0.1:8765",
        metavar="HOST:PORT",
        help="where to listen (default 127.0.0.1:8765; port 0: any free port); "
        "another address only when you want the page reachable from elsewhere",
    )
    serve.set_defaults(handler="receiver:cmd_serve")
    status = commands.add_parser("status", help="health per source (exit 3 when unhealthy)")
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(handler="receiver:cmd_status")
    prune = commands.add_parser("prune", help="apply retention: keep or delete, with reasons")
    prune.add_argument("--dry-run", action="store_true", help="say what would go; delete nothing")
    prune.add_argument("--location", choices=["library", "quarantine"], help="only this one")
    prune.add_argument("--json", action="store_true", help="print JSON")
    prune.set_defaults(handler="receiver:cmd_prune")
    for verb, text in (
        ("pin", "never delete this archive anywhere"),
        ("unpin", "let retention decide again"),
    ):
        pin = commands.add_parser(verb, help=text)
        pin.add_argument(
            "archive",
            metavar="ARCHIVE",
            help="SHA-256 (or its start), slug, name, or the backup file itself",
        )
        pin.set_defaults(handler=f"receiver:cmd_{verb}")
    reverify = commands.add_parser(
        "reverify",
        help="read every library copy in full again: bit rot (exit 3 if one no longer matches)",
    )
    reverify.add_argument("--json", action="store_true", help="print JSON")
    reverify.set_defaults(handler="receiver:cmd_reverify")
    drill = commands.add_parser(
        "drill", help="prove a backup restorable (exit 3 if not, 4 if it cannot run)"
    )
    drill.add_argument("archive", type=Path)
    _key_options(drill)
    drill.add_argument("--json", action="store_true", help="print the result as JSON")
    drill.set_defaults(handler="receiver:cmd_drill")
    keys = commands.add_parser("keys", help="prove the configured keys")
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    key_check = key_commands.add_parser(
        "check", help="each key against its source's newest backup (exit 3 on a warning)"
    )
    key_check.add_argument("--json", action="store_true", help="print JSON")
    key_check.set_defaults(handler="receiver:cmd_keys_check")
    config = commands.add_parser("config", help="check the configuration, or print an example")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser("check", help="validate the configuration in force")
    check.set_defaults(handler="receiver:cmd_config_check")
    example = config_commands.add_parser("example", help="print a commented example")
    example.set_defaults(handler="receiver:cmd_config_example")


def _add_offsite_commands(commands: Any) -> None:
    mirror = commands.add_parser(
        "mirror", help="copy what destinations lack, once (exit 4 if one is unavailable)"
    )
    mirror.add_argument("--destination", metavar="NAME", help="only this destination")
    mirror.add_argument("--json", action="store_true", help="print JSON")
    mirror.set_defaults(handler="receiver:cmd_mirror")
    reconcile = commands.add_parser(
        "reconcile",
        help="compare a destination with the catalog: missing copies queued again, "
        "unknown objects reported (exit 3 on missing or mismatched copies)",
    )
    reconcile.add_argument("--destination", metavar="NAME", required=True)
    reconcile.add_argument("--json", action="store_true", help="print JSON")
    reconcile.set_defaults(handler="receiver:cmd_reconcile")
    fetch = commands.add_parser(
        "fetch",
        help="download a copy from a destination (a 7z copy unwrapped) and verify it "
        "(exit 3 if not valid, 4 if unreachable)",
    )
    fetch.add_argument("archive", metavar="ARCHIVE", help="SHA-256 (or its start), slug or name")
    fetch.add_argument("--from", dest="source", metavar="NAME", required=True)
    fetch.add_argument("-o", "--output", type=Path, required=True, metavar="OUT.tar")
    _key_options(fetch)
    fetch.add_argument("--json", action="store_true", help="print the verification as JSON")
    fetch.set_defaults(handler="receiver:cmd_fetch")


def _add_dsm(commands: Any) -> None:
    dsm = commands.add_parser("dsm", help="Synology DSM package helpers (used by its scripts)")
    dsm_commands = dsm.add_subparsers(dest="dsm_command", required=True)
    setup = dsm_commands.add_parser(
        "setup", help="write the package's config.yaml from the wizard's answers (wizard_*)"
    )
    setup.add_argument("--var", type=Path, required=True, help="the package's var folder")
    setup.add_argument("--shares", type=Path, required=True, help="the package's shares folder")
    setup.set_defaults(handler="receiver:cmd_dsm_setup")


if __name__ == "__main__":
    sys.exit(main())
