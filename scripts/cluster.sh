#!/usr/bin/env bash
# A local HA index cluster to try failover: 3 volumes and 3 index servers on loopback.
# Usage: ./scripts/cluster.sh [DATA_DIR]      (Ctrl-C stops everything)
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-./hoard-cluster}
cargo build --release --quiet
bin=./target/release/hoard
mkdir -p "$data"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
vols=127.0.0.1:4101,127.0.0.1:4102,127.0.0.1:4103
peers=1=127.0.0.1:4001,2=127.0.0.1:4002,3=127.0.0.1:4003
for i in 1 2 3; do
  "$bin" volume --dir "$data/volume$i" --port "410$i" --bind 127.0.0.1 2>>"$data/volume$i.log" &
  pids+=($!)
done
for i in 1 2 3; do
  "$bin" server --node-id "$i" --peers "$peers" --db "$data/index$i" --volumes "$vols" \
    --port "400$i" --bind 127.0.0.1 2>>"$data/index$i.log" &
  pids+=($!)
done
cat <<TXT
index servers: http://127.0.0.1:4001 http://127.0.0.1:4002 http://127.0.0.1:4003 (logs in $data)
try:
  curl -L -T README.md 127.0.0.1:4002/readme            # write through any member
  curl -s 127.0.0.1:4001/-/health | grep -o '"raft".*'  # who leads
  kill -9 <the leader's pid> ; curl -L 127.0.0.1:4003/readme   # still there
  ps -o pid,args -p ${pids[*]}
TXT
wait
