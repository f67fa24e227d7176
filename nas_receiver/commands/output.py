"""Output helpers shared by the command modules."""

from __future__ import annotations

import json
import sys


def print_json(value: object) -> None:
    """Print ``value`` as indented JSON on stdout."""
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
