"""Notifications: DSM's desktop (synodsmnotify) and any apprise URL (ntfy, Pushover,
Telegram, e-mail, an HA webhook, a healthchecks ping).

The catalog's events are the outbox: whatever deserves the user's attention is recorded as
an event first (quarantined, not restorable, suspicious, pruned, overdue, key warnings), and
``deliver`` sends what has not been sent yet, then marks it sent.  A failing notifier is
logged and never fails a job; an event that could not be sent anywhere is tried again next
time.  URLs hold tokens: they never appear in a log line.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .catalog import Catalog

log = logging.getLogger(__name__)

NOTIFY_KINDS = (
    "quarantine",
    "drill",
    "suspicious",
    "pruned",
    "overdue",
    "keys",
    "mirror",
    "rot",
    "space",
    "job",
    "share",
)
DSM_APP = "SYNO.SDS.nas_receiver"
# DSM 7: i18n keys of a package start with its name, and are listed in ui/config's
# preloadTexts (spk/target/ui/config; a test checks they agree).
I18N_PREFIX = "nas-receiver:notify:"
TITLES = {
    "quarantine": "A backup was quarantined",
    "drill": "A backup is not restorable",
    "suspicious": "A backup looks suspicious",
    "pruned": "Old backups were deleted",
    "overdue": "No new Home Assistant backup",
    "keys": "A backup key needs attention",
    "mirror": "An off-site copy failed",
    "rot": "A library copy is damaged",
    "space": "nas-receiver is waiting for disk space",
    "job": "A backup could not be kept",
    "share": "A shared folder is missing",
}


class Channel(Protocol):
    name: str

    def send(self, kind: str, title: str, body: str) -> None:
        """Deliver one alert; raise on failure."""


@dataclass
class DsmDesktop:
    """DSM 7 desktop notification: i18n keys shipped in the package's ``ui/`` strings."""

    command: str
    target: str = "@administrators"
    name: str = "dsm"

    def send(self, kind: str, title: str, body: str) -> None:
        subprocess.run(
            [
                self.command,
                "-c",
                DSM_APP,
                self.target,
                f"{I18N_PREFIX}title_{kind}",
                f"{I18N_PREFIX}body_{kind}",
            ],
            check=True,
            timeout=30,
            capture_output=True,
        )


class AppriseUrls:
    """Every apprise URL the user configured."""

    name = "apprise"

    def __init__(self, urls: Sequence[str]) -> None:
        import apprise

        self._apprise = apprise.Apprise()
        for url in urls:
            if not self._apprise.add(url):
                log.warning("notify: an apprise URL was not understood (it is not shown)")

    def send(self, kind: str, title: str, body: str) -> None:
        if len(self._apprise) and not self._apprise.notify(title=title, body=body):
            raise OSError("apprise could not deliver to every URL")


def channels_from(settings: Any) -> list[Channel]:
    """Build the channels a ``NotifyConfig`` asks for."""
    found: list[Channel] = []
    command = (
        settings.dsm_command
        or shutil.which("synodsmnotify")
        or ("/usr/syno/bin/synodsmnotify" if Path("/usr/syno/bin/synodsmnotify").exists() else None)
    )
    if settings.dsm and command:
        found.append(DsmDesktop(command, settings.dsm_target))
    urls = list(settings.urls)
    if settings.urls_file:
        text = Path(settings.urls_file).read_text(encoding="utf-8")
        urls += [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]
    if urls:
        found.append(AppriseUrls(urls))
    return found


def deliver(catalog: Catalog, channels: Sequence[Channel]) -> int:
    """Send every event that deserves an alert and was not sent yet; return how many went."""
    if not channels:
        return 0
    sent = 0
    for event in catalog.unsent_events(NOTIFY_KINDS):
        title = TITLES.get(event["kind"], "nas-receiver")
        delivered = False
        for channel in channels:
            try:
                channel.send(event["kind"], title, event["message"])
                delivered = True
            except Exception as err:  # a notifier never fails a job
                log.warning("notify: %s failed: %s", channel.name, type(err).__name__)
                _record_failure(catalog, channel.name, title, err)
        if delivered:
            catalog.mark_sent(event["id"])
            sent += 1
    return sent


DELIVERY = "delivery"  # an alert a channel could not deliver: shown on the page
DELIVERY_EVERY = 3600.0  # recorded once an hour per channel at most


def _record_failure(catalog: Catalog, channel: str, title: str, err: Exception) -> None:
    """Remember that ``channel`` failed, for the page (never the URL: it holds secrets)."""
    last = catalog.last_event_at(DELIVERY, channel)
    if last is not None and time.time() - last < DELIVERY_EVERY:
        return
    catalog.event(
        DELIVERY,
        f"{channel}: could not deliver {title!r} ({type(err).__name__}); "
        "it is tried again with the next alert",
        level="warning",
        source=channel,
    )
