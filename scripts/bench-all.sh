#!/usr/bin/env bash
# Runs every `hoard bench` workload RUNS times against the store started by
# scripts/bench-cluster.sh, plus the wrk equivalents of get-redirect, and writes one
# JSON (or wrk text) file per run into OUT. Summarise with scripts/bench-summary.py OUT.
#
# A failed run is logged and skipped. Runs are numbered FIRST..RUNS (FIRST=1).
#
# usage: scripts/bench-all.sh OUT [RUNS]
#   env: HOARD=target/release/hoard  URL=http://127.0.0.1:3000  DIR=/tmp/hoard-bench
#        VOLUME=127.0.0.1:3001  SIZES=256MB,1GB  WORKLOADS="thrasher redirect wrk large baseline"
set -euo pipefail
OUT=${1:?usage: bench-all.sh OUT [RUNS]}
RUNS=${2:-3}
HOARD=${HOARD:-target/release/hoard}
URL=${URL:-http://127.0.0.1:3000}
DIR=${DIR:-/tmp/hoard-bench}
VOLUME=${VOLUME:-127.0.0.1:3001}
SIZES=${SIZES:-256MB,1GB}
WORKLOADS=${WORKLOADS:-thrasher redirect wrk large baseline}
PID=$(cat "$DIR/index.pid")
mkdir -p "$OUT"

# Percent of CPU time idle over the next second.
idle_pct() {
  local a b
  read -r _ a1 a2 a3 a4 a5 _ < /proc/stat; a=$((a1 + a2 + a3 + a4 + a5))
  sleep 1
  read -r _ b1 b2 b3 b4 b5 _ < /proc/stat; b=$((b1 + b2 + b3 + b4 + b5))
  echo $(( 100 * (b4 - a4) / (b - a) ))
}
# The machine is shared: wait (up to QUIET_WAIT seconds) until it has been at least
# 90% idle for 3 seconds in a row; prints the last idle percentage.
QUIET_WAIT=${QUIET_WAIT:-1800}
wait_quiet() {
  local start=$SECONDS quiet=0 idle=0
  while [ "$quiet" -lt 3 ] && [ $((SECONDS - start)) -lt "$QUIET_WAIT" ]; do
    idle=$(idle_pct)
    if [ "$idle" -ge 90 ]; then quiet=$((quiet + 1)); else quiet=0; fi
  done
  echo "$idle"
}
log() {
  local idle; idle=$(wait_quiet)
  echo "$(date +%T) idle ${idle}% load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$OUT/log.txt"
}

for i in $(seq "${FIRST:-1}" "$RUNS"); do
  for w in $WORKLOADS; do
    case $w in
      thrasher)
        log "thrasher run $i"
        "$HOARD" bench thrasher --url "$URL" --json > "$OUT/thrasher-$i.json" \
          || log "FAILED: thrasher run $i" ;;
      redirect)
        log "get-redirect run $i"
        "$HOARD" bench get-redirect --url "$URL" --json > "$OUT/redirect-$i.json" \
          || log "FAILED: get-redirect run $i" ;;
      wrk)
        key="/bench-wrk-$RANDOM$RANDOM"
        curl -sf -X PUT --data-binary "hoard bench wrk" "$URL$key" >/dev/null
        log "wrk existing run $i"
        wrk -t2 -c100 -d10s --latency "$URL$key" > "$OUT/wrk-existing-$i.txt"
        log "wrk missing run $i"
        wrk -t2 -c100 -d10s --latency "$URL/bench-wrk-missing" > "$OUT/wrk-missing-$i.txt"
        log "wrk health run $i"
        wrk -t2 -c100 -d10s --latency "$URL/-/health" > "$OUT/wrk-health-$i.txt"
        curl -sf -X DELETE "$URL$key" >/dev/null ;;
      large)
        log "large run $i"
        "$HOARD" bench large --url "$URL" --sizes "$SIZES" --server-pid "$PID" --json \
          > "$OUT/large-$i.json" || log "FAILED: large run $i" ;;
      baseline)
        log "baseline run $i"
        "$HOARD" bench baseline --volume "$VOLUME" --dir "$DIR" --sizes "$SIZES" --json \
          > "$OUT/baseline-$i.json" || log "FAILED: baseline run $i" ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
done
log "done"
