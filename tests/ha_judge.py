"""Home Assistant's own code as the judge of what nas-receiver writes.

Runs inside the separate Python 3.13 virtualenv that holds ``homeassistant`` (see
``scripts/ha-venv``), never inside the project's venv: HA pins its own versions of
everything.  Reads a JSON list of operations on standard input and prints one JSON result per
operation (a list) on standard output.  Every operation calls HA's code as HA calls it:

- ``agent_backup``: ``AgentBackup.from_dict`` on a sidecar, and ``suggested_filename``;
- ``read_backup``: HA core's ``read_backup`` of a ``.tar`` (what HA lists for a file);
- ``restore``: HA core's ``homeassistant.backup_restore.restore_backup``, as HA runs it at
  start-up, into a configuration folder;
- ``dsm_list``: HA's Synology DSM backup agent lists a folder and downloads every backup,
  through the real ``py-synologydsm-api`` File Station code; only the DSM web API (the
  network boundary) is a stand-in here, answering from a local folder;
- ``core_write``: HA core's own backup writer (``CoreBackupReaderWriter``) writes a backup
  of a configuration folder, as a Container/Core install does.

An operation that raises reports ``{"ok": false, "error": ...}``; the others go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def agent_backup(op: dict[str, Any]) -> dict[str, Any]:
    from homeassistant.components.backup import AgentBackup, suggested_filename

    backup = AgentBackup.from_dict(op["json"])
    return {"backup": backup.as_dict(), "suggested_filename": suggested_filename(backup)}


def read_backup(op: dict[str, Any]) -> dict[str, Any]:
    from homeassistant.components.backup.util import read_backup as ha_read_backup

    return {"backup": ha_read_backup(Path(op["path"])).as_dict()}


def restore(op: dict[str, Any]) -> dict[str, Any]:
    from homeassistant import backup_restore

    config = Path(op["config_dir"])
    config.mkdir(parents=True, exist_ok=True)
    (config / backup_restore.RESTORE_BACKUP_FILE).write_text(
        json.dumps(
            {
                "path": op["path"],
                "password": op.get("password"),
                "remove_after_restore": False,
                "restore_database": True,
                "restore_homeassistant": True,
            }
        ),
        encoding="utf-8",
    )
    restored = backup_restore.restore_backup(str(config))
    result_file = config / backup_restore.RESTORE_BACKUP_RESULT_FILE
    result = json.loads(result_file.read_text(encoding="utf-8"))
    result_file.unlink()
    return {"restored": restored, "result": result}


class _DsmWebApi:
    """DSM's web API for File Station's list and download calls, answered from a folder:
    the network boundary, and the only stand-in.  Shares map ``/<share>/...`` to
    ``root/<share>/...``; entries are listed by name, as DSM sorts by default."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[tuple[str, str]] = []

    async def get(
        self, api: str, method: str, params: dict[str, Any], raw_response_content: bool = False
    ) -> Any:
        self.requests.append((api, method))
        if method == "list":
            folder = self._local(params["folder_path"])
            entries = sorted(folder.iterdir(), key=lambda p: p.name)
            page = entries[params["offset"] : params["offset"] + params["limit"]]
            files = [
                {"isdir": p.is_dir(), "name": p.name, "path": f"{params['folder_path']}/{p.name}"}
                for p in page
            ]
            return {"data": {"files": files, "offset": params["offset"], "total": len(entries)}}
        if method == "download" and raw_response_content:
            return self._stream(self._local(params["path"]).read_bytes())
        raise NotImplementedError(f"{api} {method}")

    def _local(self, dsm_path: str) -> Path:
        path = (self.root / dsm_path.lstrip("/")).resolve()
        if self.root.resolve() not in path.parents:
            raise PermissionError(dsm_path)
        return path

    @staticmethod
    def _stream(data: bytes) -> Any:
        from aiohttp import StreamReader
        from aiohttp.base_protocol import BaseProtocol

        loop = asyncio.get_running_loop()
        reader = StreamReader(BaseProtocol(loop), limit=1 << 16, loop=loop)
        reader.feed_data(data)
        reader.feed_eof()
        return reader


def dsm_list(op: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(_dsm_list(Path(op["root"]), op["share"], op["path"]))


async def _dsm_list(root: Path, share: str, path: str) -> dict[str, Any]:
    from homeassistant.components.synology_dsm.backup import SynologyDSMBackupAgent
    from homeassistant.components.synology_dsm.const import CONF_BACKUP_PATH, CONF_BACKUP_SHARE
    from synology_dsm.api.file_station import SynoFileStation

    file_station = SynoFileStation(_DsmWebApi(root))  # type: ignore[arg-type]
    entry = SimpleNamespace(
        title="nas",
        unique_id="nas-receiver-test",
        options={CONF_BACKUP_SHARE: share, CONF_BACKUP_PATH: path},
        runtime_data=SimpleNamespace(api=SimpleNamespace(file_station=file_station)),
    )
    agent = SynologyDSMBackupAgent(None, entry, "nas-receiver-test")  # type: ignore[arg-type]
    listed = []
    for backup in await agent.async_list_backups():
        digest = hashlib.sha256()
        async for chunk in await agent.async_download_backup(backup.backup_id):
            digest.update(chunk)
        listed.append(
            {
                "backup": backup.as_dict(),
                "file": f"{agent.backup_base_names[backup.backup_id]}.tar",
                "sha256": digest.hexdigest(),
            }
        )
    return {"backups": listed}


def core_write(op: dict[str, Any]) -> dict[str, Any]:
    """HA core's writer, with the backup.json its manager builds (manager.py)."""
    from homeassistant.components.backup.manager import CoreBackupReaderWriter
    from homeassistant.const import __version__ as ha_version

    config = Path(op["config_dir"])
    writer = CoreBackupReaderWriter.__new__(CoreBackupReaderWriter)
    writer._hass = SimpleNamespace(config=SimpleNamespace(path=lambda *p: str(config.joinpath(*p))))  # type: ignore[attr-defined]
    writer.temp_backup_dir = Path(op["path"]).parent
    backup_data = {
        "compressed": True,
        "date": op["date"],
        "extra": op.get("extra", {}),
        "homeassistant": {"exclude_database": not op["database_included"], "version": ha_version},
        "name": op["name"],
        "protected": op.get("password") is not None,
        "slug": op["slug"],
        "type": "partial",
        "version": 2,
    }
    path, size = writer._mkdir_and_generate_backup_contents(
        backup_data, op["database_included"], op.get("password"), Path(op["path"])
    )
    return {"path": str(path), "size": size}


OPERATIONS = {
    "agent_backup": agent_backup,
    "read_backup": read_backup,
    "restore": restore,
    "dsm_list": dsm_list,
    "core_write": core_write,
}


def main() -> None:
    out, sys.stdout = sys.stdout, sys.stderr  # HA's restore logs to sys.stdout; keep it clean
    results = []
    for op in json.load(sys.stdin):
        try:
            results.append({"ok": True, **OPERATIONS[op["op"]](op)})
        except Exception as err:
            results.append(
                {
                    "ok": False,
                    "error": f"{type(err).__name__}: {err}",
                    "trace": traceback.format_exc(),
                }
            )
    json.dump(results, out)


if __name__ == "__main__":
    main()
