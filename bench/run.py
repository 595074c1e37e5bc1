"""iris-credexec beside what users would run instead, in one run, as ratios to a floor.

python bench/run.py [--quick] [--runs N] [--json PATH]

Everything runs against local stand-ins on 127.0.0.1, bounded in count and time.
Each timed row reports min / median / max over its runs and its median's ratio to
the floor (`python -c pass`) measured in the same run. Budgets are checked at the
end; a broken budget makes the exit status 1. With --quick (one run per row, as
.ci/run does), timing budgets are printed but not enforced: one sample on a
noisy machine proves nothing; count budgets (the herd) are always enforced.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iris_credexec.ops import config as credential_config  # noqa: E402
from tests.conftest import render_policy  # noqa: E402
from tests.standins import POOL_AUDIENCE, GoogleStandIn  # noqa: E402

ACCOUNT = "alice@iris-users.iam.gserviceaccount.com"
TIMEOUT = 120
HERD = 100


@dataclass
class Row:
    name: str
    samples_ms: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.samples_ms)


@dataclass
class Budget:
    name: str
    limit: str
    value: str
    ok: bool
    timing: bool  # enforced only in full runs


def timed(cmd: list[str], env: dict[str, str], before: Callable[[], None] | None = None) -> float:
    if before:
        before()
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, check=False)
    elapsed = (time.perf_counter() - started) * 1000
    if proc.returncode != 0:
        raise SystemExit(f"benchmark command failed: {cmd}: {proc.stdout[:300]!r} {proc.stderr[:300]!r}")
    if b'"success":false' in proc.stdout.replace(b" ", b""):
        raise SystemExit(f"benchmark command refused: {cmd}: {proc.stdout[:300]!r}")
    return elapsed


def peak_rss_kib(cmd: list[str], env: dict[str, str]) -> int:
    """Peak RSS of `cmd` alone, measured from a fresh parent so no other child counts."""
    probe = (
        "import resource, subprocess, sys; "
        "subprocess.run(sys.argv[1:], stdin=subprocess.DEVNULL, capture_output=True, timeout=120); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], env=env, capture_output=True, text=True, timeout=TIMEOUT, check=True
    )
    return int(out.stdout.strip())


def binaries() -> dict[str, str]:
    found = {}
    for label, rel in (
        ("one-dir", "dist/iris-credexec-dir/iris-credexec"),
        ("one-file", "dist/iris-credexec"),
        ("portable", "dist/iris-credexec-portable"),
    ):
        path = REPO / rel
        if path.is_file() and os.access(path, os.X_OK):
            found[label] = str(path)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one run per row; timing budgets not enforced")
    parser.add_argument("--runs", type=int, default=15, help="runs per timed row (default 15)")
    parser.add_argument("--json", default=str(REPO / "bench" / "results.json"), help="where to write the results")
    args = parser.parse_args()
    runs = 1 if args.quick else max(3, args.runs)
    source_exe = str(Path(sys.executable).parent / "iris-credexec")

    with tempfile.TemporaryDirectory(prefix="iris-credexec-bench-") as tmp, GoogleStandIn() as google:
        root = Path(tmp)
        root.chmod(0o755)
        google.grant(ACCOUNT)
        cache_dir = root / "cache"
        policy = root / "policy.toml"
        policy.write_text(
            render_policy(
                {
                    "audiences": {"allow": [POOL_AUDIENCE]},
                    "service_accounts": {"allow": [ACCOUNT]},
                    "source": {"kind": "metadata", "host": google.host},
                    "token": {"claims": {"email": "iris-worker@proj.iam.gserviceaccount.com"}},
                    "cache": {"dir": str(cache_dir)},
                }
            )
        )
        policy.chmod(0o644)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "GOOGLE_EXTERNAL_ACCOUNT_AUDIENCE": POOL_AUDIENCE,
            "GOOGLE_EXTERNAL_ACCOUNT_TOKEN_TYPE": "urn:ietf:params:oauth:token-type:id_token",
            "GOOGLE_EXTERNAL_ACCOUNT_INTERACTIVE": "0",
            "IRIS_CREDEXEC_POLICY": str(policy),
            "XDG_RUNTIME_DIR": str(root / "run"),  # the policy snapshot goes here, not into the machine's /tmp
        }
        (root / "run").mkdir(mode=0o700)

        def clear_cache() -> None:
            """Drop the token entries (the policy snapshot stays, as after any expiry)."""
            shutil.rmtree(cache_dir, ignore_errors=True)

        # Rows are measured round-robin, one run of each per round, so a noisy spell
        # on this machine lands on every row alike and the ratios stay honest.
        exec_cmd = ["--service-account", ACCOUNT]
        specs: list[tuple[str, list[str], Callable[[], None] | None]] = [
            ("floor: python -c pass", [sys.executable, "-c", "pass"], None),
            ("naive helper (sh + curl)", ["/bin/sh", str(REPO / "bench" / "naive-helper.sh"), google.host], None),
        ]
        gcloud = shutil.which("gcloud")
        if gcloud:
            specs.append(("gcloud --version", [gcloud, "--version"], None))
        specs += [
            ("source, cache miss", [source_exe, *exec_cmd], clear_cache),
            ("source, cache hit", [source_exe, *exec_cmd], None),
        ]
        built = binaries()
        for label, path in built.items():
            specs += [
                (f"{label} binary, cache miss", [path, *exec_cmd], clear_cache),
                (f"{label} binary, cache hit", [path, *exec_cmd], None),
            ]
        for _, cmd, before in specs:  # warm the page cache and .pyc files; not counted
            timed(cmd, env, before)
        rows: list[Row] = [Row(name) for name, _, _ in specs]
        for _ in range(runs):
            for row, (_, cmd, before) in zip(rows, specs, strict=True):
                row.samples_ms.append(timed(cmd, env, before))
        by_name = {row.name: row for row in rows}
        floor, miss, hit = by_name["floor: python -c pass"], by_name["source, cache miss"], by_name["source, cache hit"]

        # Herd: 100 concurrent cold invocations.
        clear_cache()
        before_count = google.count("identity")
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=HERD) as pool:
            outs = list(
                pool.map(
                    lambda _: subprocess.run(
                        [source_exe, *exec_cmd],
                        env=env,
                        capture_output=True,
                        timeout=TIMEOUT,
                        check=False,
                        stdin=subprocess.DEVNULL,
                    ),
                    range(HERD),
                )
            )
        herd_ms = (time.perf_counter() - started) * 1000
        herd_requests = google.count("identity") - before_count
        herd_ok = sum(1 for o in outs if o.returncode == 0 and json.loads(o.stdout).get("success") is True)

        # Real client: google-auth's first refresh() through iris-credexec vs the naive helper.
        def config_for(command: str) -> Path:
            """A config like `iris-credexec config` writes, with the stand-ins' URLs and `command`."""
            path = root / f"cfg-{abs(hash(command))}.json"
            document = credential_config.build(
                audience=POOL_AUDIENCE,
                service_account=ACCOUNT,
                executable=source_exe,
                token_url=google.token_url(),
                impersonation_url=google.impersonation_url("{email}"),
            )
            document["credential_source"]["executable"]["command"] = command  # the naive helper's, too
            path.write_text(json.dumps(document))
            return path

        def client_rows(label: str, command: str, before: Callable[[], None] | None) -> Row:
            cfg = config_for(command)
            client_env = {
                **env,
                "GOOGLE_APPLICATION_CREDENTIALS": str(cfg),
                "GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES": "1",
                "GOOGLE_CLOUD_PROJECT": "bench",
            }
            samples = []
            for _ in range(runs + 1):
                if before:
                    before()
                out = subprocess.run(
                    [sys.executable, str(REPO / "bench" / "client_refresh.py")],
                    env=client_env,
                    capture_output=True,
                    text=True,
                    timeout=TIMEOUT,
                    check=True,
                )
                samples.append(float(out.stdout.strip().splitlines()[-1]))
            return Row(label, samples[1:], "time of refresh() inside the client")

        rows.append(
            client_rows(
                "google-auth refresh via iris-credexec (cold)", f"{source_exe} --service-account {ACCOUNT}", clear_cache
            )
        )
        rows.append(
            client_rows(
                "google-auth refresh via iris-credexec (warm)", f"{source_exe} --service-account {ACCOUNT}", None
            )
        )
        rows.append(
            client_rows(
                "google-auth refresh via naive helper",
                f"/bin/sh {REPO / 'bench' / 'naive-helper.sh'} {google.host}",
                None,
            )
        )

        clear_cache()
        rss_kib = peak_rss_kib([source_exe, *exec_cmd], env)
        rss_floor_kib = peak_rss_kib([sys.executable, "-c", "pass"], env)

    sizes = {}
    for label, path in built.items():
        p = Path(path)
        sizes[label] = (
            sum(f.stat().st_size for f in p.parent.rglob("*") if f.is_file())
            if label == "one-dir"
            else p.stat().st_size
        )

    budgets = [
        Budget(
            "source cache hit ≤ 2.5× floor",
            "2.5",
            f"{hit.median / floor.median:.2f}",
            hit.median <= 2.5 * floor.median,
            True,
        ),
        Budget(
            "source cache miss ≤ 6× floor",
            "6",
            f"{miss.median / floor.median:.2f}",
            miss.median <= 6 * floor.median,
            True,
        ),
        Budget("herd: exactly 1 host request", "1", str(herd_requests), herd_requests == 1, False),
        Budget(f"herd: {HERD}/{HERD} succeeded", str(HERD), str(herd_ok), herd_ok == HERD, False),
        Budget("peak RSS of a cache miss ≤ 30 MiB", "30", f"{rss_kib / 1024:.1f}", rss_kib <= 30 * 1024, False),
    ]
    one_dir_hit = next((r for r in rows if r.name == "one-dir binary, cache hit"), None)
    if one_dir_hit:
        ratio = one_dir_hit.median / hit.median
        budgets.append(Budget("one-dir binary hit ≤ 1.5× source hit", "1.5", f"{ratio:.2f}", ratio <= 1.5, True))
    size_limits = {"one-file": 15, "portable": 16, "one-dir": 40}
    for label, size in sizes.items():
        budgets.append(
            Budget(
                f"{label} size ≤ {size_limits[label]} MB",
                str(size_limits[label]),
                f"{size / 1e6:.1f}",
                size <= size_limits[label] * 1e6,
                False,
            )
        )

    width = max(len(r.name) for r in rows)
    print(f"{'row':<{width}}  {'min ms':>8} {'median':>8} {'max ms':>8} {'× floor':>8}")
    for r in rows:
        print(
            f"{r.name:<{width}}  {min(r.samples_ms):8.1f} {r.median:8.1f} {max(r.samples_ms):8.1f} {r.median / floor.median:8.2f}"
        )
    print(
        f"herd: {HERD} concurrent cold invocations in {herd_ms:.0f} ms; {herd_requests} host request(s); {herd_ok}/{HERD} succeeded"
    )
    print(
        f"memory: peak RSS of one cache miss {rss_kib / 1024:.1f} MiB (python -c pass: {rss_floor_kib / 1024:.1f} MiB)"
    )
    for label, size in sizes.items():
        print(f"size: {label} {size / 1e6:.1f} MB")
    if not built:
        print("binaries: none built (build/build.sh builds them); their rows are skipped")
    failed = False
    print("budgets:")
    for b in budgets:
        enforced = not (b.timing and args.quick)
        state = (
            ("ok" if b.ok else "BROKEN") if enforced else ("ok" if b.ok else "over") + " (not enforced with --quick)"
        )
        print(f"  {b.name}: {b.value} — {state}")
        failed |= enforced and not b.ok

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "runs_per_row": runs,
        "rows": [
            {
                "name": r.name,
                "min_ms": min(r.samples_ms),
                "median_ms": r.median,
                "max_ms": max(r.samples_ms),
                "ratio_to_floor": r.median / floor.median,
            }
            for r in rows
        ],
        "herd": {"invocations": HERD, "wall_ms": herd_ms, "host_requests": herd_requests, "succeeded": herd_ok},
        "memory": {"peak_rss_cache_miss_kib": rss_kib, "peak_rss_floor_kib": rss_floor_kib},
        "sizes_bytes": sizes,
        "budgets": [b.__dict__ for b in budgets],
    }
    Path(args.json).write_text(json.dumps(results, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
