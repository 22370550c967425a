#!/usr/bin/env bash
# Measures `hoard rebuild` and `hoard rebalance` on a local cluster of volume servers.
#
# Usage: scripts/bench-ops.sh [KEYS] [VALUE_BYTES] [nginx|native]
#   defaults: 100000 keys of 1024 bytes on 5 nginx volumes, 3 replicas, 10 subvolumes.
#
# The population is written straight into the volumes' directories (in placement order,
# exactly where the index server would put it), so the benchmark measures the
# operations, not PUT. Then:
#   1. hoard rebuild   over the 5 volumes into a new index    (listing rate, files/s)
#   2. hoard rebalance from 5 to 4 volumes                     (keys/s, MB/s copied)
# Needs a release build (cargo build --release) and nginx for the nginx kind.
set -euo pipefail
cd "$(dirname "$0")/.."

KEYS=${1:-100000}
SIZE=${2:-1024}
KIND=${3:-nginx}
VOLUMES=5
HOARD=${HOARD:-target/release/hoard}
[ -x "$HOARD" ] || { echo "build first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/hoard-bench-ops.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

NAMES=()
for i in $(seq 0 $((VOLUMES - 1))); do
  port=$(free_port)
  dir="$WORK/vol$i"
  mkdir -p "$dir" "$WORK/nginx$i/tmp"
  if [ "$KIND" = nginx ]; then
    sed -e "s|@PROCESS@|master_process off; worker_processes 1;|" \
        -e "s|@PREFIX@|$WORK/nginx$i|g" -e "s|@TMP@|$WORK/nginx$i/tmp|g" \
        -e "s|@PORT@|$port|g" -e "s|@ROOT@|$dir|g" \
        scripts/nginx-volume.conf > "$WORK/nginx$i/nginx.conf"
    /usr/sbin/nginx -e stderr -p "$WORK/nginx$i" -c "$WORK/nginx$i/nginx.conf" 2>>"$WORK/volumes.log" &
  else
    "$HOARD" volume --dir "$dir" --port "$port" --bind 127.0.0.1 --fsync=false 2>>"$WORK/volumes.log" &
  fi
  PIDS+=($!)
  NAMES+=("127.0.0.1:$port")
done
ALL=$(IFS=,; echo "${NAMES[*]}")
FOUR=$(IFS=,; echo "${NAMES[*]:0:4}")
sleep 1

echo "== writing $KEYS keys x 3 replicas of $SIZE bytes into $VOLUMES $KIND volumes"
python3 - "$WORK" "$KEYS" "$SIZE" "$ALL" <<'EOF'
import base64, hashlib, os, sys
work, keys, size, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
def locate(key):
    scored = sorted(((hashlib.md5(key + v.encode()).digest(), i) for i, v in enumerate(names)), reverse=True)
    return [(i, "sv%02X" % (int.from_bytes(s[12:16], "big") % 10)) for s, i in scored[:3]]
for n in range(keys):
    key = b"/bench/%d/%s" % (n, b"x" * (n % 7))
    d = hashlib.md5(key).digest()
    rel = "%02x/%02x/%s" % (d[0], d[1], base64.b64encode(key).decode())
    value = (key * (size // len(key) + 1))[:size]
    for i, sv in locate(key):
        path = os.path.join(work, "vol%d" % i, sv, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(value)
EOF

report() { python3 -c '
import json, sys
r = json.load(sys.stdin)
c, s, what = r["counts"], r["elapsed_s"], sys.argv[1]
files, keys, mb = c["files_listed"], c["scanned"], c["bytes"] / 1e6
print("%s: %.2f s; files listed %d (%.0f files/s); keys %d (%.0f keys/s); moved %d; "
      "copied %.1f MB (%.1f MB/s); failed %d"
      % (what, s, files, files / s, keys, keys / s, c["moved"], mb, mb / s, c["failed"]))
' "$1"; }

echo "== hoard rebuild ($VOLUMES volumes)"
"$HOARD" rebuild --volumes "$ALL" --db "$WORK/db" --concurrency "${CONCURRENCY:-16}" 2>"$WORK/rebuild.log" | report rebuild
echo "== hoard rebalance ($VOLUMES -> 4 volumes)"
"$HOARD" rebalance --volumes "$FOUR" --db "$WORK/db" --concurrency "${CONCURRENCY:-16}" 2>"$WORK/rebalance.log" | report rebalance
echo "== hoard rebalance again (nothing to move)"
"$HOARD" rebalance --volumes "$FOUR" --db "$WORK/db" 2>>"$WORK/rebalance.log" | report "rebalance (no-op)"
