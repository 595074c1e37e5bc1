"""Executable mode: decide, reuse or fetch, check, answer.

`answer` is the only place where an error becomes a response. `obtain` runs
the steps and reports each one to a `Trace`, which `inspect` and `--debug`
print for a person; the client only ever sees the response.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple

from . import audit
from .errors import Code, CredexecError
from .response import Failure, Response, RevokeAck, Success

if TYPE_CHECKING:
    from .policy import Policy

SNAPSHOT_FORMAT = 1


class Invocation(NamedTuple):
    """Everything executable mode is given: flags and the environment."""

    environ: Mapping[str, str]
    policy_flag: str | None = None
    service_account_flag: str | None = None
    audience_flag: str | None = None


class Step(NamedTuple):
    name: str
    ok: bool | None  # None: a warning or a note
    detail: str


class Trace:
    """What each step found, for people, and the audit record being built. Never holds a token."""

    def __init__(self, on_step: Callable[[Step], None] | None = None) -> None:
        self.steps: list[Step] = []
        self.on_step = on_step
        self.policy_path = ""
        self.audit_path = ""
        self.facts: object | None = None  # tokens.TokenFacts when a token was checked
        self.record: dict[str, object] = {}

    def add(self, name: str, ok: bool | None, detail: str) -> None:
        step = Step(name, ok, detail)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)


def answer(invocation: Invocation, trace: Trace | None = None) -> Response:
    """The response for this invocation. Never raises."""
    trace = trace if trace is not None else Trace()
    started = time.monotonic()
    from .request import output_file_of

    output_file = output_file_of(invocation.environ)
    try:
        response = obtain(invocation, trace)
        if output_file and isinstance(response, Success):
            from .response import write_output_file

            write_output_file(output_file, response)
            trace.add("output file", True, f"wrote {output_file}")
        outcome: Response = response
    except CredexecError as exc:
        outcome = Failure.from_error(exc)
        trace.add("result", False, str(exc))
    except Exception as exc:  # the last line of defence: clients must get JSON, never a traceback
        outcome = Failure(
            Code.INTERNAL.name,
            f"Unexpected {type(exc).__name__} in iris-credexec. {Code.INTERNAL.fix}",
        )
        detail = f"INTERNAL: {type(exc).__name__}: {exc}"
        if trace.on_step is not None:  # a person asked for --debug: show where
            import traceback

            detail += "\n" + "".join(traceback.format_exception(exc)[-4:])
        trace.add("result", False, detail)
    if isinstance(outcome, Failure) and output_file:
        from .response import remove_output_file

        remove_output_file(output_file)
    _audit(trace, outcome, started)
    return outcome


def _audit(trace: Trace, outcome: Response, started: float) -> None:
    if not trace.audit_path:
        return
    record: dict[str, object] = {
        "decision": "issued"
        if isinstance(outcome, Success)
        else "revoked"
        if isinstance(outcome, RevokeAck)
        else "refused",
        "code": outcome.code if isinstance(outcome, Failure) else None,
        "uid": os.getuid(),
        "pid": os.getpid(),
        "policy": trace.policy_path,
        **trace.record,
        "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
    }
    if not audit.write(trace.audit_path, record):
        trace.add("audit", None, f"could not append to {trace.audit_path}")


def obtain(invocation: Invocation, trace: Trace) -> Response:
    """Run every step and return the response. Raises CredexecError."""
    from . import context
    from . import policy as policy_mod
    from . import request as request_mod

    environ = invocation.environ
    policy_path = policy_mod.resolve_path(invocation.policy_flag, environ)
    trace.policy_path = policy_path
    policy = policy_mod.load(policy_path)
    trace.audit_path = policy.audit_path
    trace.add("policy", True, f"{policy_path} (sha256 {policy.digest[:16]})")
    if policy.writable_by_caller:
        trace.add("policy writable", None, f"this process could change {policy_path}: mount it read-only in the task")

    req = request_mod.from_environment(environ, invocation.service_account_flag, invocation.audience_flag)
    trace.record.update(audience=req.audience, target=req.target, source=policy.source.kind)
    trace.add(
        "request", True, f"audience {req.audience}, token type {req.token_type.value}, target {req.target or '(none)'}"
    )

    policy.check_audience(req.audience)
    trace.add("audience", True, "allowed by [audiences] allow")
    policy.check_service_account(req.target)
    trace.add("service account", True, f"{req.target} allowed" if req.target else "none required")
    context.check(policy.context, environ)
    trace.add("context", True, "environment, uid and container match [context]")

    from .cache import CacheKey, CacheUnavailable, TokenCache

    key = CacheKey(
        uid=os.geteuid(),
        audience=req.audience,
        target=req.target or "",
        token_type=req.token_type.value,
        policy_digest=policy.digest,
    )
    cache: TokenCache | None = None
    if policy.cache.enabled:
        try:
            cache = TokenCache.open(policy.cache.dir, environ)
        except CacheUnavailable as exc:
            trace.record["cache"] = f"unsafe: {exc}"
            trace.add("cache", None, f"not used: {exc}")
    else:
        trace.record["cache"] = "off"

    if req.revoke:
        if cache is not None:
            cache.remove(key)
        trace.record["cache"] = "revoked"
        trace.add("revoke", True, "cached token dropped")
        return RevokeAck()

    from .fetch import fetch_checked

    response = fetch_checked(policy, req, key, cache, trace)
    if cache is not None:
        _store_snapshot(policy, environ)
    return response


def _store_snapshot(policy: Policy, environ: Mapping[str, str]) -> None:
    """Leave the policy's decisions where the next cache hit can read them without TOML."""
    from . import __version__, cachefs

    directory = cachefs.default_directory(environ)
    name = cachefs.snapshot_name(policy.digest)
    if os.path.exists(os.path.join(directory, name)):
        return
    with contextlib.suppress(OSError):
        os.mkdir(directory, 0o700)
    if cachefs.directory_problem(directory) is None:
        cachefs.write_json(directory, name, {"format": SNAPSHOT_FORMAT, "version": __version__, **policy.snapshot()})
