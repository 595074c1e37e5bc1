"""One JSON line per decision, for the operator. Tokens appear only as a short hash."""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False  # typing costs a cache hit ~2 ms; only the type checker needs it
if TYPE_CHECKING:
    from typing import Any


def token_hash(token: str) -> str:
    """A short, stable identifier for a token: safe to log, useless to replay."""
    from .digest import sha256_hex

    return sha256_hex(token.encode("utf-8", "surrogatepass"))[:16]


def write(path: str, record: dict[str, Any]) -> bool:
    """Append `record` to the audit log at `path`. Never raises: auditing must not break a client.

    Returns False when the line could not be written.
    """
    line = json.dumps({"time": round(time.time(), 3), **record}, separators=(",", ":"), default=str) + "\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
    except OSError:
        return False
    try:
        # One write of a line below PIPE_BUF-ish sizes keeps concurrent lines whole with O_APPEND.
        os.write(fd, line.encode("utf-8", "backslashreplace"))
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
