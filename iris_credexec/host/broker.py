"""`iris-credexec host serve`: per-task OIDC tokens on a unix socket, the caller known by the kernel.

Protocol: plain HTTP, one request per connection. `GET /token?audience=A` answers the
token as text (what the executable's `url` source and `curl --unix-socket` read);
`GET /jwks` the public keys. The caller is identified by SO_PEERCRED (pid, uid) and the
pid's cgroup (its container), looked up in the host's registrations: nothing the caller
sends names a user, a task or a subject.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from .. import audit
from .bounded import BoundedThreadingMixIn
from .config import BrokerConfig
from .keys import KeyStore
from .registry import Registration, Registry, container_of, from_docker_labels


class Broker:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.keys = KeyStore(config.keys_dir, max_token_lifetime=config.token_lifetime_seconds)
        self.keys.ensure()
        self.registry = Registry(config.registry_dir)
        self.audit_path = os.path.join(config.state_dir, "audit.jsonl")

    def identify(self, pid: int, uid: int) -> tuple[Registration | None, str]:
        """The caller's registration, and how it was (not) found."""
        if self.config.identify == "uid":
            found = self.registry.lookup("uid", str(uid))
            return found, f"uid {uid}"
        container = container_of(pid, self.config.proc_root)
        if container is None:
            return None, f"pid {pid} is in no container"
        found = self.registry.lookup("container", container)
        if found is None and self.config.docker_socket:
            found = from_docker_labels(self.config.docker_socket, container)
        return found, f"container {container[:12]}"

    def mint(self, registration: Registration, audience: str, now: float | None = None) -> str:
        import jwt

        moment = time.time() if now is None else now
        key = self.keys.signing_key(moment)
        now = int(moment)
        claims = {
            "iss": self.config.issuer,
            "sub": self.config.subject_template.format(user=registration.user),
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.config.token_lifetime_seconds,
            "jti": os.urandom(16).hex(),
            "user": registration.user,
            "job": registration.job,
            "task": registration.task,
            "attempt": registration.attempt,
            "worker": self.config.worker,
            "container": registration.container,
        }
        return jwt.encode(claims, key.private_key(), algorithm="ES256", headers={"kid": key.kid})

    def token_for(self, pid: int, uid: int, audience: str) -> tuple[int, str, dict[str, Any]]:
        """(HTTP status, body, audit record) for one token request."""
        registration, who = self.identify(pid, uid)
        record: dict[str, Any] = {"pid": pid, "uid": uid, "caller": who, "audience": audience}
        if registration is None:
            return (
                403,
                f"iris-credexec broker: unknown caller ({who}); the worker registers each task it starts\n",
                {**record, "decision": "refused", "code": "UNKNOWN_CALLER"},
            )
        record.update(task=registration.task, user=registration.user)
        allowed = registration.audiences or self.config.audiences
        if audience not in allowed or audience not in self.config.audiences:
            return (
                403,
                f"iris-credexec broker: audience {audience!r} is not allowed for this task\n",
                {**record, "decision": "refused", "code": "AUDIENCE_NOT_ALLOWED"},
            )
        if registration.user not in self.config.users:
            return (
                403,
                f"iris-credexec broker: user {registration.user!r} is not configured on this host\n",
                {**record, "decision": "refused", "code": "UNKNOWN_USER"},
            )
        token = self.mint(registration, audience)
        record.update(
            decision="issued",
            sub=self.config.subject_template.format(user=registration.user),
            token=audit.token_hash(token),
        )
        return 200, token, record


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request, one answer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        broker = self.server.broker
        parts = urllib.parse.urlsplit(self.path)
        if parts.path == "/jwks":
            import json

            return self._send(200, json.dumps(broker.keys.jwks()), "application/json")
        if parts.path != "/token":
            return self._send(404, "iris-credexec broker: GET /token?audience=... or /jwks\n")
        query = urllib.parse.parse_qs(parts.query)
        audiences = query.get("audience", [])
        if len(audiences) != 1 or not audiences[0]:
            return self._send(400, "iris-credexec broker: exactly one audience parameter\n")
        pid, uid, _gid = self.server.peer_of(self.request)
        status, body, record = broker.token_for(pid, uid, audiences[0])
        audit.write(broker.audit_path, record)
        self._send(status, body, "application/jwt" if status == 200 else "text/plain")


class _Server(BoundedThreadingMixIn, socketserver.UnixStreamServer):
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, path: str, broker: Broker) -> None:
        self.broker = broker
        self.limit_connections(broker.config.max_connections)
        super().__init__(path, _Handler)

    @staticmethod
    def peer_of(conn: socket.socket) -> tuple[int, int, int]:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", creds)
        return pid, uid, gid

    def process_request(self, request: Any, client_address: Any) -> None:
        # A slow or malicious client holds its slot for at most the request timeout.
        request.settimeout(self.broker.config.request_timeout_seconds)
        super().process_request(request, client_address)


def serve(config: BrokerConfig, ready: threading.Event | None = None, stop: threading.Event | None = None) -> None:
    broker = Broker(config)
    directory = os.path.dirname(config.socket_path)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(config.socket_path)
    server = _Server(config.socket_path, broker)
    os.chmod(config.socket_path, config.socket_mode)
    if ready is not None:
        ready.set()
    if stop is None:
        server.serve_forever(poll_interval=0.2)
        return
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    stop.wait()
    server.shutdown()
    server.server_close()
