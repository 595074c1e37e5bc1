"""Property-based tests: for any input, a valid answer or a refusal with a registered code.

Bounded in .ci/run (profile "ci"); run longer with HYPOTHESIS_PROFILE=long.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from iris_credexec import env_vars, exec_mode, policy, request, response, tokens
from iris_credexec.errors import Code, CredexecError
from iris_credexec.policy import TokenPolicy
from tests.conftest import ALICE, write_file_source_policy
from tests.standins import POOL_AUDIENCE, WORKER_EMAIL

CODES = {c.name for c in Code} - {"INTERNAL"}
scalars = st.one_of(st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=False), st.text(max_size=40))
toml_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
KNOWN = {
    "audiences": ["allow"],
    "service_accounts": ["allow", "require"],
    "context": ["env", "container", "uids"],
    "source": [
        "kind",
        "timeout_seconds",
        "deadline_seconds",
        "max_attempts",
        "service_account",
        "host",
        "path",
        "url",
        "http_path",
        "headers",
        "field",
    ],
    "token": ["issuers", "min_lifetime_seconds", "max_lifetime_seconds", "refresh_margin_seconds", "claims", "jwks"],
    "cache": ["enabled", "dir"],
    "audit": ["path"],
}


@st.composite
def policies(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {"version": draw(st.sampled_from([1, 1, 1, 2, "1"]))}
    for table, keys in KNOWN.items():
        if draw(st.booleans()):
            raw[table] = {
                key: draw(toml_values) for key in draw(st.lists(st.sampled_from(keys), max_size=4, unique=True))
            }
    if draw(st.booleans()):
        raw[draw(st.text(max_size=8))] = draw(toml_values)
    return raw


@given(policies())
def test_policy_parse_never_crashes(raw: dict[str, Any]) -> None:
    try:
        parsed = policy.parse(raw)
    except CredexecError as exc:
        assert exc.code is Code.POLICY_INVALID and exc.message
        return
    assert parsed.audiences and all(isinstance(a, str) for a in parsed.audiences)
    assert 0 < parsed.source.timeout_seconds <= parsed.source.deadline_seconds


env_values = st.one_of(
    st.none(),
    st.text(max_size=60),
    st.sampled_from(
        [
            POOL_AUDIENCE,
            ALICE,
            "1",
            "0",
            "urn:ietf:params:oauth:token-type:id_token",
            "urn:ietf:params:oauth:token-type:saml2",
        ]
    ),
)


@given(
    st.fixed_dictionaries({name: env_values for name in env_vars.CLIENT_VARIABLES}),
    env_values,
)
def test_request_parse_never_crashes(env: dict[str, str | None], flag: str | None) -> None:
    environ = {k: v for k, v in env.items() if v is not None}
    try:
        req = request.from_environment(environ, flag)
    except CredexecError as exc:
        assert exc.code.name in CODES
        return
    assert req.audience and req.audience.isprintable()
    assert req.target is None or policy.is_service_account_email(req.target)


def unsigned_token(claims: dict[str, Any]) -> str:
    """A JWS of any claims (pyjwt refuses to encode some of them); no JWKS, so not verified."""
    import base64

    def b64(doc: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': 'RS256', 'typ': 'JWT'})}.{b64(claims)}.c2lnbmF0dXJl"


claim_values = st.one_of(st.none(), scalars, st.lists(st.text(max_size=10), max_size=2))


@given(
    aud=st.one_of(st.just(POOL_AUDIENCE), claim_values),
    iss=st.one_of(st.just("https://accounts.google.com"), claim_values),
    email=st.one_of(st.just(WORKER_EMAIL), claim_values),
    exp_offset=st.one_of(st.integers(-(10**6), 10**7), st.none()),
    nbf_offset=st.one_of(st.none(), st.integers(-(10**4), 10**4)),
    sub=st.one_of(st.just("123"), claim_values),
)
def test_token_check_passes_only_good_tokens(
    aud: Any, iss: Any, email: Any, exp_offset: int | None, nbf_offset: int | None, sub: Any
) -> None:
    now = int(time.time())
    claims = {"aud": aud, "iss": iss, "email": email, "sub": sub, "iat": now}
    claims["exp"] = None if exp_offset is None else now + exp_offset
    claims["nbf"] = None if nbf_offset is None else now + nbf_offset
    token = unsigned_token({k: v for k, v in claims.items() if v is not None})
    rules = TokenPolicy(claims=(("email", WORKER_EMAIL),))
    try:
        facts = tokens.check(token, audience=POOL_AUDIENCE, policy=rules, now=now)
    except CredexecError as exc:
        assert exc.code.name in CODES and token not in exc.message
        return
    # Every check held.
    assert aud in (POOL_AUDIENCE, [POOL_AUDIENCE]) and iss == "https://accounts.google.com" and email == WORKER_EMAIL
    assert exp_offset is not None and rules.min_lifetime_seconds <= exp_offset <= rules.max_lifetime_seconds
    assert nbf_offset is None or nbf_offset <= 60
    assert facts.subject == sub


@given(st.text(max_size=300))
def test_token_check_on_arbitrary_text(text: str) -> None:
    try:
        tokens.check(text, audience=POOL_AUDIENCE, policy=TokenPolicy())
    except CredexecError as exc:
        assert exc.code.name in CODES
    else:
        raise AssertionError("arbitrary text passed every token check")


@given(st.text(), st.text(), st.integers(0, 2**40), st.text(min_size=1))
def test_responses_keep_strict_types(code: str, message: str, expiration: int, token: str) -> None:
    failure = json.loads(response.render(response.Failure(code, message)))
    assert failure["version"] == 1 and failure["success"] is False
    assert (
        isinstance(failure["code"], str)
        and failure["code"]
        and isinstance(failure["message"], str)
        and failure["message"]
    )
    success = json.loads(response.render(response.Success(response.TokenType.ID_TOKEN, token, expiration)))
    assert type(success["expiration_time"]) is int and success["id_token"] == token and success["success"] is True


@given(
    st.fixed_dictionaries(
        {
            "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": st.one_of(st.just(POOL_AUDIENCE), st.text(max_size=30)),
            "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": st.sampled_from(
                ["urn:ietf:params:oauth:token-type:id_token", "urn:ietf:params:oauth:token-type:jwt", "x"]
            ),
            "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": st.one_of(st.just(""), st.just(ALICE), st.text(max_size=20)),
            "IRIS_TASK_ID": st.one_of(st.just("/alice/t/0"), st.text(max_size=20)),
        }
    ),
    st.one_of(st.none(), st.just(ALICE), st.text(max_size=20)),
)
def test_whole_pipeline_answers_or_refuses(fuzz_policy: Path, environ: dict[str, str], flag: str | None) -> None:
    outcome = exec_mode.answer(
        exec_mode.Invocation(environ={**environ, "IRIS_CREDEXEC_POLICY": str(fuzz_policy)}, service_account_flag=flag)
    )
    doc = json.loads(response.render(outcome))
    if doc["success"]:
        assert environ["GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE"] == POOL_AUDIENCE and environ["IRIS_TASK_ID"] == "/alice/t/0"
        assert (flag or environ["GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL"]) == ALICE
        assert doc["token_type"] == environ["GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE"]
    else:
        assert doc["code"] in CODES


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def fuzz_policy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_file_source_policy(tmp_path_factory.mktemp("fuzz"), cache={"enabled": False})
