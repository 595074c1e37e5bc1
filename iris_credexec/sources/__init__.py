"""Token sources: where the host's OIDC tokens come from. One module per kind."""

from __future__ import annotations

from ..policy import SourceConfig
from .base import TokenSource


def build(config: SourceConfig) -> TokenSource:
    """The source the policy names. Addresses come from the policy, never the environment."""
    if config.kind == "metadata":
        from .metadata import MetadataSource

        return MetadataSource(config)
    if config.kind == "file":
        from .file import FileSource

        return FileSource(config)
    from .url import UrlSource

    return UrlSource(config)
