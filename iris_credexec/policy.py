"""The host's policy: loaded from TOML into immutable NamedTuples, with its decisions.

The policy is the host's word. It is refused when anyone but the host could
have written it, and any key that is unknown, mistyped or out of range is an
error naming the file and the key: a typo must never silently widen access.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TypeVar, cast

from . import fsutil
from .decide import audience_allowed, is_service_account_email, service_account_allowed
from .digest import sha256_hex
from .errors import Code, CredexecError

DEFAULT_POLICY_PATH = "/etc/iris-credexec/policy.toml"
POLICY_SIZE_LIMIT = 256 * 1024
SOURCE_KINDS = ("metadata", "file", "url")
GOOGLE_ISSUERS = ("https://accounts.google.com",)
MAX_DEADLINE_SECONDS = 110  # below the clients' 120 s ceiling for timeout_millis

_SERVICE_ACCOUNT_GLOB_RE = re.compile(r"[a-z0-9*?._-]+@[a-z0-9*?.-]+")
# A quantified group that itself contains a quantifier: (a+)+, (a|aa)*, (\w+\s?)*.
# Such patterns backtrack exponentially on a non-matching value.
_NESTED_QUANTIFIER_RE = re.compile(r"\((?:[^()\\]|\\.)*(?:[+*}]|\|)(?:[^()\\]|\\.)*\)\s*(?:[+*]|\{\d*,)")


class SourceConfig(NamedTuple):
    kind: str
    timeout_seconds: float = 5.0
    deadline_seconds: float = 20.0
    max_attempts: int = 4
    # metadata
    service_account: str = "default"
    host: str = "metadata.google.internal"
    # file
    path: str = ""
    # url
    url: str = ""
    http_path: str = "/"
    headers: tuple[tuple[str, str], ...] = ()
    # file and url: JSON field holding the token; empty = the body is the token.
    field: str = ""


class TokenPolicy(NamedTuple):
    issuers: tuple[str, ...] = GOOGLE_ISSUERS
    min_lifetime_seconds: int = 300
    max_lifetime_seconds: int = 86400
    refresh_margin_seconds: int = 60
    claims: tuple[tuple[str, str], ...] = ()
    jwks: str = ""


class ContextPolicy(NamedTuple):
    env: tuple[tuple[str, re.Pattern[str]], ...] = ()
    container: bool = False
    uids: tuple[int, ...] = ()


class CachePolicy(NamedTuple):
    enabled: bool = True
    dir: str = ""


class Policy(NamedTuple):
    path: str
    digest: str  # sha256 of the file's bytes: part of every cache key
    audiences: tuple[str, ...]
    service_accounts: tuple[str, ...]
    require_service_account: bool
    context: ContextPolicy
    source: SourceConfig
    token: TokenPolicy
    cache: CachePolicy
    audit_path: str
    writable_by_caller: bool = False

    def check_audience(self, audience: str) -> None:
        if not audience_allowed(self.audiences, audience):
            raise CredexecError(
                Code.AUDIENCE_NOT_ALLOWED,
                f"Audience {audience!r} is not allowed by the policy {self.path} ([audiences] allow). "
                "Use the credential config the host wrote for this task.",
            )

    def check_service_account(self, target: str | None) -> None:
        if target is None:
            if self.require_service_account:
                raise CredexecError(
                    Code.SERVICE_ACCOUNT_REQUIRED,
                    "No target service account: add --service-account EMAIL to the credential config's "
                    f"executable command (the policy {self.path} sets [service_accounts] require = true).",
                )
            return
        if not service_account_allowed(self.service_accounts, target):
            raise CredexecError(
                Code.SERVICE_ACCOUNT_NOT_ALLOWED,
                f"Service account {target!r} is not allowed by the policy {self.path} ([service_accounts] allow). "
                "Use the service account of this task's user.",
            )

    def snapshot(self) -> dict[str, Any]:
        """What the cache-hit fast path decides on, as JSON (see fasthit.py)."""
        return {
            "digest": self.digest,
            "audiences": list(self.audiences),
            "service_accounts": list(self.service_accounts),
            "require_service_account": self.require_service_account,
            "context_env": [[name, pattern.pattern] for name, pattern in self.context.env],
            "context_container": self.context.container,
            "context_uids": list(self.context.uids),
            "cache_enabled": self.cache.enabled,
            "cache_dir": self.cache.dir,
            "audit_path": self.audit_path,
            "source_kind": self.source.kind,
            "issuers": list(self.token.issuers),
            "claims": [list(item) for item in self.token.claims],
        }


def resolve_path(flag: str | None, environ: Mapping[str, str]) -> str:
    from . import env_vars

    return flag or environ.get(env_vars.POLICY) or DEFAULT_POLICY_PATH


def load(path: str) -> Policy:
    """Read, check and parse the policy at `path`."""
    data, st = _read_safely(path)
    try:
        import tomllib

        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise _invalid(path, "", "the file is not UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise _invalid(path, "", f"TOML syntax error: {exc}") from None
    policy = parse(raw, path=path, digest=sha256_hex(data))
    writable = _caller_could_write(path, st)
    if writable:
        policy = policy._replace(writable_by_caller=True)
    return policy


def _read_safely(path: str) -> tuple[bytes, os.stat_result]:
    try:
        data, st = fsutil.read_host_file(path, POLICY_SIZE_LIMIT)
    except fsutil.UnsafePath as exc:
        raise CredexecError(
            Code.POLICY_UNSAFE,
            f"Refusing the policy {path}: {exc}. Mount the policy file itself read-only, owned by root, mode 0644, "
            "in a root-owned directory.",
        ) from None
    except FileNotFoundError:
        raise CredexecError(
            Code.POLICY_NOT_FOUND,
            f"No policy at {path}. The host must mount it there, or name it with --policy or IRIS_CREDEXEC_POLICY.",
        ) from None
    except OSError as exc:
        raise CredexecError(
            Code.POLICY_NOT_FOUND,
            f"Cannot read the policy {path}: {exc.strerror}. Check the mount and its permissions.",
        ) from None
    return data, st


def _caller_could_write(path: str, st: os.stat_result) -> bool:
    """True when this process could change the policy (inspect and doctor warn about it)."""
    if os.geteuid() != 0 and st.st_uid != os.geteuid():
        return False
    try:
        return os.access(path, os.W_OK) and not _on_readonly_mount(path)
    except OSError:
        return False


def _on_readonly_mount(path: str) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


# --- Parsing ---------------------------------------------------------------------------------

T = TypeVar("T")


def _invalid(path: str, key: str, problem: str) -> CredexecError:
    where = f"key {key!r}" if key else "file"
    return CredexecError(Code.POLICY_INVALID, f"Invalid policy {path}: {where}: {problem}.")


class _Table:
    """A TOML table read key by key; unknown keys are an error when it is closed."""

    def __init__(self, raw: Any, name: str, path: str) -> None:
        self.path = path
        self.name = name
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise _invalid(path, name, "must be a table")
        self.raw: dict[str, Any] = raw
        self.seen: set[str] = set()

    def key(self, key: str) -> str:
        return f"{self.name}.{key}" if self.name else key

    def get(
        self, key: str, kind: type[T] | tuple[type, ...], default: T, check: Callable[[T], str | None] | None = None
    ) -> T:
        self.seen.add(key)
        if key not in self.raw:
            return default
        value = self.raw[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; TOML's true must not pass as a number.
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise _invalid(self.path, self.key(key), f"must be {names}, not {type(value).__name__}")
        typed = cast(T, value)  # checked above: one of `kind`
        if check is not None:
            problem = check(typed)
            if problem:
                raise _invalid(self.path, self.key(key), problem)
        return typed

    def strings(
        self, key: str, default: tuple[str, ...], check: Callable[[str], str | None] | None = None
    ) -> tuple[str, ...]:
        values = self.get(key, list, list(default))
        for index, item in enumerate(values):
            if not isinstance(item, str):
                raise _invalid(self.path, f"{self.key(key)}[{index}]", f"must be a string, not {type(item).__name__}")
            problem = check(item) if check else None
            if problem:
                raise _invalid(self.path, f"{self.key(key)}[{index}]", problem)
        return tuple(values)

    def string_map(self, key: str) -> tuple[tuple[str, str], ...]:
        mapping = self.get(key, dict, {})
        for name, value in mapping.items():
            if not isinstance(value, str):
                raise _invalid(self.path, f"{self.key(key)}.{name}", f"must be a string, not {type(value).__name__}")
        return tuple(sorted(mapping.items()))

    def table(self, key: str) -> _Table:
        self.seen.add(key)
        return _Table(self.raw.get(key), self.key(key), self.path)

    def close(self) -> None:
        unknown = sorted(set(self.raw) - self.seen)
        if unknown:
            raise _invalid(self.path, self.key(unknown[0]), "unknown key (see the README's policy reference)")


def _positive(limit: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if 0 < value <= limit else f"must be greater than 0 and at most {limit}"

    return check


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must not be negative"


def _non_empty(value: str) -> str | None:
    return None if value else "must not be empty"


def _sa_pattern(value: str) -> str | None:
    if _SERVICE_ACCOUNT_GLOB_RE.fullmatch(value) is None:
        return "must be a lowercase service account email or glob such as *@project.iam.gserviceaccount.com"
    return None


def _compile_context_pattern(path: str, key: str, pattern: str) -> re.Pattern[str]:
    if _NESTED_QUANTIFIER_RE.search(pattern):
        raise _invalid(path, key, "nested quantifiers such as (a+)+ can take exponential time; rewrite the pattern")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise _invalid(path, key, f"invalid regular expression: {exc}") from None


def parse(raw: Mapping[str, Any], path: str = "<policy>", digest: str = "") -> Policy:
    """Build a Policy from parsed TOML, refusing anything unknown or mistyped."""
    top = _Table(dict(raw), "", path)
    if "version" not in raw:
        raise _invalid(path, "version", "missing; the first line must be version = 1")
    top.get(
        "version", int, 1, lambda v: None if v == 1 else f"unsupported version {v}; this iris-credexec reads version 1"
    )

    audiences_t = top.table("audiences")
    audiences = audiences_t.strings("allow", (), _non_empty)
    audiences_t.close()
    if not audiences:
        raise _invalid(path, "audiences.allow", "must list at least one audience")

    sa_t = top.table("service_accounts")
    accounts = sa_t.strings("allow", (), _sa_pattern)
    require = sa_t.get("require", bool, True)
    sa_t.close()

    ctx_t = top.table("context")
    env_patterns = tuple(
        (name, _compile_context_pattern(path, f"context.env.{name}", pattern))
        for name, pattern in ctx_t.string_map("env")
    )
    for name, _ in env_patterns:
        if not name or "=" in name or "\0" in name:
            raise _invalid(path, f"context.env.{name}", "is not a valid environment variable name")
    context = ContextPolicy(
        env=env_patterns,
        container=ctx_t.get("container", bool, False),
        uids=tuple(ctx_t.get("uids", list, [])),
    )
    for index, uid in enumerate(context.uids):
        if not isinstance(uid, int) or isinstance(uid, bool) or uid < 0:
            raise _invalid(path, f"context.uids[{index}]", "must be a non-negative integer")
    ctx_t.close()

    source = _parse_source(top.table("source"), path)
    token = _parse_token(top.table("token"), path)

    cache_t = top.table("cache")
    cache = CachePolicy(enabled=cache_t.get("enabled", bool, True), dir=cache_t.get("dir", str, ""))
    if cache.dir and not os.path.isabs(cache.dir):
        raise _invalid(path, "cache.dir", "must be an absolute path")
    cache_t.close()

    audit_t = top.table("audit")
    audit_path = audit_t.get("path", str, "")
    if audit_path and not os.path.isabs(audit_path):
        raise _invalid(path, "audit.path", "must be an absolute path")
    audit_t.close()
    top.close()

    return Policy(
        path=path,
        digest=digest,
        audiences=audiences,
        service_accounts=accounts,
        require_service_account=require,
        context=context,
        source=source,
        token=token,
        cache=cache,
        audit_path=audit_path,
    )


def _parse_source(t: _Table, path: str) -> SourceConfig:
    if "kind" not in t.raw:
        raise _invalid(path, "source.kind", f"missing; one of {', '.join(SOURCE_KINDS)}")
    kind = t.get("kind", str, "", lambda v: None if v in SOURCE_KINDS else f"must be one of {', '.join(SOURCE_KINDS)}")
    common: dict[str, Any] = dict(
        kind=kind,
        timeout_seconds=float(t.get("timeout_seconds", (int, float), 5.0, _positive(60))),
        deadline_seconds=float(t.get("deadline_seconds", (int, float), 20.0, _positive(MAX_DEADLINE_SECONDS))),
        max_attempts=t.get("max_attempts", int, 4, lambda v: None if 1 <= v <= 10 else "must be from 1 to 10"),
    )
    allowed: dict[str, tuple[str, ...]] = {
        "metadata": ("service_account", "host"),
        "file": ("path", "field"),
        "url": ("url", "http_path", "headers", "field"),
    }
    for other_kind, keys in allowed.items():
        if other_kind == kind:
            continue
        for key in keys:
            if key in t.raw and key not in allowed[kind]:
                raise _invalid(path, f"source.{key}", f"does not apply to kind = {kind!r}")
    if kind == "metadata":
        common["service_account"] = t.get("service_account", str, "default", _metadata_account)
        common["host"] = t.get("host", str, "metadata.google.internal", _host_port)
    elif kind == "file":
        common["path"] = t.get("path", str, "", lambda v: None if os.path.isabs(v) else "must be an absolute path")
        if not common["path"]:
            raise _invalid(path, "source.path", "missing; the file the host writes the token to")
        common["field"] = t.get("field", str, "")
    else:
        common["url"] = t.get("url", str, "", _url)
        if not common["url"]:
            raise _invalid(path, "source.url", "missing; http://host/path or unix:///path/to.sock")
        common["http_path"] = t.get(
            "http_path",
            str,
            "/",
            lambda v: None if v.startswith("/") and _printable(v) else "must start with / and have no spaces",
        )
        if "http_path" in t.raw and not common["url"].startswith("unix://"):
            raise _invalid(path, "source.http_path", "applies only to unix:// URLs; put the path in the URL")
        headers = t.string_map("headers")
        for name, value in headers:
            if not re.fullmatch(r"[A-Za-z0-9-]+", name) or not _printable(value, spaces=True):
                raise _invalid(
                    path, f"source.headers.{name}", "header names are letters, digits and '-'; values printable"
                )
        common["headers"] = headers
        common["field"] = t.get("field", str, "")
    t.close()
    if common["deadline_seconds"] < common["timeout_seconds"]:
        raise _invalid(path, "source.deadline_seconds", "must be at least source.timeout_seconds")
    return SourceConfig(**common)


def _parse_token(t: _Table, path: str) -> TokenPolicy:
    token = TokenPolicy(
        issuers=t.strings("issuers", GOOGLE_ISSUERS, _non_empty),
        min_lifetime_seconds=t.get("min_lifetime_seconds", int, 300, _non_negative),
        max_lifetime_seconds=t.get("max_lifetime_seconds", int, 86400, lambda v: None if v > 0 else "must be positive"),
        refresh_margin_seconds=t.get("refresh_margin_seconds", int, 60, _non_negative),
        claims=t.string_map("claims"),
        jwks=t.get("jwks", str, ""),
    )
    t.close()
    if not token.issuers:
        raise _invalid(path, "token.issuers", "must list at least one issuer")
    if token.refresh_margin_seconds > token.min_lifetime_seconds:
        raise _invalid(path, "token.refresh_margin_seconds", "must not exceed token.min_lifetime_seconds")
    if token.jwks and not (os.path.isabs(token.jwks) or token.jwks.startswith(("http://", "https://"))):
        raise _invalid(path, "token.jwks", "must be an absolute path or an http(s) URL")
    return token


def _printable(value: str, spaces: bool = False) -> bool:
    return all(c.isprintable() and (spaces or not c.isspace()) for c in value)


def _metadata_account(value: str) -> str | None:
    if value == "default" or is_service_account_email(value):
        return None
    return "must be 'default' or a service account email"


def _host_port(value: str) -> str | None:
    if re.fullmatch(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?", value) is None:
        return "must be host or host:port"
    return None


def _url(value: str) -> str | None:
    if value.startswith("unix://"):
        rest = value[len("unix://") :]
        return None if rest.startswith("/") and _printable(rest) else "unix:// URLs take an absolute socket path"
    if re.fullmatch(r"https?://(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::\d{1,5})?(?:/[^\s#]*)?", value) is None:
        return "must be http(s)://host[:port]/path or unix:///path/to.sock"
    return None
