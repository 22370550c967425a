#!/usr/bin/env bash
# The binary protocol (minivault's, --tcp-port) beside minikeyvalue's HTTP API, in one
# run on one machine: one index server over three native volumes (--fsync=false, like
# nginx), `hoard bench proto` for each value size (HTTP, binary, binary with zstd SETs,
# binary pipelined, and the same work straight to one volume: the physical limit), and
# GETS reads of 100 hot keys over each protocol; then the reads again against a second
# index server with --cache-size 64 (binary GETs answered from memory).
#
# usage: scripts/bench-proto.sh [DIR]   env: HOARD=target/release/hoard KEYS=5000 GETS=20000 SIZES="32 4KB"
set -euo pipefail
DIR=${1:-/tmp/hoard-bench-proto}
HOARD=${HOARD:-target/release/hoard}
KEYS=${KEYS:-5000}
GETS=${GETS:-20000}
SIZES=${SIZES:-"32 4KB"}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

vols=127.0.0.1:5201,127.0.0.1:5202,127.0.0.1:5203
for i in 1 2 3; do
  "$HOARD" volume --dir "$DIR/volume$i" --port "520$i" --bind 127.0.0.1 --fsync=false \
    2>>"$DIR/volume$i.log" &
  pids+=($!)
done
wait_health() { for _ in $(seq 1 200); do curl -sf "http://$1/-/health" >/dev/null && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }

run() { # $1 = label, $2 = extra bench flags, $3.. = extra server flags
  local label=$1 bench=$2; shift 2
  "$HOARD" server --db "$DIR/index-$label" --volumes "$vols" --port 5200 --bind 127.0.0.1 \
    --tcp-port 5210 "$@" 2>>"$DIR/index-$label.log" &
  local pid=$!
  pids+=($pid)
  wait_health 127.0.0.1:5200
  sleep 1 # the prober's first round marks the volumes up
  for size in $SIZES; do
    echo "== $label, $size values"
    "$HOARD" bench proto --url http://127.0.0.1:5200 --tcp 127.0.0.1:5210 \
      --volume 127.0.0.1:5201 --zstd --keys "$KEYS" --value-size "$size" --gets "$GETS" $bench
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
run plain ""
run cached --only-gets --cache-size 64
