"""The cache's file layer: names, directory checks and safe reads.

Light on imports on purpose: the cache-hit fast path uses it on every hit.
cache.py builds the typed cache (entries, locks) on top of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Mapping

from . import fsutil
from .digest import sha256_hex

TYPE_CHECKING = False  # typing costs a cache hit ~2 ms; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

ENTRY_LIMIT = 256 * 1024
ENTRY_FORMAT = 2
SNAPSHOT_PREFIX = "policy-"


def default_directory(environ: Mapping[str, str]) -> str:
    """$XDG_RUNTIME_DIR/iris-credexec, else $TMPDIR (or /tmp)/iris-credexec-<uid>."""
    runtime = environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "iris-credexec")
    tmp = environ.get("TMPDIR", "")
    # A per-uid directory, created 0700 and checked (owner, mode, not a symlink) before use.
    base = tmp if os.path.isabs(tmp) else "/tmp"  # noqa: S108  # nosec B108
    return os.path.join(base, f"iris-credexec-{os.geteuid()}")


CLOCK_SKEW_SECONDS = 60


def is_fresh(fetched_at: float, expires_at: int, expiration_time: int, now: float) -> bool:
    """Served without asking the source: less than half its life gone, and before the margin.
    An entry fetched "in the future" means the clock jumped back: not trusted."""
    if fetched_at > now + CLOCK_SKEW_SECONDS:
        return False
    return now < fetched_at + (expires_at - fetched_at) / 2 and now < expiration_time


def snapshot_name(policy_digest: str) -> str:
    return f"{SNAPSHOT_PREFIX}{policy_digest}.json"


def key_name(uid: int, audience: str, target: str, token_type: str, policy_digest: str) -> str:
    """The file name stem of a cache key: a hash of every field, so no field can be confused."""
    material = json.dumps(
        {"audience": audience, "policy_digest": policy_digest, "target": target, "token_type": token_type, "uid": uid},
        sort_keys=True,
        separators=(",", ":"),
    )
    return sha256_hex(material.encode())[:32]


def directory_problem(directory: str) -> str | None:
    """Why `directory` must not hold our cache, or None when it is ours alone."""
    try:
        st = os.lstat(directory)
    except OSError as exc:
        return f"cannot use the cache directory {directory}: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"the cache path {directory} is not a directory (or is a symlink); remove it"
    if st.st_uid != os.geteuid():
        return (
            f"the cache directory {directory} belongs to uid {st.st_uid}, not {os.geteuid()}; "
            "remove it or set [cache] dir to a directory of the task user"
        )
    if st.st_mode & 0o077:
        return f"the cache directory {directory} is open to others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 0700 it"
    return None


def read_json(directory: str, name: str) -> dict[str, Any] | None:
    """A JSON object from our own private file, or None (absent, foreign, open to others, torn)."""
    try:
        data, st = fsutil.read_regular(os.path.join(directory, name), ENTRY_LIMIT)
    except (OSError, fsutil.UnsafePath):
        return None
    if st.st_uid != os.geteuid() or st.st_mode & 0o077:
        return None
    try:
        document = json.loads(data)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def write_json(directory: str, name: str, document: Mapping[str, Any]) -> None:
    """Store a private JSON file; rename replaces whatever is there (a symlink is replaced, not followed).
    Failures only cost a later run some work, so they are swallowed."""
    path = os.path.join(directory, name)
    with contextlib.suppress(OSError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            os.rmdir(path)
    with contextlib.suppress(OSError):
        fsutil.atomic_write(path, json.dumps(document, separators=(",", ":")).encode(), mode=0o600)
