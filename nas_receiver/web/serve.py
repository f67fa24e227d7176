"""``nas-receiver serve``: the page on a port of this machine, behind a random token."""

from __future__ import annotations

import logging
import socket
import socketserver
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from ..config import Config
from .app import App, Sources, guarded
from .auth import check_token

log = logging.getLogger(__name__)
DEFAULT_LISTEN = "127.0.0.1:8765"


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow browser never holds the stop


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(WSGIRequestHandler):
    timeout = 30  # a connection that sends nothing is closed (no thread held for ever)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6).  Raise ValueError when it is not one."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    return host.strip("[]") or "127.0.0.1", int(port)


def serve(
    secret: str,
    load: Callable[[], Config],
    address: tuple[str, int],
    announce: Callable[[str], None] = print,
) -> None:
    """Serve until interrupted to whoever has ``secret``; ``announce`` gets the URL to open
    (token included) first.  Raise OSError when the address cannot be listened on."""
    host, port = address
    app = App(Sources(guarded(load)), lambda environ: check_token(environ, secret))
    server_class = _Server6 if ":" in host else _Server
    with make_server(host, port, app, server_class=server_class, handler_class=_Handler) as server:
        announce(f"http://{_shown(host)}:{server.server_port}/?token={secret}")
        server.serve_forever()


def _shown(host: str) -> str:
    """The host as a browser elsewhere reaches it: an address meaning "all" by our name."""
    if host in ("0.0.0.0", "::"):  # noqa: S104 - naming it, not binding it
        return socket.gethostname()
    return f"[{host}]" if ":" in host else host
