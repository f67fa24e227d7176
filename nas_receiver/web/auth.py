"""Who may see the page.

Inside DSM: a logged-in DSM user of the ``administrators`` group, as DSM's own
``authenticate.cgi`` says (it reads the request's cookie and SynoToken from the CGI
environment it inherits).  Outside DSM: whoever presents the random token kept in
``data_dir`` (in the URL once, then in a cookie)."""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import subprocess
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

TOKEN_FILE = "web-token"  # noqa: S105 - a file name, not a secret
TOKEN_COOKIE = "nas_receiver_token"  # noqa: S105 - a cookie name
MIN_TOKEN = 16  # a shorter token file is not ours (emptied, cut short): a new one is made
_TOKEN = re.compile(rf"[A-Za-z0-9_-]{{{MIN_TOKEN},}}")  # what a URL and a cookie carry as is
ADMIN_GROUP = "administrators"
AUTHENTICATE = "usr/syno/synoman/webman/modules/authenticate.cgi"
LOGIN = "usr/syno/synoman/webman/login.cgi"


@dataclass(frozen=True)
class Verdict:
    """``status`` 200 lets the request through; 401 (nobody) or 403 (not an admin) not."""

    status: int
    user: str | None = None
    set_cookie: str | None = None  # the token's cookie, after a first visit with ?token=


def token(data_dir: Path) -> str:
    """The token of ``data_dir``, made (readable by its owner only) on first use."""
    path = data_dir / TOKEN_FILE
    try:
        value = path.read_text(encoding="ascii", errors="replace").strip()
    except FileNotFoundError:
        value = ""
    if _TOKEN.fullmatch(value):
        return value
    # none yet, emptied (by the user for a new one, or a write cut short), or edited into
    # something a cookie cannot carry: a new one
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(24)
    partial = path.with_name(f".{TOKEN_FILE}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(value + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
    return value


def check_token(environ: dict[str, str], expected: str) -> Verdict:
    """200 when the query's ``token`` or the cookie matches ``expected``; else 401."""
    if len(expected) < MIN_TOKEN:
        return Verdict(401)
    name = cookie_name(environ)
    offered = parse_qs(environ.get("QUERY_STRING", "")).get("token", [""])[0]
    if offered and hmac.compare_digest(offered.encode(), expected.encode()):
        cookie = f"{name}={expected}; HttpOnly; SameSite=Strict; Path=/"
        return Verdict(200, set_cookie=cookie)
    jar = SimpleCookie()
    try:
        jar.load(environ.get("HTTP_COOKIE", ""))
    except Exception:  # a malformed cookie header is no token
        return Verdict(401)
    morsel = jar.get(name)
    if morsel is not None and hmac.compare_digest(morsel.value.encode(), expected.encode()):
        return Verdict(200)
    return Verdict(401)


def cookie_name(environ: dict[str, str]) -> str:
    """The token's cookie, one per port: browsers share cookies across the ports of a host,
    and two ``serve`` on one machine have two tokens."""
    return f"{TOKEN_COOKIE}_{environ.get('SERVER_PORT', '')}".rstrip("_")


def check_dsm(environ: dict[str, str], root: Path = Path("/")) -> Verdict:
    """200 for a logged-in DSM administrator, 403 for another DSM user, 401 for nobody.

    ``root`` is where DSM's file system starts (a test's stand-in DSM)."""
    user = _dsm_user(environ, root)
    if not user:
        return Verdict(401)
    if user not in administrators(root / "etc/group"):
        return Verdict(403, user)
    return Verdict(200, user)


def _dsm_user(environ: dict[str, str], root: Path) -> str:
    """The user DSM's authenticate.cgi names for this request; with CSRF protection on it
    wants the SynoToken, which login.cgi gives for the session's cookie.

    Asking login.cgi for it with the visitor's own cookie means DSM's CSRF protection does
    not guard this page: fine while every view only reads (GET, no action).  Never add an
    action behind this check without requiring the SynoToken from the request itself."""
    user = _run(root / AUTHENTICATE, environ)
    if user or not (root / LOGIN).exists() or "SynoToken" in _for_dsm(environ)["QUERY_STRING"]:
        return user
    answer = _run(root / LOGIN, environ)
    try:
        syno_token = json.loads(answer[answer.find("{") :])["SynoToken"]
    except (ValueError, KeyError, TypeError):
        return ""
    with_token = {**environ, "QUERY_STRING": f"SynoToken={syno_token}"}
    return _run(root / AUTHENTICATE, with_token)


def _run(program: Path, environ: dict[str, str]) -> str:
    try:
        result = subprocess.run(
            [str(program)],
            env=_for_dsm(environ),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    if result.returncode != 0:
        return ""
    return result.stdout.decode("utf-8", "replace").strip()


def _for_dsm(environ: dict[str, str]) -> dict[str, str]:
    """What DSM's programs need to know the session: the request's headers and addresses;
    of the query only the SynoToken (nothing else a visitor typed reaches them)."""
    keep = {
        key: value
        for key, value in environ.items()
        if isinstance(value, str)
        and (
            key.startswith(("HTTP_", "SERVER_", "REMOTE_")) or key in ("PATH", "GATEWAY_INTERFACE")
        )
    }
    token = parse_qs(environ.get("QUERY_STRING", "")).get("SynoToken", [""])[0]
    keep["QUERY_STRING"] = f"SynoToken={token}" if token else ""
    keep["REQUEST_METHOD"] = "GET"
    return keep


def administrators(group_file: Path) -> set[str]:
    """Members of DSM's ``administrators`` group, from ``/etc/group``."""
    try:
        text = group_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[0] == ADMIN_GROUP:
            return {member for member in fields[3].split(",") if member}
    return set()
