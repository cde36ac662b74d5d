#!/usr/bin/env bash
# Build the ROS 2 messages in msg/ and action/ with rosidl (CMake + Ninja) and install them into the prefix
# of the virtualenv VENV (default .venv), where the pip ROS 2 wheels find them at run time.
# Idempotent: skipped when msg/, action/, CMakeLists.txt and package.xml are unchanged since the last
# successful build (hash stamp in VENV). The Python code is installed by pip, not here.
#
#   usage: scripts/build_msgs.sh [VENV]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
VENV="$(cd "${1:-.venv}" && pwd)"
BUILD_DIR=build/msgs
stamp="$VENV/.syncmv4d-msgs.sha256"

if [ ! -x "$VENV/bin/python" ]; then
  echo "build_msgs: $VENV is not a virtualenv (no bin/python)" >&2
  exit 2
fi
for tool in cmake ninja; do
  if ! command -v "$tool" >/dev/null && [ ! -x "$VENV/bin/$tool" ]; then
    echo "build_msgs: '$tool' not found (install cmake and ninja, e.g. apt-get install cmake ninja-build)" >&2
    exit 2
  fi
done

want=$(cat CMakeLists.txt package.xml msg/*.msg action/*.action | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] \
   && "$VENV/bin/python" -c "import syncmv4d_ros.msg" 2>/dev/null; then
  echo "build_msgs: messages up to date"
  exit 0
fi

mkdir -p "$(dirname "$BUILD_DIR")"
echo "build_msgs: building msg/ and action/ into $VENV"
export PATH="$VENV/bin:$PATH"
# ament's CMake modules locate the message packages through the ament index at configure time.
export AMENT_PREFIX_PATH="$VENV"
cmake -S . -B "$BUILD_DIR" -G Ninja \
  -DCMAKE_INSTALL_PREFIX="$VENV" -DCMAKE_PREFIX_PATH="$VENV" \
  -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF \
  -DSYNCMV4D_INSTALL_PYTHON=OFF >"$BUILD_DIR.log" 2>&1 \
  || { cat "$BUILD_DIR.log" >&2; echo "build_msgs: CMake configure failed" >&2; exit 1; }
cmake --build "$BUILD_DIR" -j2 >>"$BUILD_DIR.log" 2>&1 \
  || { tail -50 "$BUILD_DIR.log" >&2; echo "build_msgs: build failed (full log: $BUILD_DIR.log)" >&2; exit 1; }
cmake --install "$BUILD_DIR" >>"$BUILD_DIR.log" 2>&1 \
  || { tail -20 "$BUILD_DIR.log" >&2; echo "build_msgs: install failed" >&2; exit 1; }
"$VENV/bin/python" -c "from syncmv4d_ros.msg import HOITracks, HOIVideo, GenerationStatus" \
  || { echo "build_msgs: built, but syncmv4d_ros.msg does not import" >&2; exit 1; }
echo "$want" > "$stamp"
echo "build_msgs: done"
