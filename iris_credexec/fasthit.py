"""The cache-hit fast path: answer a fresh cache hit without loading the full machinery.

Dozens of processes run the executable at task start, most of them for a token
another process just fetched. Parsing TOML, building the typed policy and
importing dataclasses and enum cost more than the rest of a hit together, so a
hit is decided here from the policy snapshot the full path left behind (keyed
by the sha256 of the policy file's bytes, so any edit to the policy bypasses
it) with the same predicates the full path uses (decide.py).

It only ever answers success. Anything unusual, every refusal included, returns
False and the full path decides and explains: the fast path may decline what the
full path would serve, never serve what the full path would refuse.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Mapping

from . import cachefs, decide, env_vars, fsutil
from .digest import sha256_hex

TYPE_CHECKING = False  # typing costs a cache hit ~2 ms; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any

POLICY_SIZE_LIMIT = 256 * 1024  # as policy.POLICY_SIZE_LIMIT (checked by a test)
DEFAULT_POLICY_PATH = "/etc/iris-credexec/policy.toml"  # as policy.DEFAULT_POLICY_PATH (checked by a test)
SNAPSHOT_FORMAT = 1  # as exec_mode.SNAPSHOT_FORMAT (checked by a test)


def try_answer(policy_flag: str | None, service_account_flag: str | None, environ: Mapping[str, str]) -> bool:
    """Print the response for a fresh cache hit and return True, or return False."""
    started = time.monotonic()
    # Every client variable must be one an honest client sends, exactly as request.py demands.
    client = {name: environ.get(name, "") for name in env_vars.CLIENT_VARIABLES}
    if not all(decide.clean_value(value) for value in client.values()):
        return False
    if client[env_vars.INTERACTIVE] == "1" or client[env_vars.REVOKE] == "1":
        return False
    audience = client[env_vars.AUDIENCE]
    token_type = client[env_vars.TOKEN_TYPE] or decide.ID_TOKEN_TYPE
    output_file = client[env_vars.OUTPUT_FILE]
    from_env = client[env_vars.IMPERSONATED_EMAIL]
    if not audience or token_type not in decide.TOKEN_TYPES:
        return False
    flag = service_account_flag or ""
    if not decide.clean_value(flag) or (flag and from_env and flag != from_env):
        return False
    target = flag or from_env
    if target and not decide.is_service_account_email(target):
        return False

    policy_path = policy_flag or environ.get(env_vars.POLICY) or DEFAULT_POLICY_PATH
    try:
        data, _ = fsutil.read_host_file(policy_path, POLICY_SIZE_LIMIT)
    except (OSError, fsutil.UnsafePath):
        return False
    digest = sha256_hex(data)
    snapshot = cachefs.read_json(cachefs.default_directory(environ), cachefs.snapshot_name(digest))
    if snapshot is None or not _snapshot_usable(snapshot, digest):
        return False
    if not _allowed(snapshot, audience, target, environ):
        return False
    if not snapshot["cache_enabled"]:
        return False

    directory = snapshot["cache_dir"] or cachefs.default_directory(environ)
    if cachefs.directory_problem(directory) is not None:
        return False
    uid = os.geteuid()
    entry = cachefs.read_json(directory, cachefs.key_name(uid, audience, target, token_type, digest) + ".json")
    if entry is None or not _entry_servable(entry, uid, audience, target, token_type, digest, snapshot):
        return False
    response_json = entry["response_json"]
    if output_file:
        try:
            fsutil.replace_regular(output_file, (response_json + "\n").encode(), mode=0o600)
        except (OSError, fsutil.UnsafePath):
            return False  # the full path reports OUTPUT_FILE_UNSAFE
    out = sys.stdout.buffer
    out.write((response_json + "\n").encode())
    out.flush()
    if snapshot["audit_path"]:
        from . import audit

        audit.write(
            snapshot["audit_path"],
            {
                "decision": "issued",
                "code": None,
                "uid": os.getuid(),
                "pid": os.getpid(),
                "policy": policy_path,
                "audience": audience,
                "target": target or None,
                "source": snapshot["source_kind"],
                "cache": "hit",
                "sub": entry["subject"],
                "iss": entry["issuer"],
                "exp": entry["expires_at"],
                "token": entry["fingerprint"],
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
    return True


def _snapshot_usable(snapshot: dict[str, Any], digest: str) -> bool:
    if snapshot.get("format") != SNAPSHOT_FORMAT or snapshot.get("digest") != digest:
        return False
    from . import __version__

    return snapshot.get("version") == __version__


def _allowed(snapshot: dict[str, Any], audience: str, target: str, environ: Mapping[str, str]) -> bool:
    """The full path's request, policy and context decisions, as yes or no."""
    try:
        if not decide.audience_allowed(snapshot["audiences"], audience):
            return False
        if target:
            if not decide.service_account_allowed(snapshot["service_accounts"], target):
                return False
        elif snapshot["require_service_account"]:
            return False
        patterns = [(name, re.compile(pattern)) for name, pattern in snapshot["context_env"]]
        if decide.env_mismatch(patterns, environ) is not None:
            return False
        uids = snapshot["context_uids"]
        if uids and os.getuid() not in uids:
            return False
        return not (snapshot["context_container"] and not decide.in_container())
    except (KeyError, TypeError, ValueError, re.error):
        return False


def _entry_servable(
    entry: dict[str, Any],
    uid: int,
    audience: str,
    target: str,
    token_type: str,
    digest: str,
    snapshot: dict[str, Any],
) -> bool:
    if entry.get("format") != cachefs.ENTRY_FORMAT:
        return False
    try:
        key = entry["key"]
        expected = {
            "uid": uid,
            "audience": audience,
            "target": target,
            "token_type": token_type,
            "policy_digest": digest,
        }
        if key != expected or entry["token_type"] != token_type:
            return False
        if not isinstance(entry["response_json"], str) or not entry["response_json"]:
            return False
        if entry["issuer"] not in snapshot["issuers"]:
            return False
        claims = entry["claims"]
        if any(claims.get(name) != value for name, value in snapshot["claims"]):
            return False
        return cachefs.is_fresh(entry["fetched_at"], entry["expires_at"], entry["expiration_time"], time.time())
    except (KeyError, TypeError, AttributeError, ValueError):
        return False
