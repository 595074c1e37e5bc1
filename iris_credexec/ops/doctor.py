"""`iris-credexec doctor`: run inside a task as the task would, and name the broken step.

Each check says pass, warn or fail with a one-line fix. The policy, context, source and
token checks are executable mode's own steps (exec_mode.answer with a Trace), not copies.
Never prints a token.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .. import env_vars
from .config import IMPERSONATION_URL, TIMEOUT_MAX, TIMEOUT_MIN, this_executable

PASS, WARN, FAIL = "pass", "warn", "fail"
Add = Callable[..., None]  # add(name, status, detail, fix="")


class Check(NamedTuple):
    name: str
    status: str
    detail: str
    fix: str = ""


def run_doctor(environ: Mapping[str, str], exchange: bool = False) -> list[Check]:
    checks: list[Check] = []
    _run(environ, exchange, checks)
    return checks


def _run(environ: Mapping[str, str], exchange: bool, checks: list[Check]) -> None:
    """Checks in order; a failure that later checks depend on ends the run there."""

    def add(name: str, status: str, detail: str, fix: str = "") -> None:
        checks.append(Check(name, status, detail, fix))

    path = environ.get("GOOGLE_APPLICATION_CREDENTIALS", "")
    if not path:
        return add(
            "credentials file",
            FAIL,
            "GOOGLE_APPLICATION_CREDENTIALS is not set",
            "the worker must set it to the task's credential config",
        )
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except OSError as exc:
        return add(
            "credentials file",
            FAIL,
            f"cannot read {path}: {exc.strerror}",
            "mount the credential config into the task, readable by its user",
        )
    except ValueError:
        return add("credentials file", FAIL, f"{path} is not JSON", "regenerate it with `iris-credexec config`")
    add("credentials file", PASS, path)

    source = config.get("credential_source") if isinstance(config, dict) else None
    executable = source.get("executable") if isinstance(source, dict) else None
    if (
        not isinstance(config, dict)
        or config.get("type") != "external_account"
        or not isinstance(executable, dict)
        or not executable.get("command")
    ):
        return add(
            "credential config",
            FAIL,
            "not an external_account config with an executable credential source",
            "regenerate it with `iris-credexec config`",
        )
    command = str(executable["command"])
    add("credential config", PASS, f"external_account, audience {config.get('audience')}")

    words = command.split(" ")
    if shlex.split(command) != words or command.split() != words or any(not w for w in words):
        return add(
            "command",
            FAIL,
            f"{command!r} splits differently in different clients",
            "use an absolute path and flags with single spaces and no quotes (`iris-credexec config` writes one)",
        )
    program = words[0]
    if not os.path.isabs(program) or not os.access(program, os.X_OK):
        return add(
            "command",
            FAIL,
            f"{program!r} is not an absolute path to an executable",
            "copy the iris-credexec binary into the image at the path the config names",
        )
    flags = _flags(words[1:])
    if flags is None:
        return add(
            "command",
            FAIL,
            f"unexpected arguments in {command!r}",
            "the command takes only --service-account EMAIL and --policy PATH",
        )
    if os.path.realpath(program) != os.path.realpath(this_executable()):
        add(
            "command",
            WARN,
            f"runs {program}, not this iris-credexec ({this_executable()})",
            "make sure both are the same version",
        )
    else:
        add("command", PASS, command)
    timeout = executable.get("timeout_millis")
    if not isinstance(timeout, int) or not TIMEOUT_MIN <= timeout <= TIMEOUT_MAX:
        add(
            "timeout",
            FAIL,
            f"timeout_millis is {timeout!r}",
            f"set an integer from {TIMEOUT_MIN} to {TIMEOUT_MAX}; Node, Go and Java reject anything else",
        )
    else:
        add("timeout", PASS, f"{timeout} ms")

    target = flags.get("--service-account")
    url = config.get("service_account_impersonation_url")
    if url and not target:
        add(
            "service account",
            FAIL,
            "the config impersonates but the command has no --service-account",
            "Python and gcloud do not pass the account: add --service-account EMAIL to the command",
        )
    elif (
        url
        and target
        and IMPERSONATION_URL.format(email=target).split("/serviceAccounts/")[1]
        != str(url).split("/serviceAccounts/")[-1]
    ):
        add(
            "service account",
            FAIL,
            f"--service-account {target} differs from the impersonation URL {url}",
            "make them name the same account",
        )
    else:
        add("service account", PASS, target or "no impersonation")

    if environ.get("GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES") != "1":
        add(
            "allow executables",
            FAIL,
            "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES is not 1",
            "the worker must set GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1 in the task",
        )
    else:
        add("allow executables", PASS, "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1")
    override = environ.get("CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE")
    if override != path:
        add(
            "gcloud",
            WARN,
            "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE is " + (f"{override}" if override else "not set"),
            f"set it to {path} so gcloud uses the same credentials",
        )
    else:
        add("gcloud", PASS, "CLOUDSDK_AUTH_CREDENTIAL_FILE_OVERRIDE names the same config")

    _concealment(environ, add)
    _executable_mode_steps(environ, config, flags, add)
    if exchange:
        _exchange(path, add)


def _concealment(environ: Mapping[str, str], add: Add) -> None:
    """Can this task take the VM's own token from the metadata server? It must not.
    GCE_METADATA_HOST is read on purpose: it is where the task's own clients would go."""
    from ..sources import http

    host = environ.get("GCE_METADATA_HOST") or "169.254.169.254"
    endpoint = http.parse_host_port(host, default_port=80)
    try:
        answer = http.get(
            endpoint, "/computeMetadata/v1/instance/service-accounts/default/token", {"Metadata-Flavor": "Google"}, 2.0
        )
    except http.HttpError as exc:
        return add(
            "metadata concealment", PASS, f"the metadata server ({host}) is not reachable from this task ({exc})"
        )
    if answer.status == 200:  # the body is the VM's credential: never shown
        return add(
            "metadata concealment",
            FAIL,
            f"the VM's own access token is readable from this task at {host}",
            "run `iris-credexec host conceal` on the worker and apply its --print-rules (docs/iris.md)",
        )
    if answer.status == 403 and b"iris-credexec" in answer.body:
        return add("metadata concealment", PASS, "the credential paths are concealed by iris-credexec host conceal")
    return add("metadata concealment", PASS, f"the token path answered HTTP {answer.status}")


