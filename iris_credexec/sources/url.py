"""An HTTP endpoint over TCP or a unix socket (the host broker, a sidecar)."""

from __future__ import annotations

from ..policy import SourceConfig
from . import http
from .base import SourceError, classify_status, failure_of_http
from .extract import token_from_body


class UrlSource:
    kind = "url"

    def __init__(self, config: SourceConfig) -> None:
        self.url = config.url
        self.endpoint, self.target = http.split_url(config.url, config.http_path)
        self.headers = dict(config.headers)
        self.field = config.field

    def describe(self) -> str:
        return f"url {self.url}"

    def fetch_once(self, audience: str, timeout: float) -> str:
        target = http.with_query(self.target, audience=audience)
        try:
            answer = http.get(self.endpoint, target, self.headers, timeout)
        except http.HttpError as exc:
            raise SourceError(failure_of_http(exc), str(exc)) from None
        failure = classify_status(answer.status)
        if failure is not None:
            raise SourceError(failure, f"HTTP {answer.status}")
        return token_from_body(answer.body, self.field, f"the answer of {self.url}")
