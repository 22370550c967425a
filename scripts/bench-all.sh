#!/usr/bin/env bash
# Runs every `hoard bench` workload RUNS times against the store started by
# scripts/bench-cluster.sh, plus the wrk equivalents of get-redirect, and writes one
# JSON (or wrk text) file per run into OUT. Summarise with scripts/bench-summary.py OUT.
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

log() { echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" | tee -a "$OUT/log.txt"; }

for i in $(seq 1 "$RUNS"); do
  for w in $WORKLOADS; do
    case $w in
      thrasher)
        log "thrasher run $i"
        "$HOARD" bench thrasher --url "$URL" --json > "$OUT/thrasher-$i.json" ;;
      redirect)
        log "get-redirect run $i"
        "$HOARD" bench get-redirect --url "$URL" --json > "$OUT/redirect-$i.json" ;;
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
          > "$OUT/large-$i.json" ;;
      baseline)
        log "baseline run $i"
        "$HOARD" bench baseline --volume "$VOLUME" --dir "$DIR" --sizes "$SIZES" --json \
          > "$OUT/baseline-$i.json" ;;
      *) echo "unknown workload $w" >&2; exit 2 ;;
    esac
  done
done
log "done"
