"""A small, bounded HTTP/1.1 client over TCP or a unix socket.

Why not urllib or http.client: they honour proxy variables from the task's
environment (a task must never redirect a source), they cost tens of
milliseconds to import on every cache miss, and they cannot bound a body that
trickles in forever. This client takes its address from the policy only,
bounds every read by a deadline, and reads at most `limit` bytes.
"""

from __future__ import annotations

import socket
import time
from typing import NamedTuple
from urllib.parse import quote, urlsplit

BODY_LIMIT = 1024 * 1024
_HEAD_LIMIT = 64 * 1024


class HttpError(Exception):
    """The exchange failed before a complete answer arrived.

    `malformed`: the peer answered, but not with a well-formed, bounded HTTP response
    (asking again will not help); otherwise the connection failed or `timed_out`.
    """

    def __init__(self, message: str, timed_out: bool = False, malformed: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out
        self.malformed = malformed


class HttpResponse(NamedTuple):
    status: int
    body: bytes


class Endpoint(NamedTuple):
    """Where to connect: a TCP host and port (optionally TLS) or a unix socket path."""

    host: str = ""
    port: int = 0
    unix_path: str = ""
    tls: bool = False

    @property
    def host_header(self) -> str:
        if self.unix_path:
            return "localhost"
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"


def parse_host_port(value: str, default_port: int) -> Endpoint:
    """`host`, `host:port`, `[v6]` or `[v6]:port`, as the policy writes them."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = value.partition(":")
    return Endpoint(host=host, port=int(port) if port else default_port)


def split_url(url: str, unix_http_path: str = "/") -> tuple[Endpoint, str]:
    """Endpoint and request target of an http(s):// or unix:// URL."""
    if url.startswith("unix://"):
        return Endpoint(unix_path=url[len("unix://") :]), unix_http_path
    parts = urlsplit(url)
    tls = parts.scheme == "https"
    host = parts.hostname or ""
    port = parts.port or (443 if tls else 80)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return Endpoint(host=host, port=port, tls=tls), target


def with_query(target: str, **params: str) -> str:
    query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in params.items())
    return target + ("&" if "?" in target else "?") + query


def get(
    endpoint: Endpoint, target: str, headers: dict[str, str], timeout: float, limit: int = BODY_LIMIT
) -> HttpResponse:
    """One GET, bounded by `timeout` seconds from now in total."""
    deadline = time.monotonic() + timeout
    sock = _connect(endpoint, timeout)
    try:
        lines = [f"GET {target} HTTP/1.1", f"Host: {endpoint.host_header}", "Connection: close", "Accept: */*"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        _set_timeout(sock, deadline)
        sock.sendall(request)
        return _read_response(sock, deadline, limit)
    except TimeoutError:
        raise HttpError("timed out waiting for the answer", timed_out=True) from None
    except OSError as exc:
        raise HttpError(f"connection failed: {exc.strerror or exc}") from None
    finally:
        sock.close()


def _connect(endpoint: Endpoint, timeout: float) -> socket.socket:
    try:
        if endpoint.unix_path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(endpoint.unix_path)
            except BaseException:
                sock.close()
                raise
            return sock
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
        if endpoint.tls:
            import ssl

            context = ssl.create_default_context()
            return context.wrap_socket(sock, server_hostname=endpoint.host)
        return sock
    except TimeoutError:
        raise HttpError("timed out connecting", timed_out=True) from None
    except OSError as exc:
        raise HttpError(f"cannot connect: {exc.strerror or exc}") from None


def _set_timeout(sock: socket.socket, deadline: float) -> None:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError()
    sock.settimeout(remaining)


def _recv(sock: socket.socket, deadline: float) -> bytes:
    _set_timeout(sock, deadline)
    return sock.recv(65536)


def _read_response(sock: socket.socket, deadline: float, limit: int) -> HttpResponse:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > _HEAD_LIMIT:
            raise HttpError("response headers are too large", malformed=True)
        chunk = _recv(sock, deadline)
        if not chunk:
            raise HttpError("connection closed before the response headers")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise HttpError("not an HTTP response", malformed=True)
    status = int(parts[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = _read_chunked(sock, rest, deadline, limit)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise HttpError("invalid Content-Length", malformed=True) from None
        if length > limit:
            raise HttpError(f"response body larger than {limit} bytes", malformed=True)
        body = _fill(sock, rest, length, deadline)[:length]
    else:
        body = _read_to_close(sock, rest, deadline, limit)
    return HttpResponse(status=status, body=body)


def _fill(sock: socket.socket, buffer: bytes, length: int, deadline: float) -> bytes:
    """`buffer` extended until it holds at least `length` bytes."""
    while len(buffer) < length:
        chunk = _recv(sock, deadline)
        if not chunk:
            raise HttpError("connection closed in the middle of the body")
        buffer += chunk
    return buffer


def _read_to_close(sock: socket.socket, buffer: bytes, deadline: float, limit: int) -> bytes:
    while len(buffer) <= limit:
        chunk = _recv(sock, deadline)
        if not chunk:
            return buffer
        buffer += chunk
    raise HttpError(f"response body larger than {limit} bytes", malformed=True)


def _read_chunked(sock: socket.socket, buffer: bytes, deadline: float, limit: int) -> bytes:
    body = b""
    while True:
        while b"\r\n" not in buffer:
            if len(buffer) > 1024:
                raise HttpError("invalid chunked encoding", malformed=True)
            chunk = _recv(sock, deadline)
            if not chunk:
                raise HttpError("connection closed in the middle of the body")
            buffer += chunk
        size_line, _, buffer = buffer.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0].strip(), 16)
        except ValueError:
            raise HttpError("invalid chunked encoding", malformed=True) from None
        if size == 0:
            return body
        if len(body) + size > limit:
            raise HttpError(f"response body larger than {limit} bytes", malformed=True)
        buffer = _fill(sock, buffer, size + 2, deadline)
        body += buffer[:size]
        buffer = buffer[size + 2 :]
