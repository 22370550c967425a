#!/usr/bin/env bash
# The index at scale, in one run on one machine (docs/BENCHMARKS.md, "Index at scale"):
#
# 1. for SMALL (10k) keys and for KEYS keys: fill a new index through the bulk-load path
#    (`hoard bench index-scale`: bytes per key, open time, lookups, full listing scan, HA
#    snapshot export/import), then start `hoard server` on it (start-up time until
#    /-/health answers), GET redirects (`hoard bench get-redirect`, existing key) and
#    `?list` pages of 10,000 keys over HTTP (the first LIST_KEYS, default 2 M); the
#    index is deleted after each size;
# 2. rebuild: FILES replica files (FILES/3 keys x 3 volumes, hard links of one small
#    file per 20,000 keys, so they cost directory entries only) listed from three native volumes by
#    `hoard rebuild`: files/s and the process's peak RSS.
#
# usage: scripts/bench-scale.sh [KEYS] [FILES]
#   env: HOARD=target/release/hoard DIR=/tmp/hoard-bench-scale DURATION=10s IMPORT=1
#        SMALL=10000 MEMORY_MB=256 LIST_KEYS=2000000
# Needs disk for about 500 bytes per key (index + snapshot, + the import when IMPORT=1).
set -euo pipefail
KEYS=${1:-10000000}
FILES=${2:-1000000}
SMALL=${SMALL:-10000}
HOARD=${HOARD:-target/release/hoard}
DIR=${DIR:-/tmp/hoard-bench-scale}
DURATION=${DURATION:-10s}
IMPORT=${IMPORT:-1}
MEMORY_MB=${MEMORY_MB:-256}
rm -rf "$DIR"
mkdir -p "$DIR"
pids=()
cleanup() { # the bulky data; the small reports stay in $DIR if the run failed
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$DIR"/volume[123] "$DIR"/db-* "$DIR"/rebuilt "$DIR"/value*
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_health() {
  for _ in $(seq 1 12000); do curl -sf "http://$1/-/health" >/dev/null && return; sleep 0.005; done
  echo "no answer from $1" >&2
  exit 1
}
wait_up() { # any HTTP answer
  for _ in $(seq 1 2000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$1/" || true)" != 000 ] && return
    sleep 0.01
  done
  echo "no answer from $1" >&2
  exit 1
}
now() { date +%s.%N; }

vols=()
for i in 1 2 3; do
  port=$(free_port)
  "$HOARD" volume --dir "$DIR/volume$i" --port "$port" --bind 127.0.0.1 --fsync=false \
    2>>"$DIR/volume$i.log" &
  pids+=($!)
  vols+=("127.0.0.1:$port")
done
VOLS=$(IFS=,; echo "${vols[*]}")
for v in "${vols[@]}"; do wait_up "$v"; done

import_flag=()
[ "$IMPORT" = 1 ] && import_flag=(--import)

for n in "$SMALL" "$KEYS"; do
  db="$DIR/db-$n"
  "$HOARD" bench index-scale --db "$db" -n "$n" --volumes "$VOLS" "${import_flag[@]}" --json \
    >"$DIR/index-$n.json"
  port=$(free_port)
  t0=$(now)
  "$HOARD" server --db "$db" --volumes "$VOLS" --port "$port" --bind 127.0.0.1 \
    2>>"$DIR/server-$n.log" &
  server=$!
  pids+=($server)
  wait_health "127.0.0.1:$port"
  t1=$(now)
  "$HOARD" bench get-redirect --url "http://127.0.0.1:$port" --cases existing \
    --duration "$DURATION" --json >"$DIR/redirect-$n.json"
  t2=$(now)
  # Pages of 10,000 keys (`?list&limit=10000&start=NEXT`), as a client walks a large
  # store, over the first LIST_KEYS keys (default: all, at most 2 M).
  listed=$(python3 - "127.0.0.1:$port" "${LIST_KEYS:-2000000}" <<'EOF'
import json, sys, urllib.parse, urllib.request
addr, most = sys.argv[1], int(sys.argv[2])
n, start = 0, None
while n < most:
    q = "list&limit=10000" + ("&start=" + urllib.parse.quote(start, safe="") if start else "")
    page = json.load(urllib.request.urlopen(f"http://{addr}/?{q}"))
    n += len(page["keys"])
    start = page["next"]
    if not start:
        break
print(n)
EOF
)
  t3=$(now)
  kill -TERM "$server"
  wait "$server" || true
  python3 - "$DIR" "$n" "$t0" "$t1" "$t2" "$t3" "$listed" <<'EOF'
import json, sys
d, n, t0, t1, t2, t3, listed = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:7]), int(sys.argv[7])
json.dump({"startup_s": t1 - t0, "http_list_keys": listed, "http_list_s": t3 - t2,
           "http_list_keys_per_s": listed / (t3 - t2) if t3 > t2 else 0},
          open(f"{d}/http-{n}.json", "w"))
