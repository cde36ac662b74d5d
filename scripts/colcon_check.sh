#!/usr/bin/env bash
# Build and test the package the way a ROS 2 user does: `colcon build` then `colcon test`.
# colcon runs from its own pinned virtualenv (build/colcon-venv, requirements-colcon.txt);
# the ROS 2 wheels of VENV are the underlay (ament_cmake, rosidl, the message packages).
#
#   usage: scripts/colcon_check.sh [VENV] [OUT]      (default .venv, build/colcon)
# OUT is a colcon workspace: src/syncmv4d_ros (a copy of the package's files: tracked and
# untracked-but-not-ignored ones; the venv must not lie inside the source tree, CMake refuses
# exported include directories there), build/, install/ and log/. Exit status: colcon's, then
# that of the test results.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$(cd "${1:-.venv}" && pwd)"
OUT="$(mkdir -p "${2:-build/colcon}" && cd "${2:-build/colcon}" && pwd)"
TOOLS=build/colcon-venv
stamp="$TOOLS/.requirements.sha256"
want=$(sha256sum requirements-colcon.txt | cut -d' ' -f1)
if [ ! -x "$TOOLS/bin/colcon" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "colcon_check: installing colcon into $TOOLS"
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install -q -r requirements-colcon.txt
  echo "$want" > "$stamp"
fi
rm -rf "$OUT/src/syncmv4d_ros"
mkdir -p "$OUT/src/syncmv4d_ros"
git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$OUT/src/syncmv4d_ros"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV" PATH="$VENV/bin:$PATH"
common=(--paths "$OUT/src/syncmv4d_ros" --build-base "$OUT/build" --install-base "$OUT/install")
"$TOOLS/bin/colcon" --log-base "$OUT/log" build "${common[@]}" --event-handlers console_direct+ \
  --cmake-args -G Ninja -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=ON
"$TOOLS/bin/colcon" --log-base "$OUT/log" test "${common[@]}" --event-handlers console_direct+
"$TOOLS/bin/colcon" test-result --test-result-base "$OUT/build" --verbose
