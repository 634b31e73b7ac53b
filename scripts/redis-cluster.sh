#!/usr/bin/env bash
# A local Redis Cluster for the read model (docs/scaling.md, "Redis Cluster"): three masters, no replicas, on
# loopback, each node on port P and its cluster bus on P+10000. The nodes keep nothing on disk (no RDB, no AOF):
# the view is rebuilt from the Kafka log, so `down` also forgets the cluster's layout and the next `up` creates a
# fresh, empty cluster.
#
# Usage: scripts/redis-cluster.sh up|down|status [DIR] [FIRST_PORT]
#   DIR         node directories, configs, logs and pidfiles (default .data/redis-cluster)
#   FIRST_PORT  the nodes listen on FIRST_PORT, FIRST_PORT+1 and FIRST_PORT+2 (default 7001)
# `up` is idempotent: a running cluster whose nodes all report cluster_state:ok is left alone. Point the apps at
# any node: CREDITS_REDIS_PORT=7001 (CREDITS_REDIS_DB must stay 0).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CLUSTER_NODES=3
CLUSTER_BUS_PORT_OFFSET=10000   # Redis's fixed offset of a node's cluster bus from its client port
CLUSTER_START_TIMEOUT=30        # all slots agreed on every node; a few seconds here

command="${1:-}"
dir="${2:-$DATA/redis-cluster}"
first_port="${3:-7001}"
if ! [[ "$first_port" =~ ^[0-9]{1,5}$ ]] || ((first_port < 1 || first_port + CLUSTER_NODES - 1 + CLUSTER_BUS_PORT_OFFSET > 65535)); then
  die "FIRST_PORT must be a port with room for $CLUSTER_NODES nodes and their bus ports above it (got '$first_port')"
fi
ports=()
for ((i = 0; i < CLUSTER_NODES; i++)); do ports+=($((first_port + i))); done
# Absolute: the pidfiles and node configs are named inside it, and redis-server chdirs to its --dir.
if [[ -d "$dir" ]]; then dir="$(cd "$dir" && pwd)"; fi

node_pidfile() { echo "$dir/redis-$1.pid"; }
node_marker() { echo "127.0.0.1:$1"; }   # redis-server's process title: "redis-server 127.0.0.1:P [cluster]"
node_cli() { local port="$1"; shift; redis-cli -h 127.0.0.1 -p "$port" "$@"; }

# node_info PORT FIELD: one field of CLUSTER INFO (its lines end in \r\n).
node_info() { node_cli "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"; }

node_ping() { [[ "$(node_cli "$1" ping 2>/dev/null)" == PONG ]]; }

node_running() { pid_alive "$(node_pidfile "$1")" "$(node_marker "$1")"; }

# all_running: every node is a redis-server started from this DIR (not someone else's on the same ports).
all_running() {
  local port
  for port in "${ports[@]}"; do node_running "$port" >/dev/null || return 1; done
}

# cluster_ok: every node answers, says cluster_state:ok and knows all the others.
cluster_ok() {
  local port
  for port in "${ports[@]}"; do
    [[ "$(node_info "$port" cluster_state)" == ok ]] || return 1
    [[ "$(node_info "$port" cluster_known_nodes)" == "$CLUSTER_NODES" ]] || return 1
  done
}

# cluster_blank: no node has slots or knows another node yet, so `--cluster create` may run.
cluster_blank() {
  local port
  for port in "${ports[@]}"; do
    [[ "$(node_info "$port" cluster_slots_assigned)" == 0 ]] || return 1
    [[ "$(node_info "$port" cluster_known_nodes)" == 1 ]] || return 1
  done
}

node_up() {
  local port="$1" pid
  if pid="$(node_running "$port")"; then
    log "redis-cluster: node $port already running (pid $pid)"
    return 0
  fi
  mkdir -p "$dir/$port"
  # A node config left by a node that died without `down` holds a layout the others may have forgotten.
  rm -f "$dir/nodes-$port.conf"
  redis-server --bind 127.0.0.1 --port "$port" --cluster-enabled yes --cluster-config-file "$dir/nodes-$port.conf" \
    --dir "$dir/$port" --save "" --appendonly no --daemonize yes --pidfile "$(node_pidfile "$port")" \
    --logfile "$dir/redis-$port.log"
  wait_until "$REDIS_START_TIMEOUT" "redis-cluster node $port" "" node_ping "$port" \
    || die "redis-cluster: node $port did not answer PING (see $dir/redis-$port.log)"
}

