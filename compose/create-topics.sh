#!/bin/sh
# The compose stack's one-shot init (service `init-topics`, in the Kafka image): creates the ledger's topics
# with the settings the native stack gives them (scripts/lib.sh, create_topics): the two event topics and the
# projector's dead letters with CREDITS_PARTITIONS partitions and infinite retention (the log is the source of
# truth), the writer's snapshots in one compacted partition, the key log (credits-admin) in one partition kept
# forever. A topic that exists is left as it is: Kafka can
# only add partitions, and adding them would move keys to other partitions.
#
# Every variable is required: compose sets them all, so the names and defaults live in one place.
# KAFKA_TOPICS overrides the topic tool (the native test runs this script against the native broker).
set -eu

topics_tool="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"
brokers="${CREDITS_KAFKA_BROKERS:?}"
partitions="${CREDITS_PARTITIONS:?}"

create() {  # create TOPIC PARTITIONS CONFIG...
  topic="$1" count="$2"
  shift 2
  echo "topic $topic: $count partitions $*"
  "$topics_tool" --bootstrap-server "$brokers" --create --if-not-exists --topic "$topic" \
    --partitions "$count" --replication-factor 1 "$@"
}

for topic in "${CREDITS_LEDGER_TOPIC:?}" "${CREDITS_USAGE_TOPIC:?}" "${CREDITS_DLQ_TOPIC:?}"; do
  create "$topic" "$partitions" --config retention.ms=-1 --config retention.bytes=-1
done
create "${CREDITS_SNAPSHOT_TOPIC:?}" 1 --config cleanup.policy=compact --config retention.ms=-1
create "${CREDITS_KEYS_TOPIC:?}" 1 --config retention.ms=-1 --config retention.bytes=-1
echo "topics ready"
