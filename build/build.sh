#!/usr/bin/env bash
# Builds the frozen binaries from this checkout into dist/:
#   dist/iris-credexec            one file (unpacks itself into a temp dir at every start)
#   dist/iris-credexec-dir/       one directory (starts faster; ship the whole directory)
#   dist/iris-credexec-portable   the one-file build made static with staticx (any glibc or musl)
#   dist/manifest.txt             the bundled modules and libraries
# Uses Debian's python3 (pyenv's interpreter carries a DT_RUNPATH that staticx refuses) and
# the hash-pinned requirements/build.lock.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

need_apt=()
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3 python3-venv)
/usr/bin/python3 -c "import sysconfig, os; assert os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h'))" 2>/dev/null || need_apt+=(python3-dev)
command -v objdump >/dev/null || need_apt+=(binutils)
command -v patchelf >/dev/null || need_apt+=(patchelf)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "== apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

venv=build/.venv
stamp=$venv/.lock-sha256
want=$(sha256sum requirements/build.lock | cut -d' ' -f1)
if [ ! -x $venv/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  echo "== build environment from requirements/build.lock (Debian python3)"
  rm -rf $venv
  /usr/bin/python3 -m venv $venv
  $venv/bin/python -m pip install --quiet --disable-pip-version-check --require-hashes -r requirements/build.lock >$venv/pip.log 2>&1 \
    || { cat $venv/pip.log >&2; exit 1; }
  echo "$want" > $stamp
fi

commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
[ -z "$(git status --porcelain -- iris_credexec 2>/dev/null)" ] || commit="$commit-dirty"
printf 'COMMIT = "%s"\n' "$commit" > iris_credexec/_build_info.py
trap 'rm -f "$repo/iris_credexec/_build_info.py"' EXIT

echo "== pyinstaller (commit $commit)"
rm -rf dist/iris-credexec dist/iris-credexec-dir dist/iris-credexec-portable
mkdir -p dist
export SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || echo 0)
export PYTHONHASHSEED=0
$venv/bin/pyinstaller --noconfirm --clean --log-level WARN \
  --workpath build/work --distpath dist build/iris-credexec.spec

echo "== staticx"
$venv/bin/staticx --strip dist/iris-credexec dist/iris-credexec-portable

echo "== built"
for f in dist/iris-credexec dist/iris-credexec-portable; do [ -f $f ] && printf '%-32s %6.1f MB\n' "$f" "$(awk "BEGIN{print $(stat -c %s $f)/1e6}")"; done
printf '%-32s %6.1f MB\n' dist/iris-credexec-dir "$(awk "BEGIN{print $(du -sb dist/iris-credexec-dir | cut -f1)/1e6}")"
dist/iris-credexec-dir/iris-credexec --version
