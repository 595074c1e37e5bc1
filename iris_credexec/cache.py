"""Per-key token cache on disk, with single flight across processes.

Files are private (0700 directory, 0600 files, owned by the caller), written
atomically, opened without following symlinks. Anything odd in a file is a
miss, never an error; anything odd about the directory turns the cache off for
this run (the token is fetched without it, never read from it).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from . import cachefs

LOCK_POLL_SECONDS = 0.01


class CacheUnavailable(Exception):
    """The cache cannot be used safely this run; the message says why and how to fix it."""


class CacheKey(NamedTuple):
    uid: int
    audience: str
    target: str
    token_type: str
    policy_digest: str

    @property
    def name(self) -> str:
        return cachefs.key_name(self.uid, self.audience, self.target, self.token_type, self.policy_digest)


class Entry(NamedTuple):
    key: CacheKey
    token_type: str
    id_token: str
    expiration_time: int  # what the client is told: exp minus the refresh margin
    expires_at: int  # the token's own exp
    fetched_at: float
    subject: str
    issuer: str
    fingerprint: str
    claims: Mapping[str, str] = MappingProxyType({})
    response_json: str = ""  # the success response exactly as response.render made it

    def fresh(self, now: float) -> bool:
        return cachefs.is_fresh(self.fetched_at, self.expires_at, self.expiration_time, now)

    def usable_when_source_down(self, now: float, min_lifetime: int) -> bool:
        if self.fetched_at > now + cachefs.CLOCK_SKEW_SECONDS:  # the clock jumped back
            return False
        return self.expires_at - now >= min_lifetime and now < self.expiration_time

    def to_document(self) -> dict[str, Any]:
        return {
            "format": cachefs.ENTRY_FORMAT,
            **self._asdict(),
            "key": self.key._asdict(),
            "claims": dict(self.claims),
        }

    @classmethod
    def from_document(cls, document: dict[str, Any] | None) -> Entry | None:
        if document is None:
            return None
        try:
            raw = dict(document)
            if raw.pop("format", None) != cachefs.ENTRY_FORMAT:
                return None
            raw["key"] = CacheKey(**raw["key"])
            entry = cls(**raw)
        except (ValueError, TypeError, KeyError):
            return None
        types_ok = (
            isinstance(entry.id_token, str)
            and isinstance(entry.expiration_time, int)
            and isinstance(entry.expires_at, int)
            and isinstance(entry.fetched_at, (int, float))
            and isinstance(entry.claims, dict)
            and isinstance(entry.response_json, str)
        )
        return entry if types_ok else None


class TokenCache:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    @classmethod
    def open(cls, configured: str, environ: Mapping[str, str], create: bool = True) -> TokenCache:
        """The cache at `configured` (or the default), created 0700 and checked."""
        directory = configured or cachefs.default_directory(environ)
        if create:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CacheUnavailable(f"cannot create the cache directory {directory}: {exc.strerror}") from None
        problem = cachefs.directory_problem(directory)
        if problem is not None:
            raise CacheUnavailable(problem)
        return cls(directory)

    def _path(self, key: CacheKey, suffix: str) -> str:
        return os.path.join(self.directory, key.name + suffix)

    def read(self, key: CacheKey) -> Entry | None:
        """The entry for `key`, or None for a miss (absent, torn, foreign, or of another key)."""
        entry = Entry.from_document(cachefs.read_json(self.directory, key.name + ".json"))
        if entry is None or entry.key != key:
            return None
        return entry

    def write(self, entry: Entry) -> None:
        cachefs.write_json(self.directory, entry.key.name + ".json", entry.to_document())

    def remove(self, key: CacheKey) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self._path(key, ".json"))

    @contextlib.contextmanager
    def lock(self, key: CacheKey, deadline: float) -> Iterator[bool]:
        """Hold the per-key lock until the block ends; yields False if `deadline` passed first.

        flock is dropped by the kernel when its holder dies, so a killed process
        never wedges the others.
        """
        path = self._path(key, ".lock")
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError:
            yield False
            return
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        yield False
                        return
                    time.sleep(LOCK_POLL_SECONDS)
            yield True
        finally:
            os.close(fd)

    def entries(self) -> list[tuple[str, Entry | None]]:
        """(file name, entry or None if unreadable) for every entry file, for `cache show`."""
        found = []
        for name in sorted(os.listdir(self.directory)):
            if name.endswith(".json") and not name.startswith((".", cachefs.SNAPSHOT_PREFIX)):
                found.append((name, Entry.from_document(cachefs.read_json(self.directory, name))))
        return found

    def clear(self) -> int:
        removed = 0
        for name in os.listdir(self.directory):
            if name.endswith((".json", ".lock", ".tmp")):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.directory, name))
                    removed += 1
        return removed


def describe_entry(entry: Entry, now: float) -> dict[str, Any]:
    """What `cache show` prints: never the token."""
    return {
        "audience": entry.key.audience,
        "service_account": entry.key.target or None,
        "token_type": entry.token_type,
        "uid": entry.key.uid,
        "policy_sha256": entry.key.policy_digest[:16],
        "subject": entry.subject,
        "issuer": entry.issuer,
        "token_sha256": entry.fingerprint,
        "expires_in_seconds": int(entry.expires_at - now),
        "fresh": entry.fresh(now),
    }
