"""The main job, on an embedded default: no GCP, no network.

A task of user alice runs a Python program that uses application default
credentials. Its GOOGLE_APPLICATION_CREDENTIALS names an external_account
config whose executable is iris-credexec; the host's policy allows alice's
service account only. Local stand-ins play the metadata server, STS and IAM
Credentials on 127.0.0.1. The real google-auth client does the rest.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iris_credexec.ops import config as credential_config  # noqa: E402
from tests.standins import POOL_AUDIENCE, WORKER_EMAIL, GoogleStandIn  # noqa: E402

ALICE = "alice@iris-users.iam.gserviceaccount.com"
BOB = "bob@iris-users.iam.gserviceaccount.com"
CLIENT = REPO / "tests" / "clients" / "python" / "client.py"


def short(token: str) -> str:
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def main() -> int:
    executable = Path(sys.executable).parent / "iris-credexec"
    with tempfile.TemporaryDirectory(prefix="iris-credexec-demo-") as tmp, GoogleStandIn() as google:
        root = Path(tmp)
        root.chmod(0o755)
        google.grant(ALICE)  # IAM: the workers' principal may impersonate alice's account
        google.grant(BOB)
        (root / "run").mkdir(mode=0o700)
        (root / "home").mkdir(mode=0o700)
        policy = root / "policy.toml"
        policy.write_text(
            f"""version = 1
[audiences]
allow = ["{POOL_AUDIENCE}"]
[service_accounts]
allow = ["{ALICE}"]
[context]
env = {{ IRIS_TASK_ID = "/alice/.*" }}
[source]
kind = "metadata"
host = "{google.host}"
[token]
issuers = ["https://accounts.google.com"]
claims = {{ email = "{WORKER_EMAIL}" }}
[audit]
path = "{root / "audit.jsonl"}"
"""
        )
        policy.chmod(0o644)

        def config(account: str) -> Path:
            """What `iris-credexec config` writes, with the stand-ins' URLs instead of Google's."""
            name = account.split("@")[0]
            path = root / f"credentials-{name}.json"
            document = credential_config.build(
                audience=POOL_AUDIENCE,
                service_account=account,
                executable=str(executable),
                output_file=str(root / "home" / f"output-{name}.json"),
                token_url=google.token_url(),
                impersonation_url=google.impersonation_url("{email}"),
            )
            path.write_text(credential_config.render(document))
            return path

        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root / "home"),
            "XDG_RUNTIME_DIR": str(root / "run"),
            "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1",
            "GOOGLE_CLOUD_PROJECT": "demo-project",
            "IRIS_CREDEXEC_POLICY": str(policy),
            "IRIS_TASK_ID": "/alice/train/0:0",
        }

        def run_client(account: str) -> dict[str, object]:
            out = subprocess.run(
                [sys.executable, str(CLIENT)],
                env={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(config(account))},
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
            return result

        print(f"stand-ins for metadata, STS and IAM Credentials on {google.url}")
        print(f"policy {policy}: audience {POOL_AUDIENCE}, service account {ALICE} only\n")

        print(f"1. alice's task asks google-auth for {ALICE}")
        first = run_client(ALICE)
        if not first["ok"]:
            print(f"   FAILED: {first['error']}")
            return 1
        token = str(first["token"])
        granted = google.state.access_tokens.get(token)
        print(f"   access token {short(token)} for {granted} (google-auth {first['google_auth']})")
        print(
            f"   metadata identity requests: {google.count('identity')}, STS: {google.count('sts')}, IAM: {google.count('iam')}"
        )

        print("\n2. a second process of the same task: google-auth reads iris-credexec's output file")
        second = run_client(ALICE)
        print(f"   ok={second['ok']}; metadata identity requests still {google.count('identity')}")

        print(f"\n3. the same task asks for {BOB}: the policy refuses before any token is fetched")
        third = run_client(BOB)
        print(f"   ok={third['ok']}: {str(third.get('error'))[:300]}")

        print("\naudit log (tokens only as hashes):")
        for line in (root / "audit.jsonl").read_text().splitlines():
            record = json.loads(line)
            print(
                f"   {record['decision']:8} {record.get('code') or '':28} target={record.get('target')} cache={record.get('cache')} token={record.get('token')}"
            )
        ok = bool(first["ok"]) and granted == ALICE and bool(second["ok"]) and not third["ok"]
        print("\ndemo " + ("passed" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