def _flags(args: list[str]) -> dict[str, str] | None:
    flags: dict[str, str] = {}
    it = iter(args)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name not in ("--service-account", "--policy") or name in flags:
            return None
        flags[name] = value if eq else next(it, "")
    return flags


def _executable_mode_steps(environ: Mapping[str, str], config: dict[str, Any], flags: dict[str, str], add: Add) -> None:
    """Executable mode's own steps, as the client would run them (without the output file)."""
    from ..exec_mode import Invocation, Trace, answer
    from ..response import Failure

    client_env = {k: v for k, v in environ.items() if k != env_vars.OUTPUT_FILE}
    client_env[env_vars.AUDIENCE] = str(config.get("audience", ""))
    client_env[env_vars.TOKEN_TYPE] = str(config.get("subject_token_type", ""))
    client_env[env_vars.INTERACTIVE] = "0"
    trace = Trace()
    outcome = answer(
        Invocation(
            environ=client_env, policy_flag=flags.get("--policy"), service_account_flag=flags.get("--service-account")
        ),
        trace,
    )
    for step in trace.steps:
        if step.name == "result":
            continue
        status = PASS if step.ok else WARN if step.ok is None else FAIL
        fix = "mount the policy read-only" if step.name == "policy writable" else ""
        add(f"executable: {step.name}", status, step.detail, fix)
    if isinstance(outcome, Failure):
        add(
            "executable: result", FAIL, f"{outcome.code}: {outcome.message}", "see the code in the README's error table"
        )
    else:
        add("executable: result", PASS, "a token that passed every check (not shown)")


def _exchange(path: str, add: Add) -> None:
    """A real google-auth refresh through STS and impersonation."""
    try:
        import google.auth
        import google.auth.transport.requests
    except ImportError:
        add(
            "exchange",
            FAIL,
            "google-auth is not installed here",
            "run doctor --exchange where google-auth is installed (pip install google-auth)",
        )
        return
    try:
        credentials, _ = google.auth.load_credentials_from_file(path)  # type: ignore[no-untyped-call]
        credentials = credentials.with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
        credentials.refresh(google.auth.transport.requests.Request())
    except Exception as exc:  # the client's own error text names the failing step (STS, IAM)
        add(
            "exchange",
            FAIL,
            f"{type(exc).__name__}: {exc}",
            "invalid_grant: check the provider's issuer and attribute condition; PERMISSION_DENIED: grant roles/iam.workloadIdentityUser to the principal",
        )
        return
    add("exchange", PASS, "STS exchange and impersonation succeeded (token not shown)")


def render(checks: list[Check], as_json: bool) -> str:
    if as_json:
        return json.dumps(
            {"ok": all(c.status != FAIL for c in checks), "checks": [c._asdict() for c in checks]}, indent=2
        )
    lines = []
    for c in checks:
        lines.append(f"[{c.status.upper()}] {c.name}: {c.detail}")
        if c.fix and c.status != PASS:
            lines.append(f"       fix: {c.fix}")
    return "\n".join(lines)
