"""Pure decision predicates, shared by the full path and the cache-hit fast path.

Kept free of heavy imports (no dataclasses, enum, typing, tomllib) because the
fast path runs them on every cache hit. The full path turns a False into a
refusal with its code; the fast path turns it into "take the full path".
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping

VALUE_LIMIT = 2048  # client-supplied values: audiences, emails and paths are far shorter
CONTEXT_VALUE_LIMIT = 4096  # context values longer than this never match: bounds regex work
ID_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:id_token"  # noqa: S105  # nosec B105
JWT_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105  # nosec B105
TOKEN_TYPES = (ID_TOKEN_TYPE, JWT_TOKEN_TYPE)

_SERVICE_ACCOUNT_RE = re.compile(
    r"[a-z0-9](?:[a-z0-9._-]{0,98}[a-z0-9])?@[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*\.gserviceaccount\.com"
)
_CONTAINER_CGROUP_MARKERS = ("docker", "containerd", "kubepods", "libpod", "crio", "lxc")


def clean_value(value: str) -> bool:
    """A value an honest client could send: bounded, printable, valid UTF-8 (lone surrogates are not printable)."""
    return len(value) <= VALUE_LIMIT and value.isprintable()


def is_service_account_email(value: str) -> bool:
    return _SERVICE_ACCOUNT_RE.fullmatch(value) is not None


def audience_allowed(allowed: Iterable[str], audience: str) -> bool:
    return audience in allowed


def service_account_allowed(patterns: Iterable[str], target: str) -> bool:
    import fnmatch

    return any(fnmatch.fnmatchcase(target, pattern) for pattern in patterns)


def env_mismatch(patterns: Iterable[tuple[str, re.Pattern[str]]], environ: Mapping[str, str]) -> tuple[str, str] | None:
    """("missing" | "mismatch", variable) for the first context variable that fails, else None."""
    for name, pattern in patterns:
        value = environ.get(name)
        if value is None:
            return "missing", name
        if len(value) > CONTEXT_VALUE_LIMIT or pattern.fullmatch(value) is None:
            return "mismatch", name
    return None


def in_container(root: str = "/") -> bool:
    """Best-effort container detection: runtime marker files, then PID 1's cgroup."""
    for marker in (".dockerenv", "run/.containerenv"):
        if os.path.exists(os.path.join(root, marker)):
            return True
    try:
        with open(os.path.join(root, "proc/1/cgroup"), encoding="utf-8", errors="replace") as f:
            cgroups = f.read(65536)
    except OSError:
        return False
    return any(marker in cgroups for marker in _CONTAINER_CGROUP_MARKERS)
