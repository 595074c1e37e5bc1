"""Turning a source's answer into a token string."""

from __future__ import annotations

import json

from .base import Failure, SourceError

TOKEN_LIMIT = 64 * 1024


def token_from_body(body: bytes, field: str, where: str) -> str:
    """The token in `body`: the whole body, or `field` of a JSON object."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SourceError(Failure.BAD_RESPONSE, f"{where} is not UTF-8 text") from None
    if field:
        try:
            document = json.loads(text)
        except ValueError:
            raise SourceError(Failure.BAD_RESPONSE, f"{where} is not JSON but [source] field = {field!r}") from None
        value = document.get(field) if isinstance(document, dict) else None
        if not isinstance(value, str):
            raise SourceError(Failure.BAD_RESPONSE, f"{where} has no string field {field!r}")
        text = value
    token = text.strip()
    if not token:
        raise SourceError(Failure.BAD_RESPONSE, f"{where} is empty")
    if len(token) > TOKEN_LIMIT:
        raise SourceError(Failure.BAD_RESPONSE, f"{where} is larger than {TOKEN_LIMIT} bytes")
    if any(c.isspace() for c in token):
        raise SourceError(Failure.BAD_RESPONSE, f"{where} is not a single token (it contains white space)")
    return token
