"""Logging: one readable line per event; stderr (systemd adds its own time), and a log file
when configured (DSM shows the package's log file), rotated here or by logrotate, plus an
optional copy in a shared folder so the user opens it in File Station."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .haformat.names import shown

if TYPE_CHECKING:
    from .config import Config

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


class LineFormatter(logging.Formatter):
    """One event, one line: control characters in the message are escaped (a traceback,
    added after the message, keeps its lines)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = shown(record.message)
        return super().formatMessage(record)


def setup_logging(
    log_file: Path | None = None,
    *,
    verbose: bool = False,
    rotate: bool = True,
    copy_to: Path | None = None,
    quiet: bool = False,
) -> None:
    """Log to stderr (only warnings when ``quiet``: the file has the rest) and the files."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr = logging.StreamHandler()
    under_systemd = bool(os.environ.get("JOURNAL_STREAM"))
    stderr.setFormatter(
        LineFormatter(
            "%(levelname)s %(message)s" if under_systemd else _FORMAT, "%Y-%m-%d %H:%M:%S"
        )
    )
    if quiet and log_file is not None:
        stderr.setLevel(logging.WARNING)
    root.addHandler(stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        main: logging.Handler
        if rotate:
            main = logging.handlers.RotatingFileHandler(
                log_file, maxBytes=5 << 20, backupCount=5, encoding="utf-8"
            )
        else:  # logrotate moves the file away; reopen it then
            main = logging.handlers.WatchedFileHandler(log_file, encoding="utf-8")
        root.addHandler(_formatted(main))
    if copy_to is not None:
        try:
            copy_to.parent.mkdir(parents=True, exist_ok=True)
            copy = logging.handlers.RotatingFileHandler(
                copy_to, maxBytes=1 << 20, backupCount=2, encoding="utf-8"
            )
        except OSError as err:  # a missing share must not stop the daemon
            logging.getLogger(__name__).warning(
                "log copy: cannot write %s (%s)", copy_to, err.strerror or err
            )
        else:
            root.addHandler(_formatted(copy))
    for noisy in ("watchdog", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _formatted(handler: logging.Handler) -> logging.Handler:
    handler.setFormatter(LineFormatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    return handler


def setup_from_config(config: Config, *, verbose: bool = False, quiet: bool = False) -> None:
    setup_logging(
        config.log_file,
        verbose=verbose,
        rotate=config.log_rotate,
        copy_to=config.log_copy,
        quiet=quiet,
    )
