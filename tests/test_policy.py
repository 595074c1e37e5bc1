"""Policy loading, validation and decisions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from iris_credexec import policy as policy_mod
from iris_credexec.errors import Code, CredexecError
from tests.conftest import ALICE, BOB, render_policy

AUD = "//iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/providers/q"


def minimal(**tables: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "audiences": {"allow": [AUD]},
        "service_accounts": {"allow": [ALICE]},
        "source": {"kind": "metadata"},
    }
    base.update(tables)
    return base


def write(tmp_path: Path, text: str, mode: int = 0o644) -> Path:
    tmp_path.chmod(0o755)
    path = tmp_path / "policy.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


def load(tmp_path: Path, **tables: Any) -> policy_mod.Policy:
    return policy_mod.load(str(write(tmp_path, render_policy(minimal(**tables)))))


def refusal(tmp_path: Path, text: str, mode: int = 0o644) -> CredexecError:
    with pytest.raises(CredexecError) as info:
        policy_mod.load(str(write(tmp_path, text, mode)))
    return info.value


def test_defaults(tmp_path: Path) -> None:
    p = load(tmp_path)
    assert p.audiences == (AUD,)
    assert p.require_service_account is True
    assert p.source.host == "metadata.google.internal" and p.source.service_account == "default"
    assert p.token.issuers == ("https://accounts.google.com",)
    assert p.token.min_lifetime_seconds == 300 and p.source.deadline_seconds == 20
    assert p.cache.enabled is True and p.audit_path == ""
    assert len(p.digest) == 64


def test_digest_changes_with_content(tmp_path: Path) -> None:
    first = load(tmp_path).digest
    second = load(tmp_path, service_accounts={"allow": [BOB]}).digest
    assert first != second


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CredexecError) as info:
        policy_mod.load(str(tmp_path / "absent.toml"))
    assert info.value.code is Code.POLICY_NOT_FOUND
    assert "absent.toml" in info.value.message


@pytest.mark.parametrize(
    ("tables", "key"),
    [
        ({"audiences": {"allow": "x"}}, "audiences.allow"),
        ({"audiences": {"allow": []}}, "audiences.allow"),
        ({"audiences": {"allow": [AUD], "deny": []}}, "audiences.deny"),
        ({"service_accounts": {"allow": ["Alice@X.iam.gserviceaccount.com"]}}, "service_accounts.allow[0]"),
        ({"service_accounts": {"allow": [ALICE], "require": "yes"}}, "service_accounts.require"),
        ({"context": {"env": {"A": 1}}}, "context.env.A"),
        ({"context": {"env": {"A": "(a+)+$"}}}, "context.env.A"),
        ({"context": {"env": {"A": "[unclosed"}}}, "context.env.A"),
        ({"context": {"uids": [-1]}}, "context.uids[0]"),
        ({"context": {"uids": [True]}}, "context.uids[0]"),
        ({"context": {"container": 1}}, "context.container"),
        ({"source": {"kind": "carrier-pigeon"}}, "source.kind"),
        ({"source": {}}, "source.kind"),
        ({"source": {"kind": "metadata", "timeout_seconds": 0}}, "source.timeout_seconds"),
        ({"source": {"kind": "metadata", "timeout_seconds": True}}, "source.timeout_seconds"),
        ({"source": {"kind": "metadata", "deadline_seconds": 500}}, "source.deadline_seconds"),
        ({"source": {"kind": "metadata", "host": "a b"}}, "source.host"),
        ({"source": {"kind": "metadata", "path": "/x"}}, "source.path"),
        ({"source": {"kind": "file"}}, "source.path"),
        ({"source": {"kind": "file", "path": "relative"}}, "source.path"),
        ({"source": {"kind": "url", "url": "ftp://x"}}, "source.url"),
        ({"source": {"kind": "url", "url": "http://x/", "http_path": "/t"}}, "source.http_path"),
        ({"source": {"kind": "url", "url": "http://x/", "headers": {"a b": "c"}}}, "source.headers.a b"),
        ({"token": {"issuers": []}}, "token.issuers"),
        ({"token": {"min_lifetime_seconds": -1}}, "token.min_lifetime_seconds"),
        ({"token": {"refresh_margin_seconds": 400}}, "token.refresh_margin_seconds"),
        ({"token": {"claims": {"email": 3}}}, "token.claims.email"),
        ({"token": {"jwks": "relative.json"}}, "token.jwks"),
        ({"cache": {"dir": "relative"}}, "cache.dir"),
        ({"cache": {"enabled": "no"}}, "cache.enabled"),
        ({"audit": {"path": "relative"}}, "audit.path"),
        ({"surprise": {"a": 1}}, "surprise"),
    ],
)
def test_invalid_keys_are_named(tmp_path: Path, tables: dict[str, Any], key: str) -> None:
    error = refusal(tmp_path, render_policy(minimal(**tables)))
    assert error.code is Code.POLICY_INVALID
    assert f"key {key!r}" in error.message, error.message
    assert "policy.toml" in error.message


@pytest.mark.parametrize(
    "text",
    [
        "version = 1\n[audiences\n",
        "version = 2\n",
        "[audiences]\nallow = []\n",
        "\xff\xfe".encode("latin-1").decode("latin-1"),
    ],
)
def test_unparsable_or_wrong_version(tmp_path: Path, text: str) -> None:
    assert refusal(tmp_path, text).code is Code.POLICY_INVALID


@pytest.mark.parametrize("mode", [0o664, 0o646, 0o666])
def test_writable_by_others_is_unsafe(tmp_path: Path, mode: int) -> None:
    error = refusal(tmp_path, render_policy(minimal()), mode=mode)
    assert error.code is Code.POLICY_UNSAFE and "writable" in error.message


def test_writable_directory_without_sticky_bit_is_unsafe(tmp_path: Path) -> None:
    path = write(tmp_path, render_policy(minimal()))
    tmp_path.chmod(0o777)
    with pytest.raises(CredexecError) as info:
        policy_mod.load(str(path))
    assert info.value.code is Code.POLICY_UNSAFE
    tmp_path.chmod(0o1777)  # sticky: others cannot replace our file
    assert policy_mod.load(str(path)).audiences == (AUD,)


def test_symlink_directory_fifo_and_huge_file_are_refused(tmp_path: Path) -> None:
    real = write(tmp_path, render_policy(minimal()))
    link = tmp_path / "link.toml"
    link.symlink_to(real)
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    big = tmp_path / "big.toml"
    big.write_text("version = 1\n" + "# padding\n" * 40000)
    big.chmod(0o644)
    for path in (link, tmp_path, fifo, big):
        with pytest.raises(CredexecError) as info:
            policy_mod.load(str(path))
        assert info.value.code is Code.POLICY_UNSAFE, path


def test_caller_writable_policy_is_flagged(tmp_path: Path) -> None:
    # Tests run as the owner of the file, on a writable mount: inspect warns about exactly this.
    assert load(tmp_path).writable_by_caller is True


def test_resolve_path_order() -> None:
    assert policy_mod.resolve_path("/flag", {"IRIS_CREDEXEC_POLICY": "/env"}) == "/flag"
    assert policy_mod.resolve_path(None, {"IRIS_CREDEXEC_POLICY": "/env"}) == "/env"
    assert policy_mod.resolve_path(None, {}) == "/etc/iris-credexec/policy.toml"


class TestDecisions:
    def test_audience_exact_match_only(self, tmp_path: Path) -> None:
        p = load(tmp_path)
        p.check_audience(AUD)
        for other in (AUD + "x", AUD.replace("/p/", "/other/"), AUD.upper(), ""):
            with pytest.raises(CredexecError) as info:
                p.check_audience(other)
            assert info.value.code is Code.AUDIENCE_NOT_ALLOWED

    def test_service_account_exact_and_glob(self, tmp_path: Path) -> None:
        p = load(tmp_path, service_accounts={"allow": [ALICE, "*@team.iam.gserviceaccount.com"]})
        p.check_service_account(ALICE)
        p.check_service_account("x@team.iam.gserviceaccount.com")
        for other in (BOB, "x@team.iam.gserviceaccount.com.evil.iam.gserviceaccount.com"):
            with pytest.raises(CredexecError) as info:
                p.check_service_account(other)
            assert info.value.code is Code.SERVICE_ACCOUNT_NOT_ALLOWED

    def test_required_service_account(self, tmp_path: Path) -> None:
        with pytest.raises(CredexecError) as info:
            load(tmp_path).check_service_account(None)
        assert info.value.code is Code.SERVICE_ACCOUNT_REQUIRED
        load(tmp_path, service_accounts={"allow": [], "require": False}).check_service_account(None)

    def test_source_kinds(self, tmp_path: Path) -> None:
        p = load(
            tmp_path,
            source={
                "kind": "url",
                "url": "unix:///run/x.sock",
                "http_path": "/token",
                "headers": {"X-A": "b"},
                "field": "token",
            },
        )
        assert (p.source.url, p.source.http_path, p.source.headers, p.source.field) == (
            "unix:///run/x.sock",
            "/token",
            (("X-A", "b"),),
            "token",
        )
        p = load(tmp_path, source={"kind": "file", "path": "/run/iris/token", "field": "t"})
        assert (p.source.path, p.source.field) == ("/run/iris/token", "t")
