"""`iris-credexec plan`: the gcloud commands that set up the Google side. Prints; never runs.

Two modes, by where the tasks' tokens come from:
- broker (`--jwks-file`): per-task tokens from the host broker's own issuer, `sub` =
  `iris:user:<user>`; each user's service account is granted to that user's principal
  only, so Google itself refuses a task another user's account.
- metadata (`--metadata-principal`): every task on a worker presents the worker's
  identity, so only the workers' principal can be granted: isolation then rests on the
  checks inside the container, and the plan says so first.
"""

from __future__ import annotations

import csv
import io
import json
import re
import shlex
from collections.abc import Mapping
from typing import Any

from ..decide import is_service_account_email

GOOGLE_ISSUER = "https://accounts.google.com"
_USER = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")


class PlanError(ValueError):
    pass


def read_users(text: str, name: str) -> dict[str, str]:
    """user -> service account, from TOML ([users] alice = "...") or CSV (user,service_account)."""
    users: dict[str, str] = {}
    items: list[tuple[Any, ...]]
    if name.endswith(".toml"):
        import tomllib

        try:
            table = tomllib.loads(text).get("users", {})
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"{name}: {exc}") from None
        if not isinstance(table, dict):
            raise PlanError(f"{name}: [users] must be a table of user = service account")
        items = list(table.items())
    else:
        items = [tuple(row) for row in csv.reader(io.StringIO(text)) if row and not row[0].startswith("#")]
        if items and items[0] == ("user", "service_account"):
            items = items[1:]
    for item in items:
        if len(item) != 2 or not isinstance(item[1], str):
            raise PlanError(f"{name}: each entry is a user and a service account, got {item!r}")
        user, account = str(item[0]).strip(), item[1].strip()
        if not _USER.fullmatch(user):
            raise PlanError(f"{name}: user {user!r} must be lowercase letters, digits, '.', '_' or '-'")
        if not is_service_account_email(account):
            raise PlanError(f"{name}: {account!r} is not a service account email")
        users[user] = account
    if not users:
        raise PlanError(f"{name}: no users")
    return users


def plan(
    *,
    project_number: str,
    project_id: str,
    pool: str,
    provider: str,
    users: Mapping[str, str],
    issuer: str,
    jwks_file: str | None,
    metadata_principal: str | None,
    subject_template: str = "iris:user:{user}",
) -> str:
    if not project_number.isdigit():
        raise PlanError("--project-number must be the numeric project number")
    if (jwks_file is None) == (metadata_principal is None):
        raise PlanError(
            "give --jwks-file (per-task tokens from the host broker) or --metadata-principal (worker tokens), not both"
        )
    q = shlex.quote
    pool_path = f"projects/{project_number}/locations/global/workloadIdentityPools/{pool}"
    audience = f"//iam.googleapis.com/{pool_path}/providers/{provider}"
    out: list[str] = []
    if metadata_principal is not None:
        out += [
            "# WARNING: metadata-sourced tokens. Every task on a worker presents the same identity",
            f"# ({metadata_principal}), so Google cannot tell one user's task from another's: each",
            "# binding below admits every task on the workers. Isolation between users rests on the",
            "# checks inside the container (the policy), which a hostile task can bypass by calling",
            "# the metadata server itself. Use the host broker (--jwks-file) for isolation Google enforces.",
            "",
        ]
    out += [
        f"# Audience for credential configs and policies: {audience}",
        "",
        "# 1. The workload identity pool.",
        f"gcloud iam workload-identity-pools create {q(pool)} --project={q(project_id)} --location=global --display-name={q('Iris tasks')}",
        "",
        "# 2. The OIDC provider for the tasks' tokens.",
    ]
    provider_cmd = [
        f"gcloud iam workload-identity-pools providers create-oidc {q(provider)}",
        f"--project={q(project_id)} --location=global --workload-identity-pool={q(pool)}",
        f"--issuer-uri={q(issuer)}",
    ]
    if jwks_file is not None:
        provider_cmd.append(f"--jwk-json-path={q(jwks_file)}")  # uploaded keys: no public issuer URL needed
        provider_cmd.append(f"--attribute-mapping={q('google.subject=assertion.sub,attribute.user=assertion.user')}")
    else:
        provider_cmd.append(f"--attribute-mapping={q('google.subject=assertion.sub')}")
    provider_cmd.append(f"--attribute-condition={q(f'assertion.iss == {json.dumps(issuer)}')}")
    out.append(" \\\n    ".join(provider_cmd))
    out += ["", "# 3. Who may impersonate each user's service account."]
    for user, account in sorted(users.items()):
        subject = subject_template.format(user=user) if jwks_file is not None else str(metadata_principal)
        member = f"principal://iam.googleapis.com/{pool_path}/subject/{subject}"
        out.append(
            f"gcloud iam service-accounts add-iam-policy-binding {q(account)} --project={q(project_id)} "
            f"--role=roles/iam.workloadIdentityUser --member={q(member)}"
            + (f"  # {user} only" if jwks_file is not None else f"  # {user}: any task on the workers")
        )
    return "\n".join(out) + "\n"
