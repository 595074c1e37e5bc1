#!/usr/bin/env bash
# Creates or refreshes .venv from the hash-pinned lock. Idempotent; sourced by demo.sh and test.sh.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
lock=requirements/dev.lock
stamp=.venv/.lock-sha256
want=$(cat "$lock" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "== setting up .venv from $lock"
  python3 -m venv .venv
  pip_quiet() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >.venv/pip.log 2>&1 || { cat .venv/pip.log >&2; exit 1; }; }
  pip_quiet --require-hashes -r "$lock"
  # compat mode: a plain .pth entry, no import-hook finder loaded at every start (it costs ~10 ms)
  pip_quiet --no-deps --no-build-isolation --config-settings editable_mode=compat -e .
  .venv/bin/python -c "import iris_credexec, jwt, click, google.auth, pytest" # fails loudly if the install did not take
  echo "$want" > "$stamp"
fi
