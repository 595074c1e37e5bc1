"""Person-run commands: --help, --version, inspect, cache show and clear."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import ALICE, Task, executable, run_exec


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [executable(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_help_and_version(task: Task) -> None:
    help_text = run(["--help"], task.env()).stdout
    for word in ("executable mode", "inspect", "cache", "--service-account", "--policy"):
        assert word in help_text
    version = run(["--version"], task.env())
    assert version.returncode == 0
    from iris_credexec import __version__

    assert version.stdout.startswith(f"iris-credexec {__version__} (commit ")


def test_inspect_reports_each_step_without_the_token(task: Task) -> None:
    proc = run(["inspect", "--service-account", ALICE], task.exec_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for step in (
        "[PASS] policy",
        "[PASS] audience",
        "[PASS] service account",
        "[PASS] context",
        "[PASS] source",
        "[PASS] token",
    ):
        assert step in proc.stdout
    assert "[WARN] policy writable" in proc.stdout  # the test owns its policy file
    assert "email:" in proc.stdout and "result: success" in proc.stdout
    token = task.standin.state.issued_identity_tokens[-1]
    assert token not in proc.stdout + proc.stderr


def test_inspect_show_token_and_json(task: Task) -> None:
    proc = run(["inspect", "--service-account", ALICE, "--show-token", "--json"], task.exec_env())
    report = json.loads(proc.stdout)
    assert report["ok"] is True and report["token"] == task.standin.state.issued_identity_tokens[-1]
    assert report["claims"]["aud"].startswith("//iam.googleapis.com/")


def test_inspect_takes_audience_flag_and_fails_with_status_1(task: Task) -> None:
    env = task.env()
    proc = run(["inspect", "--service-account", ALICE, "--audience", "//wrong"], env)
    assert proc.returncode == 1
    assert "AUDIENCE_NOT_ALLOWED" in proc.stdout and "[FAIL]" in proc.stdout


def test_inspect_does_not_touch_the_output_file(task: Task) -> None:
    run(
        ["inspect", "--service-account", ALICE],
        task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file)),
    )
    assert not task.output_file.exists()


def test_cache_show_and_clear(task: Task) -> None:
    token = run_exec(["--service-account", ALICE], task.exec_env()).json["id_token"]
    shown = run(["cache", "show", "--json"], task.env())
    doc = json.loads(shown.stdout)
    (entry,) = doc["entries"]
    assert entry["service_account"] == ALICE and entry["fresh"] is True and entry["expires_in_seconds"] > 3000
    assert str(token) not in shown.stdout
    cleared = run(["cache", "clear"], task.env())
    assert cleared.returncode == 0 and "removed" in cleared.stdout
    assert json.loads(run(["cache", "show", "--json"], task.env()).stdout)["entries"] == []


def test_usage_error_for_a_person_is_not_json(task: Task) -> None:
    proc = run(["--frobnicate"], task.env())
    assert proc.returncode == 2 and "No such option" in proc.stderr
