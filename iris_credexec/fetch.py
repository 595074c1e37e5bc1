"""Reuse a cached token or fetch, check and cache a new one, once per key across processes."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .errors import Code, CredexecError
from .response import Success

if TYPE_CHECKING:
    from .cache import CacheKey, Entry, TokenCache
    from .exec_mode import Trace
    from .policy import Policy
    from .request import ExecRequest

_SOURCE_DOWN = (Code.SOURCE_UNAVAILABLE, Code.SOURCE_TIMEOUT)


def fetch_checked(policy: Policy, req: ExecRequest, key: CacheKey, cache: TokenCache | None, trace: Trace) -> Success:
    deadline = time.monotonic() + policy.source.deadline_seconds
    if cache is None:
        return _fresh_token(policy, req, key, deadline, trace)[0]

    entry = _valid(cache.read(key), policy)
    if entry is not None and entry.fresh(time.time()):
        return _serve(entry, "hit", trace)
    with cache.lock(key, deadline) as locked:
        if not locked:
            if entry is not None and entry.usable_when_source_down(time.time(), policy.token.min_lifetime_seconds):
                return _serve(entry, "fallback (lock wait timed out)", trace)
            raise CredexecError(
                Code.SOURCE_TIMEOUT,
                f"Another iris-credexec process held the fetch lock for the whole {policy.source.deadline_seconds:g} s "
                f"deadline (cache {cache.directory}). Check the token source; "
                "`iris-credexec cache clear` removes stale files.",
            )
        # Whoever held the lock before us may have just fetched this very token.
        entry = _valid(cache.read(key), policy) or entry
        if entry is not None and entry.fresh(time.time()):
            return _serve(entry, "hit (fetched by a concurrent process)", trace)
        try:
            response, new_entry = _fresh_token(policy, req, key, deadline, trace)
        except CredexecError as exc:
            min_lifetime = policy.token.min_lifetime_seconds
            if (
                exc.code in _SOURCE_DOWN
                and entry is not None
                and entry.usable_when_source_down(time.time(), min_lifetime)
            ):
                trace.record["source_error"] = exc.code.name
                return _serve(entry, f"fallback ({exc.code.name})", trace)
            raise
        cache.write(new_entry)
        return response


def _valid(entry: Entry | None, policy: Policy) -> Entry | None:
    """An entry is reused only if the current policy would still accept its token."""
    if entry is None:
        return None
    if entry.issuer not in policy.token.issuers:
        return None
    if any(entry.claims.get(name) != value for name, value in policy.token.claims):
        return None
    return entry


def _serve(entry: Entry, how: str, trace: Trace) -> Success:
    from .response import TokenType

    trace.record.update(cache=how, sub=entry.subject, iss=entry.issuer, exp=entry.expires_at, token=entry.fingerprint)
    trace.add(
        "cache", True, f"{how}: token sha256:{entry.fingerprint}, expires in {int(entry.expires_at - time.time())} s"
    )
    return Success(TokenType(entry.token_type), entry.id_token, entry.expiration_time)


def _fresh_token(
    policy: Policy, req: ExecRequest, key: CacheKey, deadline: float, trace: Trace
) -> tuple[Success, Entry]:
    from . import sources, tokens
    from .cache import Entry
    from .sources.base import fetch_with_retries

    source = sources.build(policy.source)
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise CredexecError(Code.SOURCE_TIMEOUT, f"No time left to ask {source.describe()}. {Code.SOURCE_TIMEOUT.fix}")
    fetched_at = time.time()
    token, attempts = fetch_with_retries(
        source,
        req.audience,
        timeout_seconds=policy.source.timeout_seconds,
        deadline_seconds=remaining,
        max_attempts=policy.source.max_attempts,
    )
    trace.record.setdefault("cache", "miss")
    trace.record["attempts"] = attempts
    trace.add("source", True, f"{source.describe()} answered after {attempts} attempt(s)")
    facts = tokens.check(token, audience=req.audience, policy=policy.token)
    trace.facts = facts
    trace.record.update(sub=facts.subject, iss=facts.issuer, exp=facts.expires_at, token=facts.fingerprint)
    verified = "signature verified" if facts.signature_verified else "signature not verified (no [token] jwks)"
    trace.add("token", True, f"sha256:{facts.fingerprint} sub={facts.subject} iss={facts.issuer}, {verified}")
    from .response import render

    expiration_time = facts.expires_at - policy.token.refresh_margin_seconds
    response = Success(req.token_type, token, expiration_time)
    entry = Entry(
        key=key,
        token_type=req.token_type.value,
        id_token=token,
        expiration_time=expiration_time,
        expires_at=facts.expires_at,
        fetched_at=fetched_at,
        subject=facts.subject,
        issuer=facts.issuer,
        fingerprint=facts.fingerprint,
        claims={name: str(facts.claims.get(name)) for name, _ in policy.token.claims},
        response_json=render(response),
    )
    return response, entry
