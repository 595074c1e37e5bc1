"""Every client library drives the real executable through STS and impersonation stand-ins.

Clients: the newest google-auth, the last before 2.44 (str.split command splitting), the
oldest with executable-sourced credentials, gcloud, Node's google-auth-library and Go's
golang.org/x/oauth2. Each runs as a separate program, as in a task.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import (
    ALICE,
    BOB,
    REPO,
    ClientResult,
    Task,
    go_client_binary,
    run_gcloud,
    run_go_client,
    run_node_client,
    run_python_client,
)
from tests.standins import Fault, TlsFront, write_tls_identity

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"


@dataclass
class Driver:
    name: str
    tmp: Path

    @property
    def google_urls(self) -> bool:
        """Go and old google-auth accept only https://*.googleapis.com: real URLs, redirected dialling."""
        return self.name in ("go", "google-auth-oldest")

    def run(
        self,
        task: Task,
        account: str | None,
        env: dict[str, str],
        output_file: bool = True,
        command_args: str | None = None,
    ) -> ClientResult:
        config = task.credential_config(
            account, output_file=output_file, google_urls=self.google_urls, command_args=command_args
        )
        return self.run_config(task, config, env)

    def run_config(self, task: Task, config: Path, env: dict[str, str]) -> ClientResult:
        if not self.google_urls:
            return self._run(task, config, env)
        cert, key = write_tls_identity(str(self.tmp))
        with TlsFront(task.standin.state, cert, key) as front:
            redirected = {"STANDIN_TLS_ADDR": front.address, "STANDIN_CA": cert, "REQUESTS_CA_BUNDLE": cert}
            return self._run(task, config, {**env, **redirected})

    def _run(self, task: Task, config: Path, env: dict[str, str]) -> ClientResult:
        if self.name == "google-auth":
            return run_python_client(config, env)
        if self.name.startswith("google-auth-"):
            python = REPO / f".venv-{self.name}" / "bin" / "python"
            if not python.exists():
                pytest.fail(f"{python} is missing: scripts/clients.sh installs it")
            return run_python_client(config, env, python=str(python))
        if self.name == "gcloud":
            return run_gcloud(config, env, task.root)
        if self.name == "node":
            return run_node_client(config, env)
        return run_go_client(config, env, go_client_binary(self.tmp), env["STANDIN_TLS_ADDR"], env["STANDIN_CA"])


CLIENT_NAMES = ["google-auth", "google-auth-2.43", "google-auth-oldest", "gcloud", "node", "go"]


@pytest.fixture(params=CLIENT_NAMES)
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driver]:
    yield Driver(request.param, tmp_path_factory.mktemp(request.param))


def test_access_token_is_for_the_allowed_service_account(task: Task, client: Driver) -> None:
    result = client.run(task, ALICE, task.env())
    assert result.ok, result.raw
    assert task.standin.state.access_tokens[str(result.token)] == ALICE
    # One fetch from the host (old google-auth refreshes twice, once to look up the project: our cache serves it).
    assert task.standin.count("identity") == 1 and task.standin.count("sts") >= 1 and task.standin.count("iam") >= 1


@pytest.mark.parametrize(
    ("name", "account", "env", "code"),
    [
        ("account not allowed", OUTSIDER, {}, "SERVICE_ACCOUNT_NOT_ALLOWED"),
        ("context mismatch", ALICE, {"IRIS_TASK_ID": "/bob/train/0"}, "CONTEXT_ENV_MISMATCH"),
        ("policy missing", ALICE, {"IRIS_CREDEXEC_POLICY": "/nonexistent/policy.toml"}, "POLICY_NOT_FOUND"),
    ],
)
def test_refusal_reaches_the_client_error(
    task: Task, client: Driver, name: str, account: str, env: dict[str, str], code: str
) -> None:
    task.standin.grant(OUTSIDER)  # Google would allow it: only iris-credexec stands in the way
    result = client.run(task, account, task.env(**env))
    assert not result.ok
    assert code in result.error, result.raw
    assert task.standin.count("sts") == 0


