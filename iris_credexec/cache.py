"""Per-key token cache on disk, with single flight across processes.

Files are private (0700 directory, 0600 files, owned by the caller), written
atomically, opened without following symlinks. Anything odd in a file is a
miss, never an error; anything odd about the directory turns the cache off for
this run (the token is fetched without it, never read from it).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from . import env_vars, fsutil

ENTRY_LIMIT = 256 * 1024
ENTRY_FORMAT = 1
LOCK_POLL_SECONDS = 0.01


class CacheUnavailable(Exception):
    """The cache cannot be used safely this run; the message says why and how to fix it."""


@dataclass(frozen=True)
class CacheKey:
    uid: int
    audience: str
    target: str
    token_type: str
    policy_digest: str

    @property
    def name(self) -> str:
        material = json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(material.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Entry:
    key: CacheKey
    token_type: str
    id_token: str
    expiration_time: int  # what the client is told: exp minus the refresh margin
    expires_at: int  # the token's own exp
    fetched_at: float
    subject: str
    issuer: str
    fingerprint: str
    claims: Mapping[str, str] = field(default_factory=dict)

    def fresh(self, now: float) -> bool:
        """Served without asking the source: less than half its life gone, and before the margin."""
        half_life = self.fetched_at + (self.expires_at - self.fetched_at) / 2
        return now < half_life and now < self.expiration_time

    def usable_when_source_down(self, now: float, min_lifetime: int) -> bool:
        return self.expires_at - now >= min_lifetime and now < self.expiration_time

    def to_json(self) -> bytes:
        return json.dumps({"format": ENTRY_FORMAT, **asdict(self)}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Entry | None:
        try:
            raw = json.loads(data)
            if not isinstance(raw, dict) or raw.pop("format", None) != ENTRY_FORMAT:
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
        )
        return entry if types_ok else None


def default_directory(environ: Mapping[str, str]) -> str:
    runtime = environ.get(env_vars.XDG_RUNTIME_DIR, "")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "iris-credexec")
    return os.path.join(tempfile.gettempdir(), f"iris-credexec-{os.geteuid()}")


class TokenCache:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    @classmethod
    def open(cls, configured: str, environ: Mapping[str, str], create: bool = True) -> TokenCache:
        """The cache at `configured` (or the default), created 0700 and checked."""
        directory = configured or default_directory(environ)
        if create:
            try:
                os.mkdir(directory, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise CacheUnavailable(f"cannot create the cache directory {directory}: {exc.strerror}") from None
        try:
            st = os.lstat(directory)
        except OSError as exc:
            raise CacheUnavailable(f"cannot use the cache directory {directory}: {exc.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise CacheUnavailable(f"the cache path {directory} is not a directory (or is a symlink); remove it")
        if st.st_uid != os.geteuid():
            raise CacheUnavailable(
                f"the cache directory {directory} belongs to uid {st.st_uid}, not {os.geteuid()}; "
                "remove it or set [cache] dir to a directory of the task user"
            )
        if st.st_mode & 0o077:
            raise CacheUnavailable(
                f"the cache directory {directory} is open to others (mode {stat.S_IMODE(st.st_mode):04o}); chmod 0700 it"
            )
        return cls(directory)

    def _path(self, key: CacheKey, suffix: str) -> str:
        return os.path.join(self.directory, key.name + suffix)

    def read(self, key: CacheKey) -> Entry | None:
        """The entry for `key`, or None for a miss (absent, torn, foreign, or of another key)."""
        path = self._path(key, ".json")
        try:
            data, st = fsutil.read_regular(path, ENTRY_LIMIT)
        except (OSError, fsutil.UnsafePath):
            return None
        if st.st_uid != os.geteuid() or st.st_mode & 0o077:
            return None
        entry = Entry.from_json(data)
        if entry is None or entry.key != key:
            return None
        return entry

    def write(self, entry: Entry) -> None:
        """Store `entry`. Rename replaces whatever sits at the path (a symlink is
        replaced, not followed); failures only cost the next run a fetch."""
        path = self._path(entry.key, ".json")
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                os.rmdir(path)
        with contextlib.suppress(OSError):
            fsutil.atomic_write(path, entry.to_json(), mode=0o600)

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
            if name.endswith(".json") and not name.startswith("."):
                try:
                    data, _ = fsutil.read_regular(os.path.join(self.directory, name), ENTRY_LIMIT)
                    entry = Entry.from_json(data)
                except (OSError, fsutil.UnsafePath):
                    entry = None
                found.append((name, entry))
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
