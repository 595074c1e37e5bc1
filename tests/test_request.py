"""What the client asked for: env parsing and the target service account."""

from __future__ import annotations

import pytest

from iris_credexec import request
from iris_credexec.errors import Code, CredexecError
from iris_credexec.response import TokenType
from tests.conftest import ALICE, BOB

AUD = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"
BASE = {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": AUD, "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": TokenType.ID_TOKEN.value}


def code_of(environ: dict[str, str], flag: str | None = None) -> Code:
    with pytest.raises(CredexecError) as info:
        request.from_environment(environ, flag)
    return info.value.code


def test_reads_the_client_variables() -> None:
    req = request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": "/tmp/o.json"}, ALICE)
    assert (req.audience, req.token_type, req.target, req.revoke) == (AUD, TokenType.ID_TOKEN, ALICE, False)
    assert request.output_file_of({"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": "/tmp/o.json"}) == "/tmp/o.json"
    assert request.output_file_of({"GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": "/tmp/\n"}) is None


def test_jwt_token_type_is_echoed() -> None:
    req = request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": TokenType.JWT.value}, None)
    assert req.token_type is TokenType.JWT


def test_target_from_either_source_and_they_must_agree() -> None:
    assert request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": ALICE}, None).target == ALICE
    assert (
        request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": ALICE}, ALICE).target == ALICE
    )
    assert request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": ""}, ALICE).target == ALICE
    assert code_of({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": BOB}, ALICE) is Code.SERVICE_ACCOUNT_MISMATCH


def test_revoke() -> None:
    assert request.from_environment({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_REVOKE": "1"}, None).revoke is True


@pytest.mark.parametrize(
    ("environ", "flag", "code"),
    [
        ({}, None, Code.MISSING_AUDIENCE),
        ({"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": ""}, None, Code.MISSING_AUDIENCE),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "1"}, None, Code.INTERACTIVE_UNSUPPORTED),
        (
            {**BASE, "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:saml2"},
            None,
            Code.TOKEN_TYPE_UNSUPPORTED,
        ),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "bogus"}, None, Code.TOKEN_TYPE_UNSUPPORTED),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": "a" * 5000}, None, Code.REQUEST_INVALID),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": AUD + "\n"}, None, Code.REQUEST_INVALID),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": AUD + "\x00"}, None, Code.REQUEST_INVALID),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": AUD + "\udcff"}, None, Code.REQUEST_INVALID),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE": "/tmp/\n"}, None, Code.REQUEST_INVALID),
        (BASE, "Alice@iris-users.iam.gserviceaccount.com", Code.SERVICE_ACCOUNT_INVALID),
        (BASE, "alice@iris-users.iam.gserviceaccount.com.", Code.SERVICE_ACCOUNT_INVALID),
        (BASE, "*@iris-users.iam.gserviceaccount.com", Code.SERVICE_ACCOUNT_INVALID),
        (BASE, "alice@example.com", Code.SERVICE_ACCOUNT_INVALID),
        (BASE, "alice@iris-users.iam.gserviceaccount.com\n", Code.REQUEST_INVALID),
        ({**BASE, "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL": "x y"}, None, Code.SERVICE_ACCOUNT_INVALID),
    ],
)
def test_refusals(environ: dict[str, str], flag: str | None, code: Code) -> None:
    assert code_of(environ, flag) is code
