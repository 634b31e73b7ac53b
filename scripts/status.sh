#!/usr/bin/env bash
# Shows which parts of the local stack are running. Exit 0 when Redis and Kafka both answer.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rc=0
show() {  # show NAME PIDFILE MARKER HEALTH_CMD...
  local name="$1" pidfile="$2" marker="$3" pid state; shift 3
  if pid="$(pid_alive "$pidfile" "$marker")"; then
    if "$@" >/dev/null 2>&1; then state="up (pid $pid)"; else state="running but not answering (pid $pid)"; fi
  else
    state="down"
  fi
  printf '  %-18s %s\n' "$name" "$state"
  [[ "$state" == up* ]]
}

echo "Data: $DATA"
show redis "$REDIS_PIDFILE" "$REDIS_MARKER" redis_ping || rc=1
show kafka "$KAFKA_PIDFILE" "$KAFKA_MARKER" kafka_metadata || rc=1
show credits-projector "$RUN/credits-projector.pid" credits-projector true || true
show credits-api "$RUN/credits-api.pid" credits-api \
  curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$HTTP_PORT/healthz" || true
if ((rc == 0)); then
  for t in "$LEDGER_TOPIC" "$USAGE_TOPIC"; do
    printf '  topic %-12s %s partitions\n' "$t" "$(kafka_topic_partitions "$t" || true)"
  done
fi
exit "$rc"
