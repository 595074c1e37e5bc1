"""`iris-credexec doctor`: passes a correct setup and names each purpose-broken step."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ALICE, Task, executable
from tests.standins import Fault


def doctor(task: Task, config: Path | None, *args: str, **env: str | None) -> tuple[int, dict[str, object]]:
    environ = task.env(CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE=str(config) if config else "")
    if config:
        environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(config)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    proc = subprocess.run(
        [executable(), "doctor", "--json", *args], env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    report = json.loads(proc.stdout)
    for token in task.standin.state.issued_identity_tokens:
        assert token not in proc.stdout + proc.stderr
    return proc.returncode, report


def statuses(report: dict[str, object]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}  # type: ignore[attr-defined,index]


def test_correct_setup_passes(task: Task) -> None:
    code, report = doctor(task, task.credential_config(ALICE))
    assert code == 0 and report["ok"] is True
    found = statuses(report)
    for name in (
        "credentials file",
        "credential config",
        "command",
        "timeout",
        "service account",
        "allow executables",
        "gcloud",
        "executable: policy",
        "executable: context",
        "executable: source",
        "executable: token",
        "executable: result",
    ):
        assert found[name] == "pass", (name, report)


def test_exchange_runs_google_auth(task: Task) -> None:
    code, report = doctor(task, task.credential_config(ALICE), "--exchange")
    assert code == 0 and statuses(report)["exchange"] == "pass"
    assert task.standin.count("sts") == 1 and task.standin.count("iam") == 1


def rewrite(key: str, value: object) -> Callable[[dict[str, object]], None]:
    def edit(doc: dict[str, object]) -> None:
        target = doc
        *parents, last = key.split(".")
        for p in parents:
            target = target[p]  # type: ignore[assignment]
        target[last] = value

    return edit


@pytest.mark.parametrize(
    ("name", "edit", "env", "failing", "exit_code"),
    [
        ("no GOOGLE_APPLICATION_CREDENTIALS", None, {"GOOGLE_APPLICATION_CREDENTIALS": None}, "credentials file", 1),
        ("not an executable source", rewrite("credential_source", {"file": "/x"}), {}, "credential config", 1),
        (
            "quoted command",
            rewrite("credential_source.executable.command", f'{executable()} --service-account "{ALICE}"'),
            {},
            "command",
            1,
        ),
        (
            "relative command",
            rewrite("credential_source.executable.command", f"iris-credexec --service-account {ALICE}"),
            {},
            "command",
            1,
        ),
        ("timeout out of range", rewrite("credential_source.executable.timeout_millis", 1000), {}, "timeout", 1),
        (
            "account mismatch",
            rewrite(
                "service_account_impersonation_url",
                "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/bob@iris-users.iam.gserviceaccount.com:generateAccessToken",
            ),
            {},
            "service account",
            1,
        ),
        ("executables not allowed", None, {"GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": None}, "allow executables", 1),
        ("no gcloud override", None, {"CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE": None}, "gcloud", 0),
        ("policy missing", None, {"IRIS_CREDEXEC_POLICY": "/nonexistent/policy.toml"}, "executable: result", 1),
        ("context mismatch", None, {"IRIS_TASK_ID": "/bob/x"}, "executable: result", 1),
    ],
)
def test_broken_step_is_named(
    task: Task,
    name: str,
    edit: Callable[[dict[str, object]], None] | None,
    env: dict[str, str | None],
    failing: str,
    exit_code: int,
) -> None:
    config = task.credential_config(ALICE)
    if edit is not None:
        doc = json.loads(config.read_text())
        edit(doc)
        config.write_text(json.dumps(doc))
    code, report = doctor(task, config, **env)
    assert code == exit_code, report
    expected = "warn" if exit_code == 0 else "fail"
    assert statuses(report)[failing] == expected, report
    check = next(c for c in report["checks"] if c["name"] == failing)  # type: ignore[attr-defined]
    assert check["fix"], check


def test_source_down_is_named(task: Task) -> None:
    task.standin.state.faults.extend([Fault("status", status=503)] * 4)
    code, report = doctor(task, task.credential_config(ALICE))
    assert code == 1
    result = next(c for c in report["checks"] if c["name"] == "executable: result")  # type: ignore[attr-defined]
    assert "SOURCE_UNAVAILABLE" in result["detail"]


def test_exchange_names_iam_refusal(task: Task) -> None:
    code, report = doctor(task, task.credential_config("bob@iris-users.iam.gserviceaccount.com"), "--exchange")
    assert code == 1 and statuses(report)["exchange"] == "fail"


def test_human_output(task: Task) -> None:
    environ = task.env()
    environ.pop("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE", None)
    environ["GOOGLE_APPLICATION_CREDENTIALS"] = str(task.credential_config(ALICE))
    proc = subprocess.run(
        [executable(), "doctor"], env=environ, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0
    assert (
        "[PASS] credentials file" in proc.stdout and "[WARN] gcloud" in proc.stdout and "fix: set it to" in proc.stdout
    )
