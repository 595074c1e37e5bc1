#!/usr/bin/env bash
# Installs every Google client the conformance tests drive, pinned; fails loudly if one cannot be had.
#   .venv-google-auth-oldest/  google-auth 2.9.0 (the first with executable-sourced credentials)
#   .venv-google-auth-2.43/    google-auth 2.43.0 (the last that splits the command with str.split)
#   tests/clients/node/node_modules/  google-auth-library (package-lock.json)
#   Go: Debian's golang-go and golang-golang-x-oauth2-google-dev
# (the newest google-auth and gcloud come with .venv and the machine image).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

for name in google-auth-oldest google-auth-2.43; do
  venv=.venv-$name
  lock=requirements/$name.lock
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.lock-sha256" 2>/dev/null)" != "$want" ]; then
    echo "== $venv from $lock"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$lock" >"$venv/pip.log" 2>&1 \
      || { cat "$venv/pip.log" >&2; echo "FAIL: cannot install $lock" >&2; exit 1; }
    "$venv/bin/python" -c "import google.auth.pluggable"
    echo "$want" > "$venv/.lock-sha256"
  fi
done

node_dir=tests/clients/node
want=$(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$node_dir/node_modules/google-auth-library" ] || [ "$(cat "$node_dir/node_modules/.lock-sha256" 2>/dev/null)" != "$want" ]; then
  command -v npm >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null; }
  echo "== npm ci ($node_dir)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) || { echo "FAIL: npm ci failed" >&2; exit 1; }
  echo "$want" > "$node_dir/node_modules/.lock-sha256"
fi

# Tools the tests use: curl (callers of the broker), iproute2 and iptables (the concealment
# test in network namespaces it creates itself).
missing=()
command -v curl >/dev/null || missing+=(curl)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "FAIL: cannot install ${missing[*]}" >&2; exit 1; }
fi

if ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/golang.org/x/oauth2/google ]; then
  echo "== apt-get install golang-go golang-golang-x-oauth2-google-dev"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-golang-x-oauth2-google-dev >/dev/null \
    || { echo "FAIL: cannot install the Go client" >&2; exit 1; }
fi
