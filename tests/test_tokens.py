"""Token checks, one code per failed check."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest

from iris_credexec import tokens
from iris_credexec.errors import Code, CredexecError
from iris_credexec.policy import TokenPolicy
from tests.conftest import make_token, session_key
from tests.standins import POOL_AUDIENCE, WORKER_EMAIL, SigningKey

POLICY = TokenPolicy(claims=(("email", WORKER_EMAIL),))


def b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def code_of(token: str, policy: TokenPolicy = POLICY, audience: str = POOL_AUDIENCE) -> Code:
    with pytest.raises(CredexecError) as info:
        tokens.check(token, audience=audience, policy=policy)
    assert token not in info.value.message
    if info.value.code is not Code.JWKS_UNAVAILABLE:  # about the token: named by its hash
        assert tokens.token_hash(token) in info.value.message
    return info.value.code


def test_valid_token_facts() -> None:
    token = make_token()
    facts = tokens.check(token, audience=POOL_AUDIENCE, policy=POLICY)
    assert facts.subject and facts.issuer == "https://accounts.google.com"
    assert facts.expires_at - time.time() > 3500
    assert facts.signature_verified is False
    assert facts.fingerprint == tokens.token_hash(token) and len(facts.fingerprint) == 16


def test_list_audience_of_one_is_accepted_but_not_of_two() -> None:
    tokens.check(make_token(aud=[POOL_AUDIENCE]), audience=POOL_AUDIENCE, policy=POLICY)
    assert code_of(make_token(aud=[POOL_AUDIENCE, "other"])) is Code.TOKEN_AUDIENCE_MISMATCH


now = int(time.time())
CASES = [
    ("not a jwt", "hello", Code.TOKEN_MALFORMED),
    ("alg none", b64({"alg": "none"}) + "." + b64({"aud": POOL_AUDIENCE}) + ".", Code.TOKEN_MALFORMED),
    (
        "payload not object",
        b64({"alg": "RS256"}) + "." + base64.urlsafe_b64encode(b"[1]").decode().rstrip("=") + ".c2ln",
        Code.TOKEN_MALFORMED,
    ),
    ("wrong aud", make_token(audience="//other"), Code.TOKEN_AUDIENCE_MISMATCH),
    ("wrong iss", make_token(iss="https://evil.example"), Code.TOKEN_ISSUER_NOT_ALLOWED),
    ("claim differs", make_token(email="someone@else.iam.gserviceaccount.com"), Code.TOKEN_CLAIM_MISMATCH),
    ("claim missing", make_token(email=None), Code.TOKEN_CLAIM_MISMATCH),
    ("expired", make_token(lifetime=-10), Code.TOKEN_EXPIRES_TOO_SOON),
    ("too little left", make_token(lifetime=100), Code.TOKEN_EXPIRES_TOO_SOON),
    ("absurd lifetime", make_token(lifetime=10 * 365 * 86400), Code.TOKEN_LIFETIME_TOO_LONG),
    ("nbf in future", make_token(nbf=now + 3000), Code.TOKEN_NOT_YET_VALID),
    ("iat in future", make_token(iat=now + 3000), Code.TOKEN_NOT_YET_VALID),
    ("exp string", make_token(exp="tomorrow"), Code.TOKEN_MALFORMED),
    ("exp bool", make_token(exp=True), Code.TOKEN_MALFORMED),
    ("no exp", make_token(exp=None), Code.TOKEN_MALFORMED),
    ("sub not string", make_token(sub=5), Code.TOKEN_MALFORMED),
]


@pytest.mark.parametrize(("name", "token", "code"), CASES, ids=[c[0] for c in CASES])
def test_each_check_has_its_code(name: str, token: str, code: Code) -> None:
    assert code_of(token) is code


class TestSignature:
    def policy(self, jwks: str) -> TokenPolicy:
        return TokenPolicy(jwks=jwks)

    def test_verified_with_jwks(self, jwks_file: Path) -> None:
        facts = tokens.check(make_token(), audience=POOL_AUDIENCE, policy=self.policy(str(jwks_file)))
        assert facts.signature_verified and facts.key_id == session_key().kid

    def test_other_key_same_kid_fails(self, jwks_file: Path) -> None:
        forged = make_token(key=SigningKey(kid=session_key().kid))
        assert code_of(forged, self.policy(str(jwks_file))) is Code.TOKEN_SIGNATURE_INVALID

    def test_unknown_kid(self, jwks_file: Path) -> None:
        assert (
            code_of(make_token(key=SigningKey(kid="other")), self.policy(str(jwks_file)))
            is Code.TOKEN_SIGNATURE_INVALID
        )

    def test_hs256_with_public_key_as_secret(self, jwks_file: Path) -> None:
        forged = jwt.encode(
            {"aud": POOL_AUDIENCE, "iss": "https://accounts.google.com", "sub": "x", "exp": now + 3600},
            "secret-that-is-long-enough-for-hmac-sha256",
            algorithm="HS256",
            headers={"kid": session_key().kid},
        )
        assert code_of(forged, self.policy(str(jwks_file))) is Code.TOKEN_SIGNATURE_INVALID

    def test_tampered_payload(self, jwks_file: Path) -> None:
        header, _, signature = make_token().split(".")
        payload = b64({"aud": POOL_AUDIENCE, "iss": "https://accounts.google.com", "sub": "other", "exp": now + 3600})
        assert code_of(f"{header}.{payload}.{signature}", self.policy(str(jwks_file))) is Code.TOKEN_SIGNATURE_INVALID

    @pytest.mark.parametrize("content", ["not json", '{"nokeys": 1}', '{"keys": [{"kty": "weird"}]}'])
    def test_garbage_jwks(self, tmp_path: Path, content: str) -> None:
        path = tmp_path / "bad.json"
        path.write_text(content)
        assert code_of(make_token(), self.policy(str(path))) is Code.JWKS_UNAVAILABLE

    def test_missing_or_unreachable_jwks(self, tmp_path: Path) -> None:
        assert code_of(make_token(), self.policy(str(tmp_path / "absent.json"))) is Code.JWKS_UNAVAILABLE
        from tests.standins import free_port

        assert code_of(make_token(), self.policy(f"http://127.0.0.1:{free_port()}/jwks")) is Code.JWKS_UNAVAILABLE

    def test_jwks_over_http(self, standin) -> None:  # type: ignore[no-untyped-def]
        facts = tokens.check(make_token(), audience=POOL_AUDIENCE, policy=self.policy(f"{standin.url}/jwks"))
        assert facts.signature_verified
