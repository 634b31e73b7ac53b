# shellcheck shell=bash
# shellcheck disable=SC2034  # settings here are used by the scripts that source this file
# Shared settings and helpers for the local stack scripts (up.sh, down.sh, status.sh, reset.sh,
# fetch-kafka.sh). Sourced, never executed. Everything the stack writes lives under $DATA so that
# one `rm -rf` (reset.sh) gives a clean slate and nothing leaks into the source tree.

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# ---- settings (each overridable from the environment) -------------------------------------------
DATA="${CREDITS_DATA_DIR:-$REPO/.data}"
REDIS_PORT="${CREDITS_REDIS_PORT:-6379}"
KAFKA_PORT="${CREDITS_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${CREDITS_KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_BOOTSTRAP="127.0.0.1:${KAFKA_PORT}"
PARTITIONS="${CREDITS_PARTITIONS:-12}"
LEDGER_TOPIC="${CREDITS_LEDGER_TOPIC:-credits.ledger}"
USAGE_TOPIC="${CREDITS_USAGE_TOPIC:-credits.usage}"
SNAPSHOT_TOPIC="${CREDITS_SNAPSHOT_TOPIC:-credits.snapshots}"
KEYS_TOPIC="${CREDITS_KEYS_TOPIC:-credits.keys}"
HTTP_PORT="${CREDITS_HTTP_PORT:-8080}"
# Databases of the Redis started here: the stack uses 0 and 1; each test suite has a pair of its own (tests/README.md).
REDIS_DATABASES=64
KAFKA_HEAP_OPTS="${CREDITS_KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"

# ---- limits (seconds) -----------------------------------------------------------------------------
REDIS_START_TIMEOUT=20   # redis answers PING well under a second; 20 s means something is wrong
KAFKA_START_TIMEOUT=90   # a cold JVM + KRaft election is ~5-10 s here; generous for a busy 2-core CI box
KAFKA_STOP_TIMEOUT=30    # a clean shutdown flushes logs and writes the clean-shutdown marker (faster restart)
APP_START_TIMEOUT=60     # /healthz must answer within this
APP_STOP_TIMEOUT=15      # SIGTERM grace before SIGKILL for our own apps
REDIS_STOP_TIMEOUT=15

# ---- layout ---------------------------------------------------------------------------------------
KAFKA_HOME="$DATA/kafka"
KAFKA_LIB="$KAFKA_HOME/lib"
KAFKA_LIB_MARKER="$KAFKA_LIB/.complete"   # written by fetch-kafka.sh only after a full copy
KAFKA_LOG_DIR="$KAFKA_HOME/data"          # the broker's log.dirs (topic data + KRaft metadata)
KAFKA_CONFIG="$KAFKA_HOME/server.properties"
KAFKA_LOG4J="$KAFKA_HOME/log4j2.properties"
KAFKA_CLUSTER_ID_FILE="$KAFKA_HOME/cluster-id"
LOGS="$DATA/logs"
RUN="$DATA/run"
REDIS_DIR="$DATA/redis"

# Overridable e.g. to run a dev (sanitizer) build; the file names must stay credits-api /
# credits-projector because pidfile checks look for them in the process command line.
API_BIN="${CREDITS_API_BIN:-$REPO/build/release/command-api/credits-api}"
PROJECTOR_BIN="${CREDITS_PROJECTOR_BIN:-$REPO/build/release/projector/credits-projector}"

# ---- output ---------------------------------------------------------------------------------------
log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

