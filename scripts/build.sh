#!/usr/bin/env bash
# Configures and builds one CMake preset: the one build command of the native stack (up.sh, test.sh) and of
# the Docker image's builder stage (Dockerfile), so both compile the same way.
#
# Usage: scripts/build.sh PRESET [TARGET...]   (no target: all the preset builds)
set -euo pipefail

preset="${1:?usage: scripts/build.sh PRESET [TARGET...]}"
shift
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# The configure step's chatter is only worth reading when it fails.
configure_log="$(mktemp)"
trap 'rm -f "$configure_log"' EXIT
cmake --preset "$preset" >"$configure_log" 2>&1 || { cat "$configure_log" >&2; exit 1; }
if (($#)); then
  cmake --build --preset "$preset" --target "$@"
else
  cmake --build --preset "$preset"
fi
