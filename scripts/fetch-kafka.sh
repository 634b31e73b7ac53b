#!/usr/bin/env bash
# Puts the Apache Kafka broker + tools jars into $DATA/kafka/lib, resolved from Maven Central with
# scripts/kafka-pom.xml. Why Maven and not the release tarball: only package registries are
# reachable here, and Maven Central carries every jar the broker needs.
# Idempotent: skips when the marker from a previous complete copy is present.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MVN_TIMEOUT=900   # seconds; a cold ~/.m2 needs ~60 MB of downloads

pom_hash="$(sha256sum "$REPO/scripts/kafka-pom.xml" | cut -d' ' -f1)"
if [[ -f "$KAFKA_LIB_MARKER" && "$(<"$KAFKA_LIB_MARKER")" == "$pom_hash" ]]; then
  log "kafka jars: already in $KAFKA_LIB"
  exit 0
fi
# A marker with another hash means the POM changed (e.g. Kafka version bump): fetch again.
require_cmds mvn java

# Copy into a scratch dir and rename at the end, so an interrupted run never leaves a half-filled
# lib/ that looks usable. The marker records which POM produced the jars.
mkdir -p "$KAFKA_HOME"
tmp="$(mktemp -d "$KAFKA_HOME/lib.tmp.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

log "kafka jars: resolving with Maven (scripts/kafka-pom.xml) ..."
t0=$SECONDS
timeout "$MVN_TIMEOUT" mvn -q -B -Dstyle.color=never -f "$REPO/scripts/kafka-pom.xml" dependency:copy-dependencies \
  -DincludeScope=runtime -DoutputDirectory="$tmp"

# Sanity: the broker main class and the tools must be there.
ls "$tmp"/kafka_2.13-*.jar "$tmp"/kafka-tools-*.jar >/dev/null 2>&1 \
  || die "kafka jars: Maven finished but kafka_2.13 / kafka-tools jars are missing in $tmp"

echo "$pom_hash" >"$tmp/.complete"
rm -rf "$KAFKA_LIB"
mv "$tmp" "$KAFKA_LIB"
trap - EXIT
log "kafka jars: $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $KAFKA_LIB ($((SECONDS - t0))s)"
