#!/usr/bin/env bash
# Formats the C++ sources with clang-format 19 and the repository's .clang-format, or with --check only
# reports the files that differ (exit 1): scripts/test.sh runs the check, so CI fails on unformatted code.
#
# Usage: scripts/format.sh [--check]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

CLANG_FORMAT="${CLANG_FORMAT:-clang-format-19}"
check=0
case "${1:-}" in
  "") ;;
  --check) check=1 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac
command -v "$CLANG_FORMAT" >/dev/null || { echo "$CLANG_FORMAT not found (run scripts/install-deps.sh)" >&2; exit 1; }

mapfile -t files < <(git ls-files '*.cpp' '*.hpp' ':!:sdk/**')
if ((check)); then
  unformatted=()
  for f in "${files[@]}"; do
    "$CLANG_FORMAT" --dry-run --Werror "$f" >/dev/null 2>&1 || unformatted+=("$f")
  done
  if ((${#unformatted[@]})); then
    printf 'not formatted (run scripts/format.sh): %s\n' "${unformatted[@]}" >&2
    exit 1
  fi
  echo "format: ${#files[@]} files formatted"
else
  "$CLANG_FORMAT" -i "${files[@]}"
fi
