"""`iris-credexec config`: valid configs whose command every client splits the same way."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import google.auth
import google.auth.pluggable
import pytest

from iris_credexec.ops import config as cfg
from tests.conftest import ALICE, executable
from tests.standins import POOL_AUDIENCE


def generate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([executable(), "config", *args], capture_output=True, text=True, timeout=60, check=False)


def test_generated_config_loads_in_google_auth(tmp_path: Path) -> None:
    out = tmp_path / "credentials.json"
    proc = generate(
        "--project-number", "123", "--pool", "iris", "--provider", "workers",
        "--service-account", ALICE, "--policy", "/etc/iris-credexec/policy.toml",
        "--executable-output-file", "/tmp/iris-credexec-output.json", "--executable-timeout-millis", "20000",
        "--service-account-token-lifetime-seconds", "1800", "--output-file", str(out),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    credentials, _ = google.auth.load_credentials_from_file(str(out))
    assert isinstance(credentials, google.auth.pluggable.Credentials)
    doc = json.loads(out.read_text())
    assert doc["audience"] == POOL_AUDIENCE
    assert doc["token_url"] == "https://sts.googleapis.com/v1/token"
    assert doc["service_account_impersonation_url"].endswith(f"/serviceAccounts/{ALICE}:generateAccessToken")
    assert doc["service_account_impersonation"] == {"token_lifetime_seconds": 1800}
    source = doc["credential_source"]["executable"]
    assert source == {
        "command": f"{executable()} --service-account {ALICE} --policy /etc/iris-credexec/policy.toml",
        "timeout_millis": 20000,
        "output_file": "/tmp/iris-credexec-output.json",
    }
    assert source["command"].split(" ") == source["command"].split()  # Java's and Go's splitting agree


def test_defaults_to_this_program() -> None:
    doc = json.loads(generate("--audience", POOL_AUDIENCE, "--service-account", ALICE).stdout)
    assert doc["credential_source"]["executable"]["command"].split()[0] == executable()
    assert doc["credential_source"]["executable"]["timeout_millis"] == 30000


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--executable", "/opt/iris credexec"], "spaces, quotes"),
        (["--executable", '/opt/"iris"'], "spaces, quotes"),
        (["--executable", "C:\\iris.exe"], "absolute path"),
        (["--executable", "/opt/a\\b"], "spaces, quotes"),
        (["--executable", "/opt/$(id)"], "spaces, quotes"),
        (["--executable", "iris-credexec"], "absolute path"),
        (["--policy", "relative.toml"], "absolute"),
        (["--policy", "/etc/my policy.toml"], "spaces, quotes"),
        (["--executable-timeout-millis", "4999"], "5000-120000"),
        (["--executable-timeout-millis", "120001"], "5000-120000"),
        (["--service-account", "Alice@X.iam.gserviceaccount.com"], "service account email"),
        (["--service-account-token-lifetime-seconds", "60"], "600-43200"),
    ],
)
def test_refuses_what_a_client_would_misread(args: list[str], problem: str) -> None:
    base = ["--audience", POOL_AUDIENCE, "--service-account", ALICE]
    if "--service-account" in args:
        base = ["--audience", POOL_AUDIENCE]
    proc = generate(*base, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert problem in proc.stderr, proc.stderr


@pytest.mark.parametrize("millis", [5000, 120000])
def test_timeout_bounds_are_inclusive(millis: int) -> None:
    doc = cfg.build(
        audience=POOL_AUDIENCE, service_account=ALICE, executable="/usr/local/bin/iris-credexec", timeout_millis=millis
    )
    assert doc["credential_source"]["executable"]["timeout_millis"] == millis


def test_needs_an_audience() -> None:
    proc = generate("--service-account", ALICE, "--pool", "iris")
    assert proc.returncode == 2 and "--project-number" in proc.stderr
