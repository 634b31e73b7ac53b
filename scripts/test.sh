#!/usr/bin/env bash
# Runs every test: unit tests (no network), the compose checks (scripts/test-compose.sh), then integration tests
# against a real Kafka and Redis that this script brings up (and stops again if it started them), then the
# TypeScript SDK's tests against its own API.
# .ci/run calls exactly this.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRESET="${CREDITS_TEST_PRESET:-dev}"     # dev = ASan + UBSan
TEST_LEDGER_TOPIC=credits-test.ledger   # the integration tests' own topics: a running stack is not disturbed
TEST_USAGE_TOPIC=credits-test.usage
TEST_SNAPSHOT_TOPIC=credits-test.snapshots
TEST_KEYS_TOPIC=credits-test.keys
# The projector's own tests write hand-made events that no writer decided; they get topics of their own so
# the API under test never rebuilds from them.
PROJECTOR_TEST_LEDGER_TOPIC=credits-test-projector.ledger
PROJECTOR_TEST_USAGE_TOPIC=credits-test-projector.usage
PYTEST_TIMEOUT_S=1200
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

started_here=0
if ! "$REPO/scripts/status.sh" >/dev/null 2>&1; then
  started_here=1
  trap '"$REPO/scripts/down.sh" || true' EXIT
fi
"$REPO/scripts/up.sh" --infra-only
LEDGER_TOPIC="$TEST_LEDGER_TOPIC" USAGE_TOPIC="$TEST_USAGE_TOPIC" SNAPSHOT_TOPIC="$TEST_SNAPSHOT_TOPIC" \
  KEYS_TOPIC="$TEST_KEYS_TOPIC" create_topics
LEDGER_TOPIC="$PROJECTOR_TEST_LEDGER_TOPIC" USAGE_TOPIC="$PROJECTOR_TEST_USAGE_TOPIC" SNAPSHOT_TOPIC="$TEST_SNAPSHOT_TOPIC" \
  KEYS_TOPIC="$TEST_KEYS_TOPIC" create_topics

export CREDITS_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" CREDITS_REDIS_PORT="$REDIS_PORT"
export CREDITS_TEST_LEDGER_TOPIC="$TEST_LEDGER_TOPIC" CREDITS_TEST_USAGE_TOPIC="$TEST_USAGE_TOPIC"
export CREDITS_TEST_SNAPSHOT_TOPIC="$TEST_SNAPSHOT_TOPIC" CREDITS_TEST_KEYS_TOPIC="$TEST_KEYS_TOPIC"
export CREDITS_TEST_BUILD_DIR="$REPO/build/$PRESET"

log "integration tests (C++)"
CREDITS_LEDGER_TOPIC="$PROJECTOR_TEST_LEDGER_TOPIC" CREDITS_USAGE_TOPIC="$PROJECTOR_TEST_USAGE_TOPIC" \
  ctest --preset "$PRESET" -L integration

log "integration tests (HTTP, pytest)"
timeout "$PYTEST_TIMEOUT_S" python3 -m pytest -q tests/integration

log "TypeScript SDK tests (node --test, against its own credits-api)"
CREDITS_TEST_PRESET="$PRESET" timeout "$SDK_TEST_TIMEOUT_S" "$REPO/scripts/test-sdk.sh"

log "all tests passed (the stack was $( ((started_here)) && echo "started and is stopped again" || echo "already running and is left running"))"
