#!/usr/bin/env bash
# Measures a volume's fsync policies side by side: `--fsync always`, `never` and
# `interval=D`, same binary, same disk, one run. Each policy gets a fresh `hoard volume`
# driven directly by `hoard bench thrasher --volume` (PUT, GET, DELETE per key — the
# volume's share of a store's work), once with small values and once with 1 MiB values.
#
# Usage: scripts/bench-fsync.sh [SMALL_KEYS] [LARGE_KEYS] [INTERVAL]
#   defaults: 5000 keys of 4 KiB, 300 keys of 1 MiB, interval=1s; 16 workers.
# HOARD=path/to/hoard (default target/release/hoard); DIR=where the volumes write
# (default a temp dir under /tmp — put it on the disk you want to measure).
set -euo pipefail
cd "$(dirname "$0")/.."

SMALL=${1:-5000}
LARGE=${2:-300}
INTERVAL=${3:-1s}
HOARD=${HOARD:-target/release/hoard}
[ -x "$HOARD" ] || { echo "build first: cargo build --release (or set HOARD)" >&2; exit 1; }

WORK=$(mktemp -d "${DIR:-/tmp}/hoard-bench-fsync.XXXXXX")
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_up() {
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$1/-/health" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "volume on port $1 did not come up" >&2; exit 1
}

row() { python3 -c '
import json, sys
r = json.load(sys.stdin)
put = r["latency"]["put"]
print("| %s | %s | %d | %.0f ops/s | %.2f / %.2f |" % (sys.argv[1], sys.argv[2], r["keys"],
      r["ops_per_sec"], put["p50_ms"], put["p99_ms"]))' "$@"; }

echo "hoard: $("$HOARD" --version 2>/dev/null | head -1); $(nproc) cores; $(date -u +%FT%TZ); dir $WORK"
echo
echo "| --fsync | value | keys | PUT+GET+DELETE per key | PUT p50 / p99 ms |"
echo "|---|---|---|---|---|"
for policy in always never "interval=$INTERVAL"; do
  port=$(free_port)
  dir="$WORK/vol-${policy//[=]/-}"
  mkdir -p "$dir"
  "$HOARD" volume --dir "$dir" --port "$port" --bind 127.0.0.1 --fsync "$policy" 2>>"$WORK/volume.log" &
  PID=$!
  wait_up "$port"
  for spec in "$SMALL 4KB 16" "$LARGE 1MB 8"; do
    set -- $spec
    "$HOARD" bench thrasher --volume --url "http://127.0.0.1:$port" -n "$1" -c "$3" \
      --value-size "$2" --json | row "$policy" "$2"
  done
  kill "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
