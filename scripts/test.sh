#!/usr/bin/env bash
# The whole suite: static checks, then every test (real google-auth and gcloud driving the
# real executable against local stand-ins). .ci/run runs exactly this.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
bash scripts/clients.sh   # google-auth 2.43 and 2.9 venvs, Node's google-auth-library, Go's x/oauth2
command -v gcloud >/dev/null || { echo "FAIL: gcloud (google-cloud-cli) is not installed; the suite drives the real gcloud" >&2; exit 1; }

echo "== ruff";   .venv/bin/ruff check iris_credexec tests demo bench && .venv/bin/ruff format --check -q iris_credexec tests demo bench
echo "== mypy";   .venv/bin/mypy --strict iris_credexec
echo "== bandit"; .venv/bin/bandit -q -r iris_credexec

echo "== frozen binaries (build/build.sh)"
bash build/build.sh

run_pytest() {
  set +e
  .venv/bin/python -m pytest "$@"
  local rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then echo "FAIL: pytest collected no tests" >&2; exit 1; fi
  [ "$rc" -eq 0 ] || exit "$rc"
}
export IRIS_CREDEXEC_REQUIRE_BINARIES=1  # the binary tests fail, not skip, when a build is missing

echo "== pytest (source install)"
run_pytest "$@"

# The frozen build misses data files and lazily imported modules that the source tree
# has: run the end-to-end and executable-mode tests again against what ships.
echo "== pytest (one-directory binary)"
IRIS_CREDEXEC_BIN=dist/iris-credexec-dir/iris-credexec run_pytest "$@" \
  tests/e2e tests/test_exec_mode.py tests/test_cache.py tests/test_fasthit.py tests/test_main.py tests/frozen

# A quick smoke of the benchmark so it cannot rot (one run per row; timing budgets not enforced).
echo "== bench (smoke)"
.venv/bin/python bench/run.py --quick --json "$(mktemp)"
