#!/usr/bin/env bash
# Create or refresh the project virtualenv (.venv): pinned dependencies, the ROS 2 messages in
# msg/ (built with rosidl + CMake into the venv prefix) and this package (editable).
# A second run with nothing changed only compares two hashes and returns.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.syncmv4d-deps.sha256"
want=$(cat requirements.txt setup.py | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned dependencies into $VENV (first run: a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  "$VENV/bin/python" -m pip install -q -e . --no-deps --no-build-isolation
  echo "$want" > "$stamp"
fi

bash scripts/build_msgs.sh "$VENV"
