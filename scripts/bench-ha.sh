#!/usr/bin/env bash
# The HA index against a single index server, in one run on one machine, over the same
# three native volumes (--fsync=false, like nginx): minikeyvalue's thrasher and GET
# redirects (existing key) against one index server, then against a 3-node index
# cluster (linearizable reads, then stale reads), then RUNS failovers: kill -9 of the
# leader under a PUT loop, timing the new leader and the first new 201. With each
# thrasher: the CPU time per op of each process (index servers, volumes, the load
# generator), from /proc, and the load average.
#
# Every step has a time limit (STEP seconds for a benchmark, 30 s for a wait): a step
# that hangs fails the script with a message saying which, instead of hanging it.
#
# usage: scripts/bench-ha.sh [DIR] [RUNS]
# env: HOARD=target/release/hoard KEYS=2000 STEP=300
set -euo pipefail
DIR=${1:-/tmp/hoard-bench-ha}
RUNS=${2:-5}
HOARD=${HOARD:-target/release/hoard}
KEYS=${KEYS:-2000}
STEP=${STEP:-300}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  # Anything still there after 10 s (a member that does not stop) is killed.
  for _ in $(seq 1 100); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  kill -9 "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM
fail() { echo "bench-ha: $*" >&2; exit 1; }
# until_ok WHAT SECONDS CMD...: runs CMD every 0.05 s until it succeeds; fails after SECONDS.
until_ok() {
  local what=$1 limit=$2; shift 2
  local deadline=$(( $(date +%s) + limit ))
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out after ${limit}s waiting for $what"
    sleep 0.05
  done
}
# bounded SECONDS CMD...: CMD with a time limit; fails the script, naming CMD, on timeout.
bounded() {
  local limit=$1; shift
  local rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  [ $rc = 124 ] || [ $rc = 137 ] && fail "timed out after ${limit}s: $*"
  return $rc
}
# stop_proc PID: SIGTERM and wait for it; after 30 s it is killed (-9), and said so.
stop_proc() {
  kill "$1" 2>/dev/null || true
  ( sleep 30; kill -9 "$1" 2>/dev/null && echo "bench-ha: process $1 ignored SIGTERM for 30 s; killed" >&2 ) &
  local dog=$!
  wait "$1" 2>/dev/null || true
  kill "$dog" 2>/dev/null || true
}
ticks() { # utime+stime of process $1, in clock ticks (0 when gone)
  awk '{sub(/^.*\) /, ""); print $12 + $13}' "/proc/$1/stat" 2>/dev/null || echo 0
}

vols=127.0.0.1:5101,127.0.0.1:5102,127.0.0.1:5103
for i in 1 2 3; do
  "$HOARD" volume --dir "$DIR/volume$i" --port "510$i" --bind 127.0.0.1 --fsync=false \
    2>>"$DIR/volume$i.log" &
  pids+=($!)
done

