"""What the client asked for, read from the environment the client set and our flags.

Everything here comes from the caller and is untrusted: values are bounded and
checked before anything else looks at them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from . import env_vars
from .decide import VALUE_LIMIT, clean_value, is_service_account_email
from .errors import Code, CredexecError
from .response import TokenType


class ExecRequest(NamedTuple):
    audience: str
    token_type: TokenType
    target: str | None  # the service account to be impersonated, when known
    revoke: bool


def _clean(name: str, value: str | None) -> str | None:
    """An env value or flag, or None when absent; refuse values no honest client sends."""
    if value is None:
        return None
    if not clean_value(value):
        problem = (
            f"is longer than {VALUE_LIMIT} characters"
            if len(value) > VALUE_LIMIT
            else "contains control characters or bytes that are not UTF-8"
        )
        raise CredexecError(Code.REQUEST_INVALID, f"{name} {problem}.")
    return value


def output_file_of(environ: Mapping[str, str]) -> str | None:
    """The client's output file, or None when unset or malformed (then nothing is written)."""
    try:
        return _clean(env_vars.OUTPUT_FILE, environ.get(env_vars.OUTPUT_FILE)) or None
    except CredexecError:
        return None


def target_service_account(flag: str | None, environ: Mapping[str, str]) -> str | None:
    """The target account: the command's --service-account and the client's env must agree.

    Python google-auth and gcloud never pass IMPERSONATED_EMAIL, so the flag carries it;
    Node and Go pass it too, and a disagreement means the config was tampered with.
    """
    flag = _clean("--service-account", flag)
    from_env = _clean(env_vars.IMPERSONATED_EMAIL, environ.get(env_vars.IMPERSONATED_EMAIL)) or None
    for name, value in (("--service-account", flag), (env_vars.IMPERSONATED_EMAIL, from_env)):
        if value is not None and not is_service_account_email(value):
            raise CredexecError(
                Code.SERVICE_ACCOUNT_INVALID,
                f"{name} is {value!r}, which is not a lowercase service account email "
                "(name@project.iam.gserviceaccount.com).",
            )
    if flag is not None and from_env is not None and flag != from_env:
        raise CredexecError(
            Code.SERVICE_ACCOUNT_MISMATCH,
            f"--service-account is {flag!r} but the client impersonates {from_env!r}. "
            "Make them equal in the credential config.",
        )
    return flag or from_env


def from_environment(
    environ: Mapping[str, str], service_account: str | None, audience_flag: str | None = None
) -> ExecRequest:
    if _clean(env_vars.INTERACTIVE, environ.get(env_vars.INTERACTIVE)) == "1":
        raise CredexecError(
            Code.INTERACTIVE_UNSUPPORTED,
            "Interactive mode (GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE=1) is for workforce pools; "
            "iris-credexec serves workload identity pools only. Remove interactive_timeout_millis from the config.",
        )
    revoke = _clean(env_vars.REVOKE, environ.get(env_vars.REVOKE)) == "1"
    audience = _clean("--audience", audience_flag) or _clean(env_vars.AUDIENCE, environ.get(env_vars.AUDIENCE))
    if not audience:
        raise CredexecError(
            Code.MISSING_AUDIENCE,
            f"{env_vars.AUDIENCE} is not set: iris-credexec is run by Google's client libraries from an "
            "external_account credential config (to try it by hand, use `iris-credexec inspect --audience ...`).",
        )
    raw_type = _clean(env_vars.TOKEN_TYPE, environ.get(env_vars.TOKEN_TYPE)) or TokenType.ID_TOKEN.value
    try:
        token_type = TokenType(raw_type)
    except ValueError:
        raise CredexecError(
            Code.TOKEN_TYPE_UNSUPPORTED,
            f"Subject token type {raw_type!r} is not supported: iris-credexec returns OIDC ID tokens. "
            f"Set subject_token_type to {TokenType.ID_TOKEN.value} in the credential config.",
        ) from None
    # The output file itself is exec_mode's (output_file_of); a malformed one is refused here.
    _clean(env_vars.OUTPUT_FILE, environ.get(env_vars.OUTPUT_FILE))
    return ExecRequest(
        audience=audience,
        token_type=token_type,
        target=target_service_account(service_account, environ),
        revoke=revoke,
    )
