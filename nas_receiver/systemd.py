"""systemd's notify protocol through sdnotify; silent where there is no NOTIFY_SOCKET (DSM)."""

from __future__ import annotations

import os

import sdnotify


class Notifier:
    """READY=1 after the first scan, STATUS= and WATCHDOG=1 from the main loop, STOPPING=1."""

    def __init__(self) -> None:
        self._enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self._enabled else None
        self._status = ""

    def _send(self, message: str) -> None:
        if self._notifier is not None:
            self._notifier.notify(message)

    def ready(self, status: str) -> None:
        self._status = status
        self._send(f"READY=1\nSTATUS={status}")

    def heartbeat(self, status: str) -> None:
        """Tell systemd the main loop is alive; send the status line when it changed."""
        message = "WATCHDOG=1"
        if status != self._status:
            self._status = status
            message += f"\nSTATUS={status}"
        self._send(message)

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")
