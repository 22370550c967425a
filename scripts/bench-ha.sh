#!/usr/bin/env bash
# The HA index against a single index server, in one run on one machine, over the same
# three native volumes (--fsync=false, like nginx): minikeyvalue's thrasher and GET
# redirects (existing key) against one index server, then against a 3-node index
# cluster (linearizable reads, then stale reads), then RUNS failovers: kill -9 of the
# leader under a PUT loop, timing the new leader and the first new 201.
#
# usage: scripts/bench-ha.sh [DIR] [RUNS]      env: HOARD=target/release/hoard KEYS=2000
set -euo pipefail
DIR=${1:-/tmp/hoard-bench-ha}
RUNS=${2:-5}
HOARD=${HOARD:-target/release/hoard}
KEYS=${KEYS:-2000}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

vols=127.0.0.1:5101,127.0.0.1:5102,127.0.0.1:5103
for i in 1 2 3; do
  "$HOARD" volume --dir "$DIR/volume$i" --port "510$i" --bind 127.0.0.1 --fsync=false \
    2>>"$DIR/volume$i.log" &
  pids+=($!)
done

wait_health() { for _ in $(seq 1 200); do curl -sf "http://$1/-/health" >/dev/null && return; sleep 0.05; done; echo "no answer from $1" >&2; exit 1; }
leader() { # the id of the leader, as node $1 sees it
  curl -sf "http://127.0.0.1:500$1/-/health" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["raft"]; print(r["leader_id"] if r["role"]!="candidate" and r["leader_id"] else "")' 2>/dev/null || true
}
workload() { # $1 = label, $2 = index URL
  echo "== $1"
  "$HOARD" bench thrasher --url "$2" --keys "$KEYS" | tail -2
  curl -sf -L -T README.md "$2/bench-ha/existing" -o /dev/null || true
  "$HOARD" bench get-redirect --url "$2" --duration 10s | grep -E "^(existing|missing|errors)"
}

# 1. One index server.
"$HOARD" server --db "$DIR/single" --volumes "$vols" --port 5000 --bind 127.0.0.1 2>>"$DIR/single.log" &
single=$!
pids+=($single)
wait_health 127.0.0.1:5000
workload "single index server" http://127.0.0.1:5000
kill "$single"; wait "$single" 2>/dev/null || true

# 2. Three index servers.
peers=1=127.0.0.1:5001,2=127.0.0.1:5002,3=127.0.0.1:5003
start_node() { # $1 = id, $2.. = extra flags
  local id=$1; shift
  "$HOARD" server --node-id "$id" --peers "$peers" --db "$DIR/node$id" --volumes "$vols" \
    --port "500$id" --bind 127.0.0.1 "$@" 2>>"$DIR/node$id.log" &
  node_pid[$id]=$!
  pids+=($!)
}
declare -a node_pid
for id in 1 2 3; do start_node "$id"; done
for id in 1 2 3; do wait_health "127.0.0.1:500$id"; done
until [ -n "$(leader 1)" ]; do sleep 0.1; done
l=$(leader 1)
f=$(( l % 3 + 1 ))
workload "3-node cluster, leader (node $l)" "http://127.0.0.1:500$l"
workload "3-node cluster, follower (node $f)" "http://127.0.0.1:500$f"
kill "${node_pid[$f]}"; wait "${node_pid[$f]}" 2>/dev/null || true
start_node "$f" --read-consistency stale
wait_health "127.0.0.1:500$f"
echo "== stale reads on the follower"
"$HOARD" bench get-redirect --url "http://127.0.0.1:500$f" --duration 10s | grep -E "^(existing|missing|errors)"

# 3. Failovers.
echo "== failover: kill -9 of the leader under a PUT loop (ms to a new leader, to the first new 201)"
for run in $(seq 1 "$RUNS"); do
  until [ -n "$(leader 1)" ] && [ "$(leader 1)" = "$(leader 2)" ] && [ "$(leader 2)" = "$(leader 3)" ]; do sleep 0.1; done
  l=$(leader 1); o=$(( l % 3 + 1 ))
  t0=$(date +%s%N)
  kill -9 "${node_pid[$l]}"
  until n=$(leader "$o"); [ -n "$n" ] && [ "$n" != "$l" ]; do sleep 0.02; done
  t1=$(date +%s%N)
  until [ "$(curl -s -o /dev/null -w '%{http_code}' -T README.md "http://127.0.0.1:500$o/bench-ha/f$run-$RANDOM")" = 201 ]; do sleep 0.02; done
  t2=$(date +%s%N)
  echo "run $run: leader $l killed; node $n leads after $(( (t1 - t0) / 1000000 )) ms; first 201 after $(( (t2 - t0) / 1000000 )) ms"
  wait "${node_pid[$l]}" 2>/dev/null || true
  start_node "$l"
  wait_health "127.0.0.1:500$l"
done
