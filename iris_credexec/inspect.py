"""`iris-credexec inspect`: executable mode's own steps, reported for a person."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .exec_mode import Invocation, Trace, answer
from .response import Failure, Success

_MARKS = {True: "PASS", False: "FAIL", None: "WARN"}


def run_inspect(
    *,
    environ: Mapping[str, str],
    policy_flag: str | None,
    service_account_flag: str | None,
    audience_flag: str | None,
    show_token: bool,
    as_json: bool,
) -> int:
    """Print the report; 0 when every check passed, 1 otherwise."""
    import click

    trace = Trace()
    invocation = Invocation(
        environ=environ,
        policy_flag=policy_flag,
        service_account_flag=service_account_flag,
        audience_flag=audience_flag,
    )
    # inspect must not write the client's output file: it only looks.
    environ_view = {k: v for k, v in environ.items() if k != "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE"}
    response = answer(invocation._replace(environ=environ_view), trace)
    claims: dict[str, Any] = dict(getattr(trace.facts, "claims", {}) or {})
    report: dict[str, Any] = {
        "ok": isinstance(response, Success),
        "steps": [{"name": s.name, "status": _MARKS[s.ok].lower(), "detail": s.detail} for s in trace.steps],
        "claims": claims,
    }
    if isinstance(response, Failure):
        report["code"] = response.code
        report["message"] = response.message
    if isinstance(response, Success):
        report["expiration_time"] = response.expiration_time
        if show_token:
            report["token"] = response.id_token
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        for step in trace.steps:
            click.echo(f"[{_MARKS[step.ok]}] {step.name}: {step.detail}")
        if claims:
            click.echo("claims:")
            for name in sorted(claims):
                click.echo(f"  {name}: {json.dumps(claims[name], default=str)}")
        if isinstance(response, Success):
            click.echo(f"result: success, expiration_time {response.expiration_time}")
            if show_token:
                click.echo(f"token: {response.id_token}")
        elif isinstance(response, Failure):
            click.echo(f"result: {response.code}: {response.message}")
    return 0 if report["ok"] else 1