vol_pids=("${pids[@]}")
healthy() { curl -sf --max-time 2 "http://$1/-/health" >/dev/null; }
wait_health() { until_ok "$1 to answer" 30 healthy "$1"; }
leader() { # the id of the leader, as node $1 sees it
  curl -sf --max-time 2 "http://127.0.0.1:500$1/-/health" |
    python3 -c 'import json,sys; r=json.load(sys.stdin)["raft"]; print(r["leader_id"] if r["role"]!="candidate" and r["leader_id"] else "")' 2>/dev/null || true
}
agreed_leader() { [ -n "$(leader 1)" ] && [ "$(leader 1)" = "$(leader 2)" ] && [ "$(leader 2)" = "$(leader 3)" ]; }
# workload LABEL URL [NAME=PID...]: the thrasher (with CPU µs per op of each named
# process and of the load generator), then GET redirects.
workload() {
  local label=$1 url=$2; shift 2
  echo "== $label (load average: $(cut -d' ' -f1-3 /proc/loadavg))"
  local names=() procs=() before=() i
  for np in "$@" "volumes=${vol_pids[*]}"; do
    names+=("${np%%=*}"); procs+=("${np#*=}")
  done
  for i in "${!procs[@]}"; do
    before[i]=0; for p in ${procs[i]}; do before[i]=$(( before[i] + $(ticks "$p") )); done
  done
  bounded "$STEP" /usr/bin/time -f "%U %S" -o "$DIR/loadgen.time" \
    "$HOARD" bench thrasher --url "$url" --keys "$KEYS" >"$DIR/thrasher.out"
  tail -2 "$DIR/thrasher.out"
  local hz line="cpu µs/op:" t
  hz=$(getconf CLK_TCK)
  for i in "${!procs[@]}"; do
    t=0; for p in ${procs[i]}; do t=$(( t + $(ticks "$p") )); done
    line+=" ${names[i]} $(( (t - before[i]) * 1000000 / hz / KEYS ))"
  done
  line+=" loadgen $(awk -v k="$KEYS" '{printf "%d", ($1 + $2) * 1000000 / k}' "$DIR/loadgen.time")"
  echo "$line"
  curl -sf --max-time 10 -L -T README.md "$url/bench-ha/existing" -o /dev/null || true
  bounded 60 "$HOARD" bench get-redirect --url "$url" --duration 10s | grep -E "^(existing|missing|errors)"
}

for port in 5101 5102 5103; do wait_health "127.0.0.1:$port"; done

# 1. One index server.
"$HOARD" server --db "$DIR/single" --volumes "$vols" --port 5000 --bind 127.0.0.1 2>>"$DIR/single.log" &
single=$!
pids+=($single)
wait_health 127.0.0.1:5000
# A warm-up round, not measured: the first thrasher on fresh volumes creates their
# top-level directories and meets a cold file system, which would count against
# whichever set-up runs first.
bounded "$STEP" "$HOARD" bench thrasher --url http://127.0.0.1:5000 --keys "$KEYS" >/dev/null
workload "single index server" http://127.0.0.1:5000 "index=$single"
stop_proc "$single"

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
until_ok "a leader" 30 agreed_leader
l=$(leader 1)
f=$(( l % 3 + 1 ))
o=$(( f % 3 + 1 ))
members=("leader=${node_pid[$l]}" "follower$f=${node_pid[$f]}" "follower$o=${node_pid[$o]}")
workload "3-node cluster, leader (node $l)" "http://127.0.0.1:500$l" "${members[@]}"
workload "3-node cluster, follower (node $f)" "http://127.0.0.1:500$f" "${members[@]}"
stop_proc "${node_pid[$f]}"
start_node "$f" --read-consistency stale
wait_health "127.0.0.1:500$f"
echo "== stale reads on the follower"
bounded 60 "$HOARD" bench get-redirect --url "http://127.0.0.1:500$f" --duration 10s | grep -E "^(existing|missing|errors)"

# 3. Failovers.
echo "== failover: kill -9 of the leader under a PUT loop (ms to a new leader, to the first new 201)"
new_leader() { n=$(leader "$o"); [ -n "$n" ] && [ "$n" != "$l" ]; }
created() { [ "$(curl -s --max-time 5 -o /dev/null -w '%{http_code}' -T README.md "http://127.0.0.1:500$o/bench-ha/f$run-$RANDOM")" = 201 ]; }
for run in $(seq 1 "$RUNS"); do
  until_ok "the members to agree on a leader" 30 agreed_leader
  l=$(leader 1); o=$(( l % 3 + 1 ))
  t0=$(date +%s%N)
  kill -9 "${node_pid[$l]}"
  until_ok "a new leader" 30 new_leader
  t1=$(date +%s%N)
  until_ok "a 201 from node $o" 30 created
  t2=$(date +%s%N)
  echo "run $run: leader $l killed; node $n leads after $(( (t1 - t0) / 1000000 )) ms; first 201 after $(( (t2 - t0) / 1000000 )) ms"
  wait "${node_pid[$l]}" 2>/dev/null || true
  start_node "$l"
  wait_health "127.0.0.1:500$l"
done
