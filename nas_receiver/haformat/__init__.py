"""The Home Assistant backup format, and nothing else: usable as a library on its own.

No configuration, no catalog: values in, values out.
"""

from .keys import KeyRing, read_key_file
from .model import BackupJson, ha_base_name, parse_backup_json
from .verify import Level, Verdict, VerifyReport, verify_archive

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
