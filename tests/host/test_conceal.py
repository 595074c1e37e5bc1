"""The metadata concealment proxy: everything passes but the VM's credentials, in any spelling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris_credexec.host.conceal import ConcealConfig, canonical_path, is_credential_path, serve
from tests.conftest import REPO, executable, machine_allows
from tests.standins import GoogleStandIn, free_port

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def proxied(standin: GoogleStandIn) -> Iterator[tuple[GoogleStandIn, int]]:
    port = free_port()
    stop = threading.Event()
    ready = threading.Event()
    config = ConcealConfig(
        listen_host="127.0.0.1", listen_port=port, upstream_host="127.0.0.1", upstream_port=standin.port
    )
    thread = threading.Thread(target=serve, args=(config, ready, stop), daemon=True)
    thread.start()
    assert ready.wait(5)
    yield standin, port
    stop.set()
    thread.join(timeout=5)


def raw(port: int, request: bytes, timeout: float = 10) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def get(port: int, target: str, extra: str = "", version: str = "HTTP/1.1") -> tuple[int, bytes, bytes]:
    answer = raw(
        port,
        f"GET {target} {version}\r\nHost: metadata.google.internal\r\nMetadata-Flavor: Google\r\n{extra}Connection: close\r\n\r\n".encode(),
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), head, body


def without_date(head: bytes) -> list[bytes]:
    return [line for line in head.split(b"\r\n") if not line.lower().startswith(b"date:")]


@pytest.mark.parametrize(
    "target",
    [
        "/computeMetadata/v1/project/project-id",
        "/computeMetadata/v1/instance/zone",
        "/computeMetadata/v1/instance/attributes/accelerator-type",
        "/computeMetadata/v1/instance/service-accounts/",
        "/computeMetadata/v1/instance/service-accounts/default/",
        "/computeMetadata/v1/instance/service-accounts/default/email",
        "/computeMetadata/v1/instance/service-accounts/default/scopes",
        "/computeMetadata/v1/?recursive=true&alt=json",
    ],
)
def test_everything_else_passes_byte_for_byte(proxied: tuple[GoogleStandIn, int], target: str) -> None:
    standin, port = proxied
    direct = get(standin.port, target)
    via = get(port, target)
    assert via[0] == direct[0] == 200
    assert via[2] == direct[2]
    assert without_date(via[1]) == without_date(direct[1])


def test_long_poll_is_streamed_not_buffered(proxied: tuple[GoogleStandIn, int]) -> None:
    _, port = proxied
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            b"GET /computeMetadata/v1/instance/attributes/?wait_for_change=true HTTP/1.1\r\nHost: m\r\nMetadata-Flavor: Google\r\n\r\n"
        )
        started = time.monotonic()
        first = b""
        while b"first-" not in first:
            first += s.recv(65536)
        first_at = time.monotonic() - started
        rest = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        assert first_at < 0.8 and (first + rest).endswith(b"first-second")


CREDENTIAL_SPELLINGS = [
    "/computeMetadata/v1/instance/service-accounts/default/token",
    "/computeMetadata/v1/instance/service-accounts/default/identity?audience=x",
    "/computeMetadata/v1/instance/service-accounts/iris-worker@proj.iam.gserviceaccount.com/token",
    "/computeMetadata/v1beta1/instance/service-accounts/default/token",
    "/0.1/meta-data/service-accounts/default/acquire",
    "/computeMetadata/v1/instance/service-accounts/default/token/",
    "/computeMetadata/v1/instance/service-accounts/default//token",
    "//computeMetadata//v1//instance//service-accounts//default//token",
    "/COMPUTEMETADATA/V1/INSTANCE/SERVICE-ACCOUNTS/DEFAULT/TOKEN",
    "/computeMetadata/v1/instance/attributes/../service-accounts/default/token",
    "/computeMetadata/v1/instance/./service-accounts/default/token",
    "/computeMetadata/v1/instance/service-accounts%2Fdefault%2Ftoken",
    "/computeMetadata/v1/instance/service-accounts/default%2ftoken",
    "/computeMetadata/v1/instance/service-accounts/default/%74oken",
    "/computeMetadata/v1/instance/service-accounts%252Fdefault%252Ftoken",
    "/computeMetadata/v1/instance/%2e%2e/instance/service-accounts/default/token",
    "/computeMetadata/v1/instance/service-accounts/default/token%3Fx",
    "/computeMetadata/v1/instance/service-accounts/default/token#frag",
    "/computeMetadata/v1/instance/service-accounts/?recursive=true",
    "/computeMetadata/v1/instance/service-accounts/default/?recursive=true",
    "http://169.254.169.254/computeMetadata/v1/instance/service-accounts/default/token",
    "HTTP://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity",
]


@pytest.mark.parametrize("target", CREDENTIAL_SPELLINGS)
def test_credential_paths_are_refused_in_every_spelling(proxied: tuple[GoogleStandIn, int], target: str) -> None:
    standin, port = proxied
    status, _, body = get(port, target)
    assert status in (403, 400), (status, body)
    assert b"VM-CREDENTIAL" not in body and b"eyJ" not in body
    if status == 403:
        assert b"iris-credexec" in body
    assert not any(
        "service-accounts" in p and p.rstrip("/").endswith(("token", "identity", "acquire"))
        for p in standin.state.paths_seen
    )
    assert standin.count("identity") == 0


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.0\r\nMetadata-Flavor: Google\r\n\r\n",
        b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nHost: m\r\nMetadata-Flavor: Google\r\nMetadata-Flavor: Google\r\n\r\n",
        b"POST /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nHost: m\r\nMetadata-Flavor: Google\r\nContent-Length: 4\r\n\r\nbody",
        b"GET /computeMetadata/v1/instance/service-accounts/default/token HTTP/1.1\r\nHost: m\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /computeMetadata/v1/project/project-id HTTP/1.1\r\nHost: m\r\nX-Original-URL: /computeMetadata/v1/instance/service-accounts/default/token\r\nMetadata-Flavor: Google\r\n\r\n",
    ],
    ids=["http1.0", "two-flavors", "post-with-body", "chunked", "x-original-url"],
)
def test_header_and_method_tricks(proxied: tuple[GoogleStandIn, int], request_bytes: bytes) -> None:
    standin, port = proxied
    answer = raw(port, request_bytes)
    assert b"VM-CREDENTIAL" not in answer and b"eyJ" not in answer
    assert standin.count("identity") == 0


@pytest.mark.parametrize(
    ("path", "credential"),
    [
        ("/computeMetadata/v1/instance/service-accounts", False),
        ("/computeMetadata/v1/instance/service-accounts/default/aliases", False),
        ("/computeMetadata/v1/instance/service-accounts/default", True),
        ("/computeMetadata/v1/instance/service-accounts/default/anything", True),
        ("/computeMetadata/v1/instance/hostname", False),
    ],
)
def test_credential_path_rule(path: str, credential: bool) -> None:
    assert is_credential_path(path) is credential


def test_canonical_path_refuses_what_it_cannot_settle() -> None:
    assert canonical_path("/a/%25252525252F") is None
    assert canonical_path("relative") is None
    assert canonical_path("/a/b/../c?x=1") == ("/a/c", "x=1")


def test_bounded_connections(standin: GoogleStandIn) -> None:
    port = free_port()
    stop, ready = threading.Event(), threading.Event()
    config = ConcealConfig(
        listen_port=port,
        upstream_host="127.0.0.1",
        upstream_port=standin.port,
        max_connections=2,
        header_timeout_seconds=5,
    )
    threading.Thread(target=serve, args=(config, ready, stop), daemon=True).start()
    assert ready.wait(5)
    held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        time.sleep(0.3)
        assert raw(port, b"GET /x HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503")
    finally:
        for s in held:
            s.close()
        stop.set()


@pytest.mark.parametrize("fmt", ["iptables", "nftables"])
def test_rules_match_the_golden_files(fmt: str) -> None:
    out = subprocess.run(
        [executable(), "host", "conceal", "--print-rules", "--format", fmt, "--task-cgroup", "iris-tasks.slice"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert out == (GOLDEN / f"rules-{fmt}.txt").read_text()


def test_iptables_rules_are_guarded_for_idempotence() -> None:
    for line in (GOLDEN / "rules-iptables.txt").read_text().splitlines():
        if line.startswith("iptables"):
            check, _, add = line.partition(" 2>/dev/null || ")
            assert " -C " in check and (" -A " in add or " -I " in add)
            assert check.replace(" -C ", " -X ") == add.replace(" -A ", " -X ").replace(" -I ", " -X ")


def test_doctor_reports_whether_credentials_are_reachable(proxied: tuple[GoogleStandIn, int], task: object) -> None:
    from tests.conftest import ALICE, Task

    assert isinstance(task, Task)
    standin, port = proxied
    env = task.env(
        GOOGLE_APPLICATION_CREDENTIALS=str(task.credential_config(ALICE)), CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE=""
    )
    for host, expected in ((f"127.0.0.1:{port}", "pass"), (standin.host, "fail")):
        proc = subprocess.run(
            [executable(), "doctor", "--json"],
            env={**env, "GCE_METADATA_HOST": host},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        import json

        checks = {c["name"]: c for c in json.loads(proc.stdout)["checks"]}
        assert checks["metadata concealment"]["status"] == expected, checks["metadata concealment"]
        assert "VM-CREDENTIAL" not in proc.stdout


def test_redirection_in_network_namespaces() -> None:
    """Two namespaces the test creates, with no route out: `host` has 169.254.169.254 on its
    loopback (the stand-in there) and the proxy; `task` reaches it over a veth pair. The printed
    rules, applied twice, send the task's metadata traffic to the proxy."""
    if not machine_allows("netns"):
        pytest.skip(
            "this machine allows no network namespaces with netfilter: the rules are checked as text (golden files)"
        )
    suffix = f"{os.getpid() % 100000}"
    host_ns, task_ns = f"icx-host-{suffix}", f"icx-task-{suffix}"
    veth_host, veth_task = f"icxh{suffix}"[:15], f"icxt{suffix}"[:15]

    def sh(ns: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", ns, "sh", "-c", command], capture_output=True, text=True, timeout=60, check=check
        )

    procs: list[subprocess.Popen[str]] = []
    subprocess.run(["ip", "netns", "add", host_ns], check=True, timeout=30)
    subprocess.run(["ip", "netns", "add", task_ns], check=True, timeout=30)
    try:
        subprocess.run(
            [
                "ip",
                "link",
                "add",
                veth_host,
                "netns",
                host_ns,
                "type",
                "veth",
                "peer",
                "name",
                veth_task,
                "netns",
                task_ns,
            ],
            check=True,
            timeout=30,
        )
        sh(
            host_ns,
            f"ip link set lo up && ip addr add 169.254.169.254/32 dev lo && ip addr add 169.254.100.1/30 dev {veth_host} && ip link set {veth_host} up",
        )
        sh(
            task_ns,
            f"ip link set lo up && ip addr add 169.254.100.2/30 dev {veth_task} && ip link set {veth_task} up && ip route add 169.254.169.254/32 via 169.254.100.1",
        )
        sh(
            host_ns,
            "sysctl -qw net.ipv4.ip_forward=1 && iptables -t filter -N DOCKER-USER && iptables -t filter -I FORWARD -j DOCKER-USER",
        )
        standin_code = (
            "import sys, time; sys.path.insert(0, sys.argv[1]); from tests.standins import GoogleStandIn; "
            "s = GoogleStandIn(bind=('169.254.169.254', 80)); s.__enter__(); print('ready', flush=True); time.sleep(120)"
        )
        procs.append(
            subprocess.Popen(
                ["ip", "netns", "exec", host_ns, sys.executable, "-c", standin_code, str(REPO)],
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        assert procs[-1].stdout is not None and procs[-1].stdout.readline().strip() == "ready"
        procs.append(
            subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    host_ns,
                    executable(),
                    "host",
                    "conceal",
                    "--listen",
                    "169.254.100.1:8988",
                    "--upstream",
                    "169.254.169.254:80",
                ],
                stderr=subprocess.DEVNULL,
            )
        )
        curl = "curl -s -m 5 -H 'Metadata-Flavor: Google' http://169.254.169.254"
        deadline = time.monotonic() + 20
        while "standin-value" not in sh(task_ns, f"{curl}/computeMetadata/v1/project/project-id", check=False).stdout:
            assert time.monotonic() < deadline, "the stand-in is not reachable from the task namespace"
            time.sleep(0.2)
        # Without the rules the task reaches the VM's credentials: the threat this closes.
        assert (
            "VM-CREDENTIAL" in sh(task_ns, f"{curl}/computeMetadata/v1/instance/service-accounts/default/token").stdout
        )
        rules = subprocess.run(
            [
                executable(),
                "host",
                "conceal",
                "--print-rules",
                "--bridge",
                veth_host,
                "--bridge-proxy",
                "169.254.100.1:8988",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout
        for _ in range(2):  # idempotent: applying twice leaves one copy
            sh(host_ns, rules)
        nat = sh(host_ns, "iptables -t nat -S PREROUTING").stdout
        assert nat.count("DNAT") == 1 and sh(host_ns, "iptables -S DOCKER-USER").stdout.count("DROP") == 1
        token = sh(
            task_ns, f"{curl}/computeMetadata/v1/instance/service-accounts/default/token -w ' %{{http_code}}'"
        ).stdout
        assert token.endswith(" 403") and "iris-credexec" in token and "VM-CREDENTIAL" not in token
        assert "standin-value" in sh(task_ns, f"{curl}/computeMetadata/v1/project/project-id").stdout
        assert sh(
            task_ns, "curl -s -m 3 -o /dev/null -w '%{http_code}' http://169.254.169.254:8080/", check=False
        ).stdout in ("000", "")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", host_ns], check=False, timeout=30)
        subprocess.run(["ip", "netns", "del", task_ns], check=False, timeout=30)
