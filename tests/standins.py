"""Local stand-ins for Google's endpoints: metadata identity, STS and IAM Credentials.

Served on 127.0.0.1 only. They do what Google does at the points iris-credexec
depends on: the metadata server mints RS256 ID tokens for the requested
audience; STS verifies the subject token's signature, issuer and audience
before it federates; IAM Credentials grants an access token for a service
account only to principals bound to it. Faults can be queued to test
resilience. Used by the tests, the demo and the benchmark.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

GOOGLE_ISSUER = "https://accounts.google.com"
WORKER_EMAIL = "iris-worker@proj.iam.gserviceaccount.com"
WORKER_SUBJECT = "104000000000000000001"
POOL_AUDIENCE = "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/iris/providers/workers"


def _b64(n: int) -> str:
    return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()


class SigningKey:
    """An RSA key pair that signs JWTs and publishes itself as a JWK."""

    def __init__(self, kid: str | None = None) -> None:
        self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = self.private.public_key().public_numbers()
        self.kid = kid or hashlib.sha256(str(numbers.n).encode()).hexdigest()[:16]
        self.jwk = {
            "kty": "RSA",
            "alg": "RS256",
            "use": "sig",
            "kid": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }

    def sign(self, claims: dict[str, Any], headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm="RS256", headers={"kid": self.kid, **(headers or {})})


@dataclass
class Fault:
    """One queued misbehaviour of the metadata endpoint."""

    kind: str  # "status" | "hang" | "garbage" | "close_mid_body" | "token" | "body"
    status: int = 503
    seconds: float = 0.0
    payload: bytes = b""


@dataclass
class StandInState:
    key: SigningKey = field(default_factory=SigningKey)
    extra_jwks: list[dict[str, Any]] = field(default_factory=list)  # more keys STS trusts (a host broker's)
    trusted_issuers: set[str] = field(default_factory=lambda: {GOOGLE_ISSUER})
    pool_audience: str = POOL_AUDIENCE
    token_lifetime: int = 3600
    identity_claims: dict[str, Any] = field(default_factory=lambda: {"email": WORKER_EMAIL, "email_verified": True})
    # service account email -> principals (token `sub`) allowed to impersonate it
    bindings: dict[str, set[str]] = field(default_factory=dict)
    faults: deque[Fault] = field(default_factory=deque)
    counts: dict[str, int] = field(default_factory=dict)
    federated: dict[str, str] = field(default_factory=dict)  # federated token -> principal
    access_tokens: dict[str, str] = field(default_factory=dict)  # access token -> service account
    issued_identity_tokens: list[str] = field(default_factory=list)
    paths_seen: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, name: str) -> None:
        with self.lock:
            self.counts[name] = self.counts.get(name, 0) + 1

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.jwk, *self.extra_jwks]}


_serial = itertools.count(1)


class _Handler(BaseHTTPRequestHandler):
    server_version = "standin/1"
    protocol_version = "HTTP/1.1"

    @property
    def state(self) -> StandInState:
        return self.server.state  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes | dict[str, Any], content_type: str = "application/json") -> None:
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        self.state.paths_seen.append(self.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        if parts.path.startswith("/computeMetadata/v1/instance/service-accounts/") and parts.path.endswith("/identity"):
            return self._identity(query)
        if parts.path == "/jwks":
            return self._send(200, self.state.jwks())
        if parts.path.startswith("/v1/projects/"):  # Cloud Resource Manager: old google-auth asks it for the project id
            self.state.count("crm")
            token = self.headers.get("Authorization", "").removeprefix("Bearer ")
            if token not in self.state.access_tokens and token not in self.state.federated:
                return self._send(401, {"error": {"code": 401, "status": "UNAUTHENTICATED"}})
            return self._send(200, {"projectNumber": parts.path.rsplit("/", 1)[1], "projectId": "test-project"})
        if parts.path.startswith("/computeMetadata/"):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self._send(403, b"Missing Metadata-Flavor", "text/plain")
            if "wait_for_change=true" in parts.query:  # a long poll: the answer comes in two parts, a second apart
                self.send_response(200)
                self.send_header("Content-Type", "application/text")
                self.send_header("Content-Length", "12")
                self.end_headers()
                self.wfile.write(b"first-")
                self.wfile.flush()
                time.sleep(1.0)
                self.wfile.write(b"second")
                return None
            if "/service-accounts/" in parts.path and parts.path.endswith(("/token", "/identity")):
                return self._send(200, b"VM-CREDENTIAL-" + parts.path.encode(), "application/text")
            return self._send(200, b"standin-value:" + parts.path.encode(), "application/text")
        return self._send(404, {"error": "not found"})

    def _identity(self, query: dict[str, str]) -> None:
        state = self.state
        state.count("identity")
        if self.headers.get("Metadata-Flavor") != "Google":
            return self._send(403, b"Missing Metadata-Flavor:Google header.", "text/html")
        with state.lock:
            fault = state.faults.popleft() if state.faults else None
        if fault is not None:
            if fault.kind == "status":
                return self._send(fault.status, b"<html>error</html>", "text/html")
            if fault.kind == "hang":
                time.sleep(fault.seconds)
                self.close_connection = True
                return None
            if fault.kind == "garbage":
                return self._send(200, b"\x00not a token at all", "application/text")
            if fault.kind == "body":
                return self._send(200, fault.payload, "application/text")
            if fault.kind == "close_mid_body":
                self.send_response(200)
                self.send_header("Content-Length", "4096")
                self.end_headers()
                self.wfile.write(b"eyJhbGciOi")
                self.wfile.flush()
                self.close_connection = True
                return None
            if fault.kind == "token":
                return self._send(200, fault.payload, "application/text")
        audience = query.get("audience", "")
        if not audience:
            return self._send(400, b"non-empty audience parameter required", "text/plain")
        now = int(time.time())
        claims = {
            "iss": GOOGLE_ISSUER,
            "aud": audience,
            "sub": WORKER_SUBJECT,
            "azp": WORKER_SUBJECT,
            "iat": now,
            "exp": now + state.token_lifetime,
            **state.identity_claims,
        }
        token = state.key.sign(claims)
        state.issued_identity_tokens.append(token)
        return self._send(200, token.encode(), "application/text")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        parts = urllib.parse.urlsplit(self.path)
        self.state.paths_seen.append(self.path)
        if parts.path == "/v1/token":
            return self._sts(dict(urllib.parse.parse_qsl(body)))
        if parts.path.startswith("/v1/projects/-/serviceAccounts/") and parts.path.endswith(":generateAccessToken"):
            email = urllib.parse.unquote(
                parts.path[len("/v1/projects/-/serviceAccounts/") : -len(":generateAccessToken")]
            )
            return self._generate_access_token(email)
        return self._send(404, {"error": "not found"})

    def _sts(self, form: dict[str, str]) -> None:
        state = self.state
        state.count("sts")

        def refuse(description: str) -> None:
            self._send(400, {"error": "invalid_grant", "error_description": description})

        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:token-exchange":
            return refuse("bad grant_type")
        if form.get("audience") != state.pool_audience:
            return refuse(f"unknown audience {form.get('audience')!r}")
        subject_token = form.get("subject_token", "")
        try:
            header = jwt.get_unverified_header(subject_token)
            keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(state.jwks()).keys}
            key = keys[header.get("kid")]
            claims = jwt.decode(
                subject_token,
                key.key,
                algorithms=["RS256", "ES256"],
                audience=form["audience"],
                options={"require": ["exp", "iss", "sub"]},
            )
        except (jwt.PyJWTError, KeyError) as exc:
            return refuse(f"subject token rejected: {type(exc).__name__}")
        if claims["iss"] not in state.trusted_issuers:
            return refuse("untrusted issuer")
        federated = f"standin-federated-{next(_serial)}"
        with state.lock:
            state.federated[federated] = str(claims["sub"])
        return self._send(
            200,
            {
                "access_token": federated,
                "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
                "token_type": "Bearer",
                "expires_in": 3600,
            },
        )

    def _generate_access_token(self, email: str) -> None:
        state = self.state
        state.count("iam")
        auth = self.headers.get("Authorization", "")
        principal = state.federated.get(auth.removeprefix("Bearer "))
        if principal is None:
            return self._send(
                401,
                {
                    "error": {
                        "code": 401,
                        "message": "Request had invalid authentication credentials.",
                        "status": "UNAUTHENTICATED",
                    }
                },
            )
        if principal not in state.bindings.get(email, set()):
            return self._send(
                403,
                {
                    "error": {
                        "code": 403,
                        "message": "Permission 'iam.serviceAccounts.getAccessToken' denied on resource (or it may not exist).",
                        "status": "PERMISSION_DENIED",
                    }
                },
            )
        token = f"standin-access-{next(_serial)}-{hashlib.sha256(email.encode()).hexdigest()[:8]}"
        with state.lock:
            state.access_tokens[token] = email
        expire = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        return self._send(200, {"accessToken": token, "expireTime": expire})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up mid-answer (the fault tests do it on purpose) are not errors."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Background:
    """A socketserver served from a daemon thread while the `with` block runs."""

    server: Any

    def _start_thread(self) -> None:
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class GoogleStandIn(_Background):
    """All three endpoints on one 127.0.0.1 port. Use as a context manager."""

    def __init__(self, state: StandInState | None = None, bind: tuple[str, int] = ("127.0.0.1", 0)) -> None:
        self.state = state or StandInState()
        self.server = _Server(bind, _Handler)
        self.server.state = self.state

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token_url(self) -> str:
        return f"{self.url}/v1/token"

    def impersonation_url(self, email: str) -> str:
        return f"{self.url}/v1/projects/-/serviceAccounts/{email}:generateAccessToken"

    def grant(self, email: str, principal: str = WORKER_SUBJECT) -> None:
        self.state.bindings.setdefault(email, set()).add(principal)

    def count(self, name: str) -> int:
        return self.state.counts.get(name, 0)

    def __enter__(self) -> GoogleStandIn:
        self._start_thread()
        return self


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _UnixServer(ThreadingHTTPServer):
    address_family = socket.AF_UNIX
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.bind(self.server_address)
        self.server_name, self.server_port = "localhost", 0

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, _ = self.socket.accept()
        return conn, ("unix", 0)


class UnixTokenServer(_Background):
    """A token endpoint on a unix socket: answers GET with `body` (or the metadata stand-in's token)."""

    def __init__(self, path: str, respond: Any) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                status, body = respond(self.path, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.requests: list[tuple[str, dict[str, str]]] = []
        self.path = path
        self.server = _UnixServer(path, Handler)

    def __enter__(self) -> UnixTokenServer:
        self._start_thread()
        return self


GOOGLE_API_HOSTS = ("sts.googleapis.com", "iamcredentials.googleapis.com", "cloudresourcemanager.googleapis.com")


def write_tls_identity(directory: str) -> tuple[str, str]:
    """A throwaway self-signed certificate for Google's API hosts (and 127.0.0.1): (cert, key) paths."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "iris-credexec test stand-in")])
    now = datetime.datetime.now(datetime.UTC)
    sans = [x509.DNSName(h) for h in GOOGLE_API_HOSTS] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = f"{directory}/standin-cert.pem"
    key_path = f"{directory}/standin-key.pem"
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return cert_path, key_path


class TlsFront(_Background):
    """The same stand-ins over TLS on another 127.0.0.1 port, for clients that insist on https."""

    def __init__(self, state: StandInState, cert: str, key: str) -> None:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.state = state
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> TlsFront:
        self._start_thread()
        return self
