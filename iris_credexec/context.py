"""Facts about the caller (environment, uid, container), checked against the policy.

These checks stop mistakes (a task picking up a policy or config meant for
another), not a hostile task: see the README's security model.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from .decide import env_mismatch, in_container
from .errors import Code, CredexecError
from .policy import ContextPolicy


class CallerFacts(NamedTuple):
    uid: int
    in_container: bool


def observe(root: str = "/") -> CallerFacts:
    return CallerFacts(uid=os.getuid(), in_container=in_container(root))


def check(policy: ContextPolicy, environ: Mapping[str, str], facts: CallerFacts | None = None) -> None:
    """Raise the first context mismatch, if any. Facts are observed only when needed."""
    problem = env_mismatch(policy.env, environ)
    if problem is not None:
        kind, name = problem
        if kind == "missing":
            raise CredexecError(
                Code.CONTEXT_ENV_MISSING,
                f"The policy requires the variable {name} but it is not set: run inside the task it was written for.",
            )
        pattern = dict(policy.env)[name].pattern
        raise CredexecError(
            Code.CONTEXT_ENV_MISMATCH,
            f"{name} does not match the policy's pattern {pattern!r}: this policy was written for another task.",
        )
    if policy.uids:
        uid = facts.uid if facts else os.getuid()
        if uid not in policy.uids:
            raise CredexecError(
                Code.CONTEXT_UID_NOT_ALLOWED,
                f"uid {uid} is not in the policy's [context] uids {list(policy.uids)}: run as the task's user.",
            )
    if policy.container:
        inside = facts.in_container if facts else in_container()
        if not inside:
            raise CredexecError(
                Code.CONTEXT_NOT_CONTAINER,
                "The policy sets [context] container = true but no container was detected "
                "(no /.dockerenv, /run/.containerenv or container cgroup): run inside the task container.",
            )
