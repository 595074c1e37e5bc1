"""Executable mode through the real executable: the contract on stdout, stderr and exit status."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import jwt
import pytest

from iris_credexec import exec_mode
from iris_credexec.errors import Code
from iris_credexec.response import Failure
from tests.conftest import ALICE, BOB, Task, assert_refusal, run_exec
from tests.standins import POOL_AUDIENCE, Fault

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"


def success(task: Task, args: list[str] | None = None, **env: str) -> dict[str, object]:
    result = run_exec(args if args is not None else ["--service-account", ALICE], task.exec_env(**env))
    assert result.returncode == 0 and result.stderr == "", result
    doc = result.json
    assert doc["success"] is True, doc
    return doc


def test_success_response(task: Task) -> None:
    doc = success(task)
    assert set(doc) == {"version", "success", "token_type", "id_token", "expiration_time"}
    assert doc["version"] == 1 and doc["token_type"] == "urn:ietf:params:oauth:token-type:id_token"
    claims = jwt.decode(str(doc["id_token"]), options={"verify_signature": False})
    assert claims["aud"] == POOL_AUDIENCE
    # expiration_time is the token's exp minus the refresh margin, in integer seconds
    assert type(doc["expiration_time"]) is int and doc["expiration_time"] == claims["exp"] - 60


def test_jwt_token_type_is_echoed(task: Task) -> None:
    doc = success(task, GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE="urn:ietf:params:oauth:token-type:jwt")
    assert doc["token_type"] == "urn:ietf:params:oauth:token-type:jwt"


def test_impersonated_email_alone_is_enough(task: Task) -> None:
    success(task, [], GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL=ALICE)


def test_output_file_matches_stdout(task: Task) -> None:
    doc = success(task, GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file))
    assert json.loads(task.output_file.read_text()) == doc
    assert stat.S_IMODE(task.output_file.stat().st_mode) == 0o600


def test_failure_removes_a_stale_output_file(task: Task) -> None:
    task.output_file.write_text('{"version": 1, "success": true, "expiration_time": 1}')
    assert_refusal(
        run_exec(
            ["--service-account", OUTSIDER], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file))
        ),
        "SERVICE_ACCOUNT_NOT_ALLOWED",
    )
    assert not task.output_file.exists()


REFUSALS = [
    (
        "policy missing",
        {},
        {"IRIS_CREDEXEC_POLICY": "/nonexistent/policy.toml"},
        ["--service-account", ALICE],
        "POLICY_NOT_FOUND",
    ),
    ("no audience", {}, {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": ""}, ["--service-account", ALICE], "MISSING_AUDIENCE"),
    (
        "audience",
        {},
        {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE + "-other"},
        ["--service-account", ALICE],
        "AUDIENCE_NOT_ALLOWED",
    ),
    ("other account", {}, {}, ["--service-account", OUTSIDER], "SERVICE_ACCOUNT_NOT_ALLOWED"),
    ("no account", {}, {}, [], "SERVICE_ACCOUNT_REQUIRED"),
    (
        "mismatch",
        {},
        {"GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": BOB},
        ["--service-account", ALICE],
        "SERVICE_ACCOUNT_MISMATCH",
    ),
    ("bad email", {}, {}, ["--service-account", "ALICE@x"], "SERVICE_ACCOUNT_INVALID"),
    ("twice", {}, {}, ["--service-account", ALICE, "--service-account", ALICE], "REQUEST_INVALID"),
    ("unknown flag", {}, {}, ["--frobnicate"], "REQUEST_INVALID"),
    (
        "interactive",
        {},
        {"GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "1"},
        ["--service-account", ALICE],
        "INTERACTIVE_UNSUPPORTED",
    ),
    (
        "saml",
        {},
        {"GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:saml2"},
        ["--service-account", ALICE],
        "TOKEN_TYPE_UNSUPPORTED",
    ),
    ("env missing", {}, {"IRIS_TASK_ID": None}, ["--service-account", ALICE], "CONTEXT_ENV_MISSING"),
    ("env mismatch", {}, {"IRIS_TASK_ID": "/bob/train/0"}, ["--service-account", ALICE], "CONTEXT_ENV_MISMATCH"),
    ("uid", {"context": {"uids": [os.getuid() + 1]}}, {}, ["--service-account", ALICE], "CONTEXT_UID_NOT_ALLOWED"),
    (
        "claims",
        {"token": {"claims": {"email": "other@p.iam.gserviceaccount.com"}}},
        {},
        ["--service-account", ALICE],
        "TOKEN_CLAIM_MISMATCH",
    ),
    (
        "issuer",
        {"token": {"issuers": ["https://broker.example"]}},
        {},
        ["--service-account", ALICE],
        "TOKEN_ISSUER_NOT_ALLOWED",
    ),
    (
        "min lifetime",
        {"token": {"min_lifetime_seconds": 7200}},
        {},
        ["--service-account", ALICE],
        "TOKEN_EXPIRES_TOO_SOON",
    ),
]


@pytest.mark.parametrize(("name", "tables", "env", "args", "code"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_refusals(
    task: Task, name: str, tables: dict[str, object], env: dict[str, str | None], args: list[str], code: str
) -> None:
    if tables:
        task.write_policy(**tables)
    environ = task.exec_env()
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    doc = assert_refusal(run_exec(args, environ), code)
    assert "eyJ" not in doc["message"]  # never a token, whatever failed


def test_source_down_is_reported_in_time(task: Task) -> None:
    task.write_policy(
        source={"kind": "metadata", "host": task.standin.host, "timeout_seconds": 0.5, "deadline_seconds": 1.5}
    )
    task.standin.state.faults.extend([Fault("hang", seconds=4)] * 5)
    started = time.monotonic()
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "SOURCE_TIMEOUT")
    assert time.monotonic() - started < 5


def test_unexpected_exception_is_internal_without_details(task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_a: object, **_k: object) -> None:
        raise RuntimeError("secret detail eyJhbGciOi")

    monkeypatch.setattr("iris_credexec.context.check", explode)
    outcome = exec_mode.answer(exec_mode.Invocation(environ=task.exec_env(), service_account_flag=ALICE))
    assert isinstance(outcome, Failure) and outcome.code == Code.INTERNAL.name
    assert "RuntimeError" in outcome.message and "secret" not in outcome.message


def test_revoke_drops_the_cache(task: Task) -> None:
    success(task)
    result = run_exec(["--service-account", ALICE], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_REVOKE="1"))
    assert result.json == {"version": 1, "success": True} and result.stderr == ""
    success(task)
    assert task.standin.count("identity") == 2


def test_audit_line_per_invocation_without_token(task: Task) -> None:
    token = success(task)["id_token"]
    assert_refusal(run_exec(["--service-account", OUTSIDER], task.exec_env()), "SERVICE_ACCOUNT_NOT_ALLOWED")
    lines = task.audit_lines()
    assert [line["decision"] for line in lines] == ["issued", "refused"]
    issued, refused = lines
    assert issued["target"] == ALICE and issued["audience"] == POOL_AUDIENCE and issued["source"] == "metadata"
    assert issued["sub"] and issued["iss"] == "https://accounts.google.com" and issued["exp"] > time.time()
    assert len(issued["token"]) == 16 and issued["cache"] == "miss"
    assert refused["code"] == "SERVICE_ACCOUNT_NOT_ALLOWED"
    assert str(token) not in task.audit_path.read_text()
    assert stat.S_IMODE(task.audit_path.stat().st_mode) == 0o600


def test_fast_path_and_click_path_agree(task: Task) -> None:
    fast = success(task)
    # The same flags through the click CLI (the fast path only skips importing click).
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from iris_credexec.main import main; sys.exit(main(sys.argv[1:]))",
            "--service-account",
            ALICE,
        ],
        env=task.exec_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == fast


def test_debug_goes_to_stderr_only(task: Task) -> None:
    result = run_exec(["--debug", "--service-account", ALICE], task.exec_env())
    assert result.json["success"] is True
    assert "[iris-credexec] ok   policy" in result.stderr
    assert str(result.json["id_token"]) not in result.stderr
