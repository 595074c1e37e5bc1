"""Each source kind against local servers, and the retry loop around them."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from iris_credexec import sources
from iris_credexec.errors import Code, CredexecError
from iris_credexec.policy import SourceConfig
from iris_credexec.sources import http
from iris_credexec.sources.base import Failure, SourceError, fetch_with_retries
from tests.conftest import make_token
from tests.standins import POOL_AUDIENCE, Fault, GoogleStandIn, UnixTokenServer, free_port


def fetch(config: SourceConfig) -> str:
    token, _ = fetch_with_retries(
        sources.build(config),
        POOL_AUDIENCE,
        timeout_seconds=config.timeout_seconds,
        deadline_seconds=config.deadline_seconds,
        max_attempts=config.max_attempts,
    )
    return token


def unreachable_code(**config: object) -> Code:
    """The code for a source nobody answers at (two quick attempts)."""
    with pytest.raises(CredexecError) as info:
        fetch(SourceConfig(max_attempts=2, deadline_seconds=2, timeout_seconds=1, **config))  # type: ignore[arg-type]
    return info.value.code


def meta(standin: GoogleStandIn, **kw: object) -> SourceConfig:
    return SourceConfig(kind="metadata", host=standin.host, **kw)  # type: ignore[arg-type]


class TestMetadata:
    def test_identity_request_shape(self, standin: GoogleStandIn) -> None:
        token = fetch(meta(standin))
        assert token == standin.state.issued_identity_tokens[-1]
        path = standin.state.paths_seen[-1]
        assert path.startswith("/computeMetadata/v1/instance/service-accounts/default/identity?")
        assert "audience=%2F%2Fiam.googleapis.com%2Fprojects%2F123" in path and "format=full" in path

    def test_named_service_account(self, standin: GoogleStandIn) -> None:
        fetch(meta(standin, service_account="w@p.iam.gserviceaccount.com"))
        assert "/service-accounts/w@p.iam.gserviceaccount.com/identity" in standin.state.paths_seen[-1]

    def test_environment_never_redirects(self, standin: GoogleStandIn, monkeypatch: pytest.MonkeyPatch) -> None:
        for name in ("GCE_METADATA_HOST", "GCE_METADATA_IP", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "HTTPS_PROXY"):
            monkeypatch.setenv(name, f"127.0.0.1:{free_port()}")
        monkeypatch.delenv("NO_PROXY", raising=False)
        fetch(meta(standin))
        assert standin.count("identity") == 1

    def test_transient_failures_are_retried(self, standin: GoogleStandIn) -> None:
        standin.state.faults.extend([Fault("status", status=503), Fault("status", status=429), Fault("close_mid_body")])
        fetch(meta(standin, max_attempts=4))
        assert standin.count("identity") == 4

    def test_gives_up_after_max_attempts(self, standin: GoogleStandIn) -> None:
        standin.state.faults.extend([Fault("status", status=500)] * 5)
        with pytest.raises(CredexecError) as info:
            fetch(meta(standin, max_attempts=3))
        assert info.value.code is Code.SOURCE_UNAVAILABLE and "after 3 attempts" in info.value.message
        assert standin.count("identity") == 3

    @pytest.mark.parametrize("status", [400, 403, 404])
    def test_client_errors_are_not_retried(self, standin: GoogleStandIn, status: int) -> None:
        standin.state.faults.append(Fault("status", status=status))
        with pytest.raises(CredexecError) as info:
            fetch(meta(standin))
        assert info.value.code is Code.SOURCE_DENIED and f"HTTP {status}" in info.value.message
        assert standin.count("identity") == 1

    def test_hanging_source_ends_at_the_deadline(self, standin: GoogleStandIn) -> None:
        standin.state.faults.extend([Fault("hang", seconds=5)] * 3)
        started = time.monotonic()
        with pytest.raises(CredexecError) as info:
            fetch(meta(standin, timeout_seconds=0.5, deadline_seconds=1.2))
        assert info.value.code is Code.SOURCE_TIMEOUT
        assert time.monotonic() - started < 2.5

    def test_garbage_is_a_bad_response(self, standin: GoogleStandIn) -> None:
        standin.state.faults.append(Fault("garbage"))
        with pytest.raises(CredexecError) as info:
            fetch(meta(standin))
        assert info.value.code is Code.SOURCE_BAD_RESPONSE

    def test_connection_refused(self) -> None:
        assert unreachable_code(kind="metadata", host=f"127.0.0.1:{free_port()}") is Code.SOURCE_UNAVAILABLE


class TestUrl:
    def test_unix_socket(self, tmp_path: Path) -> None:
        token = make_token()
        sock = str(tmp_path / "token.sock")
        with UnixTokenServer(sock, lambda path, headers: (200, json.dumps({"token": token}).encode())) as server:
            got = fetch(
                SourceConfig(
                    kind="url", url=f"unix://{sock}", http_path="/v1/token", field="token", headers=(("X-Iris", "1"),)
                )
            )
        assert got == token
        path, headers = server.requests[0]
        assert path.startswith("/v1/token?audience=%2F%2Fiam.googleapis.com")
        assert headers["X-Iris"] == "1"

    def test_tcp_raw_body(self, standin: GoogleStandIn) -> None:
        url = f"{standin.url}/computeMetadata/v1/instance/service-accounts/default/identity?format=full"
        got = fetch(SourceConfig(kind="url", url=url, headers=(("Metadata-Flavor", "Google"),)))
        assert got == standin.state.issued_identity_tokens[-1]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            (b"", ""),
            (b"<html>500</html> oops", ""),
            (b"{}", "token"),
            (b"[1]", "token"),
            (b"not json", "token"),
            (b"\xff\xfe", ""),
        ],
    )
    def test_bad_answers(self, tmp_path: Path, body: bytes, field: str) -> None:
        sock = str(tmp_path / "s.sock")
        with UnixTokenServer(sock, lambda p, h: (200, body)), pytest.raises(CredexecError) as info:
            fetch(SourceConfig(kind="url", url=f"unix://{sock}", field=field))
        assert info.value.code is Code.SOURCE_BAD_RESPONSE

    def test_missing_socket(self, tmp_path: Path) -> None:
        assert unreachable_code(kind="url", url=f"unix://{tmp_path}/absent.sock") is Code.SOURCE_UNAVAILABLE


class TestFile:
    def test_raw_and_json_field(self, tmp_path: Path) -> None:
        token = make_token()
        raw = tmp_path / "raw"
        raw.write_text(token + "\n")
        assert fetch(SourceConfig(kind="file", path=str(raw))) == token
        doc = tmp_path / "doc.json"
        doc.write_text(json.dumps({"token": token}))
        assert fetch(SourceConfig(kind="file", path=str(doc), field="token")) == token

    def test_symlinked_projection_is_followed(self, tmp_path: Path) -> None:
        token = make_token()
        (tmp_path / "..data").mkdir()
        (tmp_path / "..data" / "token").write_text(token)
        (tmp_path / "token").symlink_to(tmp_path / "..data" / "token")
        assert fetch(SourceConfig(kind="file", path=str(tmp_path / "token"))) == token

    def test_fifo_and_directory_do_not_hang(self, tmp_path: Path) -> None:
        fifo = tmp_path / "fifo"
        os.mkfifo(fifo)
        for path in (fifo, tmp_path):
            with pytest.raises(CredexecError) as info:
                fetch(SourceConfig(kind="file", path=str(path)))
            assert info.value.code is Code.SOURCE_BAD_RESPONSE

    def test_absent_file_is_retried_then_unavailable(self, tmp_path: Path) -> None:
        with pytest.raises(CredexecError) as info:
            fetch(SourceConfig(kind="file", path=str(tmp_path / "absent"), max_attempts=2))
        assert info.value.code is Code.SOURCE_UNAVAILABLE


class TestHttpClient:
    def serve_once(self, payload: bytes, hold: float = 0.0) -> int:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = int(listener.getsockname()[1])

        def run() -> None:
            conn, _ = listener.accept()
            conn.recv(65536)
            try:
                conn.sendall(payload)
                time.sleep(hold)
            except OSError:
                pass
            conn.close()
            listener.close()

        threading.Thread(target=run, daemon=True).start()
        return port

    def test_chunked(self) -> None:
        port = self.serve_once(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
        assert http.get(http.Endpoint("127.0.0.1", port), "/", {}, 2).body == b"abcde"

    def test_read_to_close(self) -> None:
        port = self.serve_once(b"HTTP/1.0 200 OK\r\n\r\nbody-until-close")
        assert http.get(http.Endpoint("127.0.0.1", port), "/", {}, 2).body == b"body-until-close"

    def test_body_over_limit(self) -> None:
        port = self.serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 10485760\r\n\r\n" + b"a" * 1000)
        with pytest.raises(http.HttpError, match="larger"):
            http.get(http.Endpoint("127.0.0.1", port), "/", {}, 2)
        port = self.serve_once(b"HTTP/1.0 200 OK\r\n\r\n" + b"a" * (2 * http.BODY_LIMIT))
        with pytest.raises(http.HttpError, match="larger"):
            http.get(http.Endpoint("127.0.0.1", port), "/", {}, 5)

    def test_body_that_never_ends_hits_the_deadline(self) -> None:
        port = self.serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", hold=5)
        started = time.monotonic()
        with pytest.raises(http.HttpError) as info:
            http.get(http.Endpoint("127.0.0.1", port), "/", {}, 0.5)
        assert info.value.timed_out and time.monotonic() - started < 2

    def test_not_http(self) -> None:
        port = self.serve_once(b"SSH-2.0-OpenSSH\r\n\r\n")
        with pytest.raises(http.HttpError, match="not an HTTP"):
            http.get(http.Endpoint("127.0.0.1", port), "/", {}, 2)

    def test_parse_host_port(self) -> None:
        assert http.parse_host_port("metadata.google.internal", 80) == http.Endpoint("metadata.google.internal", 80)
        assert http.parse_host_port("127.0.0.1:8080", 80) == http.Endpoint("127.0.0.1", 8080)
        assert http.parse_host_port("[::1]:81", 80) == http.Endpoint("::1", 81)


def test_retry_loop_backoff_is_capped_and_deadline_bound() -> None:
    class Flaky:
        kind = "test"
        calls = 0

        def describe(self) -> str:
            return "flaky"

        def fetch_once(self, audience: str, timeout: float) -> str:
            self.calls += 1
            raise SourceError(Failure.TRANSIENT, "HTTP 503")

    pauses: list[float] = []
    clock = [0.0]

    def sleep(seconds: float) -> None:
        pauses.append(seconds)
        clock[0] += seconds

    flaky = Flaky()
    with pytest.raises(CredexecError):
        fetch_with_retries(
            flaky, "a", timeout_seconds=1, deadline_seconds=100, max_attempts=10, sleep=sleep, clock=lambda: clock[0]
        )
    assert flaky.calls == 10 and len(pauses) == 9
    assert all(0 <= p <= 2.0 for p in pauses)
