#!/usr/bin/env bash
# Regenerate every file in models/: make/reuse a venv, install pinned deps,
# run the generators (trains, exports, self-checks; ~1 min on 1 core).
# make_control_flow.py must run after make_models.py: it merges its entry
# into the manifest.json that make_models.py rewrites.
# Usage: bash models/gen/regen.sh        (VENV=/path to pick the venv)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
VENV="${VENV:-/work/pyenv-gen}"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q -r "$here/requirements.txt"
OMP_NUM_THREADS=1 "$VENV/bin/python" "$here/make_models.py" "$@"
OMP_NUM_THREADS=1 "$VENV/bin/python" "$here/make_control_flow.py" "$@"
