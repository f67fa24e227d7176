"""Backup keys: read from key files or the environment, never from a command line or a log.

A key file holds either the bare key (first non-empty line, used as it is) or the text of
HA's emergency kit, in which the key is the one ``XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX`` group.
"""

from __future__ import annotations

import os
import re
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
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
        raise KeyFileError(f"{path}: cannot read key file ({reason})") from err
    return parse_key_text(text, str(path))


def read_secret(path: str | os.PathLike[str]) -> str:
    """Return a one-line secret (an access key, a password) from a file or a systemd
    credential (``credential:NAME``), without surrounding whitespace.  Raise OSError, whose
    message names the file but never holds the secret."""
    spec = str(path)
    try:
        where = _credential_path(spec) if spec.startswith(CREDENTIAL_PREFIX) else Path(spec)
    except KeyFileError as err:
        raise OSError(str(err)) from err
    value = where.read_text(encoding="utf-8").strip()
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
