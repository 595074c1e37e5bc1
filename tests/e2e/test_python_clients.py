"""The real google-auth and gcloud drive the real executable through STS and impersonation."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ALICE, BOB, ClientResult, Task, run_gcloud, run_python_client
from tests.standins import Fault

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"


def google_auth(task: Task, config: Path, env: dict[str, str]) -> ClientResult:
    return run_python_client(config, env)


def gcloud(task: Task, config: Path, env: dict[str, str]) -> ClientResult:
    return run_gcloud(config, env, task.root)


CLIENTS = {"google-auth": google_auth, "gcloud": gcloud}
Client = Callable[[Task, Path, dict[str, str]], ClientResult]


@pytest.fixture(params=sorted(CLIENTS))
def client(request: pytest.FixtureRequest) -> Client:
    return CLIENTS[request.param]


def test_access_token_is_for_the_allowed_service_account(task: Task, client: Client) -> None:
    result = client(task, task.credential_config(ALICE), task.env())
    assert result.ok, result.raw
    assert task.standin.state.access_tokens[str(result.token)] == ALICE
    assert (task.standin.count("identity"), task.standin.count("sts"), task.standin.count("iam")) == (1, 1, 1)


@pytest.mark.parametrize(
    ("name", "account", "env", "code"),
    [
        ("account not allowed", OUTSIDER, {}, "SERVICE_ACCOUNT_NOT_ALLOWED"),
        ("context mismatch", ALICE, {"IRIS_TASK_ID": "/bob/train/0"}, "CONTEXT_ENV_MISMATCH"),
        ("policy missing", ALICE, {"IRIS_CREDEXEC_POLICY": "/nonexistent/policy.toml"}, "POLICY_NOT_FOUND"),
    ],
)
def test_refusal_reaches_the_client_error(
    task: Task, client: Client, name: str, account: str, env: dict[str, str], code: str
) -> None:
    task.standin.grant(OUTSIDER)  # Google would allow it: only iris-credexec stands in the way
    result = client(task, task.credential_config(account), task.env(**env))
    assert not result.ok
    assert code in result.error, result.raw
    assert task.standin.count("sts") == 0


def test_source_failure_reaches_the_client_error(task: Task, client: Client) -> None:
    task.standin.state.faults.extend([Fault("status", status=403)])
    result = client(task, task.credential_config(ALICE), task.env())
    assert not result.ok and "SOURCE_DENIED" in result.error, result.raw


def test_google_refuses_what_iam_does_not_grant(task: Task, client: Client) -> None:
    # bob is allowed by the policy's glob but not bound in IAM: the stand-in refuses like Google.
    result = client(task, task.credential_config(BOB), task.env())
    assert not result.ok and task.standin.count("iam") >= 1


class TestOutputFile:
    def test_second_process_reads_the_output_file(self, task: Task, client: Client) -> None:
        config = task.credential_config(ALICE)
        assert client(task, config, task.env()).ok
        written = json.loads(task.output_file.read_text())
        assert written["success"] is True and written["expiration_time"] > time.time()
        second = client(task, config, task.env())
        assert second.ok
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
    def test_stale_output_file_runs_the_executable(self, task: Task, client: Client, stale: dict[str, object]) -> None:
        task.output_file.write_text(json.dumps(stale))
        result = client(task, task.credential_config(ALICE), task.env())
        assert result.ok, result.raw
        assert [line["decision"] for line in task.audit_lines()] == ["issued"]
        assert json.loads(task.output_file.read_text())["success"] is True
