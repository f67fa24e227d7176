"""A real S3-protocol server on 127.0.0.1 (moto's server mode) and a small TCP proxy in front
of it that counts requests and injects what networks and servers do: resets, 500s, stalls,
and a 403 for a wrong access key."""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

ACCESS_KEY = "AKIAEXAMPLENASRECEIV"
SECRET_KEY = "example-secret-key-for-tests-only"


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's S3 server on a free loopback port; yield its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def client(endpoint: str) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


def credential_files(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    key_id, secret = folder / "s3-id", folder / "s3-secret"
    key_id.write_text(ACCESS_KEY + "\n")
    secret.write_text(SECRET_KEY + "\n")
    return key_id, secret


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def part(self) -> int | None:
        match = re.search(r"[?&]partNumber=(\d+)", self.target)
        return int(match[1]) if match and self.method == "PUT" else None


Fault = str  # "reset", "500", "stall", "deny"
Rule = tuple[Callable[[Request], bool], Fault]


@dataclass
class FaultProxy:
    """One request per connection ("Connection: close" is added), so each one is seen,
    counted, and may meet a fault.  ``rules`` are used once each, first match first."""

    upstream: tuple[str, int]
    rules: list[Rule] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    stall_seconds: float = 30.0

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()

    def part_uploads(self) -> list[int]:
        return [r.part for r in self.requests if r.part is not None]

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                head, body = _read_request(conn)
            except (OSError, ValueError):
                return
            method, target = head.split(b" ", 2)[:2]
            headers = {}
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            request = Request(method.decode(), target.decode(), headers)
            with self._lock:
                self.requests.append(request)
                fault = self._fault(request)
            if fault == "reset":
                linger_zero = struct.pack("ii", 1, 0)  # close with RST, not FIN
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
                return
            if fault == "stall":
                time.sleep(self.stall_seconds)
                return
            if fault in ("500", "deny"):
                conn.sendall(_error_response(fault))
                return
            try:
                self._forward(conn, head, body)
            except OSError:  # the client went away (a test killed it): nothing to relay to
                return

    def _fault(self, request: Request) -> Fault | None:
        for index, (matches, fault) in enumerate(self.rules):
            if matches(request):
                del self.rules[index]
                return fault
        return None

    def _forward(self, conn: socket.socket, head: bytes, body: bytes) -> None:
        lines = [
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
        ]
        request = b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(request)
            while chunk := upstream.recv(1 << 16):
                conn.sendall(chunk)


def _read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(1 << 16)
        if not chunk:
            raise ValueError("closed before a request")
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    length = int(match[1]) if match else 0
    while len(body) < length:
        chunk = conn.recv(1 << 20)
        if not chunk:
            raise ValueError("closed mid-body")
        body += chunk
    return head, body


def _error_response(fault: Fault) -> bytes:
    status, code, message = (
        ("500 Internal Server Error", "InternalError", "We encountered an internal error.")
        if fault == "500"
        else (
            "403 Forbidden",
            "InvalidAccessKeyId",
            "The AWS Access Key Id you provided does not exist in our records.",
        )
    )
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: application/xml\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
