"""Backup keys: read from key files or the environment, never from a command line or a log.

A key file holds either the bare key (first non-empty line, used as it is) or the text of
HA's emergency kit, in which the key is the one ``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`` group.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from ..errors import KeyFileError

ENV_KEY = "NAS_RECEIVER_KEY"
_KIT_KEY = re.compile(r"\b[A-Z0-9]{4}(?:-[A-Z0-9]{4}){6}\b")


def parse_key_text(text: str, where: str) -> str:
    """Return the key in ``text`` (a bare key or an emergency kit).  Raise KeyFileError."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        raise KeyFileError(f"{where}: holds no key")
    if len(lines) == 1:
        return lines[0]
    found = _KIT_KEY.findall(text)
    if not found:
        raise KeyFileError(f"{where}: several lines and no HA encryption key among them")
    if len(set(found)) > 1:
        raise KeyFileError(f"{where}: more than one HA encryption key; keep one per file")
    return str(found[0])


CREDENTIAL_PREFIX = "credential:"


def read_key_file(path: str | os.PathLike[str]) -> str:
    """Return the key held in a key file.  Raise KeyFileError saying which file and why.

    ``credential:NAME`` names a systemd credential (``LoadCredential=NAME:...``): the file
    ``NAME`` in ``$CREDENTIALS_DIRECTORY``.
    """
    path = _credential_path(str(path)) if str(path).startswith(CREDENTIAL_PREFIX) else path
    try:
        text = read_small_text(Path(path))
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise KeyFileError(f"{path}: cannot read key file ({reason or err})") from err
    return parse_key_text(text, str(path))


MAX_SECRET_FILE = 64 << 10  # an emergency kit is about 1 KiB


def read_small_text(path: Path) -> str:
    """The text of a small regular file (a key file, a password file): a FIFO, a device
    (``/dev/zero``) or anything over 64 KiB is refused before it is read; a UTF-8 byte
    order mark (Windows editors write one) is dropped.  Raise OSError or UnicodeDecodeError."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        if info.st_size > MAX_SECRET_FILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_SECRET_FILE} bytes", str(path))
        data = file.read(MAX_SECRET_FILE + 1)
    return data.decode("utf-8-sig")


def read_secret(path: str | os.PathLike[str]) -> str:
    """Return a one-line secret (an access key, a password) from a file or a systemd
    credential (``credential:NAME``), without surrounding whitespace.  Raise OSError, whose
    message names the file but never holds the secret."""
    spec = str(path)
    try:
        where = _credential_path(spec) if spec.startswith(CREDENTIAL_PREFIX) else Path(spec)
    except KeyFileError as err:
        raise OSError(str(err)) from err
    try:
        value = read_small_text(where).strip()
    except UnicodeDecodeError as err:
        raise OSError(f"{where}: not UTF-8 text") from err
    if not value:
        raise OSError(f"{where}: empty")
    return value


def _credential_path(spec: str) -> Path:
    name = spec[len(CREDENTIAL_PREFIX) :]
    folder = os.environ.get("CREDENTIALS_DIRECTORY")
    if not folder:
        raise KeyFileError(
            f"{spec}: no $CREDENTIALS_DIRECTORY (not started by systemd with LoadCredential=)"
        )
    return Path(folder) / name


class KeyRing(Sequence[str]):
    """Keys tried in order.  Its repr and str never show a key."""

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self._keys = tuple(dict.fromkeys(key for key in keys if key))

    @classmethod
    def load(
        cls, key_files: Iterable[str | os.PathLike[str]] = (), *, use_env: bool = True
    ) -> KeyRing:
        """Return the keys of ``key_files`` in order, then ``$NAS_RECEIVER_KEY`` if set."""
        keys = [read_key_file(path) for path in key_files]
        if use_env and os.environ.get(ENV_KEY):
            keys.append(parse_key_text(os.environ[ENV_KEY], f"${ENV_KEY}"))
        return cls(keys)

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return self._keys[index]

    def __len__(self) -> int:
        return len(self._keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({len(self._keys)} keys)"

    __str__ = __repr__
