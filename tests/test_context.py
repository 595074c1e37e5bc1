"""Context checks: environment patterns, uids, container detection."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from iris_credexec import context
from iris_credexec.errors import Code, CredexecError
from iris_credexec.policy import ContextPolicy


def code_of(policy: ContextPolicy, environ: dict[str, str], facts: context.CallerFacts | None = None) -> Code:
    with pytest.raises(CredexecError) as info:
        context.check(policy, environ, facts)
    return info.value.code


ENV = ContextPolicy(env=(("IRIS_TASK_ID", re.compile("/alice/.*")),))


def test_env_full_match() -> None:
    context.check(ENV, {"IRIS_TASK_ID": "/alice/train/0"})
    assert code_of(ENV, {}) is Code.CONTEXT_ENV_MISSING
    assert code_of(ENV, {"IRIS_TASK_ID": "/bob/train/0"}) is Code.CONTEXT_ENV_MISMATCH
    # fullmatch, not search: a prefix or suffix does not smuggle a match in
    assert code_of(ENV, {"IRIS_TASK_ID": "x/alice/train"}) is Code.CONTEXT_ENV_MISMATCH
    assert code_of(ENV, {"IRIS_TASK_ID": "/alice/" + "a" * 10000}) is Code.CONTEXT_ENV_MISMATCH


def test_uids() -> None:
    policy = ContextPolicy(uids=(1000, 1001))
    context.check(policy, {}, context.CallerFacts(uid=1001, in_container=False))
    assert code_of(policy, {}, context.CallerFacts(uid=0, in_container=False)) is Code.CONTEXT_UID_NOT_ALLOWED
    assert code_of(ContextPolicy(uids=(os.getuid() + 1,)), {}) is Code.CONTEXT_UID_NOT_ALLOWED


def test_container_required() -> None:
    policy = ContextPolicy(container=True)
    context.check(policy, {}, context.CallerFacts(uid=0, in_container=True))
    assert code_of(policy, {}, context.CallerFacts(uid=0, in_container=False)) is Code.CONTEXT_NOT_CONTAINER


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({".dockerenv": ""}, True),
        ({"run/.containerenv": ""}, True),
        ({"proc/1/cgroup": "0::/system.slice/docker-abc.scope\n"}, True),
        ({"proc/1/cgroup": "12:pids:/kubepods/burstable/pod1/abc\n"}, True),
        ({"proc/1/cgroup": "0::/init.scope\n"}, False),
        ({}, False),
    ],
)
def test_container_detection(tmp_path: Path, files: dict[str, str], expected: bool) -> None:
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content)
    assert context.in_container(str(tmp_path)) is expected
