"""System tools some tests use: found, or skipped with the reason (a failure under CI,
where .ci/run installs them)."""

from __future__ import annotations

import os
import shutil

import pytest


def require_tool(*names: str) -> str:
    """The path of the first of ``names`` on PATH."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    message = f"{' or '.join(names)} is not installed (apt-get install it, or run as root)"
    if os.environ.get("CI"):
        pytest.fail(f"under CI: {message}")
    pytest.skip(message)