cluster_up() {
  require_cmds redis-server redis-cli
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  if all_running && cluster_ok; then
    log "redis-cluster: already running and ok (127.0.0.1:${ports[0]}..${ports[-1]}, dir $dir)"
    return 0
  fi
  local port started=0
  # Every port is checked before any node starts, so a taken port leaves nothing half started.
  for port in "${ports[@]}"; do
    node_running "$port" >/dev/null && continue
    started=$((started + 1))
    port_in_use "$port" && die "redis-cluster: port $port is taken by another process (pass another FIRST_PORT)"
    port_in_use $((port + CLUSTER_BUS_PORT_OFFSET)) \
      && die "redis-cluster: bus port $((port + CLUSTER_BUS_PORT_OFFSET)) is taken by another process (pass another FIRST_PORT)"
  done
  for port in "${ports[@]}"; do node_up "$port"; done
  if cluster_blank; then
    log "redis-cluster: creating the cluster (${CLUSTER_NODES} masters, no replicas)"
    local addresses=() create_log="$dir/cluster-create.log"
    for port in "${ports[@]}"; do addresses+=("127.0.0.1:$port"); done
    redis-cli --cluster create "${addresses[@]}" --cluster-replicas 0 --cluster-yes >"$create_log" 2>&1 \
      || die "redis-cluster: --cluster create failed (see $create_log)"
  elif ((started > 0)); then
    # A node restarted blank next to nodes that still hold the old layout: it cannot rejoin by itself, and with its
    # old layout it would serve its slots empty (nothing is persisted), a view silently missing keys.
    die "redis-cluster: nodes of an earlier cluster are still running; run '$0 down $dir $first_port' first"
  fi
  wait_until "$CLUSTER_START_TIMEOUT" redis-cluster "" cluster_ok \
    || die "redis-cluster: not every node reports cluster_state:ok (see $dir/redis-*.log; '$0 down' resets it)"
  log "redis-cluster: ok on 127.0.0.1:${ports[0]}..${ports[-1]} (dir $dir)"
}

node_down() {
  local port="$1" pidfile pid
  pidfile="$(node_pidfile "$port")"
  if pid="$(node_running "$port")"; then
    log "redis-cluster: stopping node $port (pid $pid)"
    node_cli "$port" shutdown nosave >/dev/null 2>&1 || true
    if wait_gone "$pid" "$REDIS_STOP_TIMEOUT"; then
      rm -f "$pidfile"
    else
      stop_pid "redis-cluster node $port" "$pidfile" "$(node_marker "$port")" "$REDIS_STOP_TIMEOUT"
    fi
  else
    rm -f "$pidfile"
    log "redis-cluster: node $port not running"
  fi
  rm -f "$dir/nodes-$port.conf"
}

cluster_down() {
  [[ -d "$dir" ]] || { log "redis-cluster: nothing to stop ($dir does not exist)"; return 0; }
  local port
  for port in "${ports[@]}"; do node_down "$port"; done
  log "redis-cluster: down (nothing kept: the next up creates a new cluster)"
}

cluster_status() {
  local port pid rc=0
  for port in "${ports[@]}"; do
    if pid="$(node_running "$port")"; then
      printf '  node %-6s pid %-8s cluster_state:%s keys:%s\n' "$port" "$pid" "$(node_info "$port" cluster_state)" \
        "$(node_cli "$port" dbsize 2>/dev/null || echo '?')"
    else
      printf '  node %-6s down\n' "$port"
      rc=1
    fi
  done
  cluster_ok || rc=1
  return "$rc"
}

case "$command" in
  up) cluster_up ;;
  down) cluster_down ;;
  status) cluster_status ;;
  -h | --help) sed -n '2,11p' "$0" ;;
  *) die "usage: $0 up|down|status [DIR] [FIRST_PORT] (see --help)" ;;
esac
