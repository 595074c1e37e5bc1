"""The cache-hit fast path: cheap, and never serves what the full path would refuse."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from iris_credexec import exec_mode, fasthit, policy
from tests.conftest import ALICE, Task, assert_refusal, executable, run_exec
from tests.standins import POOL_AUDIENCE

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"


def warm(task: Task) -> dict[str, object]:
    doc = run_exec(["--service-account", ALICE], task.exec_env()).json
    assert doc["success"] is True
    return doc


def test_constants_match_the_full_path() -> None:
    assert fasthit.POLICY_SIZE_LIMIT == policy.POLICY_SIZE_LIMIT
    assert fasthit.DEFAULT_POLICY_PATH == policy.DEFAULT_POLICY_PATH
    assert fasthit.SNAPSHOT_FORMAT == exec_mode.SNAPSHOT_FORMAT


def imported_modules(task: Task, args: list[str], **env: str) -> set[str]:
    proc = subprocess.run(
        [str(Path(executable()).parent / "python"), "-X", "importtime", executable(), *args],
        env=task.exec_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert json.loads(proc.stdout)["success"] is True
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.skipif(bool(os.environ.get("IRIS_CREDEXEC_BIN")), reason="import tracing needs the source install")
def test_a_hit_loads_none_of_the_heavy_machinery(task: Task) -> None:
    cold = imported_modules(task, ["--service-account", ALICE])
    assert "tomllib" in cold and "iris_credexec.exec_mode" in cold  # the miss took the full path
    hot = imported_modules(task, ["--service-account", ALICE])
    for heavy in (
        "tomllib",
        "typing",
        "dataclasses",
        "click",
        "jwt",
        "cryptography",
        "socket",
        "iris_credexec.exec_mode",
    ):
        assert heavy not in hot, heavy


def test_fast_and_full_hits_answer_and_audit_alike(task: Task) -> None:
    first = warm(task)
    fast = run_exec(["--service-account", ALICE], task.exec_env())
    full = run_exec(["--debug", "--service-account", ALICE], task.exec_env())  # --debug takes the full path
    assert fast.json == full.json == first
    _, fast_line, full_line = task.audit_lines()
    assert fast_line["cache"] == full_line["cache"] == "hit"
    assert set(fast_line) == set(full_line)
    assert {k: v for k, v in fast_line.items() if k not in ("pid", "time", "elapsed_ms")} == {
        k: v for k, v in full_line.items() if k not in ("pid", "time", "elapsed_ms")
    }


def test_hit_writes_the_output_file(task: Task) -> None:
    doc = warm(task)
    run_exec(["--service-account", ALICE], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file)))
    assert json.loads(task.output_file.read_text()) == doc


@pytest.mark.parametrize(
    ("name", "args", "env", "code"),
    [
        ("context", ["--service-account", ALICE], {"IRIS_TASK_ID": "/bob/x"}, "CONTEXT_ENV_MISMATCH"),
        (
            "audience",
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE + "x"},
            "AUDIENCE_NOT_ALLOWED",
        ),
        ("account", ["--service-account", OUTSIDER], {}, "SERVICE_ACCOUNT_NOT_ALLOWED"),
        (
            "mismatch",
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": OUTSIDER},
            "SERVICE_ACCOUNT_MISMATCH",
        ),
        (
            "interactive",
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "1"},
            "INTERACTIVE_UNSUPPORTED",
        ),
        (
            "saml",
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:saml2"},
            "TOKEN_TYPE_UNSUPPORTED",
        ),
        (
            "newline",
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE + "\n"},
            "REQUEST_INVALID",
        ),
    ],
)
def test_warm_cache_never_bypasses_a_refusal(
    task: Task, name: str, args: list[str], env: dict[str, str], code: str
) -> None:
    warm(task)
    assert_refusal(run_exec(args, task.exec_env(**env)), code)


def test_policy_edits_bypass_the_snapshot(task: Task) -> None:
    warm(task)
    task.write_policy(service_accounts={"allow": [OUTSIDER]})
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "SERVICE_ACCOUNT_NOT_ALLOWED")
    task.write_policy(context={"uids": [os.getuid() + 1]})
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "CONTEXT_UID_NOT_ALLOWED")


def test_unsafe_policy_file_is_never_served_from_cache(task: Task) -> None:
    warm(task)
    task.policy_path.chmod(0o666)
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "POLICY_UNSAFE")


def test_symlinked_output_file_is_refused_on_a_hit(task: Task) -> None:
    warm(task)
    victim = task.root / "victim"
    victim.write_text("precious")
    task.output_file.symlink_to(victim)
    assert_refusal(
        run_exec(
            ["--service-account", ALICE], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file))
        ),
        "OUTPUT_FILE_UNSAFE",
    )
    assert victim.read_text() == "precious"


def test_snapshot_open_to_others_is_ignored(task: Task) -> None:
    warm(task)
    (snapshot,) = task.cache_dir.glob("policy-*.json")
    doc = json.loads(snapshot.read_text())
    doc["context_env"] = []  # a widened snapshot...
    snapshot.write_text(json.dumps(doc))
    snapshot.chmod(0o644)  # ...that others could have written: not trusted
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env(IRIS_TASK_ID="/bob/x")), "CONTEXT_ENV_MISMATCH")
