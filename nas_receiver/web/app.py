"""The page as a WSGI application: routing by ``?view=``, authorization on every request,
HTML from the templates in ``templates/`` (Jinja2, every value escaped).

Query routing (not paths) keeps one URL scheme for both servers: DSM runs the program at
``/webman/3rdparty/<pkg>/index.cgi`` and ``serve`` at ``/``."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlencode

import jinja2

from .. import __version__
from ..catalog import SCHEMA_VERSION, Catalog
from ..config import Config
from ..intake.shareio import user_name
from . import chart, logview, views
from .auth import Verdict

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Body = bytes | Iterator[bytes]
BACKUPS_SHOWN = 300  # rows of the backups table unless "all" is asked for
ASSETS = {"app.css": "text/css; charset=utf-8", "app.js": "text/javascript; charset=utf-8"}
HEADERS = [
    # everything comes from this server; nothing is fetched from the internet
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'self'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
]


class Unavailable(Exception):
    """The catalog or the configuration cannot be read: the page says what and why."""


@dataclass(frozen=True)
class Sources:
    """Where the page reads from; ``load`` gives the configuration in force."""

    load: Callable[[], Config]

    def open(self) -> tuple[Config, Catalog]:
        config = self.load()
        path = config.catalog_path
        if not path.exists():
            raise Unavailable(f"{path} does not exist yet: the daemon has not run")
        if not os.access(path, os.R_OK):
            raise Unavailable(
                f"{path} cannot be read by user {user_name()}: the page needs read access to the "
                "catalog and the log"
            )
        catalog = Catalog(path, readonly=True)
        found = catalog.schema_version()
        if found != SCHEMA_VERSION:
            raise Unavailable(
                f"{path} has schema {found}, this version reads {SCHEMA_VERSION}: restart "
                "the daemon (the package) once, it brings the catalog up to date"
            )
        return config, catalog


class App:
    """The WSGI application.  ``authorize`` decides every request before any data is read."""

    def __init__(self, sources: Sources, authorize: Callable[[Environ], Verdict]) -> None:
        self.sources = sources
        self.authorize = authorize
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("nas_receiver.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.filters["size"] = human_size
        self.templates.globals.update(version=__version__, mark_class=chart.mark_class)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        verdict = self.authorize(environ)
        if verdict.status != 200:
            return self._refuse(verdict, start_response)
        query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        extra = [("Set-Cookie", verdict.set_cookie)] if verdict.set_cookie else []
        if verdict.set_cookie and "token" in query:  # the token leaves the address bar
            del query["token"]
            where = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "") or "/"
            location = where + ("?" + urlencode(query) if query else "")
            start_response("303 See Other", [("Location", location), *HEADERS, *extra])
            return [b""]
        try:
            status, headers, body = self._route(query, environ.get("PATH_INFO", ""))
        except (Unavailable, sqlite3.Error) as err:
            reason = str(err) if isinstance(err, Unavailable) else f"the catalog: {err}"
            status, headers, body = (
                "503 Service Unavailable",
                *self._html("unavailable.html", {"view": "", "reason": reason}),
            )
        start_response(status, headers + HEADERS + extra)
        return [body] if isinstance(body, bytes) else body

    # -- routing -------------------------------------------------------------------------------

    def _route(self, query: dict[str, str], path: str) -> tuple[str, list[tuple[str, str]], Body]:
        # the stylesheet and the script beside the page (in DSM, static files of ui/)
        asset = path.rsplit("/", 1)[-1]
        if asset in ASSETS:
            return self._asset(asset)
        view = query.get("view", "overview")
        page = self._pages().get(view)
        if page is None:
            return "404 Not Found", *self._html(
                "unavailable.html", {"view": "", "reason": "no such page"}
            )
        return page(query)

    def _pages(self) -> dict[str, Callable[[dict[str, str]], tuple[str, list[Any], Body]]]:
        return {
            "overview": self._overview,
            "backups": self._backups,
            "backup": self._backup,
            "jobs": self._jobs,
            "log": self._log,
            "log.json": self._log_json,
            "log.txt": self._log_file,
        }

    def _overview(self, _query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config, catalog = self.sources.open()
        data = views.overview(config, catalog)
        return "200 OK", *self._html("overview.html", {"view": "overview", **data})

    def _backups(self, query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config, catalog = self.sources.open()
        data = views.backups(config, catalog)
        rows = data["rows"]
        shown = rows if query.get("all") else rows[:BACKUPS_SHOWN]
        context = {
            "view": "backups",
            "chart": chart.timeline(rows),
            "kinds": chart.KINDS,
            "rows": shown,
            "total": len(rows),
            "locations": data["locations"],
        }
        return "200 OK", *self._html("backups.html", context)

    def _backup(self, query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config, catalog = self.sources.open()
        row = views.backup(config, catalog, query.get("id", ""))
        if row is None:
            return "404 Not Found", *self._html(
                "unavailable.html", {"view": "backups", "reason": "no such backup"}
            )
        return "200 OK", *self._html("backup.html", {"view": "backups", "row": row})

    def _jobs(self, _query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config, catalog = self.sources.open()
        return "200 OK", *self._html("jobs.html", {"view": "jobs", **views.jobs(config, catalog)})

    def _log(self, query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config = self.sources.load()
        page = _read_log(config.log_file, level=query.get("level", ""), text=query.get("q", ""))
        context = {
            "view": "log",
            "page": page,
            "path": config.log_file,
            "level": query.get("level", ""),
            "q": query.get("q", ""),
            "levels": logview.LEVELS,
        }
        return "200 OK", *self._html("log.html", context)

    def _log_json(self, query: dict[str, str]) -> tuple[str, list[Any], bytes]:
        config = self.sources.load()
        after = query.get("after", "")
        page = _read_log(
            config.log_file,
            after=int(after) if after.isdigit() else None,
            level=query.get("level", ""),
            text=query.get("q", ""),
        )
        body = json.dumps(
            {"end": page.end, "lines": [line.__dict__ for line in page.lines]}
        ).encode()
        return "200 OK", [("Content-Type", "application/json")], body

    def _log_file(self, _query: dict[str, str]) -> tuple[str, list[Any], Body]:
        config = self.sources.load()
        body = _chunks(_opened(config.log_file))  # unreadable: said now, not mid-download
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return (
            "200 OK",
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Disposition", f'attachment; filename="nas-receiver-{stamp}.log"'),
            ],
            body,
        )

    def _asset(self, name: str) -> tuple[str, list[Any], bytes]:
        if name not in ASSETS:
            return "404 Not Found", [("Content-Type", "text/plain")], b"not found"
        body = resources.files("nas_receiver.web").joinpath("static", name).read_bytes()
        return "200 OK", [("Content-Type", ASSETS[name])], body

    # -- rendering -----------------------------------------------------------------------------

    def _html(self, template: str, context: dict[str, Any]) -> tuple[list[Any], bytes]:
        body = self.templates.get_template(template).render(**context).encode()
        return [("Content-Type", "text/html; charset=utf-8")], body

    def _refuse(self, verdict: Verdict, start_response: StartResponse) -> Iterator[bytes]:
        if verdict.status == 403:
            status, text = "403 Forbidden", "Only DSM administrators may see this page."
        else:
            status, text = "401 Unauthorized", "Log in to DSM (or open the URL with its token)."
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"), *HEADERS])
        yield text.encode()


def _read_log(path: Path | None, **options: Any) -> logview.LogPage:
    try:
        return logview.read_log(path, **options)
    except OSError as err:
        raise _unreadable_log(path, err) from err


def _opened(path: Path | None) -> BinaryIO | None:
    """The log opened for reading; None when there is none yet."""
    if path is None:
        return None
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as err:
        raise _unreadable_log(path, err) from err


def _unreadable_log(path: Path | None, err: OSError) -> Unavailable:
    return Unavailable(
        f"{path}: cannot be read by user {user_name()} ({err.strerror or err}): the page "
        "needs read access to the log"
    )


def _chunks(handle: BinaryIO | None, size: int = 1 << 16) -> Iterator[bytes]:
    """The file in pieces (a log may be large: never all of it in memory)."""
    if handle is None:
        return
    with handle:
        while piece := handle.read(size):
            yield piece


def human_size(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def guarded(load: Callable[[], Config]) -> Callable[[], Config]:
    """``load``, with a broken configuration told on the page instead of failing it."""

    def load_or_tell() -> Config:
        from ..errors import ConfigError

        try:
            return load()
        except ConfigError as err:
            raise Unavailable(str(err)) from err

    return load_or_tell
