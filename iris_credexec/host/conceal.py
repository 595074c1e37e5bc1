"""`iris-credexec host conceal`: a metadata proxy that keeps the VM's credentials from tasks.

Task traffic for 169.254.169.254:80 is redirected here (see `rules`). Everything is
forwarded unchanged and streamed (long polls included) except the service accounts'
credential paths, refused with 403 in every spelling: the request target is decoded,
made canonical (percent-escapes, `//`, `.` and `..` segments, case for the check, the
absolute form) and checked; what is forwarded is that canonical target, so the metadata
server never sees a path other than the one that was checked.
"""

from __future__ import annotations

import contextlib
import re
import socket
import socketserver
import threading
import time
from typing import NamedTuple
from urllib.parse import unquote

from .bounded import BoundedThreadingMixIn

REFUSAL = (
    b"iris-credexec: the VM's own credentials are not available to tasks.\n"
    b"Your task has its own: Google client libraries and gcloud get them through iris-credexec\n"
    b"(GOOGLE_APPLICATION_CREDENTIALS). See the cluster's Iris integration guide.\n"
)
HEAD_LIMIT = 64 * 1024
BODY_LIMIT = 1024 * 1024
_SA_ROOTS = (
    "/computemetadata/v1/instance/service-accounts",
    "/computemetadata/v1beta1/instance/service-accounts",
    "/0.1/meta-data/service-accounts",
)
# What may be read under a service account: who it is, never a credential.
_SA_VISIBLE = re.compile(r"(?:/(?:[^/]+/(?:email|scopes|aliases)?)?)?/?")


class ConcealConfig(NamedTuple):
    listen_host: str = "127.0.0.1"
    listen_port: int = 8988
    upstream_host: str = "169.254.169.254"
    upstream_port: int = 80
    max_connections: int = 256
    header_timeout_seconds: float = 10.0
    max_request_seconds: float = 3900.0  # long polls may wait up to an hour


def canonical_path(target: str) -> tuple[str, str] | None:
    """(path, query) of a request target made canonical, or None when it cannot be."""
    if target.lower().startswith(("http://", "https://")):  # absolute form: drop scheme and authority
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not target.startswith("/"):
        return None
    path, _, query = target.partition("?")
    path = path.split("#", 1)[0]
    for _ in range(3):  # %252F -> %2F -> /: decode until stable, refuse if it will not settle
        decoded = unquote(path)
        if decoded == path:
            break
        path = decoded
    else:
        return None
    # Decoded characters that would mean something else once forwarded: refuse, don't guess.
    if any(ord(c) < 0x21 or ord(c) == 0x7F or c in "\\?#%" for c in path):
        return None
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    canonical = "/" + "/".join(segments)
    if path.endswith("/") and segments:
        canonical += "/"
    return canonical, query


def is_credential_path(path: str) -> bool:
    """True for anything under a service account except who it is (email, scopes, aliases, listings)."""
    lowered = path.lower()
    for root in _SA_ROOTS:
        if lowered == root or lowered.startswith(root + "/"):
            rest = lowered[len(root) :]
            return _SA_VISIBLE.fullmatch(rest) is None
    return False


def refuses_query(path: str, query: str) -> bool:
    """A recursive listing of a service-account subtree is refused with the subtree."""
    lowered = path.lower()
    return "recursive" in query.lower() and any(lowered.startswith(root) for root in _SA_ROOTS)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        config = self.server.config
        conn: socket.socket = self.request
        conn.settimeout(config.header_timeout_seconds)
        try:
            head, body_start = self._read_head(conn)
        except (OSError, ValueError):
            return self._reply(conn, 400, b"bad request\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return self._reply(conn, 400, b"bad request line\n")
        method, target, version = parts
        canonical = canonical_path(target)
        if canonical is None:
            return self._reply(conn, 400, b"bad request target\n")
        path, query = canonical
        if is_credential_path(path) or refuses_query(path, query):
            self.server.refused += 1
            return self._reply(conn, 403, REFUSAL)
        headers = [line for line in lines[1:] if line]
        names = [h.split(":", 1)[0].strip().lower() for h in headers]
        if "transfer-encoding" in names:
            return self._reply(conn, 411, b"chunked request bodies are not forwarded\n")
        length = 0
        for header in headers:
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                if not value.strip().isdigit() or int(value) > BODY_LIMIT:
                    return self._reply(conn, 413, b"request body too large\n")
                length = int(value)
        body = body_start
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            body += chunk
        forwarded = [
            h
            for h, n in zip(headers, names, strict=True)
            if n not in ("connection", "keep-alive", "proxy-connection", "host")
        ]
        upstream_target = path + ("?" + query if query else "")
        request = [
            f"{method} {upstream_target} {version}",
            f"Host: {config.upstream_host}",
            *forwarded,
            "Connection: close",
        ]
        self._relay(conn, ("\r\n".join(request) + "\r\n\r\n").encode("latin-1") + body[:length])
        return None

    def _read_head(self, conn: socket.socket) -> tuple[bytes, bytes]:
        buffer = b""
        while b"\r\n\r\n" not in buffer:
            if len(buffer) > HEAD_LIMIT:
                raise ValueError("head too large")
            chunk = conn.recv(65536)
            if not chunk:
                raise ValueError("closed")
            buffer += chunk
        head, _, rest = buffer.partition(b"\r\n\r\n")
        return head, rest

    def _relay(self, conn: socket.socket, request: bytes) -> None:
        """Send upstream, then stream the answer back as it comes (never buffered: long polls)."""
        config = self.server.config
        deadline = time.monotonic() + config.max_request_seconds
        try:
            upstream = socket.create_connection((config.upstream_host, config.upstream_port), timeout=10)
        except OSError:
            return self._reply(conn, 502, b"metadata server unreachable\n")
        with upstream:
            upstream.sendall(request)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                upstream.settimeout(remaining)
                try:
                    chunk = upstream.recv(65536)
                except OSError:
                    return None
                if not chunk:
                    return None
                try:
                    conn.sendall(chunk)
                except OSError:
                    return None

    @staticmethod
    def _reply(conn: socket.socket, status: int, body: bytes) -> None:
        reason = {
            400: "Bad Request",
            403: "Forbidden",
            411: "Length Required",
            413: "Payload Too Large",
            502: "Bad Gateway",
        }[status]
        head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        with contextlib.suppress(OSError):
            conn.sendall(head.encode() + body)


class _Server(BoundedThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    request_queue_size = 256
    overloaded = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n"

    def __init__(self, config: ConcealConfig) -> None:
        self.config = config
        self.refused = 0
        self.limit_connections(config.max_connections)
        self.address_family = socket.AF_INET6 if ":" in config.listen_host else socket.AF_INET
        super().__init__((config.listen_host, config.listen_port), _Handler)


def serve(config: ConcealConfig, ready: threading.Event | None = None, stop: threading.Event | None = None) -> _Server:
    server = _Server(config)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    if ready is not None:
        ready.set()
    if stop is not None:
        stop.wait()
        server.shutdown()
        server.server_close()
    return server
