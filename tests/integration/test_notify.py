"""Alerts reach DSM's desktop (a fake synodsmnotify that records its arguments) and apprise
URLs (a local HTTP server); a failing notifier never fails a job."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.daemon import scan_once
from nas_receiver.health import daily_checks
from nas_receiver.notify import DSM_APP, channels_from, deliver
from tests.conftest import corpus_file
from tests.daemon_helpers import write_config


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        type(self).received.append(json.loads(self.rfile.read(length)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    _Recorder.received = []
    server = HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_port}/alerts", _Recorder.received
    server.shutdown()
    thread.join(5)


@pytest.fixture
def fake_dsm(tmp_path: Path) -> tuple[Path, Path]:
    record = tmp_path / "dsm-calls.txt"
    script = tmp_path / "bin" / "synodsmnotify"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
    script.chmod(0o755)
    return script, record


def _config(tmp_path: Path, notify: str) -> Path:
    path = write_config(tmp_path, settle=0, expect_every="8d")
    path.write_text(path.read_text() + f"notify: {notify}\n")
    return path


def test_quarantine_alert_reaches_dsm_and_apprise(
    tmp_path: Path, webhook: tuple[str, list[dict[str, object]]], fake_dsm: tuple[Path, Path]
) -> None:
    url, received = webhook
    script, record = fake_dsm
    config = load_config(_config(tmp_path, f"{{dsm_command: {script}, urls: ['{url}']}}"))
    shutil.copyfile(
        corpus_file("habackuptool_test_protected_v1.tar"), config.sources[0].path / "bad.tar"
    )
    assert scan_once(config) == ["corrupt"]
    titles = [str(message["title"]) for message in received]
    assert "A backup was quarantined" in titles
    body = next(str(m["message"]) for m in received if m["title"] == "A backup was quarantined")
    assert "bad.tar: corrupt" in body
    calls = record.read_text().splitlines()
    assert (
        f"-c {DSM_APP} @administrators nas-receiver:notify:title_quarantine "
        "nas-receiver:notify:body_quarantine" in calls
    )
    before = len(received)
    deliver(Catalog(config.catalog_path), channels_from(config.notify))
    assert len(received) == before  # each alert is sent once


def test_failing_notifier_never_fails_the_job_and_retries_later(
    tmp_path: Path, webhook: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = webhook
    dead = "json://127.0.0.1:9/nothing-listens-here"
    config_path = _config(tmp_path, f"{{dsm: false, urls: ['{dead}']}}")
    config = load_config(config_path)
    shutil.copyfile(
        corpus_file("habackuptool_test_protected_v1.tar"), config.sources[0].path / "bad.tar"
    )
    assert scan_once(config) == ["corrupt"]  # the job finished; the alert did not go
    catalog = Catalog(config.catalog_path)
    assert catalog.unsent_events(["quarantine"])
    # the failure is remembered for the page (once an hour), without the URL
    deliver(catalog, channels_from(config.notify))
    failures = [e for e in catalog.events() if e["kind"] == "delivery"]
    assert len(failures) == 1
    assert "apprise: could not deliver 'A backup was quarantined'" in failures[0]["message"]
    assert "127.0.0.1" not in failures[0]["message"]
    from nas_receiver.web.views import overview

    shown = overview(config, catalog)["deliveries"]
    assert [d["message"] for d in shown] == [failures[0]["message"]]
    config_path.write_text(config_path.read_text().replace(dead, url))
    assert deliver(catalog, channels_from(load_config(config_path).notify)) >= 1
    assert any(m["title"] == "A backup was quarantined" for m in received)
    assert catalog.unsent_events(["quarantine"]) == []


def test_dead_man_alarm_once_a_day(
    make_backup: Callable[..., Path],
    tmp_path: Path,
    webhook: tuple[str, list[dict[str, object]]],
) -> None:
    url, received = webhook
    config = load_config(_config(tmp_path, f"{{dsm: false, urls: ['{url}']}}"))
    shutil.copyfile(make_backup(), config.sources[0].path / "a.tar")
    scan_once(config)
    catalog = Catalog(config.catalog_path)
    later = time.time() + 9 * 86400
    assert daily_checks(config, catalog, later) == 1
    assert daily_checks(config, catalog, later + 3600) == 0  # not again the same day
    assert daily_checks(config, catalog, later + 86400) == 1
    deliver(catalog, channels_from(config.notify))
    overdue = [m for m in received if m["title"] == "No new Home Assistant backup"]
    assert len(overdue) == 2
    assert "no new valid backup for 9.0 days" in str(overdue[0]["message"])


def test_urls_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret = "ntfy://user:s3cr3t-token@127.0.0.1:9/topic"
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# my alerts\n{secret}\n")
    os.chmod(urls, 0o600)
    config = load_config(_config(tmp_path, f"{{dsm: false, urls_file: {urls}}}"))
    catalog = Catalog(config.catalog_path)
    catalog.event("quarantine", "x.tar: corrupt", level="warning")
    deliver(catalog, channels_from(config.notify))
    assert "s3cr3t-token" not in caplog.text
