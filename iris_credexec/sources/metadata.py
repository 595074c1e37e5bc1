"""The GCE metadata server's identity endpoint (tokens for the VM's service account)."""

from __future__ import annotations

from urllib.parse import quote

from ..policy import SourceConfig
from . import http
from .base import SourceError, classify_status, failure_of_http
from .extract import token_from_body


class MetadataSource:
    kind = "metadata"

    def __init__(self, config: SourceConfig) -> None:
        self.endpoint = http.parse_host_port(config.host, default_port=80)
        self.account = config.service_account
        self.host = config.host

    def describe(self) -> str:
        return f"metadata server {self.host} (service account {self.account})"

    def fetch_once(self, audience: str, timeout: float) -> str:
        target = http.with_query(
            f"/computeMetadata/v1/instance/service-accounts/{quote(self.account, safe='@.')}/identity",
            audience=audience,
            format="full",
        )
        try:
            answer = http.get(self.endpoint, target, {"Metadata-Flavor": "Google"}, timeout)
        except http.HttpError as exc:
            raise SourceError(failure_of_http(exc), str(exc)) from None
        failure = classify_status(answer.status)
        if failure is not None:
            raise SourceError(failure, f"HTTP {answer.status}")
        return token_from_body(answer.body, "", "the metadata server's answer")