def test_source_failure_reaches_the_client_error(task: Task, client: Driver) -> None:
    task.standin.state.faults.extend([Fault("status", status=403)])
    result = client.run(task, ALICE, task.env())
    assert not result.ok and "SOURCE_DENIED" in result.error, result.raw


def test_google_refuses_what_iam_does_not_grant(task: Task, client: Driver) -> None:
    # bob is allowed by the policy's glob but not bound in IAM: the stand-in refuses like Google.
    result = client.run(task, BOB, task.env())
    assert not result.ok and task.standin.count("iam") >= 1


class TestOutputFile:
    def test_second_process_reads_the_output_file(self, task: Task, client: Driver) -> None:
        assert client.run(task, ALICE, task.env()).ok
        written = json.loads(task.output_file.read_text())
        assert written["success"] is True and written["expiration_time"] > time.time()
        second = client.run(task, ALICE, task.env())
        assert second.ok, second.raw
        assert len(task.audit_lines()) == 1  # the executable ran once

    @pytest.mark.parametrize(
        "stale",
        [
            {
                "version": 1,
                "success": True,
                "token_type": "urn:ietf:params:oauth:token-type:id_token",
                "id_token": "x.y.z",
                "expiration_time": 1,
            },
            {"version": 1, "success": False, "code": "X", "message": "old failure"},
        ],
        ids=["expired", "failed"],
    )
    def test_stale_output_file_runs_the_executable(self, task: Task, client: Driver, stale: dict[str, object]) -> None:
        task.output_file.write_text(json.dumps(stale))
        result = client.run(task, ALICE, task.env())
        assert result.ok, result.raw
        assert [line["decision"] for line in task.audit_lines()] == ["issued"]
        assert json.loads(task.output_file.read_text())["success"] is True


PASSES_IMPERSONATED_EMAIL = {
    "node": True,
    "go": True,
    "google-auth": False,
    "google-auth-2.43": False,
    "google-auth-oldest": False,
    "gcloud": False,
}


def test_impersonated_email_is_passed_only_by_node_and_go(task: Task, client: Driver) -> None:
    """Without --service-account in the command, only clients that pass the variable get a token."""
    result = client.run(task, ALICE, task.env(), command_args="")
    if PASSES_IMPERSONATED_EMAIL[client.name]:
        assert result.ok, result.raw
        assert task.standin.state.access_tokens[str(result.token)] == ALICE
    else:
        assert not result.ok and "SERVICE_ACCOUNT_REQUIRED" in result.error, result.raw


def test_a_quoted_argument_is_refused_not_misread(task: Task, client: Driver) -> None:
    """Quotes mean different things to each client's splitter; iris-credexec never needs them."""
    result = client.run(task, ALICE, task.env(), command_args=f'--service-account "{ALICE}"')
    # shlex (google-auth 2.44+) and Node strip them; gcloud 528 here vendors google-auth 2.39 (str.split).
    splits_quotes = client.name in ("google-auth", "node")
    if splits_quotes:
        assert result.ok, result.raw
    else:  # str.split (google-auth < 2.44, gcloud 528) and Go's strings.Fields keep the quotes: not an email
        assert not result.ok and "SERVICE_ACCOUNT_INVALID" in result.error, result.raw


def test_generated_config_works_unchanged_in_every_client(task: Task, client: Driver) -> None:
    """The command `iris-credexec config` writes runs as is; only the test rewrites Google's URLs
    to the stand-ins, for the clients that accept other URLs."""
    import subprocess

    from tests.conftest import executable

    config = task.root / "generated.json"
    proc = subprocess.run(
        [executable(), "config", "--audience", task.default_policy()["audiences"]["allow"][0], "--service-account", ALICE,
         "--executable-output-file", str(task.output_file), "--output-file", str(config)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert proc.returncode == 0
    doc = json.loads(config.read_text())
    if not client.google_urls:
        doc["token_url"] = task.standin.token_url()
        doc["service_account_impersonation_url"] = task.standin.impersonation_url(ALICE)
        config.write_text(json.dumps(doc))
    result = client.run_config(task, config, task.env())
    assert result.ok, result.raw
    assert task.standin.state.access_tokens[str(result.token)] == ALICE