if listed != min(n, 2000000) and listed < 2000000:
    sys.exit(f"?list returned {listed} of {n} keys")
EOF
  du -sb "$db" >"$DIR/du-$n.txt"
  rm -rf "$db"
done

# Rebuild from FILES replica files on the three volumes.
python3 - "$DIR" "$FILES" <<'EOF'
import base64, hashlib, os, sys
d, files = sys.argv[1], int(sys.argv[2])
for i in range(max(files // 3, 1)):
    if i % 20000 == 0:  # ext4 allows 65,000 links per inode
        master = f"{d}/value{i}"
        open(master, "wb").write(b"v" * 100)
    k = f"/bench/rebuild/{i:010}".encode()
    h = hashlib.md5(k).hexdigest()
    rel = f"{h[:2]}/{h[2:4]}/" + base64.b64encode(k).decode()
    for v in (1, 2, 3):
        p = f"{d}/volume{v}/{rel}"
        try:
            os.link(master, p)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(p), exist_ok=True)
            os.link(master, p)
EOF
t0=$(now)
"$HOARD" rebuild --db "$DIR/rebuilt" --volumes "$VOLS" --replicas 3 --subvolumes 1 \
  --memory-mb "$MEMORY_MB" >"$DIR/rebuild.json" 2>"$DIR/rebuild.log"
t1=$(now)
peak=$(sed -n 's/^peak resident memory (VmHWM): \([0-9]*\) kB$/\1/p' "$DIR/rebuild.log")
[ -n "$peak" ] || { echo "rebuild did not report its peak memory" >&2; exit 1; }

python3 - "$DIR" "$SMALL" "$KEYS" "$t0" "$t1" "$peak" <<'EOF'
import json, sys
d, small, keys, t0, t1, peak = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), int(sys.argv[6])
rb = json.load(open(f"{d}/rebuild.json"))
files = rb["counts"]["files_listed"]
out = {"sizes": {}, "rebuild": {"files": files, "keys": rb["counts"]["scanned"],
       "elapsed_s": t1 - t0, "files_per_s": files / (t1 - t0), "peak_rss_kb": peak}}
for n in (small, keys):
    idx = json.load(open(f"{d}/index-{n}.json"))
    red = json.load(open(f"{d}/redirect-{n}.json"))["cases"][0]
    http = json.load(open(f"{d}/http-{n}.json"))
    du = int(open(f"{d}/du-{n}.txt").read().split()[0])
    out["sizes"][n] = {
        "bytes_per_key": idx["bytes_per_key"], "dir_bytes": du,
        "bulk_fill_keys_per_s": idx["fill_keys_per_s"], "open_s": idx["open_s"],
        "lookup_p50_ms": idx["lookup"]["p50_ms"], "lookup_p99_ms": idx["lookup"]["p99_ms"],
        "scan_keys_per_s": idx["scan_keys_per_s"],
        "snapshot_bytes": idx["snapshot_bytes"], "snapshot_export_s": idx["snapshot_export_s"],
        "snapshot_import_s": idx["snapshot_import_s"],
        "startup_s": http["startup_s"],
        "get_redirect_req_per_s": red["req_per_sec"], "get_redirect_p50_ms": red["latency"]["p50_ms"],
        "get_redirect_p99_ms": red["latency"]["p99_ms"], "get_redirect_errors": red["errors"],
        "http_list_keys_per_s": http["http_list_keys_per_s"],
    }
print(json.dumps(out, indent=2))
EOF
cleanup
rm -rf "$DIR"
