"""DSM's web side, as far as the package's page meets it: a small HTTP server that runs the
package's CGI program the way DSM's web server does (CGI/1.1 environment, ``Status:``
header), and a stand-in DSM root with ``authenticate.cgi``, ``login.cgi`` and
``/etc/group``.

The stand-in answers by session cookie, for a request from 127.0.0.1 only (DSM ties a
session to its address): ``id=admin-session`` is ``admin`` (an administrator),
``id=user-session`` is ``alice`` (a DSM user, not an administrator), ``id=csrf-session`` is
``carol`` (an administrator) but only with the SynoToken that login.cgi gives for that
session, as with DSM's CSRF protection on; anything else is nobody.  That DSM's own
programs need no more of the request than the session's headers and addresses is
unverified (no DSM here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

CGI_PATH = "/webman/3rdparty/nas-receiver/index.cgi"
ADMIN = "id=admin-session"
NON_ADMIN = "id=user-session"
CSRF_ADMIN = "id=csrf-session"

_AUTHENTICATE = """#!/bin/sh
# DSM ties a session to the address it logged in from
[ "$REMOTE_ADDR" = 127.0.0.1 ] || exit 0
case "$HTTP_COOKIE" in
    *id=admin-session*) echo admin ;;
    *id=user-session*) echo alice ;;
    *id=csrf-session*)
        case "$QUERY_STRING$HTTP_X_SYNO_TOKEN" in *SynoToken=tok123* | tok123) echo carol ;; esac ;;
esac
exit 0
"""
_LOGIN = """#!/bin/sh
printf 'Content-type: text/html; charset="UTF-8"\\r\\n\\r\\n'
case "$HTTP_COOKIE" in
    *id=csrf-session*) echo '{"SynoToken" : "tok123", "result" : "success", "success" : true}' ;;
    *) echo '{"result" : "error", "success" : false}' ;;
esac
"""
_GROUP = """root:x:0:
administrators:x:101:admin,carol
users:x:100:admin,alice,carol
"""


def make_dsm_root(root: Path) -> Path:
    """Write the stand-in DSM files under ``root``; return ``root``."""
    modules = root / "usr/syno/synoman/webman/modules"
    modules.mkdir(parents=True, exist_ok=True)
    for path, text in (
        (modules / "authenticate.cgi", _AUTHENTICATE),
        (root / "usr/syno/synoman/webman/login.cgi", _LOGIN),
        (root / "etc/group", _GROUP),
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755 if path.suffix == ".cgi" else 0o644)
    return root


def _handler(program: Path, dsm_root: Path) -> type[BaseHTTPRequestHandler]:
    class Cgi(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            static = program.parent / url.path.rsplit("/", 1)[-1]
            if url.path != CGI_PATH:  # DSM serves the other files of ui/ as they are
                if url.path.startswith(CGI_PATH.rsplit("/", 1)[0] + "/") and static.is_file():
                    body = static.read_bytes()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": "HTTP/1.1",
                "SERVER_SOFTWARE": "test-dsm",
                "SERVER_NAME": "127.0.0.1",
                "SERVER_PORT": str(self.server.server_address[1]),
                "REQUEST_METHOD": "GET",
                "SCRIPT_NAME": CGI_PATH,
                "PATH_INFO": "",
                "QUERY_STRING": url.query,
                "REMOTE_ADDR": self.client_address[0],
                "NAS_RECEIVER_DSM_ROOT": str(dsm_root),
            }
            for name, value in self.headers.items():
                env["HTTP_" + name.upper().replace("-", "_")] = value
            result = subprocess.run(
                [str(program)], env=env, capture_output=True, timeout=60, check=False
            )
            head, _sep, body = result.stdout.partition(b"\r\n\r\n")
            if not _sep:
                head, _sep, body = result.stdout.partition(b"\n\n")
            status, headers = 200, []
            for line in head.decode("latin-1").splitlines():
                name, _colon, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            if result.returncode != 0 or not _sep:
                status, headers, body = 500, [], result.stderr
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Cgi


@contextmanager
def cgi_server(program: Path, dsm_root: Path) -> Iterator[str]:
    """Serve ``program`` at ``CGI_PATH`` on 127.0.0.1; yield the page's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(program, dsm_root))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{CGI_PATH}"
    finally:
        server.shutdown()
        server.server_close()


def cgi_wrapper(path: Path, config: Path, python: str) -> Path:
    """A ``ui/index.cgi`` like the one the package's postinst writes, for this checkout,
    with the page's stylesheet and script beside it (as postinst puts them)."""
    root = Path(__file__).resolve().parents[1]
    path.write_text(
        "#!/bin/sh\n"
        f"NAS_RECEIVER_CONFIG='{config}'\nexport NAS_RECEIVER_CONFIG\n"
        f"PYTHONPATH='{root}'\nexport PYTHONPATH\n"
        f"exec '{python}' -P -m nas_receiver.web.cgi\n"
    )
    path.chmod(0o755)
    for asset in (root / "nas_receiver/web/static").iterdir():
        shutil.copy(asset, path.parent / asset.name)
    return path
