"""The page when something is wrong with what it reads: it says what and where (503), never
a bare server error, and never blocks on the daemon."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas_receiver.catalog import Catalog
from nas_receiver.config import load_config
from nas_receiver.web.app import App, Sources
from nas_receiver.web.auth import Verdict
from tests.daemon_helpers import write_config


def _get(app: App, query: str, path: str = "/") -> tuple[str, str]:
    answer: dict[str, Any] = {}

    def start_response(status: str, _headers: list[tuple[str, str]]) -> None:
        answer["status"] = status

    body = b"".join(app({"QUERY_STRING": query, "PATH_INFO": path}, start_response))
    return answer["status"], body.decode()


def _app(tmp_path: Path, extra: str = "") -> tuple[App, Path]:
    config_path = write_config(tmp_path)
    config_path.write_text(config_path.read_text() + extra)
    config = load_config(config_path)
    Catalog(config.catalog_path).close()
    return App(Sources(lambda: load_config(config_path)), lambda _e: Verdict(200)), config_path


def test_a_log_that_cannot_be_read_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "a-folder-not-a-log"
    folder.mkdir()
    app, _config = _app(tmp_path, f"log_file: {folder}\n")
    for view in ("log", "log.json", "log.txt"):
        status, body = _get(app, f"view={view}")
        assert status.startswith("503"), view
        assert "a-folder-not-a-log" in body and "cannot be read" in body
    assert _get(app, "")[0].startswith("200")  # the rest of the page still works


def test_a_damaged_catalog_is_said_on_every_data_page(tmp_path: Path) -> None:
    app, config_path = _app(tmp_path)
    catalog = load_config(config_path).catalog_path
    for suffix in ("-wal", "-shm"):
        catalog.with_name(catalog.name + suffix).unlink(missing_ok=True)
    catalog.write_bytes(b"this is not a database" * 100)
    for view in ("overview", "backups", "jobs", f"backup&id={'0' * 64}"):
        status, body = _get(app, f"view={view}")
        assert status.startswith("503"), view
        assert "the catalog" in body and "not a database" in body


def test_a_missing_catalog_and_a_broken_config(tmp_path: Path) -> None:
    app, config_path = _app(tmp_path)
    catalog = load_config(config_path).catalog_path
    catalog.unlink()
    status, body = _get(app, "")
    assert status.startswith("503") and "the daemon has not run" in body
    config_path.write_text("sources: [\n")
    from nas_receiver.web.app import guarded

    broken = App(Sources(guarded(lambda: load_config(config_path))), lambda _e: Verdict(200))
    status, body = _get(broken, "")
    assert status.startswith("503") and "config.yaml" in body


def test_the_stylesheet_and_script_beside_the_page(tmp_path: Path) -> None:
    app, _config = _app(tmp_path)
    assert _get(app, "", "/app.css")[1].startswith("/*")
    assert "use strict" in _get(app, "", "/some/where/app.js")[1]
    assert _get(app, "", "/../../etc/passwd")[0].startswith("200")  # the overview, no file
    assert "root:" not in _get(app, "", "/../../etc/passwd")[1]


def test_jobs_page_names_waiting_running_and_failing_arrivals(tmp_path: Path) -> None:
    """The states the pipeline records (catalog API, as the pipeline calls it) are shown
    with their reasons: waiting for room, being verified, failing."""
    app, config_path = _app(tmp_path)
    catalog = Catalog(load_config(config_path).catalog_path)
    for name in ("big.tar", "busy.tar", "locked.tar"):
        catalog.observe("home", name, 5 << 30, 1, now=1.0)
    ids = {s.path: s.id for s in catalog.sightings()}
    catalog.fail_sighting(
        ids["big.tar"],
        "waiting for 5.1 GiB free in /volume1/library",
        2.0,
        wait_bytes=5 << 30,
        wait_path="/volume1/library",
    )
    assert catalog.take(ids["busy.tar"], 5 << 30, 1)
    catalog.fail_sighting(ids["locked.tar"], "locked.tar cannot be read by user x", 3.0)
    status, body = _get(app, "view=jobs")
    assert status.startswith("200")
    assert "waiting for space" in body and "waiting for 5.1 GiB free in /volume1/library" in body
    assert "running" in body and "busy.tar" in body
    assert "failed" in body and "cannot be read by user x" in body


def test_the_token_leaves_the_address_bar_and_old_schemas_are_named(tmp_path: Path) -> None:
    from nas_receiver.web.auth import check_token, token

    app, config_path = _app(tmp_path)
    secret = token(tmp_path / "data")
    guarded = App(app.sources, lambda environ: check_token(environ, secret))
    answer: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        answer.update(status=status, headers=dict(headers))

    environ = {"QUERY_STRING": f"view=log&token={secret}", "PATH_INFO": "/", "SERVER_PORT": "1"}
    b"".join(guarded(environ, start_response))
    assert answer["status"].startswith("303")
    assert answer["headers"]["Location"] == "/?view=log"  # no token in history or logs
    assert secret in answer["headers"]["Set-Cookie"]

    catalog = Catalog(load_config(config_path).catalog_path)
    with catalog.transaction() as db:
        db.execute("UPDATE schema_version SET version = 6")  # the daemon not restarted yet
    status, body = _get(app, "view=overview")
    assert status.startswith("503") and "schema 6" in body and "restart" in body


def test_following_the_log_never_reads_more_than_a_tail(tmp_path: Path) -> None:
    from nas_receiver.web import logview

    log = tmp_path / "big.log"
    line = "2026-11-30 10:00:00 INFO " + "x" * 200 + "\n"
    log.write_text(line * (3 * logview.TAIL_BYTES // len(line)))
    page = logview.read_log(log, after=0)  # a page that looked before the file grew
    assert 0 < len(page.lines) <= logview.TAIL_BYTES // len(line)
    assert all(entry.text == "x" * 200 for entry in page.lines)


def test_the_overview_says_when_the_receiver_is_not_running(tmp_path: Path) -> None:
    """A stopped daemon leaves its last state in the catalog, all of it "in order": the
    overview says that nothing takes new backups in, and says nothing while one runs."""
    from nas_receiver.daemon import DaemonLock

    app, config_path = _app(tmp_path)
    status, body = _get(app, "view=overview")
    assert status.startswith("200")
    assert "The receiver is not running" in body
    with DaemonLock(load_config(config_path).lock_path):
        status, body = _get(app, "view=overview")
    assert status.startswith("200")
    assert "not running" not in body
