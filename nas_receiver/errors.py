"""The one error hierarchy of nas-receiver.

Every error carries a stable ``code`` (used in JSON output and logs) and an exit code that
the CLI maps to in one place.  Messages say what and where, and never hold a secret.
"""

from __future__ import annotations


class ExitCode:
    """Process exit codes (DSM Task Scheduler mails the user on non-zero)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    NOT_VALID = 3
    UNAVAILABLE = 4


class NasReceiverError(Exception):
    """Base of every error this program raises on purpose."""

    code = "error"
    exit_code = ExitCode.FAILURE


class UsageError(NasReceiverError):
    """The user asked for something that cannot work as asked."""

    code = "usage"
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The configuration file is missing, unreadable or invalid."""

    code = "config"


class KeyFileError(UsageError):
    """A key file cannot be read or holds no key."""

    code = "key_file"


class BackupError(NasReceiverError):
    """An archive cannot be processed as asked (damaged, wrong key, not a backup)."""

    code = "backup"
    exit_code = ExitCode.NOT_VALID


class OutputExistsError(UsageError):
    """The output path exists and we never overwrite without being told to."""

    code = "output_exists"


class UnsafeArchiveError(BackupError):
    """An archive asks to write outside its folder, or more than the size cap allows."""

    code = "unsafe_archive"


def one_line(err: BaseException) -> str:
    """An error as one line for logs and the catalog: its message, else its type's name."""
    text = " ".join(str(err).split())
    if isinstance(err, OSError) and err.strerror:
        where = f"{err.filename}: " if err.filename else ""
        text = f"{where}{err.strerror}"
    return text or type(err).__name__
