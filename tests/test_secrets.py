"""The secret scan: tokens appear only in a success response and the 0600 cache and output files.

Every command and failure path runs with real tokens from the metadata stand-in; then
every byte they printed and every file under the task's directory is searched for any
token the stand-in ever issued (whole, or its signature alone).
"""

from __future__ import annotations

import stat
import subprocess

from tests.conftest import ALICE, Task, executable
from tests.standins import Fault

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"


def test_tokens_never_leak(task: Task) -> None:
    runs: list[tuple[str, subprocess.CompletedProcess[str]]] = []

    def run(label: str, args: list[str], **env: str) -> None:
        proc = subprocess.run(
            [executable(), *args],
            env=task.exec_env(**env),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        runs.append((label, proc))

    out = {"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": str(task.output_file)}
    run("exec miss", ["--service-account", ALICE], **out)
    run("exec hit", ["--service-account", ALICE], **out)
    run("exec debug", ["--debug", "--service-account", ALICE], **out)
    run("inspect", ["inspect", "--service-account", ALICE])
    run("inspect json", ["inspect", "--json", "--service-account", ALICE])
    run("cache show", ["cache", "show"])
    run("cache show json", ["cache", "show", "--json"])
    run("refusal", ["--service-account", OUTSIDER])
    # Failure paths after a token was fetched: the token is refused, and must not be quoted.
    policy = task.default_policy()
    task.write_policy(token={**policy["token"], "claims": {"email": "someone-else@p.iam.gserviceaccount.com"}})
    run("claims refused", ["--service-account", ALICE])
    run("claims refused, debug", ["--debug", "--service-account", ALICE])
    run("claims refused, inspect", ["inspect", "--service-account", ALICE])
    task.write_policy(token={**policy["token"], "min_lifetime_seconds": 7200, "refresh_margin_seconds": 60})
    run("lifetime refused", ["--service-account", ALICE])
    task.write_policy()
    task.output_file.unlink()
    task.output_file.mkdir()
    run("output file refused", ["--service-account", ALICE], **out)
    task.output_file.rmdir()
    run("cache clear", ["cache", "clear"])
    quoted = task.standin.state.issued_identity_tokens[0].encode() + b" trailing"
    task.standin.state.faults.extend([Fault("body", payload=quoted), Fault("body", payload=quoted)])
    run("bad body quoting a token", ["--service-account", ALICE])
    run("bad body, inspect", ["inspect", "--service-account", ALICE])

    secrets = set()
    for token in task.standin.state.issued_identity_tokens:
        secrets |= {token, token.rsplit(".", 1)[1]}
    assert len(task.standin.state.issued_identity_tokens) >= 3

    success_stdout = {"exec miss", "exec hit", "exec debug"}
    assert all('"success":true' in dict(runs)[label].stdout for label in success_stdout)
    assert '"success":false' in dict(runs)["bad body quoting a token"].stdout
    for label, proc in runs:
        for secret in secrets:
            assert secret not in proc.stderr, f"{label}: token on stderr"
            if label not in success_stdout:
                assert secret not in proc.stdout, f"{label}: token on stdout"
    # The success responses did carry it (the scan looks at the right thing).
    assert any(s in runs[0][1].stdout for s in secrets)

    allowed_dirs = {task.cache_dir}
    found_in = []
    for path in task.root.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        data = path.read_bytes()
        if any(secret.encode() in data for secret in secrets):
            found_in.append(path)
            assert path.parent in allowed_dirs or path == task.output_file, f"token in {path}"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    audit = task.audit_path.read_text()
    assert audit and not any(secret in audit for secret in secrets)
