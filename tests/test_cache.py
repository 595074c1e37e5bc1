"""The token cache: keys, file safety, single flight across processes, fallback."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from iris_credexec import cachefs
from iris_credexec.cache import CacheKey, Entry, TokenCache
from tests.conftest import ALICE, BOB, Task, assert_refusal, run_exec, run_python_client, start_fetch_and_hold
from tests.standins import Fault


def issue(task: Task, account: str = ALICE, **env: str) -> dict[str, object]:
    result = run_exec(["--service-account", account], task.exec_env(**env))
    assert result.returncode == 0 and result.stderr == "", result
    return result.json


def entry_files(task: Task) -> list[Path]:
    """Token entries (the policy snapshots beside them are not entries)."""
    return sorted(p for p in task.cache_dir.glob("*.json") if not p.name.startswith("policy-"))


def test_hit_serves_the_same_token_without_the_source(task: Task) -> None:
    first, second = issue(task), issue(task)
    assert first == second and first["success"] is True
    assert task.standin.count("identity") == 1
    assert [line["cache"] for line in task.audit_lines()] == ["miss", "hit"]


def test_cache_files_are_private(task: Task) -> None:
    issue(task)
    assert stat.S_IMODE(task.cache_dir.stat().st_mode) == 0o700
    (entry,) = entry_files(task)
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600


def test_keys_separate_accounts_audiences_and_token_types(task: Task) -> None:
    issue(task, ALICE)
    issue(task, BOB)
    issue(task, ALICE, GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE="urn:ietf:params:oauth:token-type:jwt")
    task.write_policy(
        audiences={
            "allow": [
                "//iam.googleapis.com/projects/123/locations/global/workloadIdentityPools/iris/providers/workers",
                "//other",
            ]
        }
    )
    assert task.standin.count("identity") == 3
    assert len(entry_files(task)) == 3


def test_a_changed_policy_takes_effect_at_once(task: Task) -> None:
    issue(task)
    task.write_policy(service_accounts={"allow": [BOB]})
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "SERVICE_ACCOUNT_NOT_ALLOWED")
    task.write_policy(service_accounts={"allow": [ALICE, BOB]})
    issue(task)
    assert task.standin.count("identity") == 2  # a new policy digest: a new key, a new fetch


def test_torn_or_garbage_entry_is_a_miss_and_replaced(task: Task) -> None:
    issue(task)
    (entry,) = entry_files(task)
    for garbage in (entry.read_bytes()[:40], b"\x00\xff", b'{"format": 1}', b"[]"):
        entry.write_bytes(garbage)
        assert issue(task)["success"] is True
        assert json.loads(entry.read_bytes())["format"] == cachefs.ENTRY_FORMAT
    assert task.standin.count("identity") == 5


def test_symlinked_entry_is_not_followed(task: Task) -> None:
    issue(task)
    (entry,) = entry_files(task)
    victim = task.root / "victim"
    victim.write_text("precious")
    entry.unlink()
    entry.symlink_to(victim)
    assert issue(task)["success"] is True
    assert victim.read_text() == "precious" and not entry.is_symlink()


@pytest.mark.parametrize("problem", ["other owner", "readable by others", "a file"])
def test_unsafe_cache_directory_is_not_used(task: Task, problem: str) -> None:
    if problem == "a file":
        task.cache_dir.write_text("not a directory")
    else:
        task.cache_dir.mkdir(mode=0o700)
        if problem == "other owner":
            if os.geteuid() != 0:
                pytest.skip("needs root to chown")
            os.chown(task.cache_dir, 12345, 12345)
        else:
            task.cache_dir.chmod(0o755)
    assert issue(task)["success"] is True
    assert issue(task)["success"] is True
    assert task.standin.count("identity") == 2  # fetched each time, never read from it
    assert all(line["cache"].startswith("unsafe:") for line in task.audit_lines())
    if task.cache_dir.is_dir():
        assert list(task.cache_dir.iterdir()) == []


def test_cache_can_be_disabled(task: Task) -> None:
    policy = task.default_policy()
    task.write_policy(cache={"enabled": False}, source=policy["source"])
    issue(task)
    issue(task)
    assert task.standin.count("identity") == 2 and not task.cache_dir.exists()


def age_entries(task: Task, seconds: int) -> None:
    """Pretend every entry was fetched `seconds` ago (its token keeps its real exp)."""
    for path in entry_files(task):
        doc = json.loads(path.read_text())
        doc["fetched_at"] -= seconds
        path.write_text(json.dumps(doc))


def test_refreshes_after_half_life(task: Task) -> None:
    issue(task)
    age_entries(task, 3500)
    issue(task)
    assert task.standin.count("identity") == 1  # fetched 3500 s before a 3600 s expiry: still in its first half
    age_entries(task, 200)
    issue(task)
    assert task.standin.count("identity") == 2


def test_serves_cached_token_when_source_is_down(task: Task) -> None:
    first = issue(task)
    age_entries(task, 3700)  # past half-life (the token keeps its hour): a refresh is due
    task.standin.state.faults.extend([Fault("status", status=503)] * 4)
    assert issue(task) == first
    assert task.audit_lines()[-1]["cache"] == "fallback (SOURCE_UNAVAILABLE)"


def test_no_fallback_when_too_little_lifetime_is_left(task: Task) -> None:
    task.standin.state.token_lifetime = 400  # 400 s tokens: below min_lifetime + age once aged
    issue(task)
    for path in entry_files(task):
        doc = json.loads(path.read_text())
        doc["fetched_at"] -= 300
        doc["expires_at"] -= 200  # 200 s left < min_lifetime_seconds 300
        path.write_text(json.dumps(doc))
    task.standin.state.faults.extend([Fault("status", status=503)] * 4)
    assert_refusal(run_exec(["--service-account", ALICE], task.exec_env()), "SOURCE_UNAVAILABLE")


def test_herd_of_100_cold_invocations_fetches_once(task: Task) -> None:
    env = task.exec_env()
    with ThreadPoolExecutor(max_workers=100) as pool:
        results = list(pool.map(lambda _: run_exec(["--service-account", ALICE], env, timeout=120), range(100)))
    docs = [r.json for r in results]
    assert all(r.returncode == 0 and r.stderr == "" for r in results)
    assert all(d["success"] is True for d in docs)
    assert len({d["id_token"] for d in docs}) == 1
    assert task.standin.count("identity") == 1


def test_herd_of_real_google_auth_clients_fetches_once(task: Task) -> None:
    config = task.credential_config(ALICE, output_file=False)
    env = task.env()
    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(lambda _: run_python_client(config, env), range(24)))
    assert all(r.ok for r in results), [r.raw for r in results if not r.ok][:1]
    assert task.standin.count("identity") == 1
    assert task.standin.count("sts") == 24


def test_killed_lock_holder_does_not_wedge_others(task: Task) -> None:
    holder = start_fetch_and_hold(task)
    try:
        assert task.standin.count("identity") == 1  # the holder is inside the fetch, lock held
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        started = time.monotonic()
        assert issue(task)["success"] is True
        assert time.monotonic() - started < 5  # not the 8 s deadline of a wedged lock
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    assert not list(task.cache_dir.glob(".*.tmp"))


def test_entry_roundtrip_and_key_mismatch(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    cache = TokenCache.open(str(tmp_path / "c"), {})
    key = CacheKey(uid=0, audience="a", target="t", token_type="x", policy_digest="d")
    other = CacheKey(uid=0, audience="b", target="t", token_type="x", policy_digest="d")
    entry = Entry(key, "x", "tok", 100, 160, 50.0, "sub", "iss", "fp", {"email": "e"})
    cache.write(entry)
    assert cache.read(key) == entry
    assert cache.read(other) is None
    # a file renamed onto another key's name is refused: the key inside must match
    os.rename(tmp_path / "c" / f"{key.name}.json", tmp_path / "c" / f"{other.name}.json")
    assert cache.read(other) is None
    assert entry.fresh(60) and not entry.fresh(106) and not entry.fresh(101)
