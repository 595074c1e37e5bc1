"""The one interface every token source implements, and the retry loop around it."""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..errors import Code, CredexecError

if TYPE_CHECKING:
    from .http import HttpError


class Failure(enum.Enum):
    TRANSIENT = "transient"  # connection error, 5xx, 429: worth another try
    TIMEOUT = "timeout"  # no answer in time: worth another try while the deadline allows
    DENIED = "denied"  # 4xx other than 429: asking again will not help
    BAD_RESPONSE = "bad_response"  # an answer that is not a token


class SourceError(Exception):
    """One failed attempt. Messages describe the failure, never a token."""

    def __init__(self, failure: Failure, message: str) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message


class TokenSource(Protocol):
    kind: str

    def describe(self) -> str:
        """Where tokens come from, for reports and audit lines (no secrets)."""
        ...

    def fetch_once(self, audience: str, timeout: float) -> str:
        """One attempt: the raw token, or SourceError. Must return within `timeout` seconds."""
        ...


def classify_status(status: int) -> Failure | None:
    if status == 200:
        return None
    if status == 429 or status >= 500:
        return Failure.TRANSIENT
    if 400 <= status < 500:
        return Failure.DENIED
    return Failure.BAD_RESPONSE


def failure_of_http(exc: HttpError) -> Failure:
    if exc.malformed:
        return Failure.BAD_RESPONSE
    return Failure.TIMEOUT if exc.timed_out else Failure.TRANSIENT


_CODES = {
    Failure.TRANSIENT: Code.SOURCE_UNAVAILABLE,
    Failure.TIMEOUT: Code.SOURCE_TIMEOUT,
    Failure.DENIED: Code.SOURCE_DENIED,
    Failure.BAD_RESPONSE: Code.SOURCE_BAD_RESPONSE,
}
_RETRIED = (Failure.TRANSIENT, Failure.TIMEOUT)
BACKOFF_BASE = 0.1
BACKOFF_CAP = 2.0


def fetch_with_retries(
    source: TokenSource,
    audience: str,
    *,
    timeout_seconds: float,
    deadline_seconds: float,
    max_attempts: int,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[str, int]:
    """The token and the number of attempts it took, all within one deadline.

    Retries transient failures with capped exponential backoff and full jitter;
    the deadline stays below the clients' executable timeout so that they get our
    precise code instead of killing us.
    """
    deadline = clock() + deadline_seconds
    last: SourceError | None = None
    attempt = 0
    while attempt < max_attempts:
        remaining = deadline - clock()
        if remaining <= 0.01:
            break
        attempt += 1
        try:
            return source.fetch_once(audience, min(timeout_seconds, remaining)), attempt
        except SourceError as exc:
            last = exc
            if exc.failure not in _RETRIED:
                break
        if attempt < max_attempts:
            pause = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)))  # jitter  # noqa: S311  # nosec B311
            if clock() + pause >= deadline:
                break
            sleep(pause)
    if last is None:
        raise CredexecError(
            Code.SOURCE_TIMEOUT,
            f"No time left to ask {source.describe()} within the {deadline_seconds:g} s deadline.",
        )
    timed_out = clock() >= deadline - 0.01 and last.failure in _RETRIED
    code = Code.SOURCE_TIMEOUT if timed_out or last.failure is Failure.TIMEOUT else _CODES[last.failure]
    tries = f"after {attempt} attempt{'s' if attempt != 1 else ''}"
    raise CredexecError(code, f"Token source {source.describe()} failed {tries}: {last.message}. {code.fix}")
