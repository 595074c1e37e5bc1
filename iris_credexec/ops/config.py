"""`iris-credexec config`: an external_account credential config whose command every client runs the same way."""

from __future__ import annotations

import json
import os
import re
import sys
from typing import Any

from ..decide import ID_TOKEN_TYPE, JWT_TOKEN_TYPE, is_service_account_email

STS_URL = "https://sts.googleapis.com/v1/token"
IMPERSONATION_URL = "https://iamcredentials.googleapis.com/v1/projects/-/serviceAccounts/{email}:generateAccessToken"
TIMEOUT_MIN, TIMEOUT_MAX, TIMEOUT_DEFAULT = 5_000, 120_000, 30_000
LIFETIME_MIN, LIFETIME_MAX = 600, 43_200
# What survives every client's splitter unchanged: Go (strings.Fields), Java (split on " "),
# Node (spaces, "-groups), Python (shlex, or str.split before google-auth 2.44).
_SAFE_WORD = re.compile(r"[A-Za-z0-9@%+=:,./_-]+")
_AUDIENCE = re.compile(
    r"//iam\.googleapis\.com/projects/\d+/locations/global/workloadIdentityPools/[a-z0-9-]{4,32}/providers/[a-z0-9-]{4,32}"
)


class ConfigError(ValueError):
    """A value that cannot go into a config every client reads the same way."""


def audience_for(project_number: str, pool: str, provider: str) -> str:
    return f"//iam.googleapis.com/projects/{project_number}/locations/global/workloadIdentityPools/{pool}/providers/{provider}"


def this_executable() -> str:
    """The absolute path of the running iris-credexec (the frozen binary, or the console script)."""
    if getattr(sys, "frozen", False):
        return os.path.abspath(sys.executable)
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "iris-credexec":
        return os.path.abspath(argv0)
    import shutil

    return os.path.abspath(shutil.which("iris-credexec") or argv0)


def safe_word(what: str, value: str) -> str:
    if not _SAFE_WORD.fullmatch(value):
        raise ConfigError(
            f"{what} {value!r} cannot be written into the command: every client splits the command its own way "
            "(Go on white space with no quoting, Java on single spaces, Node on spaces and quotes, Python with shlex), "
            "so it must be free of spaces, quotes, backslashes and shell characters."
        )
    return value


def command_line(executable: str, service_account: str | None, policy: str | None) -> str:
    if not os.path.isabs(executable):
        raise ConfigError(
            f"the executable {executable!r} must be an absolute path: clients run it without a shell or PATH lookup"
        )
    words = [safe_word("the executable path", executable)]
    if service_account:
        words += ["--service-account", safe_word("the service account", service_account)]
    if policy:
        if not os.path.isabs(policy):
            raise ConfigError(f"the policy path {policy!r} must be absolute")
        words += ["--policy", safe_word("the policy path", policy)]
    return " ".join(words)


def build(
    *,
    audience: str,
    service_account: str | None,
    executable: str,
    policy: str | None = None,
    timeout_millis: int = TIMEOUT_DEFAULT,
    output_file: str | None = None,
    token_type: str = ID_TOKEN_TYPE,
    token_lifetime_seconds: int | None = None,
    token_url: str = STS_URL,
    impersonation_url: str = IMPERSONATION_URL,
) -> dict[str, Any]:
    """The config as a dict, or ConfigError saying which value cannot be used and why.

    `token_url` and `impersonation_url` (a template with {email}) are Google's unless a
    local stand-in replaces them (the demo, the benchmark)."""
    if not _AUDIENCE.fullmatch(audience):
        raise ConfigError(
            f"audience {audience!r} is not a workload identity provider "
            "(//iam.googleapis.com/projects/NUMBER/locations/global/workloadIdentityPools/POOL/providers/PROVIDER)"
        )
    if service_account is not None and not is_service_account_email(service_account):
        raise ConfigError(f"{service_account!r} is not a lowercase service account email")
    if not TIMEOUT_MIN <= timeout_millis <= TIMEOUT_MAX:
        raise ConfigError(
            f"executable timeout {timeout_millis} ms is outside {TIMEOUT_MIN}-{TIMEOUT_MAX} ms, which every client requires"
        )
    if token_type not in (ID_TOKEN_TYPE, JWT_TOKEN_TYPE):
        raise ConfigError(f"subject token type {token_type!r}: iris-credexec returns OIDC ID tokens (id_token or jwt)")
    if output_file is not None and not os.path.isabs(output_file):
        raise ConfigError(f"the executable output file {output_file!r} must be an absolute path")
    executable_source: dict[str, Any] = {
        "command": command_line(executable, service_account, policy),
        "timeout_millis": timeout_millis,
    }
    if output_file:
        executable_source["output_file"] = output_file
    config: dict[str, Any] = {
        "type": "external_account",
        "audience": audience,
        "subject_token_type": token_type,
        "token_url": token_url,
        "credential_source": {"executable": executable_source},
    }
    if service_account:
        config["service_account_impersonation_url"] = impersonation_url.format(email=service_account)
        if token_lifetime_seconds is not None:
            if not LIFETIME_MIN <= token_lifetime_seconds <= LIFETIME_MAX:
                raise ConfigError(
                    f"token lifetime {token_lifetime_seconds} s is outside {LIFETIME_MIN}-{LIFETIME_MAX} s"
                )
            config["service_account_impersonation"] = {"token_lifetime_seconds": token_lifetime_seconds}
    elif token_lifetime_seconds is not None:
        raise ConfigError("--service-account-token-lifetime-seconds needs --service-account")
    return config


def render(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2) + "\n"
