"""The Home Assistant backup format, and nothing else: usable as a library on its own.

No configuration, no catalog: values in, values out.  Names are loaded on first use, so a
program that needs one helper does not pay for the whole format (pydantic, the ciphers).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .keys import KeyRing, read_key_file
    from .model import BackupJson, parse_backup_json
    from .names import ha_base_name
    from .verify import Level, Verdict, VerifyReport, verify_archive

_WHERE = {
    "KeyRing": "keys",
    "read_key_file": "keys",
    "BackupJson": "model",
    "ha_base_name": "names",
    "parse_backup_json": "model",
    "Level": "verify",
    "Verdict": "verify",
    "VerifyReport": "verify",
    "verify_archive": "verify",
}

__all__ = [
    "BackupJson",
    "KeyRing",
    "Level",
    "Verdict",
    "VerifyReport",
    "ha_base_name",
    "parse_backup_json",
    "read_key_file",
    "verify_archive",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
