"""Every environment variable iris-credexec reads, in one place.

Only names live here: values are read in functions, at call time.
"""

# Set by the Google client libraries when they run the executable.
AUDIENCE = "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE"
TOKEN_TYPE = "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE"  # a name, not a secret  # noqa: S105  # nosec B105
INTERACTIVE = "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE"
IMPERSONATED_EMAIL = "GOOGLE_EXTERNAL_ACCOUNT_IMPERSONATED_EMAIL"
OUTPUT_FILE = "GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE"
REVOKE = "GOOGLE_EXTERNAL_ACCOUNT_REVOKE"
CLIENT_VARIABLES = (AUDIENCE, TOKEN_TYPE, INTERACTIVE, IMPERSONATED_EMAIL, OUTPUT_FILE, REVOKE)
# Set by the task environment for iris-credexec itself.
POLICY = "IRIS_CREDEXEC_POLICY"
# Where the per-user cache goes when the policy names no directory.
XDG_RUNTIME_DIR = "XDG_RUNTIME_DIR"
