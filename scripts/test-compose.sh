#!/usr/bin/env bash
# Checks the docker compose stack without Docker (none runs on the build machines), called by scripts/test.sh
# after the build:
#   1. hadolint on the Dockerfile (.hadolint.yaml);
#   2. the compose checks (compose/check, go test): the file loads, validates and normalizes with compose-go,
#      health checks, pinned images, named volumes, one published port, and each service's CREDITS_* variables
#      against the ones its program reads;
#   3. the runtime stage's packages against the shared libraries the built executables load.
# The native stack run with the compose environment is tests/integration/test_compose_env.py (pytest).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRESET="${CREDITS_TEST_PRESET:-dev}"
GO_TEST_TIMEOUT=300s   # a cold module cache downloads and compiles compose-go: about a minute here
# In debian:*-slim already, and sanitizer runtimes that only the dev/tsan builds load.
BASE_PACKAGES=(libc6 libstdc++6 libgcc-s1 libasan8 libubsan1 libtsan2)
# Loaded by the release build (the image's) only: sanitizer builds keep the sanitizer's allocator.
RELEASE_ONLY_PACKAGES=(libjemalloc2)

cd "$REPO"

log "compose: hadolint Dockerfile"
hadolint --config .hadolint.yaml Dockerfile
sh -n compose/create-topics.sh
bash -n compose/healthcheck.sh

log "compose: go test ./compose/check"
go="$(command -v go || echo /usr/local/go/bin/go)"
(cd compose/check && GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$go" test -count=1 -timeout "$GO_TEST_TIMEOUT" ./...)

log "compose: the runtime image's packages are the libraries the executables load"
# package_of PATH: the Debian package that owns a library. With merged /usr, dpkg may know a file under /lib
# or /usr/lib only, and by its link or its target.
package_of() {
  local candidate
  for candidate in "$1" "$(readlink -f "$1")"; do
    for candidate in "$candidate" "${candidate#/usr}" "/usr${candidate}"; do
      # sed reads to the end: a reader that stops early (head) can kill the writer with SIGPIPE, which pipefail
      # turns into a failure of the whole pipeline.
      dpkg -S "$candidate" 2>/dev/null | sed -n '1s/:.*//p' | grep . && return 0
    done
  done
  die "no Debian package owns $1"
}
needed=()
for bin in "build/$PRESET/command-api/credits-api" "build/$PRESET/projector/credits-projector" \
           "build/$PRESET/admin/credits-admin"; do
  [[ -x "$bin" ]] || die "no $bin: build the $PRESET preset first"
  while read -r lib; do
    # awk reads all of ldconfig's output (no early exit), for the same reason.
    path="$(ldconfig -p | awk -v lib="$lib" '$1 == lib && /x86-64|x86_64/ && !found {print $NF; found = 1}')"
    [[ -n "$path" ]] || die "$bin loads $lib, which ldconfig does not know"
    needed+=("$(package_of "$path")")
  done < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
done
# The package list of the runtime stage's apt-get install, up to the next command.
listed="$(python3 - <<'PY'
import re
text = open("Dockerfile").read()
stage = re.search(r"^FROM \S+ AS runtime$(.*?)(?=^FROM |\Z)", text, re.S | re.M).group(1)
install = re.search(r"apt-get install -y --no-install-recommends(.*?)&&", stage, re.S).group(1)
print("\n".join(sorted(install.replace("\\", " ").split())))
PY
)"
[[ "$PRESET" == release ]] || needed+=("${RELEASE_ONLY_PACKAGES[@]}")
want="$(printf '%s\n' "${needed[@]}" | sort -u | grep -vxF -f <(printf '%s\n' "${BASE_PACKAGES[@]}") || true)"
if [[ "$want" != "$listed" ]]; then
  echo "Dockerfile runtime packages differ from what the executables load (< needed, > listed):" >&2
  diff <(echo "$want") <(echo "$listed") >&2 || true
  exit 1
fi
log "compose: runtime packages: $(echo "$listed" | tr '\n' ' ')"
log "compose: all checks passed"
