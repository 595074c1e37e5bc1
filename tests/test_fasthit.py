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


# --- The fast path never serves what the full path would refuse (property) -------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from iris_credexec import env_vars, response  # noqa: E402
from tests.conftest import write_file_source_policy  # noqa: E402

HOSTILE_TEXT = st.sampled_from(["", "1", "0", "\n", "a\x01", "\udcff", "x" * 3000, " ", "1\n"])


@pytest.fixture(scope="module")
def warm_task(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("fasthit-prop")
    policy = write_file_source_policy(root)
    (root / "run").mkdir(mode=0o700)
    base = {
        env_vars.AUDIENCE: POOL_AUDIENCE,
        env_vars.TOKEN_TYPE: "urn:ietf:params:oauth:token-type:id_token",
        env_vars.POLICY: str(policy),
        "XDG_RUNTIME_DIR": str(root / "run"),
        "IRIS_TASK_ID": "/alice/t/0",
    }
    first = exec_mode.answer(exec_mode.Invocation(environ=base, service_account_flag=ALICE))
    assert isinstance(first, response.Success)
    base["_output"] = str(root / "out.json")
    return base


class _Capture:
    def __init__(self) -> None:
        import io

        self.buffer = io.BytesIO()


def fast_answer(flag: str | None, environ: dict[str, str]) -> tuple[bool, bytes]:
    """fasthit.try_answer in-process: (served, what it printed)."""
    import sys

    captured, real_stdout = _Capture(), sys.stdout
    sys.stdout = captured  # type: ignore[assignment]
    try:
        return fasthit.try_answer(None, flag, environ), captured.buffer.getvalue()
    finally:
        sys.stdout = real_stdout


@given(
    overrides=st.fixed_dictionaries(
        {},
        optional={
            env_vars.AUDIENCE: st.one_of(HOSTILE_TEXT, st.just(POOL_AUDIENCE + "x")),
            env_vars.TOKEN_TYPE: st.one_of(
                HOSTILE_TEXT,
                st.just("urn:ietf:params:oauth:token-type:jwt"),
                st.just("urn:ietf:params:oauth:token-type:saml2"),
            ),
            env_vars.INTERACTIVE: HOSTILE_TEXT,
            env_vars.REVOKE: HOSTILE_TEXT,
            env_vars.IMPERSONATED_EMAIL: st.one_of(HOSTILE_TEXT, st.sampled_from([ALICE, OUTSIDER, ALICE.upper()])),
            env_vars.OUTPUT_FILE: st.one_of(
                HOSTILE_TEXT.filter(lambda v: v in ("", "\n", "a\x01", "\udcff")), st.just("OUT")
            ),
            "IRIS_TASK_ID": st.one_of(HOSTILE_TEXT, st.just("/bob/x"), st.just("/alice/other")),
        },
    ),
    flag=st.one_of(st.just(ALICE), st.none(), st.sampled_from([OUTSIDER, ALICE + ".", "", "a\n"])),
    dropped=st.lists(st.sampled_from([env_vars.AUDIENCE, env_vars.TOKEN_TYPE, "IRIS_TASK_ID"]), max_size=2),
)
@settings(max_examples=400)
@example(overrides={env_vars.INTERACTIVE: "\n"}, flag=ALICE, dropped=[])
@example(overrides={env_vars.REVOKE: "a\x01"}, flag=ALICE, dropped=[])
@example(overrides={env_vars.TOKEN_TYPE: "\n"}, flag=ALICE, dropped=[])
@example(overrides={env_vars.IMPERSONATED_EMAIL: "\udcff"}, flag=ALICE, dropped=[])
@example(overrides={env_vars.OUTPUT_FILE: "a\x01"}, flag=ALICE, dropped=[])
def test_fast_path_serves_only_what_the_full_path_serves(
    warm_task: dict[str, str],
    overrides: dict[str, str],
    flag: str | None,
    dropped: list[str],
) -> None:
    environ = {k: v for k, v in warm_task.items() if not k.startswith("_")}
    environ.update({k: (warm_task["_output"] if v == "OUT" else v) for k, v in overrides.items()})
    for name in dropped:
        environ.pop(name, None)
    served, printed = fast_answer(flag, environ)
    if not served:
        return
    full = exec_mode.answer(exec_mode.Invocation(environ=environ, service_account_flag=flag))
    assert isinstance(full, response.Success), (overrides, flag, full)
    assert printed.decode() == response.render(full) + "\n"


def test_the_property_reaches_the_fast_path(warm_task: dict[str, str]) -> None:
    """Guard for the property above: with a clean environment the fast path does serve."""
    environ = {k: v for k, v in warm_task.items() if not k.startswith("_")}
    served, printed = fast_answer(ALICE, environ)
    assert served and b'"success":true' in printed
