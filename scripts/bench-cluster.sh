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
  mkdir -p "$vol/body_temp" "$vol/tmp"
  # minikeyvalue's `volume` script, plus the user line (needed when run as root) and
  # the other temp paths kept inside the volume.
  cat > "$vol/tmp/nginx.conf" <<CONF
daemon off;
user $(id -un) $(id -gn);
worker_processes auto;
pcre_jit on;
error_log stderr;
pid $vol/nginx.pid;
events {
  use epoll;
  multi_accept on;
  accept_mutex off;
  worker_connections 4096;
}
http {
  sendfile on;
  sendfile_max_chunk 1024k;
  tcp_nopush on;
  tcp_nodelay on;
  open_file_cache off;
  types_hash_max_size 2048;
  server_tokens off;
  access_log off;
  default_type application/octet-stream;
  error_log stderr error;
  proxy_temp_path $vol/tmp/proxy;
  fastcgi_temp_path $vol/tmp/fastcgi;
  uwsgi_temp_path $vol/tmp/uwsgi;
  scgi_temp_path $vol/tmp/scgi;
  server {
    listen 127.0.0.1:$port default_server backlog=4096;
    location / {
      root $vol;
      disable_symlinks off;
      client_body_temp_path $vol/body_temp;
      client_max_body_size 0;
      dav_methods PUT DELETE;
      dav_access group:rw all:r;
      create_full_put_path on;
      autoindex on;
      autoindex_format json;
    }
  }
}
CONF
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
