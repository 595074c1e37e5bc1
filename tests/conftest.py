"""Shared fixtures: the stand-ins, a task's files (policy, credential config) and the clients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.standins import POOL_AUDIENCE, GoogleStandIn, SigningKey, StandInState

REPO = Path(__file__).resolve().parent.parent
ALICE = "alice@iris-users.iam.gserviceaccount.com"
BOB = "bob@iris-users.iam.gserviceaccount.com"
SUBPROCESS_TIMEOUT = 60


def executable() -> str:
    """The iris-credexec under test: IRIS_CREDEXEC_BIN (a frozen build) or the installed script."""
    path = os.environ.get("IRIS_CREDEXEC_BIN") or str(Path(sys.executable).parent / "iris-credexec")
    path = os.path.abspath(path)
    assert os.access(path, os.X_OK), f"no executable at {path}"
    assert not any(c in path for c in " \"'\\"), f"the executable path must be safe for every client: {path}"
    return path


_SESSION_KEY: SigningKey | None = None


def session_key() -> SigningKey:
    global _SESSION_KEY
    if _SESSION_KEY is None:
        _SESSION_KEY = SigningKey()
    return _SESSION_KEY


@pytest.fixture
def standin() -> Iterator[GoogleStandIn]:
    with GoogleStandIn(StandInState(key=session_key())) as server:
        server.grant(ALICE)
        yield server


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def render_policy(tables: dict[str, Any]) -> str:
    lines = [f"version = {tables.get('version', 1)}"]
    for name, table in tables.items():
        if name == "version":
            continue
        lines.append(f"[{name}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"


@dataclass
class Task:
    """One task's files and environment, in a private temp dir."""

    root: Path
    standin: GoogleStandIn
    policy_tables: dict[str, Any] = field(default_factory=dict)

    @property
    def policy_path(self) -> Path:
        return self.root / "etc" / "policy.toml"

    @property
    def cache_dir(self) -> Path:
        return self.root / "run" / "iris-credexec"

    @property
    def audit_path(self) -> Path:
        return self.root / "audit.jsonl"

    def default_policy(self) -> dict[str, Any]:
        return {
            "audiences": {"allow": [POOL_AUDIENCE]},
            "service_accounts": {"allow": ["*@iris-users.iam.gserviceaccount.com"], "require": True},
            "context": {"env": {"IRIS_TASK_ID": "/alice/.*"}},
            "source": {"kind": "metadata", "host": self.standin.host, "timeout_seconds": 2, "deadline_seconds": 8},
            "token": {
                "issuers": ["https://accounts.google.com"],
                "claims": {"email": "iris-worker@proj.iam.gserviceaccount.com"},
            },
            "audit": {"path": str(self.audit_path)},
        }

    def write_policy(self, **tables: Any) -> Path:
        """The default policy with whole tables replaced (None drops a table)."""
        merged = self.default_policy()
        for name, table in tables.items():
            if table is None:
                merged.pop(name, None)
            else:
                merged[name] = table
        return self.write_policy_text(render_policy(merged))

    def write_policy_text(self, text: str) -> Path:
        self.policy_path.parent.mkdir(mode=0o755, exist_ok=True)
        self.policy_path.write_text(text)
        self.policy_path.chmod(0o644)
        return self.policy_path

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root / "home"),
            "XDG_RUNTIME_DIR": str(self.root / "run"),
            "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1",
            "GOOGLE_CLOUD_PROJECT": "test-project",
            "IRIS_CREDEXEC_POLICY": str(self.policy_path),
            "IRIS_TASK_ID": "/alice/train/0:0",
            "PYTHONDONTWRITEBYTECODE": "1",
            # Where the task's clients (and doctor's concealment probe) would find the metadata
            # server: loopback port 1, closed. Nothing here may send traffic to 169.254.169.254.
            "GCE_METADATA_HOST": "127.0.0.1:1",
        }
        env.update(extra)
        return {k: v for k, v in env.items() if v is not None}

    def credential_config(
        self,
        service_account: str | None = ALICE,
        command_args: str | None = None,
        output_file: bool = True,
        name: str = "credentials.json",
        google_urls: bool = False,
    ) -> Path:
        """A credential config running the executable under test. With `google_urls`, Google's
        real STS and IAM URLs (for clients that refuse others; their connections are redirected)."""
        args = (
            command_args
            if command_args is not None
            else (f"--service-account {service_account}" if service_account else "")
        )
        executable_cfg: dict[str, Any] = {
            "command": f"{executable()} {args}".strip(),
            "timeout_millis": 30000,
        }
        if output_file:
            executable_cfg["output_file"] = str(self.root / "home" / "iris-credexec-output.json")
        config: dict[str, Any] = {
            "type": "external_account",
            "audience": POOL_AUDIENCE,
            "subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            "token_url": "https://sts.googleapis.com/v1/token" if google_urls else self.standin.token_url(),
            "credential_source": {"executable": executable_cfg},
        }
        if service_account:
            config["service_account_impersonation_url"] = (
                f"https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{service_account}:generateAccessToken"
                if google_urls
                else self.standin.impersonation_url(service_account)
            )
        path = self.root / name
        path.write_text(json.dumps(config, indent=2))
        return path

    @property
    def output_file(self) -> Path:
        return self.root / "home" / "iris-credexec-output.json"

    def exec_env(self, **extra: str) -> dict[str, str]:
        """The environment a Google client gives the executable."""
        return self.env(
            **{
                "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE,
                "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:id_token",
                "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "0",
                **extra,
            }
        )

    def audit_lines(self) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        return [json.loads(line) for line in self.audit_path.read_text().splitlines()]


