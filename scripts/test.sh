#!/usr/bin/env bash
# The whole suite: static checks, then every test (real google-auth and gcloud driving the
# real executable against local stand-ins). .ci/run runs exactly this.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
bash scripts/setup.sh
command -v gcloud >/dev/null || { echo "FAIL: gcloud (google-cloud-cli) is not installed; the suite drives the real gcloud" >&2; exit 1; }

echo "== ruff";   .venv/bin/ruff check iris_credexec tests demo bench && .venv/bin/ruff format --check -q iris_credexec tests demo bench
echo "== mypy";   .venv/bin/mypy --strict iris_credexec
echo "== bandit"; .venv/bin/bandit -q -r iris_credexec

echo "== pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "FAIL: pytest collected no tests" >&2; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"

# A quick smoke of the benchmark so it cannot rot (one run per row; timing budgets not enforced).
echo "== bench (smoke)"
.venv/bin/python bench/run.py --quick --json "$(mktemp)"
