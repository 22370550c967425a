#!/usr/bin/env bash
# Starts the store the benchmarks in docs/BENCHMARKS.md were measured on, in the
# foreground: N nginx WebDAV volumes with minikeyvalue's volume configuration on ports
# PORT+1..PORT+N, and `hoard server` on PORT over them. Data lives under DIR (wiped at
# start). Ctrl-C, or `kill $(cat DIR/cluster.pid)`, stops everything. The index
# server's pid is written to DIR/index.pid (for `hoard bench large --server-pid`).
#
# usage: scripts/bench-cluster.sh [DIR] [N]
#   env: HOARD=target/release/hoard  PORT=3000
set -euo pipefail
DIR=${1:-/tmp/hoard-bench}
N=${2:-5}
PORT=${PORT:-3000}
HOARD=${HOARD:-target/release/hoard}
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

rm -rf "$DIR"
mkdir -p "$DIR"
echo $$ > "$DIR/cluster.pid"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

volumes=()
for i in $(seq 1 "$N"); do
  port=$((PORT + i))
  vol="$DIR/volume$i"
  mkdir -p "$vol/tmp"
  # The shared volume configuration (scripts/nginx-volume.conf), with the user line
  # (needed when run as root) and as many workers as cores.
  sed -e "s|@PROCESS@|user $(id -un) $(id -gn); worker_processes auto;|" \
      -e "s|@PREFIX@|$vol/tmp|g" -e "s|@TMP@|$vol/tmp|g" \
      -e "s|@PORT@|$port|g" -e "s|@ROOT@|$vol|g" \
      "$(dirname "$0")/nginx-volume.conf" > "$vol/tmp/nginx.conf"
  "$NGINX" -e stderr -p "$vol/tmp" -c "$vol/tmp/nginx.conf" 2>>"$DIR/volume$i.log" &
  pids+=($!)
  volumes+=("127.0.0.1:$port")
done

vlist=$(IFS=,; echo "${volumes[*]}")
"$HOARD" server --port "$PORT" --bind 127.0.0.1 --db "$DIR/index" --volumes "$vlist" \
  2>>"$DIR/index.log" &
pids+=($!)
echo $! > "$DIR/index.pid"
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/-/health" >/dev/null && break
  sleep 0.1
done
echo "store ready: index http://127.0.0.1:$PORT (pid $(cat "$DIR/index.pid")), volumes $vlist"
wait
