#!/usr/bin/env bash
# Stops the local stack started by up.sh, keeping all data under $DATA.
# Order matters: apps first (API stops taking writes, then the projector), then Kafka, then Redis,
# so nothing is left writing to a dependency that is already gone.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_pid credits-api "$RUN/credits-api.pid" credits-api "$APP_STOP_TIMEOUT"
stop_pid credits-projector "$RUN/credits-projector.pid" credits-projector "$APP_STOP_TIMEOUT"
# Kafka gets a long grace: a clean shutdown avoids log recovery on the next start.
kafka_down
redis_down
log "stack down (data kept in $DATA)"
