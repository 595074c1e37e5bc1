"""Checks on every token before it is handed out: shape, aud, iss, lifetime, claims, signature.

Each failed check has its own code, so an operator reading a client's error
knows which side is wrong. Messages carry claims, never the token.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from .audit import token_hash
from .errors import Code, CredexecError
from .policy import TokenPolicy

# Only asymmetric algorithms: a shared-secret (HS*) token could be minted by anyone who
# holds the "public" key, and "none" by anyone at all.
ALLOWED_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
CLOCK_SKEW_SECONDS = 60
JWKS_LIMIT = 256 * 1024
_B64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


class TokenFacts(NamedTuple):
    """What was learned from a token that passed every check (safe to log)."""

    subject: str
    issuer: str
    audience: str
    expires_at: int
    issued_at: int | None
    fingerprint: str
    algorithm: str
    key_id: str | None
    signature_verified: bool
    claims: Mapping[str, Any] = MappingProxyType({})


def _fail(code: Code, detail: str, token: str) -> CredexecError:
    return CredexecError(code, f"The token from the source (sha256:{token_hash(token)}) {detail}. {code.fix}")


def _numeric(payload: Mapping[str, Any], name: str, token: str, required: bool) -> int | None:
    value = payload.get(name)
    if value is None:
        if required:
            raise _fail(Code.TOKEN_MALFORMED, f"has no {name!r} claim", token)
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) > 1e11:
        raise _fail(Code.TOKEN_MALFORMED, f"has a {name!r} claim that is not a number of seconds", token)
    return int(value)


def _segment(data: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, without checking the signature.

    Done by hand rather than with pyjwt: importing pyjwt loads the crypto stack,
    which costs a cache miss more than everything else when no JWKS is set.
    """
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]) or not all(_B64URL.issuperset(part) for part in parts):
        raise _fail(Code.TOKEN_MALFORMED, "is not a JWT (three dot-separated parts)", token)
    try:
        header, payload = _segment(parts[0]), _segment(parts[1])
    except (ValueError, TypeError):  # binascii.Error and JSON errors are ValueErrors
        raise _fail(Code.TOKEN_MALFORMED, "is not a JWT (a part is not base64url JSON)", token) from None
    if not isinstance(header, dict):
        raise _fail(Code.TOKEN_MALFORMED, "is not a JWT (the header is not a JSON object)", token)
    if not isinstance(payload, dict):
        raise _fail(Code.TOKEN_MALFORMED, "has a payload that is not a JSON object", token)
    return header, payload


