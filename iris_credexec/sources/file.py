"""A file the host keeps fresh (for example a projected token mounted into the task)."""

from __future__ import annotations

import os
import stat

from ..policy import SourceConfig
from .base import Failure, SourceError
from .extract import TOKEN_LIMIT, token_from_body


class FileSource:
    kind = "file"

    def __init__(self, config: SourceConfig) -> None:
        self.path = config.path
        self.field = config.field

    def describe(self) -> str:
        return f"file {self.path}"

    def fetch_once(self, audience: str, timeout: float) -> str:
        # Symlinks are followed on purpose: projected token mounts are symlinks
        # into a timestamped directory. O_NONBLOCK keeps a FIFO from hanging us.
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise SourceError(Failure.TRANSIENT, "the file does not exist (yet)") from None
        except OSError as exc:
            raise SourceError(Failure.DENIED, f"cannot open it: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise SourceError(Failure.BAD_RESPONSE, "it is not a regular file")
            if st.st_size > 4 * TOKEN_LIMIT:
                raise SourceError(Failure.BAD_RESPONSE, f"it is larger than {4 * TOKEN_LIMIT} bytes")
            body = os.read(fd, 4 * TOKEN_LIMIT + 1)
        finally:
            os.close(fd)
        return token_from_body(body, self.field, f"the file {self.path}")
