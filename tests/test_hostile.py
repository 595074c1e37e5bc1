"""Hostile and broken input, table-driven, through the real executable where the OS allows.

Every row must end as: exit 0, exactly one `success: false` JSON object with the
row's code (never INTERNAL), nothing on stderr, no traceback, and no token anywhere.
Values the kernel cannot carry in an environment (NUL bytes, strings over 128 KiB)
go through `exec_mode.answer` in-process instead.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from iris_credexec import env_vars, exec_mode
from iris_credexec.errors import Code
from iris_credexec.response import Failure
from tests.conftest import (
    ALICE,
    Task,
    assert_refusal,
    executable,
    machine_allows,
    make_token,
    run_exec,
    session_key,
    start_fetch_and_hold,
)
from tests.standins import POOL_AUDIENCE, Fault, SigningKey

OUTSIDER = "mallory@elsewhere.iam.gserviceaccount.com"
CLIENT_VARS = list(env_vars.CLIENT_VARIABLES)
# value kind -> bytes for the environment
HOSTILE_VALUES: dict[str, bytes] = {
    "empty": b"",
    "huge": b"a" * 100_000,
    "newline": b"value\nX-Injected: 1",
    "non-utf8": b"\xff\xfe\xfd",
}
# (variable, kind) -> expected code, or None where the value is legitimately ignored and the
# request succeeds (an empty optional variable means "not given").
EXPECTED: dict[tuple[str, str], str | None] = {}
for var in CLIENT_VARS:
    for kind in HOSTILE_VALUES:
        EXPECTED[(var, kind)] = "REQUEST_INVALID"
    EXPECTED[(var, "empty")] = None
EXPECTED[("GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE", "empty")] = "MISSING_AUDIENCE"
for kind in HOSTILE_VALUES:
    EXPECTED[("IRIS_TASK_ID", kind)] = "CONTEXT_ENV_MISMATCH"
# Interactive and revoke act only on exactly "1"; token types and emails are checked by value.
for kind in ("huge", "newline", "non-utf8"):
    EXPECTED[("GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE", kind)] = "REQUEST_INVALID"
    EXPECTED[("GOOGLE_EXTERNAL_ACCOUNT_REVOKE", kind)] = "REQUEST_INVALID"


def run_bytes_env(task: Task, env: dict[bytes, bytes], args: list[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [executable(), *args], env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    ("var", "kind"),
    sorted(EXPECTED),
    ids=[f"{v[len('GOOGLE_EXTERNAL_ACCOUNT_') :] or v}-{k}" for v, k in sorted(EXPECTED)],
)
def test_hostile_environment(task: Task, var: str, kind: str) -> None:
    env = {k.encode(): v.encode() for k, v in task.exec_env().items()}
    env[var.encode()] = HOSTILE_VALUES[kind]
    proc = run_bytes_env(task, env, ["--service-account", ALICE])
    assert proc.returncode == 0 and proc.stderr == b"", proc
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == 1, proc.stdout
    doc = json.loads(lines[0])
    expected = EXPECTED[(var, kind)]
    if expected is None:
        assert doc["success"] is True, doc
    else:
        assert doc == {"version": 1, "success": False, "code": expected, "message": doc["message"]}
        assert "Traceback" not in doc["message"]


def test_missing_context_variable(task: Task) -> None:
    env = task.exec_env()
    del env["IRIS_TASK_ID"]
    assert_refusal(run_exec(["--service-account", ALICE], env), "CONTEXT_ENV_MISSING")


@pytest.mark.parametrize("var", [*CLIENT_VARS, "IRIS_TASK_ID"])
@pytest.mark.parametrize("value", ["a\x00b", "a" * 1_000_000], ids=["nul", "1MB"])
def test_values_the_kernel_cannot_carry(task: Task, var: str, value: str) -> None:
    environ = {**task.exec_env(), var: value}
    outcome = exec_mode.answer(exec_mode.Invocation(environ=environ, service_account_flag=ALICE))
    assert isinstance(outcome, Failure), outcome
    assert outcome.code in {"REQUEST_INVALID", "CONTEXT_ENV_MISMATCH"}


@pytest.mark.parametrize(
    ("args", "env", "code"),
    [
        (
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE.replace("/123/", "/999/")},
            "AUDIENCE_NOT_ALLOWED",
        ),
        (
            ["--service-account", ALICE],
            {"GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE.replace("/iris/", "/other/")},
            "AUDIENCE_NOT_ALLOWED",
        ),
        (["--service-account", "*@iris-users.iam.gserviceaccount.com"], {}, "SERVICE_ACCOUNT_INVALID"),
        (["--service-account", ALICE.upper()], {}, "SERVICE_ACCOUNT_INVALID"),
        (["--service-account", ALICE + "."], {}, "SERVICE_ACCOUNT_INVALID"),
        (["--service-account", ALICE, "--service-account", ALICE], {}, "REQUEST_INVALID"),
        (["--service-account=" + ALICE, "--service-account", OUTSIDER], {}, "REQUEST_INVALID"),
        (["--policy"], {}, "REQUEST_INVALID"),
        (["--service-account", ALICE, "extra"], {}, "REQUEST_INVALID"),
    ],
)
def test_hostile_arguments(task: Task, args: list[str], env: dict[str, str], code: str) -> None:
    assert_refusal(run_exec(args, task.exec_env(**env)), code)


POLICY_CASES: list[tuple[str, str, str]] = [
    ("wrong type", "version = 1\n[audiences]\nallow = 5\n", "POLICY_INVALID"),
    ("unknown key", "version = 1\nsurprise = true\n", "POLICY_INVALID"),
    (
        "catastrophic regex",
        'version = 1\n[audiences]\nallow = ["a"]\n[context]\nenv = { X = "(a+)+$" }\n[source]\nkind = "metadata"\n',
        "POLICY_INVALID",
    ),
    (
        "alternation regex",
        'version = 1\n[audiences]\nallow = ["a"]\n[context]\nenv = { X = "(a|aa)*b" }\n[source]\nkind = "metadata"\n',
        "POLICY_INVALID",
    ),
    (
        "invalid regex",
        'version = 1\n[audiences]\nallow = ["a"]\n[context]\nenv = { X = "(" }\n[source]\nkind = "metadata"\n',
        "POLICY_INVALID",
    ),
    ("not toml", "\x00\x01garbage", "POLICY_INVALID"),
]


@pytest.mark.parametrize(("name", "text", "code"), POLICY_CASES, ids=[c[0] for c in POLICY_CASES])
def test_hostile_policy_text(task: Task, name: str, text: str, code: str) -> None:
    task.write_policy_text(text)
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), code)


@pytest.mark.parametrize("kind", ["symlink", "directory", "fifo", "huge", "world-writable"])
def test_hostile_policy_file(task: Task, kind: str) -> None:
    real = task.write_policy()
    target = task.root / "etc" / "other.toml"
    if kind == "symlink":
        target.symlink_to(real)
    elif kind == "directory":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    elif kind == "huge":
        target.write_text(real.read_text() + "#" * 300_000)
        target.chmod(0o644)
    else:
        target.write_text(real.read_text())
        target.chmod(0o666)
    started = time.monotonic()
    assert_refusal(
        run_exec(["--service-account", ALICE], task.exec_env(IRIS_CREDEXEC_POLICY=str(target))), "POLICY_UNSAFE"
    )
    assert time.monotonic() - started < 10  # a FIFO must not block


def test_catastrophic_value_is_bounded_even_for_accepted_patterns(task: Task) -> None:
    policy = task.default_policy()
    task.write_policy(context={"env": {"IRIS_TASK_ID": "/alice/[a-z0-9/:]*x"}}, source=policy["source"])
    started = time.monotonic()
    assert_refusal(
        run_exec(["--service-account", ALICE], task.exec_env(IRIS_TASK_ID="/alice/" + "a" * 100_000)),
        "CONTEXT_ENV_MISMATCH",
    )
    assert time.monotonic() - started < 10


def _token(**claims: Any) -> bytes:
    return make_token(**claims).encode()


OTHER_KEY = SigningKey(kid="not-in-jwks")
SOURCE_CASES: list[tuple[str, Fault, str, bool]] = [
    ("empty body", Fault("body", payload=b""), "SOURCE_BAD_RESPONSE", False),
    ("html error page", Fault("status", status=502), "SOURCE_UNAVAILABLE", False),
    ("ten megabytes", Fault("body", payload=b"a" * 10_000_000), "SOURCE_BAD_RESPONSE", False),
    ("not a jwt", Fault("body", payload=b"hello world"), "SOURCE_BAD_RESPONSE", False),
    ("not a jwt, one word", Fault("body", payload=b"helloworld"), "TOKEN_MALFORMED", False),
    ("alg none", Fault("body", payload=b"eyJhbGciOiJub25lIn0.eyJhdWQiOiJ4In0."), "TOKEN_MALFORMED", False),
    ("wrong aud", Fault("body", payload=_token(audience="//other")), "TOKEN_AUDIENCE_MISMATCH", False),
    ("wrong iss", Fault("body", payload=_token(iss="https://evil.example")), "TOKEN_ISSUER_NOT_ALLOWED", False),
    ("expired", Fault("body", payload=_token(lifetime=-60)), "TOKEN_EXPIRES_TOO_SOON", False),
    ("nbf in future", Fault("body", payload=_token(nbf=int(time.time()) + 7200)), "TOKEN_NOT_YET_VALID", False),
    ("exp absurd", Fault("body", payload=_token(lifetime=10**8)), "TOKEN_LIFETIME_TOO_LONG", False),
    ("claim of wrong type", Fault("body", payload=_token(email=["x"])), "TOKEN_CLAIM_MISMATCH", False),
    ("exp of wrong type", Fault("body", payload=_token(exp="soon")), "TOKEN_MALFORMED", False),
    ("kid not in jwks", Fault("body", payload=make_token(key=OTHER_KEY).encode()), "TOKEN_SIGNATURE_INVALID", True),
]


@pytest.mark.parametrize(("name", "fault", "code", "with_jwks"), SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_hostile_source_answers(
    task: Task, jwks_file: Path, name: str, fault: Fault, code: str, with_jwks: bool
) -> None:
    policy = task.default_policy()
    source = {**policy["source"], "max_attempts": 2, "timeout_seconds": 2, "deadline_seconds": 4}
    token = {**policy["token"], **({"jwks": str(jwks_file)} if with_jwks else {})}
    task.write_policy(source=source, token=token)
    task.standin.state.faults.extend([fault, fault])
    doc = assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), code)
    if fault.payload.count(b".") == 2:
        assert fault.payload.decode() not in doc["message"]
    assert not any(task.cache_dir.glob("*.json")) or all(
        p.name.startswith("policy-") for p in task.cache_dir.glob("*.json")
    )


def test_hs256_token_with_rsa_jwks(task: Task, jwks_file: Path) -> None:
    """The classic confusion: HMAC-signed with the RSA public key (PEM) as the secret."""
    import base64
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": session_key().kid}).encode())
    claims = {
        "aud": POOL_AUDIENCE,
        "iss": "https://accounts.google.com",
        "sub": "x",
        "email": "iris-worker@proj.iam.gserviceaccount.com",
        "iat": now,
        "exp": now + 3600,
    }
    payload = b64(json.dumps(claims).encode())
    pem = (
        session_key()
        .private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signature = b64(hmac.new(pem, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    policy = task.default_policy()
    task.write_policy(token={**policy["token"], "jwks": str(jwks_file)})
    task.standin.state.faults.append(Fault("body", payload=f"{header}.{payload}.{signature}".encode()))
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "TOKEN_SIGNATURE_INVALID")


@pytest.mark.parametrize("content", ["unreachable", "garbage"])
def test_hostile_jwks(task: Task, content: str) -> None:
    policy = task.default_policy()
    jwks = (
        f"http://127.0.0.1:{task.standin.port}/nothing-here"
        if content == "unreachable"
        else str(task.root / "garbage.json")
    )
    (task.root / "garbage.json").write_text("{{{{")
    task.write_policy(token={**policy["token"], "jwks": jwks})
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "JWKS_UNAVAILABLE")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "directory"])
def test_hostile_output_file(task: Task, kind: str) -> None:
    victim = task.root / "victim"
    victim.write_text("precious")
    out = task.output_file
    if kind == "symlink":
        out.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.mkdir()
    started = time.monotonic()
    assert_refusal(
        run_exec(["--service-account", ALICE], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(out))),
        "OUTPUT_FILE_UNSAFE",
    )
    assert victim.read_text() == "precious" and time.monotonic() - started < 10


def test_disk_full_leaves_no_truncated_output_file(task: Task) -> None:
    if not machine_allows("mount"):
        pytest.skip("this machine allows no mounts (a tiny tmpfs)")
    full = task.root / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "tmpfs", str(full)], check=True, timeout=30)
    try:
        (full / "filler").write_bytes(b"x" * 4096)
        with pytest.raises(OSError):
            (full / "filler2").write_bytes(b"x" * 8192)
        out = full / "out.json"
        assert_refusal(
            run_exec(["--service-account", ALICE], task.exec_env(GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(out))),
            "OUTPUT_FILE_UNSAFE",
        )
        assert sorted(p.name for p in full.iterdir()) == ["filler", "filler2"] or sorted(
            p.name for p in full.iterdir()
        ) == ["filler"]
        assert not out.exists()
    finally:
        subprocess.run(["umount", str(full)], check=False, timeout=30)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_signal_mid_fetch_leaves_nothing_behind(task: Task, sig: signal.Signals) -> None:
    proc = start_fetch_and_hold(task, GOOGLE_EXTERNAL_ACCOUNT_OUTPUT_FILE=str(task.output_file))
    try:
        proc.send_signal(sig)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert not task.output_file.exists()
    assert not list(task.cache_dir.glob(".*.tmp")) and not list(task.cache_dir.glob("*.json.*"))
    started = time.monotonic()
    assert run_exec(["--service-account", ALICE], task.exec_env()).json["success"] is True
    assert time.monotonic() - started < 5  # no stuck lock


def test_clock_jumped_back_does_not_trust_the_cache(task: Task) -> None:
    run_exec(["--service-account", ALICE], task.exec_env())
    for path in task.cache_dir.glob("*.json"):
        if not path.name.startswith("policy-"):
            doc = json.loads(path.read_text())
            doc["fetched_at"] += 86400  # fetched "tomorrow": the clock went back a day since
            path.write_text(json.dumps(doc))
    run_exec(["--service-account", ALICE], task.exec_env())
    assert task.standin.count("identity") == 2


def test_every_code_a_table_names_is_registered() -> None:
    named = {c for c in EXPECTED.values() if c} | {c[2] for c in POLICY_CASES} | {c[2] for c in SOURCE_CASES}
    assert named <= {c.name for c in Code}
    assert "INTERNAL" not in named


@pytest.mark.parametrize("kind", ["fifo", "directory", "symlink to another file"])
def test_hostile_cache_entry(task: Task, kind: str) -> None:
    first = run_exec(["--service-account", ALICE], task.exec_env()).json
    (entry,) = [p for p in task.cache_dir.glob("*.json") if not p.name.startswith("policy-")]
    victim = task.root / "victim"
    victim.write_text("precious")
    entry.unlink()
    if kind == "fifo":
        os.mkfifo(entry)
    elif kind == "directory":
        entry.mkdir()
    else:
        entry.symlink_to(victim)
    started = time.monotonic()
    again = run_exec(["--service-account", ALICE], task.exec_env())
    assert again.returncode == 0 and again.stderr == "" and again.json["success"] is True
    assert time.monotonic() - started < 10 and victim.read_text() == "precious"
    assert entry.is_file() and not entry.is_symlink()  # replaced by a good entry
    assert task.standin.count("identity") == 2 and first["success"] is True  # a miss, fetched again
