"""Which task a caller is, from the host's records: never from anything the caller sends.

Registrations are files in a directory only root can write (`host register` writes them
when the worker starts a task, `host unregister` removes them when it ends); Iris's own
container labels are read from the Docker engine when configured.
"""

from __future__ import annotations

import json
import os
import re
from typing import NamedTuple

from .. import fsutil

_CONTAINER_ID = re.compile(r"(?:docker-|cri-containerd-|libpod-|/docker/|/containerd/)([0-9a-f]{64})(?:\.scope)?")
_TASK_ID = re.compile(r"/([a-z0-9][a-z0-9._-]*)/([^/\s]+)/([^\s]+)")


class Registration(NamedTuple):
    task: str
    user: str
    job: str
    attempt: str
    container: str = ""
    uid: int = -1
    audiences: tuple[str, ...] = ()


def parse_task_id(task: str) -> tuple[str, str, str]:
    """(user, job, attempt) of an Iris task id `/<user>/<job>/<task>[:<attempt>]`."""
    match = _TASK_ID.fullmatch(task)
    if match is None:
        raise ValueError(f"task id {task!r} is not /<user>/<job>/<task>")
    user, job, rest = match.groups()
    attempt = rest.rsplit(":", 1)[1] if ":" in rest else "0"
    return user, job, attempt


def container_of(pid: int, proc_root: str) -> str | None:
    """The container id in the pid's cgroup (Docker, containerd or podman), or None."""
    try:
        with open(os.path.join(proc_root, str(pid), "cgroup"), encoding="utf-8", errors="replace") as f:
            text = f.read(65536)
    except OSError:
        return None
    match = _CONTAINER_ID.search(text)
    return match.group(1) if match else None


class Registry:
    def __init__(self, directory: str) -> None:
        self.directory = directory

    def _path(self, kind: str, key: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}|\d+", key):
            raise ValueError(f"{kind} {key!r} is not a container id or uid")
        return os.path.join(self.directory, f"{kind}-{key}.json")

    def register(self, registration: Registration) -> None:
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        kind, key = ("container", registration.container) if registration.container else ("uid", str(registration.uid))
        doc = {**registration._asdict(), "audiences": list(registration.audiences)}
        fsutil.atomic_write(self._path(kind, key), json.dumps(doc).encode(), mode=0o600)

    def unregister(self, container: str = "", uid: int = -1) -> bool:
        kind, key = ("container", container) if container else ("uid", str(uid))
        try:
            os.unlink(self._path(kind, key))
            return True
        except FileNotFoundError:
            return False

    def lookup(self, kind: str, key: str) -> Registration | None:
        try:
            data, st = fsutil.read_regular(self._path(kind, key), 64 * 1024)
        except (OSError, ValueError, fsutil.UnsafePath):
            return None
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return None  # only the broker's own user may have written it
        try:
            doc = json.loads(data)
            return Registration(**{**doc, "audiences": tuple(doc.get("audiences", ()))})
        except (ValueError, TypeError):
            return None


def from_docker_labels(docker_socket: str, container: str, timeout: float = 2.0) -> Registration | None:
    """Iris labels every task container (iris.managed, iris.task_id, iris.job_id): read them
    from the Docker engine, which only the host can reach."""
    from ..sources import http

    try:
        answer = http.get(http.Endpoint(unix_path=docker_socket), f"/containers/{container}/json", {}, timeout)
    except http.HttpError:
        return None
    if answer.status != 200:
        return None
    try:
        labels = json.loads(answer.body)["Config"]["Labels"] or {}
    except (ValueError, KeyError, TypeError):
        return None
    if labels.get("iris.managed") != "true" or "iris.task_id" not in labels:
        return None
    try:
        user, job, attempt = parse_task_id(labels["iris.task_id"])
    except ValueError:
        return None
    return Registration(
        task=labels["iris.task_id"], user=user, job=labels.get("iris.job_id", job), attempt=attempt, container=container
    )
