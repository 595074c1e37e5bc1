"""The frozen binaries as shipped: version, contents, read-only runs, an empty chroot.

Built by build/build.sh. .ci/run builds them and sets IRIS_CREDEXEC_REQUIRE_BINARIES=1,
so there a missing binary fails loudly; elsewhere these tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from iris_credexec import __version__
from tests.conftest import ALICE, REPO, machine_allows, make_token
from tests.standins import POOL_AUDIENCE, UnixTokenServer

DIST = REPO / "dist"
ONEDIR = DIST / "iris-credexec-dir" / "iris-credexec"
ONEFILE = DIST / "iris-credexec"
PORTABLE = DIST / "iris-credexec-portable"


def require(path: Path) -> Path:
    if not path.is_file():
        if os.environ.get("IRIS_CREDEXEC_REQUIRE_BINARIES") == "1":
            pytest.fail(f"{path} was not built: build/build.sh must run before these tests")
        pytest.skip(f"{path} not built (run build/build.sh)")
    return path


def client_env(**extra: str) -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE,
        "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:id_token",
        "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "0",
        **extra,
    }


def policy_text(token_source: str, cache_dir: str) -> str:
    return f"""version = 1
[audiences]
allow = ["{POOL_AUDIENCE}"]
[service_accounts]
allow = ["{ALICE}"]
[source]
kind = "url"
url = "unix://{token_source}"
http_path = "/token"
[cache]
dir = "{cache_dir}"
"""


@pytest.fixture
def token_socket(tmp_path: Path) -> Iterator[Path]:
    sock = tmp_path / "token.sock"
    token = make_token()
    with UnixTokenServer(str(sock), lambda path, headers: (200, token.encode())):
        yield sock


def git_commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


@pytest.mark.parametrize("binary", [ONEDIR, ONEFILE, PORTABLE], ids=["one-dir", "one-file", "portable"])
def test_version_names_the_commit(binary: Path) -> None:
    out = subprocess.run([str(require(binary)), "--version"], capture_output=True, text=True, timeout=60)
    assert re.fullmatch(rf"iris-credexec {re.escape(__version__)} \(commit {git_commit()}(-dirty)?\)\n", out.stdout), (
        out.stdout
    )


def test_bundled_modules_are_the_expected_list() -> None:
    require(ONEDIR)
    built = (DIST / "manifest.txt").read_text().split()
    expected = (REPO / "build" / "manifest.expected").read_text().split()
    assert built == expected, (
        "the bundle changed: review the difference, then copy dist/manifest.txt to build/manifest.expected"
    )


def test_one_dir_runs_read_only_without_home(tmp_path: Path, token_socket: Path) -> None:
    require(ONEDIR)
    if not machine_allows("mount"):
        pytest.skip("this machine allows no mounts (read-only bind mount)")
    shipped = tmp_path / "opt"
    shutil.copytree(ONEDIR.parent, shipped)
    (tmp_path / "policy").mkdir()
    policy = tmp_path / "policy" / "policy.toml"
    policy.write_text(policy_text(str(token_socket), str(tmp_path / "cache")))
    policy.chmod(0o644)
    subprocess.run(["mount", "--bind", str(shipped), str(shipped)], check=True, timeout=30)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(shipped)], check=True, timeout=30)
        assert not os.access(shipped, os.W_OK) or _write_fails(shipped)
        proc = subprocess.run(
            [str(shipped / "iris-credexec"), "--policy", str(policy), "--service-account", ALICE],
            env=client_env(HOME="/nonexistent"),
            cwd=shipped,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        subprocess.run(["umount", str(shipped)], check=False, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc
    assert json.loads(proc.stdout)["success"] is True


def _write_fails(directory: Path) -> bool:
    try:
        (directory / "probe").write_text("x")
    except OSError:
        return True
    return False


def test_one_file_needs_only_a_writable_tmpdir(tmp_path: Path, token_socket: Path) -> None:
    binary = require(ONEFILE)
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text(str(token_socket), str(tmp_path / "cache")))
    policy.chmod(0o644)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = subprocess.run(
        [str(binary), "--policy", str(policy), "--service-account", ALICE],
        env=client_env(HOME="/nonexistent", TMPDIR=str(scratch)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc
    assert json.loads(proc.stdout)["success"] is True
    # The bootloader removed what it unpacked (_MEI*); what stays is our own per-uid cache.
    assert [p.name for p in scratch.iterdir()] == [f"iris-credexec-{os.geteuid()}"]


def test_portable_runs_in_an_empty_chroot(tmp_path: Path) -> None:
    binary = require(PORTABLE)
    if not machine_allows("mount"):
        pytest.skip("this machine allows no mounts (/proc in the chroot)")
    root = tmp_path / "root"
    for d in ("tmp", "proc", "dev", "etc", "run"):
        (root / d).mkdir(parents=True)
    (root / "tmp").chmod(0o1777)
    shutil.copy2(binary, root / "iris-credexec")
    os.mknod(root / "dev" / "null", 0o666 | 0o020000, os.makedev(1, 3))
    (root / "etc" / "policy.toml").write_text(policy_text("/run/token.sock", "/tmp/cache"))
    (root / "etc" / "policy.toml").chmod(0o644)
    root.chmod(0o755)
    token = make_token()
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True, timeout=30)
    try:
        with UnixTokenServer(str(root / "run" / "token.sock"), lambda path, headers: (200, token.encode())):
            proc = subprocess.run(
                [
                    shutil.which("chroot") or "/usr/sbin/chroot",
                    str(root),
                    "/iris-credexec",
                    "--policy",
                    "/etc/policy.toml",
                    "--service-account",
                    ALICE,
                ],
                env=client_env(),
                capture_output=True,
                text=True,
                timeout=60,
            )
    finally:
        subprocess.run(["umount", str(root / "proc")], check=False, timeout=30)
    assert proc.returncode == 0 and proc.stderr == "", proc
    doc = json.loads(proc.stdout)
    assert doc["success"] is True and doc["id_token"] == token
    assert sorted(os.listdir(root)) == ["dev", "etc", "iris-credexec", "proc", "run", "tmp"]


def test_readme_states_the_glibc_each_build_needs() -> None:
    require(ONEDIR)
    versions = set()
    for path in ONEDIR.parent.rglob("*"):
        if path.is_file() and (path.suffix == ".so" or ".so." in path.name or path == ONEDIR):
            out = subprocess.run(["objdump", "-T", str(path)], capture_output=True, text=True, timeout=60)
            versions |= set(re.findall(r"GLIBC_(\d+\.\d+)", out.stdout))
    newest = max(versions, key=lambda v: tuple(int(x) for x in v.split(".")))
    assert f"glibc {newest} or newer" in (REPO / "README.md").read_text()
    static = subprocess.run(["file", str(require(PORTABLE))], capture_output=True, text=True, timeout=60).stdout
    assert "statically linked" in static
