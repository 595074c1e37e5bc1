"""The host broker: the caller is known by the kernel; no request yields another task's subject.

Callers run as other uids (the tests run as root) with curl; the cgroup mapping uses a
/proc fixture; the end-to-end test puts the real google-auth client in a task process whose
iris-credexec fetches from the broker, and the STS stand-in verifies the broker's signature.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from iris_credexec.host.broker import serve
from iris_credexec.host.config import BrokerConfig, parse
from iris_credexec.host.keys import KeyStore
from iris_credexec.host.registry import Registration, Registry
from tests.conftest import ALICE, BOB, Task, render_policy, run_python_client
from tests.standins import POOL_AUDIENCE

ISSUER = "https://iris-broker.internal"
ALICE_UID, BOB_UID, STRANGER_UID = 31001, 31002, 31003
CONTAINER_A = "a" * 64
CONTAINER_B = "b" * 64

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the broker tests start callers as other uids")


class Running:
    def __init__(self, config: BrokerConfig) -> None:
        self.config = config
        self.registry = Registry(config.registry_dir)
        self.stop = threading.Event()
        ready = threading.Event()
        self.thread = threading.Thread(target=serve, args=(config, ready, self.stop), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def jwks(self) -> dict[str, object]:
        return KeyStore(self.config.keys_dir, self.config.token_lifetime_seconds).jwks()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def make_broker(identify: str, **extra: object) -> Iterator[Running]:
    root = Path(tempfile.mkdtemp(prefix="iris-broker-"))
    root.chmod(0o755)
    (root / "proc").mkdir()
    config = parse(
        {
            "issuer": ISSUER,
            "socket": str(root / "run" / "broker.sock"),
            "state_dir": str(root / "state"),
            "identify": identify,
            "proc_root": str(root / "proc"),
            "audiences": [POOL_AUDIENCE],
            "users": {"alice": ALICE, "bob": BOB},
            "worker": "worker-1",
            "publish_before_signing_seconds": 0,
            **extra,
        }
    )
    running = Running(config)
    try:
        yield running
    finally:
        running.close()
        subprocess.run(["rm", "-rf", str(root)], check=False, timeout=30)


@pytest.fixture
def uid_broker() -> Iterator[Running]:
    yield from make_broker("uid")


@pytest.fixture
def cgroup_broker() -> Iterator[Running]:
    yield from make_broker("cgroup")


def curl_as(uid: int, broker: Running, target: str, before_connect: object = None) -> tuple[int, str]:
    """GET `target` on the broker socket from a process running as `uid`."""
    proc = subprocess.Popen(
        [
            "/bin/sh",
            "-c",
            'read go; exec curl -s -o - -w "\\n%{http_code}" --unix-socket "$0" "http://localhost$1"',
            broker.config.socket_path,
            target,
        ],
        user=uid,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if callable(before_connect):
        before_connect(proc.pid)
    out, _ = proc.communicate("go\n", timeout=30)
    body, _, status = out.rpartition("\n")
    return int(status), body


def token_path(audience: str = POOL_AUDIENCE, extra: str = "") -> str:
    from urllib.parse import quote

    return f"/token?audience={quote(audience, safe='')}{extra}"


def claims_of(token: str) -> dict[str, object]:
    return jwt.decode(token, options={"verify_signature": False})


def register_uid(broker: Running, uid: int, task: str) -> None:
    user, job = task.split("/")[1:3]
    broker.registry.register(Registration(task=task, user=user, job=job, attempt="0", uid=uid))


class TestUidMapping:
    def test_each_task_gets_its_own_subject(self, uid_broker: Running) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        register_uid(uid_broker, BOB_UID, "/bob/eval/3:1")
        status, token = curl_as(ALICE_UID, uid_broker, token_path())
        assert status == 200, token
        claims = claims_of(token)
        assert claims["sub"] == "iris:user:alice" and claims["user"] == "alice" and claims["task"] == "/alice/train/0:0"
        assert (
            claims["iss"] == ISSUER
            and claims["aud"] == POOL_AUDIENCE
            and claims["worker"] == "worker-1"
            and claims["jti"]
        )
        assert int(claims["exp"]) - int(claims["iat"]) == 600  # type: ignore[call-overload]
        status, token = curl_as(BOB_UID, uid_broker, token_path())
        assert status == 200 and claims_of(token)["sub"] == "iris:user:bob"

    def test_signature_verifies_with_the_published_jwks(self, uid_broker: Running) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        _, token = curl_as(ALICE_UID, uid_broker, token_path())
        keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(uid_broker.jwks()).keys}
        jwt.decode(
            token, keys[jwt.get_unverified_header(token)["kid"]].key, algorithms=["ES256"], audience=POOL_AUDIENCE
        )

    @pytest.mark.parametrize(
        "trick",
        ["&user=bob", "&sub=iris:user:bob", "&audience=" + POOL_AUDIENCE, "&task=/bob/eval/0", "/../token", "#bob"],
    )
    def test_nothing_the_caller_sends_changes_the_subject(self, uid_broker: Running, trick: str) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        register_uid(uid_broker, BOB_UID, "/bob/eval/3:1")
        status, body = curl_as(
            ALICE_UID, uid_broker, token_path(extra=trick) if not trick.startswith("/") else trick + "?audience=x"
        )
        if status == 200:
            assert claims_of(body)["sub"] == "iris:user:alice"
        else:
            assert status in (400, 403, 404)

    def test_unregistered_and_ended_tasks_are_refused(self, uid_broker: Running) -> None:
        status, body = curl_as(STRANGER_UID, uid_broker, token_path())
        assert status == 403 and "unknown caller" in body
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        assert curl_as(ALICE_UID, uid_broker, token_path())[0] == 200
        uid_broker.registry.unregister(uid=ALICE_UID)
        assert curl_as(ALICE_UID, uid_broker, token_path())[0] == 403

    def test_wrong_audience_is_refused(self, uid_broker: Running) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        status, body = curl_as(ALICE_UID, uid_broker, token_path(POOL_AUDIENCE.replace("/123/", "/999/")))
        assert status == 403 and "not allowed" in body

    def test_registrations_survive_a_restart(self, uid_broker: Running) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        uid_broker.close()
        again = Running(uid_broker.config)
        try:
            assert curl_as(ALICE_UID, again, token_path())[0] == 200
        finally:
            again.close()

    def test_audit_line_per_request_without_the_token(self, uid_broker: Running) -> None:
        register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
        _, token = curl_as(ALICE_UID, uid_broker, token_path())
        curl_as(STRANGER_UID, uid_broker, token_path())
        text = (Path(uid_broker.config.state_dir) / "audit.jsonl").read_text()
        lines = [json.loads(line) for line in text.splitlines()]
        assert [line["decision"] for line in lines] == ["issued", "refused"]
        assert lines[0]["sub"] == "iris:user:alice" and len(lines[0]["token"]) == 16 and token not in text


class TestCgroupMapping:
    def place_in_container(self, broker: Running, container: str) -> object:
        def place(pid: int) -> None:
            d = Path(broker.config.proc_root) / str(pid)
            d.mkdir()
            (d / "cgroup").write_text(f"0::/system.slice/docker-{container}.scope\n")

        return place

    def test_container_identifies_the_task(self, cgroup_broker: Running) -> None:
        cgroup_broker.registry.register(
            Registration(task="/alice/train/0:0", user="alice", job="train", attempt="0", container=CONTAINER_A)
        )
        cgroup_broker.registry.register(
            Registration(task="/bob/eval/0:0", user="bob", job="eval", attempt="0", container=CONTAINER_B)
        )
        status, token = curl_as(
            ALICE_UID, cgroup_broker, token_path(), self.place_in_container(cgroup_broker, CONTAINER_A)
        )
        assert (
            status == 200
            and claims_of(token)["sub"] == "iris:user:alice"
            and claims_of(token)["container"] == CONTAINER_A
        )
        # Same uid, another container: another task. The uid does not matter, the container does.
        status, token = curl_as(
            ALICE_UID, cgroup_broker, token_path(), self.place_in_container(cgroup_broker, CONTAINER_B)
        )
        assert status == 200 and claims_of(token)["sub"] == "iris:user:bob"

    def test_process_outside_any_container_is_refused(self, cgroup_broker: Running) -> None:
        status, body = curl_as(ALICE_UID, cgroup_broker, token_path())
        assert status == 403 and "no container" in body


def test_key_rotation_keeps_old_and_new_tokens_valid(uid_broker: Running) -> None:
    register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
    _, before = curl_as(ALICE_UID, uid_broker, token_path())
    store = KeyStore(uid_broker.config.keys_dir, uid_broker.config.token_lifetime_seconds)
    new_key = store.rotate(publish_before_signing=0)
    time.sleep(0.01)
    _, after = curl_as(ALICE_UID, uid_broker, token_path())
    assert jwt.get_unverified_header(after)["kid"] == new_key.kid != jwt.get_unverified_header(before)["kid"]
    keys = {k.key_id: k for k in jwt.PyJWKSet.from_dict(uid_broker.jwks()).keys}
    for token in (before, after):
        jwt.decode(
            token, keys[jwt.get_unverified_header(token)["kid"]].key, algorithms=["ES256"], audience=POOL_AUDIENCE
        )


def test_a_new_key_is_published_before_it_signs(tmp_path: Path) -> None:
    store = KeyStore(str(tmp_path / "keys"), max_token_lifetime=600)
    store.ensure()
    first = store.signing_key()
    pending = store.rotate(publish_before_signing=3600)
    assert store.signing_key() == first  # not signing yet...
    assert {k.kid for k in store.published()} == {first.kid, pending.kid}  # ...but already published
    later = time.time() + 3600 + 601
    assert store.signing_key(later).kid == pending.kid
    assert [k.kid for k in store.published(later)] == [pending.kid]  # the old one's last token has expired


def test_end_to_end_alice_gets_alices_account_and_never_bobs(uid_broker: Running, task: Task) -> None:
    """google-auth in a task process; iris-credexec's url source asks the broker; the STS stand-in
    trusts only the broker's JWKS and issuer; IAM binds each account to its user's principal only."""
    register_uid(uid_broker, os.getuid(), "/alice/train/0:0")  # this test's processes are alice's task
    state = task.standin.state
    state.extra_jwks = list(uid_broker.jwks()["keys"])  # type: ignore[call-overload]
    state.trusted_issuers = {ISSUER}
    state.bindings = {ALICE: {"iris:user:alice"}, BOB: {"iris:user:bob"}}
    jwks = task.root / "broker-jwks.json"
    jwks.write_text(json.dumps(uid_broker.jwks()))
    task.write_policy_text(
        render_policy(
            {
                "audiences": {"allow": [POOL_AUDIENCE]},
                "service_accounts": {"allow": [ALICE, BOB]},
                "source": {"kind": "url", "url": f"unix://{uid_broker.config.socket_path}", "http_path": "/token"},
                "token": {"issuers": [ISSUER], "claims": {"user": "alice"}, "jwks": str(jwks)},
                "audit": {"path": str(task.audit_path)},
            }
        )
    )
    result = run_python_client(task.credential_config(ALICE), task.env())
    assert result.ok, result.raw
    assert state.access_tokens[str(result.token)] == ALICE
    # Bob's account: the policy would even allow it here, but Google (IAM) refuses alice's principal.
    result = run_python_client(task.credential_config(BOB, name="bob.json", output_file=False), task.env())
    assert not result.ok and "Permission" in result.error, result.raw
    assert BOB not in state.access_tokens.values()


def test_iris_docker_labels_identify_the_task(tmp_path: Path) -> None:
    from tests.standins import UnixTokenServer

    def engine(path: str, headers: dict[str, str]) -> tuple[int, bytes]:
        if path == f"/containers/{CONTAINER_A}/json":
            labels = {"iris.managed": "true", "iris.task_id": "/alice/train/2:1", "iris.job_id": "/alice/train"}
            return 200, json.dumps({"Config": {"Labels": labels}}).encode()
        return 404, b"{}"

    docker = tmp_path / "docker.sock"
    with UnixTokenServer(str(docker), engine):
        for running in make_broker("cgroup", docker_socket=str(docker)):
            place = TestCgroupMapping().place_in_container(running, CONTAINER_A)
            status, token = curl_as(ALICE_UID, running, token_path(), place)
            assert status == 200, token
            claims = claims_of(token)
            assert (
                claims["sub"] == "iris:user:alice" and claims["task"] == "/alice/train/2:1" and claims["attempt"] == "1"
            )
            unlabelled = TestCgroupMapping().place_in_container(running, CONTAINER_B)
            assert curl_as(ALICE_UID, running, token_path(), unlabelled)[0] == 403


def test_a_silent_client_does_not_block_others(uid_broker: Running) -> None:
    import socket

    register_uid(uid_broker, ALICE_UID, "/alice/train/0:0")
    silent = [socket.socket(socket.AF_UNIX) for _ in range(5)]
    try:
        for s in silent:
            s.connect(uid_broker.config.socket_path)  # connect and say nothing
        started = time.monotonic()
        assert curl_as(ALICE_UID, uid_broker, token_path())[0] == 200
        assert time.monotonic() - started < 3
    finally:
        for s in silent:
            s.close()


def test_connections_past_the_limit_get_a_quick_503() -> None:
    import socket

    for running in make_broker("uid", max_connections=2, request_timeout_seconds=5):
        silent = [socket.socket(socket.AF_UNIX) for _ in range(2)]
        try:
            for s in silent:
                s.connect(running.config.socket_path)
            time.sleep(0.3)
            status, _ = curl_as(ALICE_UID, running, token_path())
            assert status == 503
        finally:
            for s in silent:
                s.close()
