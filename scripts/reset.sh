#!/usr/bin/env bash
# Clean slate: stops the stack and deletes everything under $DATA except the downloaded Kafka jars
# (kafka/lib), so the next up.sh formats a fresh Kafka cluster and starts with an empty Redis.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$REPO/scripts/down.sh"

# Guard against an rm -rf on a surprising path (e.g. CREDITS_DATA_DIR=/).
case "$DATA" in
  "" | / | "$HOME" | "$REPO") die "refusing to wipe DATA=$DATA" ;;
esac
[[ -d "$DATA" ]] || { log "nothing to reset ($DATA does not exist)"; exit 0; }

log "reset: wiping $DATA (keeping kafka/lib)"
find "$DATA" -mindepth 1 -maxdepth 1 ! -name kafka -exec rm -rf {} +
if [[ -d "$KAFKA_HOME" ]]; then
  find "$KAFKA_HOME" -mindepth 1 -maxdepth 1 ! -name lib -exec rm -rf {} +
fi
log "reset: done"
