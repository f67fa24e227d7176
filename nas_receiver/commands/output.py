"""Output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys


def print_json(value: object) -> None:
    """Print ``value`` as JSON on stdout: indented for a person at a terminal, compact for
    programs (json's fast C encoder only runs without indentation)."""
    text = json.dumps(value, indent=2 if sys.stdout.isatty() else None, default=str)
    sys.stdout.write(text + "\n")


def say(line: str) -> None:
    """Print one line for a person: names inside it are data (see ``names.shown``)."""
    from ..haformat.names import shown

    print(shown(line))
