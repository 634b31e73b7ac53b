#!/bin/bash
# The containers' health check: one HTTP/1.1 GET over bash's /dev/tcp, so the runtime image needs no curl.
# Exit 0 when the answer is 200, else 1 (Docker reserves 2). Also works against a native stack.
#
# Usage: healthcheck.sh api|projector
#   api        GET /readyz on 127.0.0.1:$CREDITS_HTTP_PORT (default 8080): 200 only when Kafka, the writer
#              and Redis are all up and Redis holds the view (the projector made it, and is not rebuilding it)
#   projector  GET /metrics on 127.0.0.1:$CREDITS_PROJECTOR_METRICS_PORT (default 9464): served once the
#              projector has connected to Kafka and Redis
set -u

READ_TIMEOUT_S=5

case "${1:-}" in
  api) port="${CREDITS_HTTP_PORT:-8080}" path=/readyz ;;
  projector) port="${CREDITS_PROJECTOR_METRICS_PORT:-9464}" path=/metrics ;;
  *) echo "usage: $0 api|projector" >&2; exit 1 ;;
esac

exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$path" >&3
# The status line: HTTP/1.1 200 OK
read -r -t "$READ_TIMEOUT_S" _ status _ <&3 || exit 1
[[ "$status" == 200 ]]
