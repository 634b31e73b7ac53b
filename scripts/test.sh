#!/usr/bin/env bash
# Runs every test: unit tests (no network), the compose checks (scripts/test-compose.sh), then integration tests
# against a real Kafka and Redis that this script brings up (and stops again if it started them), then the
# TypeScript SDK's tests against its own API.
# .ci/run calls exactly this.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRESET="${CREDITS_TEST_PRESET:-dev}"     # dev = ASan + UBSan
# Every test suite makes topics of its own, with names new for each run, and has Redis databases of its own
# (tests/README.md): a running stack is not disturbed, and no suite sees another's data.
PYTEST_TIMEOUT_S=2700   # about 15 min here, and the month-end grants test (tests/integration/test_grants_month_end.py) 7 more
SDK_TEST_TIMEOUT_S=600   # npm ci, tsc and the SDK's tests take about a minute
FUZZ_S=40   # total over the libFuzzer targets (scripts/fuzz.sh); a smoke run, longer runs are local

cd "$REPO"
"$REPO/scripts/install-deps.sh"

log "format check (clang-format 19, .clang-format)"
"$REPO/scripts/format.sh" --check

log "build: preset $PRESET"
"$REPO/scripts/build.sh" "$PRESET"

log "unit tests"
ctest --preset "$PRESET" -LE integration

log "compose checks (hadolint, compose-go, runtime packages)"
CREDITS_TEST_PRESET="$PRESET" "$REPO/scripts/test-compose.sh"

log "fuzz: ${FUZZ_S}s"
"$REPO/scripts/fuzz.sh" "$FUZZ_S"

# On the way out: the stack stops if this script started it, and the failed tests are named once more after its
# shutdown lines, for a reader who sees only the end of the output (a CI summary).
PYTEST_REPORT="$DATA/logs/pytest.txt"
rm -f "$PYTEST_REPORT"  # a report of an earlier run names nothing of this one
started_here=0
finish() {
  local status=$?
  if ((started_here)); then "$REPO/scripts/down.sh" || true; fi
  if ((status != 0)) && [[ -s "$PYTEST_REPORT" ]] && grep -qE '^(FAILED|ERROR) |^pytest ran out' "$PYTEST_REPORT"; then
    echo "[test] failed (the whole report: $PYTEST_REPORT):"
    grep -E '^(FAILED|ERROR) |^pytest ran out' "$PYTEST_REPORT" | cut -c1-400
  fi
  exit "$status"
}
trap finish EXIT
"$REPO/scripts/status.sh" >/dev/null 2>&1 || started_here=1
"$REPO/scripts/up.sh" --infra-only
# A Redis started before scripts/lib.sh asked for REDIS_DATABASES has 16: every suite's databases must exist.
redis_databases="$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" config get databases | tail -n 1)"
((redis_databases >= REDIS_DATABASES)) \
  || die "redis on port $REDIS_PORT has $redis_databases databases, the tests need $REDIS_DATABASES: restart it (scripts/down.sh)"

export CREDITS_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" CREDITS_REDIS_PORT="$REDIS_PORT"
export CREDITS_TEST_BUILD_DIR="$REPO/build/$PRESET"

log "integration tests (C++)"
ctest --preset "$PRESET" -L integration

log "integration tests (HTTP, pytest)"
mkdir -p "$(dirname "$PYTEST_REPORT")"
timeout "$PYTEST_TIMEOUT_S" python3 -m pytest -q -rfE tests/integration 2>&1 | tee "$PYTEST_REPORT" || {
  status=$?
  ((status != 124)) || echo "pytest ran out of its ${PYTEST_TIMEOUT_S} s (PYTEST_TIMEOUT_S in scripts/test.sh)" >>"$PYTEST_REPORT"
  exit "$status"
}

log "TypeScript SDK tests (node --test, against its own credits-api)"
CREDITS_TEST_PRESET="$PRESET" timeout "$SDK_TEST_TIMEOUT_S" "$REPO/scripts/test-sdk.sh"

log "all tests passed (the stack was $( ((started_here)) && echo "started and is stopped again" || echo "already running and is left running"))"
