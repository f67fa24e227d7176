"""Logging: one readable line per event; stderr (systemd adds its own time), and a rotating
file when configured (DSM shows the package's log file)."""

from __future__ import annotations

import logging
import logging.handlers
import os
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(message)s"


def setup_logging(log_file: Path | None = None, *, verbose: bool = False) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for handler in list(root.handlers):
        root.removeHandler(handler)
    stderr = logging.StreamHandler()
    under_systemd = bool(os.environ.get("JOURNAL_STREAM"))
    stderr.setFormatter(
        logging.Formatter(
            "%(levelname)s %(message)s" if under_systemd else _FORMAT, "%Y-%m-%d %H:%M:%S"
        )
    )
    root.addHandler(stderr)
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        rotating = logging.handlers.RotatingFileHandler(
            log_file, maxBytes=5 << 20, backupCount=5, encoding="utf-8"
        )
        rotating.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
        root.addHandler(rotating)
    for noisy in ("watchdog", "botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
