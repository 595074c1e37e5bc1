"""The versioned JSON contract the Google clients read, and its only writer.

Types are strict because the Go and Java clients reject anything else:
`version` the integer 1, `success` a JSON boolean, `expiration_time` integer
seconds, `code`/`message` non-empty strings.
"""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import NamedTuple

from . import fsutil
from .errors import Code, CredexecError

CONTRACT_VERSION = 1


class TokenType(enum.Enum):
    ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"  # a URN, not a secret  # noqa: S105  # nosec B105
    JWT = "urn:ietf:params:oauth:token-type:jwt"


class Success(NamedTuple):
    token_type: TokenType
    id_token: str
    expiration_time: int

    def to_dict(self) -> dict[str, object]:
        return {
            "version": CONTRACT_VERSION,
            "success": True,
            "token_type": self.token_type.value,
            "id_token": self.id_token,
            "expiration_time": int(self.expiration_time),
        }


class Failure(NamedTuple):
    code: str
    message: str

    @classmethod
    def from_error(cls, error: CredexecError) -> Failure:
        return cls(code=error.code.name, message=error.message or error.code.meaning)

    def to_dict(self) -> dict[str, object]:
        return {
            "version": CONTRACT_VERSION,
            "success": False,
            "code": self.code or Code.INTERNAL.name,
            "message": self.message or Code.INTERNAL.meaning,
        }


class RevokeAck(NamedTuple):
    """The answer to GOOGLE_EXTERNAL_ACCOUNT_REVOKE=1 (gcloud)."""

    def to_dict(self) -> dict[str, object]:
        return {"version": CONTRACT_VERSION, "success": True}


Response = Success | Failure | RevokeAck


def render(response: Response) -> str:
    return json.dumps(response.to_dict(), separators=(",", ":"))


def write_stdout(response: Response) -> None:
    """Print the response as one JSON object, in one write."""
    sys.stdout.buffer.write((render(response) + "\n").encode())
    sys.stdout.buffer.flush()


def write_output_file(path: str, response: Success) -> None:
    """Write a success response where the client reads it back, atomically.

    Node, Go and Java fail hard on a torn file and no client locks it, so the
    file is replaced by rename, never written in place; an existing symlink,
    directory or special file is refused rather than followed or replaced.
    """
    try:
        fsutil.replace_regular(path, (render(response) + "\n").encode(), mode=0o600)
    except (fsutil.UnsafePath, OSError) as exc:
        raise CredexecError(
            Code.OUTPUT_FILE_UNSAFE,
            f"Cannot write the output file {path!r} ({_describe(exc)}). "
            "Remove what is there, or point output_file at a path in a directory the task user owns.",
        ) from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def remove_output_file(path: str) -> None:
    """Drop a stale output file so a client never reads back an old answer."""
    try:
        fsutil.refuse_non_regular(path)
        os.unlink(path)
    except (FileNotFoundError, fsutil.UnsafePath, OSError):
        pass
