"""The one exception base and the registry of stable refusal codes.

Every refusal iris-credexec can give has a code here. The executable-mode CLI
turns a `CredexecError` into a `success: false` response in exactly one place
(`exec_mode.answer`). The README's error table is checked against this registry
by `tests/test_errors.py`.
"""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Stable refusal codes. Value: (meaning, how to fix)."""

    # Request (what the client asked for).
    MISSING_AUDIENCE = (
        "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE is not set.",
        "Run iris-credexec through a Google client with an external_account config, "
        "or set the variable (inspect takes --audience).",
    )
    REQUEST_INVALID = (
        "A GOOGLE_EXTERNAL_ACCOUNT_* variable or flag is malformed (empty, too long, control characters).",
        "Fix the credential config or the environment the task sets.",
    )
    TOKEN_TYPE_UNSUPPORTED = (
        "The requested subject token type is not an OIDC ID token (for example SAML).",
        "Set subject_token_type to urn:ietf:params:oauth:token-type:id_token (or :jwt) in the credential config.",
    )
    INTERACTIVE_UNSUPPORTED = (
        "Interactive mode (workforce pools) was requested.",
        "Use a workload identity pool and remove interactive_timeout_millis from the config.",
    )
    # Policy (the host's word).
    POLICY_NOT_FOUND = (
        "The policy file does not exist or cannot be read.",
        "Mount the host's policy at the path given by --policy, IRIS_CREDEXEC_POLICY or /etc/iris-credexec/policy.toml.",
    )
    POLICY_INVALID = (
        "The policy cannot be parsed, has an unknown key, or a key of the wrong type or value.",
        "Fix the key the message names; the README lists every key.",
    )
    POLICY_UNSAFE = (
        "The policy could be changed by someone other than the host: a symlink, not a regular file, "
        "group/world-writable, or in a writable directory without the sticky bit.",
        "Mount the policy read-only, owned by root, mode 0644 or stricter.",
    )
    AUDIENCE_NOT_ALLOWED = (
        "The requested audience is not in [audiences] allow.",
        "Use the workload identity provider the host allows, or ask the operator to allow it.",
    )
    SERVICE_ACCOUNT_REQUIRED = (
        "No target service account is known but [service_accounts] require = true.",
        "Put --service-account EMAIL in the credential config's executable command.",
    )
    SERVICE_ACCOUNT_INVALID = (
        "The target service account is not a well-formed service account email.",
        "Use the lowercase email, for example name@project.iam.gserviceaccount.com.",
    )
    SERVICE_ACCOUNT_MISMATCH = (
        "--service-account and GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL name different accounts.",
        "Make the command's --service-account equal the account in service_account_impersonation_url.",
    )
    SERVICE_ACCOUNT_NOT_ALLOWED = (
        "The target service account is not in [service_accounts] allow.",
        "Use the service account this task's user is allowed, or ask the operator to allow it.",
    )
    # Context (facts about the caller).
    CONTEXT_ENV_MISSING = (
        "A variable named in [context] env is not set.",
        "Run inside the task the policy was written for (the worker sets the variable).",
    )
    CONTEXT_ENV_MISMATCH = (
        "A variable named in [context] env does not match its pattern.",
        "Run inside the task the policy was written for.",
    )
    CONTEXT_NOT_CONTAINER = (
        "[context] container = true but this process does not run in a container.",
        "Run inside the task container, or set container = false for host use.",
    )
    CONTEXT_UID_NOT_ALLOWED = (
        "The caller's uid is not in [context] uids.",
        "Run as one of the allowed uids.",
    )
    # Token source (the host).
    SOURCE_UNAVAILABLE = (
        "The token source could not be reached or failed (connection error, 5xx, 429) after retries.",
        "Check that the host's token source is running and reachable from the task.",
    )
    SOURCE_TIMEOUT = (
        "The token source did not answer within [source] deadline_seconds.",
        "Check the host's token source; raise deadline_seconds (keep it below the client's timeout_millis).",
    )
    SOURCE_DENIED = (
        "The token source refused the request (HTTP 4xx other than 429).",
        "Check that the host's broker or metadata server allows this task and audience.",
    )
    SOURCE_BAD_RESPONSE = (
        "The token source answered something that is not a token (empty, too large, wrong field).",
        "Check [source] field and the source's output.",
    )
    # Token checks.
    TOKEN_MALFORMED = (
        "The fetched token is not a well-formed JWT, or uses alg none.",
        "Check that the source returns OIDC ID tokens.",
    )
    TOKEN_AUDIENCE_MISMATCH = (
        "The token's aud is not exactly the requested audience.",
        "Check that the source mints tokens for the audience it is asked for.",
    )
    TOKEN_ISSUER_NOT_ALLOWED = (
        "The token's iss is not in [token] issuers.",
        "Add the source's issuer to [token] issuers, or fix the source.",
    )
    TOKEN_CLAIM_MISMATCH = (
        "A claim named in [token] claims is missing or different.",
        "Check that the source issues tokens for the identity the policy expects.",
    )
    TOKEN_EXPIRES_TOO_SOON = (
        "The token has less than [token] min_lifetime_seconds left.",
        "Check the host clock and the source's token lifetime.",
    )
    TOKEN_LIFETIME_TOO_LONG = (
        "The token's exp is further away than [token] max_lifetime_seconds.",
        "Check the source: ID tokens should be short-lived.",
    )
    TOKEN_NOT_YET_VALID = (
        "The token's nbf or iat lies in the future.",
        "Check the clocks of the host and the task.",
    )
    TOKEN_SIGNATURE_INVALID = (
        "The token's signature does not verify with [token] jwks (unknown kid, wrong algorithm, bad signature).",
        "Publish the source's current keys in the JWKS the policy names.",
    )
    JWKS_UNAVAILABLE = (
        "The JWKS named by [token] jwks cannot be read or parsed.",
        "Check the jwks path or URL in the policy.",
    )
    # Files the executable writes.
    OUTPUT_FILE_UNSAFE = (
        "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE is a symlink, a directory or not a regular file, or cannot be written.",
        "Point output_file at a path in a directory only the task user can write, and remove what is there.",
    )
    INTERNAL = (
        "An unexpected error inside iris-credexec.",
        "Run `iris-credexec --debug` (or `iris-credexec inspect`) with the same environment and report the output.",
    )

    @property
    def meaning(self) -> str:
        return self.value[0]

    @property
    def fix(self) -> str:
        return self.value[1]


class CredexecError(Exception):
    """A refusal or failure with a stable code.

    The message must say what went wrong and how to fix it. It must never
    contain a token or a key: identify tokens with `audit.token_hash`.
    """

    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"
