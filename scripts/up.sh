#!/usr/bin/env bash
# Starts the local stack: installs what is missing (scripts/install-deps.sh, as root), then Redis,
# single-node KRaft Kafka, the two topics, then (optionally) builds and starts credits-api and
# credits-projector. All state and logs live under $DATA (default
# .data/ in the repo; CREDITS_DATA_DIR overrides). Idempotent: running pieces are left alone, and
# a restart after down.sh reuses the existing data (Kafka storage is formatted only once).
#
# Usage: scripts/up.sh [--infra-only] [--no-build] [--no-apps]
#   --infra-only  Kafka + Redis + topics only (no build, no apps); what the tests use
#   --no-build    don't run cmake; start whatever binaries already exist
#   --no-apps     build (unless --no-build) but don't start the apps
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

do_build=1
do_apps=1
for arg in "$@"; do
  case "$arg" in
    --infra-only) do_build=0; do_apps=0 ;;
    --no-build) do_build=0 ;;
    --no-apps) do_apps=0 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) die "unknown option: $arg (see --help)" ;;
  esac
done

# Defaults the apps see (only when the caller hasn't set them). The app processes inherit the
# whole environment, so any other CREDITS_* variable set by the caller passes straight through.
export CREDITS_DATA_DIR="$DATA"
export CREDITS_API_KEYS="${CREDITS_API_KEYS:-demo:ck_demo_key_123}"
export CREDITS_HTTP_PORT="$HTTP_PORT"
export CREDITS_KAFKA_BROKERS="${CREDITS_KAFKA_BROKERS:-$KAFKA_BOOTSTRAP}"
export CREDITS_REDIS_HOST="${CREDITS_REDIS_HOST:-127.0.0.1}"
export CREDITS_REDIS_PORT="$REDIS_PORT"
export CREDITS_LEDGER_TOPIC="$LEDGER_TOPIC"
export CREDITS_USAGE_TOPIC="$USAGE_TOPIC"
export CREDITS_KEYS_TOPIC="$KEYS_TOPIC"
export CREDITS_PARTITIONS="$PARTITIONS"

build_apps() {
  if [[ ! -f "$REPO/CMakePresets.json" ]]; then
    log "build: no CMakePresets.json yet, skipping the build"
    return 0
  fi
  log "build: scripts/build.sh release"
  "$REPO/scripts/build.sh" release || die "build: failed"
}

# start_app NAME BINARY: nohup'ed, own log file and pidfile; skipped if running or not built.
start_app() {
  local name="$1" bin="$2" pid
  if pid="$(pid_alive "$RUN/$name.pid" "$name")"; then
    log "$name: already running (pid $pid)"
    return 0
  fi
  if [[ ! -x "$bin" ]]; then
    log "$name: no binary at ${bin#"$REPO"/}, not started"
    return 1
  fi
  # Another server on our HTTP port would answer /healthz in our place.
  if [[ "$name" == credits-api ]] && port_in_use "$HTTP_PORT"; then
    die "credits-api: port $HTTP_PORT is taken by another process (set CREDITS_HTTP_PORT)"
  fi
  log "$name: starting (log $LOGS/$name.log)"
  nohup "$bin" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
}

# The same installer the tests use: cheap when everything is there (apt and pip run only for what is missing).
# It needs root; anyone else gets the list of what is missing from require_cmds instead.
install_missing() {
  if ((EUID == 0)); then
    "$REPO/scripts/install-deps.sh" || die "install-deps: failed"
  else
    require_cmds redis-server redis-cli java kcat curl cmake ninja
  fi
}

api_healthy() { curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/healthz"; }

t_start=$SECONDS
install_missing
mkdir -p "$DATA" "$LOGS" "$RUN"
redis_up
kafka_up
create_topics

if ((do_build)); then build_apps; fi

if ((do_apps)); then
  # Projector first: it only reads Kafka and writes Redis, so it can be catching up while the API
  # starts.
  if start_app credits-projector "$PROJECTOR_BIN"; then
    sleep 1
    pid_alive "$RUN/credits-projector.pid" credits-projector >/dev/null \
      || die "credits-projector exited right after start (see $LOGS/credits-projector.log)"
  fi
  if start_app credits-api "$API_BIN"; then
    wait_until "$APP_START_TIMEOUT" credits-api "$(cat "$RUN/credits-api.pid")" api_healthy \
      || die "credits-api: /healthz did not answer 200 (see $LOGS/credits-api.log)"
    log "credits-api: healthy"
  fi
fi

log "stack up in $((SECONDS - t_start))s. Data: $DATA"
echo "  Kafka:  $KAFKA_BOOTSTRAP  (topics $LEDGER_TOPIC, $USAGE_TOPIC)"
echo "  Redis:  127.0.0.1:$REDIS_PORT"
if pid_alive "$RUN/credits-api.pid" credits-api >/dev/null; then
  first_key="${CREDITS_API_KEYS%%,*}"
  echo "  API:    http://127.0.0.1:$HTTP_PORT"
  echo "  API key (${first_key%%:*}): ${first_key#*:}"
fi
echo "  Stop with scripts/down.sh"
