"""`iris-credexec plan`: the Google side, printed, per mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from iris_credexec.ops.plan import PlanError, read_users
from tests.conftest import ALICE, BOB, executable

POOL_PATH = "projects/123/locations/global/workloadIdentityPools/iris"


def run_plan(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    users = tmp_path / "users.toml"
    users.write_text(f'[users]\nalice = "{ALICE}"\nbob = "{BOB}"\n')
    base = [
        "plan",
        "--project-number",
        "123",
        "--project-id",
        "proj",
        "--pool",
        "iris",
        "--provider",
        "workers",
        "--users",
        str(users),
    ]
    return subprocess.run([executable(), *base, *args], capture_output=True, text=True, timeout=60, check=False)


def test_broker_mode_grants_each_account_to_its_user_only(tmp_path: Path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text('{"keys": []}')
    proc = run_plan(tmp_path, "--jwks-file", str(jwks), "--issuer", "https://iris-broker.internal")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "gcloud iam workload-identity-pools create iris --project=proj --location=global" in out
    assert "providers create-oidc workers" in out and f"--jwk-json-path={jwks}" in out
    assert "--attribute-mapping=google.subject=assertion.sub,attribute.user=assertion.user" in out
    assert """--attribute-condition='assertion.iss == "https://iris-broker.internal"'""" in out
    alice = f"add-iam-policy-binding {ALICE} --project=proj --role=roles/iam.workloadIdentityUser --member=principal://iam.googleapis.com/{POOL_PATH}/subject/iris:user:alice"
    bob = f"add-iam-policy-binding {BOB} --project=proj --role=roles/iam.workloadIdentityUser --member=principal://iam.googleapis.com/{POOL_PATH}/subject/iris:user:bob"
    assert alice in out and bob in out
    assert "subject/iris:user:bob" not in next(line for line in out.splitlines() if ALICE in line)
    assert "WARNING" not in out


def test_metadata_mode_says_plainly_that_isolation_is_in_the_container(tmp_path: Path) -> None:
    proc = run_plan(tmp_path, "--metadata-principal", "104000000000000000001")
    assert proc.returncode == 0, proc.stderr
    first = proc.stdout.splitlines()[0]
    assert first.startswith("# WARNING")
    assert "checks inside the container" in proc.stdout
    assert proc.stdout.count(f"principal://iam.googleapis.com/{POOL_PATH}/subject/104000000000000000001") == 2
    assert "--issuer-uri=https://accounts.google.com" in proc.stdout


@pytest.mark.parametrize(
    "args",
    [[], ["--metadata-principal", "1", "--jwks-file", __file__, "--issuer", "https://x"], ["--jwks-file", __file__]],
)
def test_mode_must_be_clear(tmp_path: Path, args: list[str]) -> None:
    assert run_plan(tmp_path, *args).returncode == 2


def test_users_csv_and_bad_entries() -> None:
    assert read_users(f"user,service_account\nalice,{ALICE}\n", "u.csv") == {"alice": ALICE}
    for text, name in [("alice,not-an-email\n", "u.csv"), ('[users]\n"Al ice" = "x"\n', "u.toml"), ("", "u.csv")]:
        with pytest.raises(PlanError):
            read_users(text, name)