def check(token: str, *, audience: str, policy: TokenPolicy, now: float | None = None) -> TokenFacts:
    """Check `token` against the request and the policy; return its facts or raise."""
    now = time.time() if now is None else now
    header, payload = decode_unverified(token)
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm.lower() == "none":
        raise _fail(Code.TOKEN_MALFORMED, f"uses alg {algorithm!r}; signed tokens only", token)
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail(Code.TOKEN_MALFORMED, "has a non-string kid", token)

    verified = False
    if policy.jwks:
        _verify_signature(token, algorithm, kid, policy.jwks)
        verified = True

    token_audience = payload.get("aud")
    if token_audience != audience and token_audience != [audience]:
        raise _fail(
            Code.TOKEN_AUDIENCE_MISMATCH, f"has aud {_short(token_audience)}, not the requested {audience!r}", token
        )
    issuer = payload.get("iss")
    if not isinstance(issuer, str) or issuer not in policy.issuers:
        raise _fail(
            Code.TOKEN_ISSUER_NOT_ALLOWED, f"has iss {_short(issuer)}, not one of {list(policy.issuers)}", token
        )
    for name, expected in policy.claims:
        if payload.get(name) != expected:
            raise _fail(
                Code.TOKEN_CLAIM_MISMATCH, f"has {name} = {_short(payload.get(name))}, expected {expected!r}", token
            )

    expires_at = _numeric(payload, "exp", token, required=True) or 0
    issued_at = _numeric(payload, "iat", token, required=False)
    not_before = _numeric(payload, "nbf", token, required=False)
    for name, value in (("nbf", not_before), ("iat", issued_at)):
        if value is not None and value > now + CLOCK_SKEW_SECONDS:
            raise _fail(Code.TOKEN_NOT_YET_VALID, f"has {name} {int(value - now)} s in the future", token)
    left = expires_at - now
    if left < policy.min_lifetime_seconds:
        state = "expired" if left <= 0 else f"has {int(left)} s left"
        raise _fail(
            Code.TOKEN_EXPIRES_TOO_SOON, f"{state}; the policy wants at least {policy.min_lifetime_seconds} s", token
        )
    if left > policy.max_lifetime_seconds:
        raise _fail(
            Code.TOKEN_LIFETIME_TOO_LONG,
            f"expires in {int(left)} s, more than the policy's max_lifetime_seconds {policy.max_lifetime_seconds}",
            token,
        )
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _fail(Code.TOKEN_MALFORMED, "has no string 'sub' claim", token)
    return TokenFacts(
        subject=subject,
        issuer=issuer,
        audience=audience,
        expires_at=expires_at,
        issued_at=issued_at,
        fingerprint=token_hash(token),
        algorithm=algorithm,
        key_id=kid,
        signature_verified=verified,
        claims=payload,
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 120 else text[:117] + "..."


def load_jwks(location: str, timeout: float = 5.0) -> dict[str, Any]:
    """The JWKS document at a path or http(s) URL."""
    try:
        if location.startswith(("http://", "https://")):
            from .sources import http

            endpoint, target = http.split_url(location)
            answer = http.get(endpoint, target, {}, timeout, limit=JWKS_LIMIT)
            if answer.status != 200:
                raise CredexecError(Code.JWKS_UNAVAILABLE, f"The JWKS at {location} answered HTTP {answer.status}.")
            data = answer.body
        else:
            with open(location, "rb") as f:
                data = f.read(JWKS_LIMIT + 1)
            if len(data) > JWKS_LIMIT:
                raise CredexecError(Code.JWKS_UNAVAILABLE, f"The JWKS {location} is larger than {JWKS_LIMIT} bytes.")
        document = json.loads(data)
    except CredexecError:
        raise
    except Exception as exc:  # OSError, HttpError, ValueError: all mean "no usable JWKS"
        raise CredexecError(
            Code.JWKS_UNAVAILABLE, f"Cannot read the JWKS {location}: {type(exc).__name__}. {Code.JWKS_UNAVAILABLE.fix}"
        ) from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise CredexecError(Code.JWKS_UNAVAILABLE, f"The JWKS {location} has no 'keys' list.")
    return document


def _verify_signature(token: str, algorithm: str, kid: str | None, location: str) -> None:
    import jwt

    if algorithm not in ALLOWED_ALGORITHMS:
        raise _fail(
            Code.TOKEN_SIGNATURE_INVALID, f"uses alg {algorithm!r}; allowed: {', '.join(ALLOWED_ALGORITHMS)}", token
        )
    document = load_jwks(location)
    try:
        keys = jwt.PyJWKSet.from_dict(document).keys
    except jwt.PyJWTError:
        raise CredexecError(Code.JWKS_UNAVAILABLE, f"The JWKS {location} holds no usable public key.") from None
    candidates = [k for k in keys if kid is None or k.key_id == kid]
    if not candidates:
        raise _fail(
            Code.TOKEN_SIGNATURE_INVALID, f"is signed with kid {kid!r}, which the JWKS {location} does not hold", token
        )
    for key in candidates:
        # A key of another type than the header's alg fails to decode and is skipped.
        try:
            jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                options={
                    "verify_aud": False,
                    "verify_iss": False,
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.PyJWTError:
            continue
        return
    raise _fail(Code.TOKEN_SIGNATURE_INVALID, f"does not verify with any key in the JWKS {location}", token)
