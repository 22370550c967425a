#!/usr/bin/env bash
# Inline small values (--inline-max, issue 13) against values on the volumes, in one run
# on one machine: five native volumes (--fsync=false, like nginx) and one index database;
# `hoard bench thrasher` with 4 KiB values against an index server with --inline-max 0
# (every value on three volumes) and then --inline-max 4096 (every value in the index),
# alternating ROUNDS times. Then the physical limits, same session: the same thrasher
# straight to one volume (no index, one copy), and the disk (4 KiB append + fdatasync).
#
# usage: scripts/bench-inline.sh [DIR]   env: HOARD=target/release/hoard KEYS=3000 ROUNDS=3 PORT=5610
set -euo pipefail
DIR=${1:-/tmp/hoard-bench-inline}
HOARD=${HOARD:-target/release/hoard}
KEYS=${KEYS:-3000}
ROUNDS=${ROUNDS:-3}
P=${PORT:-5610}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
vols=""
for i in 1 2 3 4 5; do
  "$HOARD" volume --dir "$DIR/v$i" --port $((P + i)) --bind 127.0.0.1 --fsync=false \
    >"$DIR/v$i.log" 2>&1 &
  pids+=($!)
  vols="$vols${vols:+,}127.0.0.1:$((P + i))"
done
load() { cut -d' ' -f1-3 /proc/loadavg; }
for round in $(seq "$ROUNDS"); do
  for inline in 0 4096; do
    "$HOARD" server --port "$P" --bind 127.0.0.1 --db "$DIR/index" --volumes "$vols" \
      --inline-max "$inline" >"$DIR/index-$round-$inline.log" 2>&1 &
    server=$!
    for _ in $(seq 100); do
      curl -sf "http://127.0.0.1:$P/-/health" >/dev/null && break
      sleep 0.1
    done
    sleep 1 # the prober's first round: every volume seen up
    echo "== round $round, --inline-max $inline, load average $(load)"
    "$HOARD" bench thrasher --url "http://127.0.0.1:$P" -n "$KEYS" -c 16 --value-size 4KB
    kill "$server"
    wait "$server" || true
  done
done
echo "== one volume directly (the volume's share of the work), load average $(load)"
"$HOARD" bench thrasher --volume --url "http://127.0.0.1:$((P + 1))" -n "$KEYS" -c 16 --value-size 4KB
echo "== disk, load average $(load)"
"$HOARD" bench baseline --dir "$DIR" --disk-size 64MB --fsync-count 500
