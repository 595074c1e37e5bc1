"""The broker's own configuration (TOML on the host), read strictly like the policy."""

from __future__ import annotations

import os
import socket
import tomllib
from typing import Any, NamedTuple

from ..decide import is_service_account_email

MAX_LIFETIME = 3600


class BrokerConfigError(ValueError):
    pass


class BrokerConfig(NamedTuple):
    issuer: str
    socket_path: str
    socket_mode: int
    state_dir: str
    identify: str  # "cgroup" | "uid"
    proc_root: str
    docker_socket: str
    subject_template: str
    token_lifetime_seconds: int
    worker: str
    audiences: tuple[str, ...]
    users: dict[str, tuple[str, ...]]  # user -> service accounts (what the plan grants)
    max_connections: int
    request_timeout_seconds: float
    publish_before_signing_seconds: int

    @property
    def keys_dir(self) -> str:
        return os.path.join(self.state_dir, "keys")

    @property
    def registry_dir(self) -> str:
        return os.path.join(self.state_dir, "registry")


_KEYS = {
    "issuer", "socket", "socket_mode", "state_dir", "identify", "proc_root", "docker_socket", "subject_template",
    "token_lifetime_seconds", "worker", "audiences", "users", "max_connections", "request_timeout_seconds",
    "publish_before_signing_seconds",
}  # fmt: skip


def load(path: str) -> BrokerConfig:
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise BrokerConfigError(f"cannot read the broker config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BrokerConfigError(f"{path}: {exc}") from None
    return parse(raw, path)


def parse(raw: dict[str, Any], path: str = "<broker config>") -> BrokerConfig:
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise BrokerConfigError(f"{path}: unknown key {unknown[0]!r}")

    def get(key: str, kind: type, default: Any) -> Any:
        value = raw.get(key, default)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise BrokerConfigError(f"{path}: {key} must be {kind.__name__}")
        return value

    issuer = get("issuer", str, "")
    if not issuer.startswith("https://"):
        raise BrokerConfigError(f"{path}: issuer must be an https:// URL (it need not be served: the JWKS is uploaded)")
    identify = get("identify", str, "cgroup")
    if identify not in ("cgroup", "uid"):
        raise BrokerConfigError(f"{path}: identify must be 'cgroup' or 'uid'")
    lifetime = get("token_lifetime_seconds", int, 600)
    if not 60 <= lifetime <= MAX_LIFETIME:
        raise BrokerConfigError(f"{path}: token_lifetime_seconds must be from 60 to {MAX_LIFETIME}")
    template = get("subject_template", str, "iris:user:{user}")
    if "{user}" not in template:
        raise BrokerConfigError(f"{path}: subject_template must contain {{user}}")
    users_raw = get("users", dict, {})
    users: dict[str, tuple[str, ...]] = {}
    for user, accounts in users_raw.items():
        if isinstance(accounts, str):
            accounts = [accounts]
        if not isinstance(accounts, list) or not all(
            isinstance(a, str) and is_service_account_email(a) for a in accounts
        ):
            raise BrokerConfigError(f"{path}: users.{user} must be a service account email or a list of them")
        users[user] = tuple(accounts)
    audiences = get("audiences", list, [])
    if not audiences or not all(isinstance(a, str) and a for a in audiences):
        raise BrokerConfigError(f"{path}: audiences must list the workload identity providers tokens may be minted for")
    mode = get("socket_mode", str, "0666")
    try:
        socket_mode = int(mode, 8)
    except ValueError:
        raise BrokerConfigError(f"{path}: socket_mode must be an octal string such as '0666'") from None
    return BrokerConfig(
        issuer=issuer,
        socket_path=get("socket", str, "/run/iris-credexec/broker.sock"),
        socket_mode=socket_mode,
        state_dir=get("state_dir", str, "/var/lib/iris-credexec"),
        identify=identify,
        proc_root=get("proc_root", str, "/proc"),
        docker_socket=get("docker_socket", str, ""),
        subject_template=template,
        token_lifetime_seconds=lifetime,
        worker=get("worker", str, socket.gethostname()),
        audiences=tuple(audiences),
        users=users,
        max_connections=get("max_connections", int, 64),
        request_timeout_seconds=float(get("request_timeout_seconds", (int, float), 5)),  # type: ignore[arg-type]
        publish_before_signing_seconds=get("publish_before_signing_seconds", int, 3600),
    )
