#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`: clang 19, ASan + UBSan) and runs each one for a bounded time,
# seeded from tests/fuzz/corpus/<target>. Inputs libFuzzer finds interesting go to build/fuzz/corpus/<target>
# (kept between runs, so a longer run continues where the last one stopped), crashes to build/fuzz/crashes/,
# full logs to build/fuzz/logs/. Exits non-zero if any target found a failing input.
#
# Usage: scripts/fuzz.sh [SECONDS [LIBFUZZER_FLAG...]]
#   SECONDS  total time over all targets, split evenly (default 60). CI runs 40; for a longer local run:
#            scripts/fuzz.sh 3600                  one hour
#            scripts/fuzz.sh 3600 -max_len=65536   with bodies up to the API's 64 KiB limit (default 4 KiB)
# Reproduce a crash: build/fuzz/tests/fuzz/fuzz_<target> build/fuzz/crashes/<target>-crash-<hash>
# Needs clang-19 and libclang-rt-19-dev (scripts/install-deps.sh installs them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TOTAL_S="${1:-60}"
shift || true
TARGETS=(requests events keys replay)
INPUT_TIMEOUT_S=10   # one input taking longer than this is reported as a hang

[[ "$TOTAL_S" =~ ^[0-9]+$ ]] && ((TOTAL_S >= ${#TARGETS[@]})) \
  || die "usage: scripts/fuzz.sh [SECONDS >= ${#TARGETS[@]} [LIBFUZZER_FLAG...]]"
require_cmds cmake ninja clang++-19

cd "$REPO"
log "fuzz: build (preset fuzz)"
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz

OUT="$REPO/build/fuzz"
per_target_s=$((TOTAL_S / ${#TARGETS[@]}))
failed=()
for t in "${TARGETS[@]}"; do
  mkdir -p "$OUT/corpus/$t" "$OUT/crashes" "$OUT/logs"
  log "fuzz: $t for ${per_target_s}s"
  rc=0
  # The first corpus directory receives new inputs; the checked-in seeds are only read.
  "$OUT/tests/fuzz/fuzz_$t" -max_total_time="$per_target_s" -timeout="$INPUT_TIMEOUT_S" -print_final_stats=1 \
    -dict="$REPO/tests/fuzz/json.dict" -artifact_prefix="$OUT/crashes/$t-" "$@" \
    "$OUT/corpus/$t" "$REPO/tests/fuzz/corpus/$t" >"$OUT/logs/$t.log" 2>&1 || rc=$?
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/logs/$t.log")"
  rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/logs/$t.log")"
  corpus="$(find "$OUT/corpus/$t" -type f | wc -l)"
  if ((rc == 0)); then
    log "fuzz: $t ok: ${execs:-?} execs, ${rate:-?} execs/s, corpus $corpus inputs"
  else
    failed+=("$t")
    grep -E 'property violated|ERROR: |SUMMARY: |runtime error|Test unit written to' "$OUT/logs/$t.log" >&2 || true
    warn "fuzz: $t FAILED (exit $rc); full log: build/fuzz/logs/$t.log"
  fi
done
((${#failed[@]} == 0)) \
  || die "fuzz: failing inputs in ${failed[*]}; reproduce: build/fuzz/tests/fuzz/fuzz_<target> <crash file>"
log "fuzz: all targets passed"