require_cmds() {
  local missing=() c
  for c in "$@"; do command -v "$c" >/dev/null 2>&1 || missing+=("$c"); done
  ((${#missing[@]} == 0)) || die "missing commands: ${missing[*]} (run scripts/install-deps.sh)"
}

# ---- process helpers ------------------------------------------------------------------------------
# A pidfile alone is not proof: after a reboot or a crash the pid may belong to something else.
# So a pid counts as "ours" only if it is alive AND its command line contains an expected marker.
pid_alive() {  # pid_alive PIDFILE MARKER -> prints pid, returns 0 when running
  local pidfile="$1" marker="$2" pid
  [[ -s "$pidfile" ]] || return 1
  pid="$(tr -dc '0-9' <"$pidfile")"
  [[ -n "$pid" ]] && is_running "$pid" || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$marker" || return 1
  echo "$pid"
}

# is_running PID: alive and not a zombie. A daemon reparented to this sandbox's init can linger as
# a zombie for a while after exiting, and kill -0 still succeeds on a zombie.
is_running() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# wait_gone PID TIMEOUT: true once PID has exited, false if still running after TIMEOUT s.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    is_running "$1" || return 0
    sleep 0.25
  done
  return 1
}

# stop_pid NAME PIDFILE MARKER TIMEOUT: SIGTERM, wait up to TIMEOUT s, then SIGKILL.
stop_pid() {
  local name="$1" pidfile="$2" marker="$3" timeout="$4" pid
  if ! pid="$(pid_alive "$pidfile" "$marker")"; then
    rm -f "$pidfile"
    log "$name: not running"
    return 0
  fi
  log "$name: stopping (pid $pid, SIGTERM, up to ${timeout}s)"
  kill -TERM "$pid" 2>/dev/null || true
  if wait_gone "$pid" "$timeout"; then
    rm -f "$pidfile"
    log "$name: stopped"
    return 0
  fi
  warn "$name: still alive after ${timeout}s, sending SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  sleep 0.5
  rm -f "$pidfile"
}

# port_in_use PORT: true if something listens on 127.0.0.1:PORT (bash's /dev/tcp, no extra tools).
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_until TIMEOUT DESCRIPTION PID_TO_WATCH CMD...: poll CMD every 0.5 s. Gives up early if the
# watched process died (no point waiting 90 s for a JVM that exited on a config error).
wait_until() {
  local timeout="$1" what="$2" watch_pid="$3"; shift 3
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if [[ -n "$watch_pid" ]] && ! is_running "$watch_pid"; then
      warn "$what: process $watch_pid exited while starting"
      return 1
    fi
    sleep 0.5
  done
  warn "$what: not ready after ${timeout}s"
  return 1
}

# ---- redis ----------------------------------------------------------------------------------------
REDIS_PIDFILE="$RUN/redis.pid"
REDIS_MARKER="redis-server"

redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

redis_up() {
  require_cmds redis-server redis-cli
  mkdir -p "$REDIS_DIR" "$LOGS" "$RUN"
  local pid
  if pid="$(pid_alive "$REDIS_PIDFILE" "$REDIS_MARKER")"; then
    log "redis: already running (pid $pid, port $REDIS_PORT)"
    return 0
  fi
  # Refuse to silently share someone else's Redis: its data would not be under $DATA.
  port_in_use "$REDIS_PORT" && die "redis: port $REDIS_PORT is taken by another process (set CREDITS_REDIS_PORT)"
  log "redis: starting on 127.0.0.1:$REDIS_PORT (dir $REDIS_DIR)"
  # appendonly: the projection's state survives a restart; redis fsyncs the AOF every second. save "": no RDB
  # snapshots besides it (Redis's default saves every minute under load: a fork and a full dump each time,
  # which on a small machine stalls the projector for nothing the AOF does not already give).
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$REDIS_DIR" --databases "$REDIS_DATABASES" \
    --appendonly yes --save "" --daemonize yes --pidfile "$REDIS_PIDFILE" \
    --logfile "$LOGS/redis.log"
  wait_until "$REDIS_START_TIMEOUT" redis "" redis_ping || die "redis: did not answer PING (see $LOGS/redis.log)"
  log "redis: ready"
}

redis_down() {
  local pid
  if pid="$(pid_alive "$REDIS_PIDFILE" "$REDIS_MARKER")"; then
    log "redis: shutting down (pid $pid)"
    # SHUTDOWN fsyncs the AOF before exiting; if it is refused or hangs, stop_pid's SIGTERM/SIGKILL.
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown >/dev/null 2>&1 || true
    if wait_gone "$pid" "$REDIS_STOP_TIMEOUT"; then
      rm -f "$REDIS_PIDFILE"
      log "redis: stopped"
      return 0
    fi
  fi
  stop_pid redis "$REDIS_PIDFILE" "$REDIS_MARKER" "$REDIS_STOP_TIMEOUT"
}

# ---- kafka ----------------------------------------------------------------------------------------
KAFKA_PIDFILE="$RUN/kafka.pid"
KAFKA_MARKER="kafka.Kafka"

kafka_java() {  # run a Kafka tool class with the fetched jars; logging quiet (errors only) on stderr
  java -Xmx512m -Dlog4j2.configurationFile="$KAFKA_HOME/log4j2-tools.properties" \
    -cp "$KAFKA_LIB/*" "$@"
}

kafka_metadata() { kcat -b "$KAFKA_BOOTSTRAP" -L -m 5 2>/dev/null; }

# kcat -L prints: ` topic "credits.ledger" with 12 partitions:`
kafka_topic_partitions() {
  kafka_metadata | sed -n "s/^ *topic \"$1\" with \([0-9]*\) partitions:.*/\1/p"
}

write_kafka_config() {
  # Rewritten on every start so config edits here take effect; the cluster id and data persist.
  cat >"$KAFKA_CONFIG" <<EOF
# Generated by scripts/lib.sh (write_kafka_config) -- edits are overwritten on the next up.sh.
# Single-node KRaft: this process is both broker and controller.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${KAFKA_CONTROLLER_PORT}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT},CONTROLLER://127.0.0.1:${KAFKA_CONTROLLER_PORT}
advertised.listeners=PLAINTEXT://127.0.0.1:${KAFKA_PORT}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=${KAFKA_LOG_DIR}

# One broker: every replication factor must be 1 or internal topics can never be created.
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1

# Topics are created explicitly by up.sh; a typo in a client must not create a stray topic.
auto.create.topics.enable=false
num.partitions=${PARTITIONS}
# Tests start consumers often; don't wait 3 s for more group members that never come.
group.initial.rebalance.delay.ms=0
EOF
}

write_kafka_log4j() {
  # Kafka 4.x logs through SLF4J 1.7 -> log4j2 (log4j-slf4j-impl). The distribution's config is
  # YAML and lives in the tarball we don't have, so we write a plain log4j2 properties file:
  # broker log, state-change log and controller log go to files under $LOGS, nothing to the console.
  cat >"$KAFKA_LOG4J" <<EOF
# Generated by scripts/lib.sh (write_kafka_log4j).
status = warn
appenders = server, controller, state

appender.server.type = RollingFile
appender.server.name = server
appender.server.fileName = ${LOGS}/kafka-server.log
appender.server.filePattern = ${LOGS}/kafka-server.log.%i
appender.server.layout.type = PatternLayout
appender.server.layout.pattern = [%d] %p %m (%c)%n
appender.server.policies.type = Policies
appender.server.policies.size.type = SizeBasedTriggeringPolicy
appender.server.policies.size.size = 50MB
appender.server.strategy.type = DefaultRolloverStrategy
appender.server.strategy.max = 3

appender.controller.type = RollingFile
appender.controller.name = controller
appender.controller.fileName = ${LOGS}/kafka-controller.log
appender.controller.filePattern = ${LOGS}/kafka-controller.log.%i
appender.controller.layout.type = PatternLayout
appender.controller.layout.pattern = [%d] %p %m (%c)%n
appender.controller.policies.type = Policies
appender.controller.policies.size.type = SizeBasedTriggeringPolicy
appender.controller.policies.size.size = 50MB

appender.state.type = RollingFile
appender.state.name = state
appender.state.fileName = ${LOGS}/kafka-state-change.log
appender.state.filePattern = ${LOGS}/kafka-state-change.log.%i
appender.state.layout.type = PatternLayout
appender.state.layout.pattern = [%d] %p %m (%c)%n
appender.state.policies.type = Policies
appender.state.policies.size.type = SizeBasedTriggeringPolicy
appender.state.policies.size.size = 50MB

rootLogger.level = info
rootLogger.appenderRef.server.ref = server

loggers = controller, state, kafka, apache
logger.controller.name = org.apache.kafka.controller
logger.controller.level = info
logger.controller.additivity = false
logger.controller.appenderRef.controller.ref = controller
logger.state.name = state.change.logger
logger.state.level = info
logger.state.additivity = false
logger.state.appenderRef.state.ref = state
logger.kafka.name = kafka
logger.kafka.level = info
logger.apache.name = org.apache.kafka
logger.apache.level = info
EOF
  # Command-line tools (StorageTool, TopicCommand): errors only, to stderr.
  cat >"$KAFKA_HOME/log4j2-tools.properties" <<'EOF'
status = warn
appender.err.type = Console
appender.err.name = err
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = error
rootLogger.appenderRef.err.ref = err
EOF
}

kafka_format_once() {
  # KRaft storage must be formatted exactly once; formatting again would give the log dir a new
  # cluster id and the broker would refuse the old data. meta.properties is Kafka's own marker.
  if [[ -f "$KAFKA_LOG_DIR/meta.properties" ]]; then
    return 0
  fi
  local cid
  if [[ -s "$KAFKA_CLUSTER_ID_FILE" ]]; then
    cid="$(<"$KAFKA_CLUSTER_ID_FILE")"
  else
    cid="$(kafka_java kafka.tools.StorageTool random-uuid)"
    echo "$cid" >"$KAFKA_CLUSTER_ID_FILE"
  fi
  log "kafka: formatting storage (cluster id $cid)"
  # Static quorum (controller.quorum.voters): plain `format`. --standalone is only for the
  # dynamic-quorum form (controller.quorum.bootstrap.servers) and is rejected together with voters.
  kafka_java kafka.tools.StorageTool format -t "$cid" -c "$KAFKA_CONFIG" >>"$LOGS/kafka-format.log" 2>&1 \
    || die "kafka: storage format failed (see $LOGS/kafka-format.log)"
}

kafka_up() {
  require_cmds java kcat
  "$REPO/scripts/fetch-kafka.sh"   # no-op when the jars for the current POM are present
  mkdir -p "$KAFKA_LOG_DIR" "$LOGS" "$RUN"
  local pid
  if pid="$(pid_alive "$KAFKA_PIDFILE" "$KAFKA_MARKER")"; then
    log "kafka: already running (pid $pid, $KAFKA_BOOTSTRAP)"
    return 0
  fi
  port_in_use "$KAFKA_PORT" && die "kafka: port $KAFKA_PORT is taken by another process (set CREDITS_KAFKA_PORT)"
  port_in_use "$KAFKA_CONTROLLER_PORT" && die "kafka: port $KAFKA_CONTROLLER_PORT is taken (set CREDITS_KAFKA_CONTROLLER_PORT)"
  write_kafka_config
  write_kafka_log4j
  kafka_format_once
  log "kafka: starting on $KAFKA_BOOTSTRAP (logs in $LOGS/kafka-*.log)"
  local t0=$SECONDS
  # shellcheck disable=SC2086  # KAFKA_HEAP_OPTS is deliberately word-split
  nohup java $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.logs.dir="$LOGS" \
    -cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_CONFIG" >>"$LOGS/kafka.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$KAFKA_PIDFILE"
  wait_until "$KAFKA_START_TIMEOUT" kafka "$pid" kafka_metadata \
    || die "kafka: broker did not come up (see $LOGS/kafka-server.log and $LOGS/kafka.out)"
  log "kafka: ready in $((SECONDS - t0))s (pid $pid)"
}

kafka_down() { stop_pid kafka "$KAFKA_PIDFILE" "$KAFKA_MARKER" "$KAFKA_STOP_TIMEOUT"; }

create_topics() {
  local t have
  for t in "$LEDGER_TOPIC" "$USAGE_TOPIC" "$LEDGER_TOPIC.dlq"; do  # .dlq: the projector's dead letters
    have="$(kafka_topic_partitions "$t")"
    if [[ -n "$have" ]]; then
      # Kafka can only add partitions, and adding them reshuffles key->partition; say so loudly.
      [[ "$have" == "$PARTITIONS" ]] || warn "topic $t has $have partitions, CREDITS_PARTITIONS=$PARTITIONS (left as is)"
      log "topic $t: exists ($have partitions)"
      continue
    fi
    log "topic $t: creating ($PARTITIONS partitions, infinite retention)"
    # Infinite retention: the ledger topic IS the source of truth for the event-sourced state.
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$t" --partitions "$PARTITIONS" --replication-factor 1 \
      --config retention.ms=-1 --config retention.bytes=-1 >/dev/null
  done
  # The writer's snapshots: one partition (they are read whole), compacted, since only the newest matters.
  if [[ -z "$(kafka_topic_partitions "$SNAPSHOT_TOPIC")" ]]; then
    log "topic $SNAPSHOT_TOPIC: creating (1 partition, compacted)"
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$SNAPSHOT_TOPIC" --partitions 1 --replication-factor 1 \
      --config cleanup.policy=compact --config retention.ms=-1 >/dev/null
  fi
  # The key log (credits-admin): one partition, so every change is in one order; kept forever, as the audit
  # trail of who created and revoked which key.
  if [[ -z "$(kafka_topic_partitions "$KEYS_TOPIC")" ]]; then
    log "topic $KEYS_TOPIC: creating (1 partition, infinite retention)"
    kafka_java org.apache.kafka.tools.TopicCommand --bootstrap-server "$KAFKA_BOOTSTRAP" \
      --create --if-not-exists --topic "$KEYS_TOPIC" --partitions 1 --replication-factor 1 \
      --config retention.ms=-1 --config retention.bytes=-1 >/dev/null
  fi
}