@pytest.fixture
def task(tmp_path: Path, standin: GoogleStandIn) -> Task:
    tmp_path.chmod(0o755)
    (tmp_path / "home").mkdir(mode=0o700)
    (tmp_path / "run").mkdir(mode=0o700)
    t = Task(root=tmp_path, standin=standin)
    t.write_policy()
    return t


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def json(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, f"expected exactly one JSON line, got {self.stdout!r}"
        doc = json.loads(lines[0])
        assert isinstance(doc, dict)
        return doc


def run_exec(args: list[str], env: dict[str, str], timeout: float = SUBPROCESS_TIMEOUT) -> ExecResult:
    """Run the real executable as a client would: no stdin, captured stdout and stderr."""
    proc = subprocess.run(
        [executable(), *args],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return ExecResult(proc.returncode, proc.stdout, proc.stderr)


_CAPABILITIES: dict[str, bool] = {}


def machine_allows(what: str) -> bool:
    """Whether this machine lets the tests mount file systems ("mount") or create network
    namespaces ("netns"): root alone is not enough inside some sandboxes. Probed once."""
    if what not in _CAPABILITIES:
        import tempfile

        ok = os.geteuid() == 0
        if ok and what == "mount":
            with tempfile.TemporaryDirectory() as d:
                ok = (
                    subprocess.run(
                        ["mount", "-t", "tmpfs", "-o", "size=4k", "tmpfs", d], capture_output=True, timeout=30
                    ).returncode
                    == 0
                )
                if ok:
                    subprocess.run(["umount", d], capture_output=True, timeout=30)
        elif ok and what == "netns":
            name = f"icx-probe-{os.getpid()}"
            ok = shutil.which("ip") is not None and shutil.which("iptables") is not None
            ok = ok and subprocess.run(["ip", "netns", "add", name], capture_output=True, timeout=30).returncode == 0
            if ok:
                probe = subprocess.run(
                    ["ip", "netns", "exec", name, "iptables", "-t", "nat", "-S"], capture_output=True, timeout=30
                )
                ok = probe.returncode == 0
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        _CAPABILITIES[what] = ok
    return _CAPABILITIES[what]


def start_fetch_and_hold(task: Task, **env: str) -> subprocess.Popen[bytes]:
    """Start the executable against a source that hangs; return once it is inside the fetch
    (holding the per-key lock). The caller ends the process."""
    from tests.standins import Fault

    task.standin.state.faults.append(Fault("hang", seconds=30))
    proc = subprocess.Popen(
        [executable(), "--service-account", ALICE], env=task.exec_env(**env),
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while task.standin.count("identity") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return proc


def assert_refusal(result: ExecResult, code: str) -> dict[str, Any]:
    """Executable mode's promise on every failure: exit 0, one JSON failure, empty stderr."""
    assert result.returncode == 0, result
    assert result.stderr == "", result.stderr
    doc = result.json
    assert doc["version"] == 1 and doc["success"] is False, doc
    assert doc["code"] == code, doc
    assert isinstance(doc["message"], str) and doc["message"], doc
    return doc


# --- Clients --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClientResult:
    ok: bool
    token: str | None
    error: str
    raw: str


def run_python_client(config: Path, env: dict[str, str], python: str | None = None) -> ClientResult:
    return run_client_program(
        [python or sys.executable, str(REPO / "tests" / "clients" / "python" / "client.py")], env, config
    )


def _client_result(proc: subprocess.CompletedProcess[str]) -> ClientResult:
    """The last JSON line a client program printed (the node, go and python programs all print one)."""
    raw = proc.stdout + proc.stderr
    for line in reversed(proc.stdout.strip().splitlines()):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and "ok" in doc:
            return ClientResult(bool(doc["ok"]), doc.get("token"), doc.get("error", ""), raw)
    return ClientResult(False, None, raw, raw)


def run_client_program(command: list[str], env: dict[str, str], config: Path, **extra: str) -> ClientResult:
    """Run a client program (python, node, go) with GOOGLE_APPLICATION_CREDENTIALS = `config`."""
    proc = subprocess.run(
        command,
        env={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(config), **extra},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
        cwd=str(REPO),
    )
    return _client_result(proc)


NODE_CLIENT_DIR = REPO / "tests" / "clients" / "node"


def run_node_client(config: Path, env: dict[str, str]) -> ClientResult:
    node = shutil.which("node")
    if node is None or not (NODE_CLIENT_DIR / "node_modules" / "google-auth-library").is_dir():
        pytest.fail("the Node client is not installed: scripts/clients.sh installs it (npm ci)")
    return run_client_program([node, str(NODE_CLIENT_DIR / "client.js")], env, config)


_GO_CLIENT: Path | None = None


def go_client_binary(build_dir: Path) -> Path:
    """Build tests/clients/go once per session with Debian's Go and x/oauth2 (GOPATH mode)."""
    global _GO_CLIENT
    if _GO_CLIENT is None:
        go = shutil.which("go")
        if go is None or not Path("/usr/share/gocode/src/golang.org/x/oauth2/google").is_dir():
            pytest.fail("the Go client is not installed: scripts/clients.sh installs golang-go and x/oauth2")
        out = build_dir / "go-client"
        proc = subprocess.run(
            [go, "build", "-o", str(out), str(REPO / "tests" / "clients" / "go" / "main.go")],
            env={
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(build_dir),
                "GO111MODULE": "off",
                "GOPATH": "/usr/share/gocode",
                "GOCACHE": str(build_dir / "gocache"),
                "GOFLAGS": "",
                "CGO_ENABLED": "0",
            },
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        _GO_CLIENT = out
    return _GO_CLIENT


def run_go_client(config: Path, env: dict[str, str], binary: Path, tls_address: str, ca: str) -> ClientResult:
    return run_client_program([str(binary)], env, config, STANDIN_TLS_ADDR=tls_address, STANDIN_CA=ca)


def gcloud_path() -> str:
    path = shutil.which("gcloud")
    if path is None:
        pytest.fail("gcloud is not installed: .ci/run installs it (google-cloud-cli); the suite needs the real client")
    return path


def run_gcloud(config: Path, env: dict[str, str], root: Path) -> ClientResult:
    gcloud_config = root / "gcloud-config"
    gcloud_config.mkdir(exist_ok=True)
    full_env = {
        **env,
        "CLOUDSDK_CONFIG": str(gcloud_config),
        "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": str(config),
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_CORE_PROJECT": "test-project",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
        "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "1",
    }
    proc = subprocess.run(
        [gcloud_path(), "auth", "print-access-token", "--verbosity=error"],
        env=full_env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT * 2,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.strip():
        return ClientResult(True, proc.stdout.strip(), "", proc.stdout + proc.stderr)
    return ClientResult(False, None, proc.stderr.strip(), proc.stdout + proc.stderr)


# --- Tokens ---------------------------------------------------------------------------------


def make_token(
    audience: str = POOL_AUDIENCE, lifetime: int = 3600, key: SigningKey | None = None, **claims: Any
) -> str:
    """An ID token like the metadata server's, signed by the session key unless told otherwise."""
    import time

    from tests.standins import GOOGLE_ISSUER, WORKER_EMAIL, WORKER_SUBJECT

    now = int(time.time())
    body: dict[str, Any] = {
        "iss": GOOGLE_ISSUER,
        "aud": audience,
        "sub": WORKER_SUBJECT,
        "email": WORKER_EMAIL,
        "iat": now,
        "exp": now + lifetime,
    }
    body.update(claims)
    return (key or session_key()).sign({k: v for k, v in body.items() if v is not None})


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [session_key().jwk]}))
    return path


def write_file_source_policy(root: Path, **tables: Any) -> Path:
    """A 0644 policy in `root` (made 0755) whose source is a token file beside it, valid for 2 h:
    the whole pipeline in-process, without a server."""
    root.chmod(0o755)
    token = root / "token"
    token.write_text(make_token(lifetime=7200))
    path = root / "policy.toml"
    path.write_text(
        render_policy(
            {
                "audiences": {"allow": [POOL_AUDIENCE]},
                "service_accounts": {"allow": [ALICE]},
                "context": {"env": {"IRIS_TASK_ID": "/alice/.*"}},
                "source": {"kind": "file", "path": str(token)},
                **tables,
            }
        )
    )
    path.chmod(0o644)
    return path


# --- Property-based tests -------------------------------------------------------------------
# Bounded by default so .ci/run stays fast; HYPOTHESIS_PROFILE=long runs many more examples.
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=20_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
