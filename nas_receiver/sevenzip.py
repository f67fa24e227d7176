"""7z copies: the HA backup inside a 7z archive, AES-256 with encrypted headers (py7zr), so
anyone with the password opens it with 7-Zip anywhere, without HA and without us."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from .errors import BackupError
from .haformat.output import atomic_output


def pack(source: Path, target: Path, password: str) -> None:
    """Write ``target`` (``<name>.tar.7z``) holding ``source`` as ``<name>.tar``.

    The archive is only stored, not compressed: HA backups are compressed already."""
    import py7zr

    filters = [{"id": py7zr.FILTER_COPY}, {"id": py7zr.FILTER_CRYPTO_AES256_SHA256}]
    with (
        atomic_output(target) as pending,
        py7zr.SevenZipFile(
            pending.file, "w", password=password, header_encryption=True, filters=filters
        ) as archive,
    ):
        archive.write(source, arcname=source.name)


def unpack(archive: Path, output: Path, password: str) -> None:
    """Write ``output``: the one ``.tar`` inside the 7z ``archive``."""
    import py7zr

    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".unpack-") as scratch:
        try:
            with py7zr.SevenZipFile(archive, "r", password=password) as opened:
                names = [n for n in opened.getnames() if n.endswith(".tar")]
                if len(names) == 1:
                    opened.extract(path=scratch, targets=names)
        except (py7zr.exceptions.Bad7zFile, py7zr.exceptions.PasswordRequired) as err:
            raise BackupError(f"{archive}: not a 7z archive this password opens ({err})") from err
        except Exception as err:  # py7zr reports a wrong password as a decompression error
            raise BackupError(f"{archive}: cannot unpack: wrong password or damaged") from err
        if len(names) != 1:
            raise BackupError(f"{archive}: holds {len(names)} .tar files, expected one")
        with atomic_output(output) as pending, (Path(scratch) / names[0]).open("rb") as file:
            shutil.copyfileobj(file, pending.file, 1 << 20)
