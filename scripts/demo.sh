#!/usr/bin/env bash
# The main job on an embedded default, no GCP and no network: a real google-auth client
# obtains a service account's access token through iris-credexec from local stand-ins.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/python" "$repo/demo/run.py" "$@"
