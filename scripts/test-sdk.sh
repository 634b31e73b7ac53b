#!/usr/bin/env bash
# The TypeScript SDK's tests (sdk/typescript/test.sh) against a credits-api and credits-projector of their own:
# built binaries from build/$CREDITS_TEST_PRESET (default dev), on a free port, on topics of their own
# (credits-test-sdk-<run>.*), over the Kafka and Redis that scripts/up.sh --infra-only started (scripts/test.sh does).
# The guide's example gets two tenants made up for this run, so its "user_abc123" is always new (see
# sdk/typescript/test/example.test.ts). Both processes are stopped again, whatever happens.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PRESET="${CREDITS_TEST_PRESET:-dev}"
BUILD="${CREDITS_TEST_BUILD_DIR:-$REPO/build/$PRESET}"
run_id="$(date +%Y%m%d%H%M%S)_$$"
SDK_LEDGER_TOPIC="credits-test-sdk-$run_id.ledger"   # topics of its own, new for every run (tests/README.md)
SDK_USAGE_TOPIC="credits-test-sdk-$run_id.usage"
SDK_SNAPSHOT_TOPIC="credits-test-sdk-$run_id.snapshots"
SDK_KEYS_TOPIC="credits-test-sdk-$run_id.keys"
SDK_API_KEY=ck_sdk_test_key
SDK_EXAMPLE_API_KEY="ck_sdk_example_$run_id"
SDK_RERUN_API_KEY="ck_sdk_rerun_$run_id"
SDK_REDIS_DB=28           # and 29 for rebuilds: the SDK run's own databases (tests/README.md)

require_cmds node npm curl python3
for bin in "$BUILD/command-api/credits-api" "$BUILD/projector/credits-projector"; do
  [[ -x "$bin" ]] || die "no $bin (build the $PRESET preset first)"
done
kafka_metadata >/dev/null || die "kafka does not answer on $KAFKA_BOOTSTRAP (scripts/up.sh --infra-only)"
redis_ping || die "redis does not answer on port $REDIS_PORT (scripts/up.sh --infra-only)"
for db in "$SDK_REDIS_DB" $((SDK_REDIS_DB + 1)); do
  redis-cli -h 127.0.0.1 -p "$REDIS_PORT" -n "$db" flushdb >/dev/null || die "redis: cannot flush database $db"
done

LEDGER_TOPIC="$SDK_LEDGER_TOPIC" USAGE_TOPIC="$SDK_USAGE_TOPIC" SNAPSHOT_TOPIC="$SDK_SNAPSHOT_TOPIC" KEYS_TOPIC="$SDK_KEYS_TOPIC" \
  create_topics

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$LOGS"
export CREDITS_HTTP_PORT="$port" CREDITS_KAFKA_BROKERS="$KAFKA_BOOTSTRAP" CREDITS_REDIS_PORT="$REDIS_PORT"
export CREDITS_LEDGER_TOPIC="$SDK_LEDGER_TOPIC" CREDITS_USAGE_TOPIC="$SDK_USAGE_TOPIC"
export CREDITS_SNAPSHOT_TOPIC="$SDK_SNAPSHOT_TOPIC" CREDITS_TRANSACTIONAL_ID=credits-test-sdk-api
export CREDITS_KEYS_TOPIC="$SDK_KEYS_TOPIC"
export CREDITS_API_KEYS="sdk:$SDK_API_KEY,sdk_example_$run_id:$SDK_EXAMPLE_API_KEY,sdk_rerun_$run_id:$SDK_RERUN_API_KEY"
export CREDITS_REDIS_DB="$SDK_REDIS_DB" CREDITS_REDIS_REBUILD_DB=$((SDK_REDIS_DB + 1))
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"

# Stops what this script started; a process that does not exit cleanly (a sanitizer report, a crash) fails the run.
pids=()
stop_all() {
  local rc=$? pid code failed=0
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    wait_gone "$pid" "$APP_STOP_TIMEOUT" || kill -KILL "$pid" 2>/dev/null || true
    code=0
    wait "$pid" || code=$?
    if ((code != 0)); then
      warn "sdk: process $pid exited with $code (see $LOGS/test-sdk-credits-*.log)"
      failed=1
    fi
  done
  if ((rc == 0 && failed)); then exit 1; fi
  exit "$rc"
}
trap stop_all EXIT
trap 'exit 143' TERM INT

log "sdk: credits-projector and credits-api (${BUILD#"$REPO"/}) on 127.0.0.1:$port, topics credits-test-sdk-$run_id.*"
"$BUILD/projector/credits-projector" >>"$LOGS/test-sdk-credits-projector.log" 2>&1 </dev/null &
pids+=($!)
"$BUILD/command-api/credits-api" >>"$LOGS/test-sdk-credits-api.log" 2>&1 </dev/null &
pids+=($!)
api_healthy() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz"; }
wait_until "$APP_START_TIMEOUT" credits-api "${pids[1]}" api_healthy \
  || die "credits-api did not become healthy (see $LOGS/test-sdk-credits-api.log)"

CREDITS_BASE_URL="http://127.0.0.1:$port" CREDITS_API_KEY="$SDK_API_KEY" CREDITS_EXAMPLE_API_KEY="$SDK_EXAMPLE_API_KEY" \
  CREDITS_EXAMPLE_RERUN_API_KEY="$SDK_RERUN_API_KEY" \
  "$REPO/sdk/typescript/test.sh"
