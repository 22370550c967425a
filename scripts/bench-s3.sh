#!/usr/bin/env bash
# The S3 API against the native API on one store, in one run (`hoard dev`, release):
#  * large-object PUT and GET throughput, curl on both sides (S3 requests signed with
#    SigV4, UNSIGNED-PAYLOAD, as aws-cli and boto3 send over HTTPS), next to the disk's
#    fsync'd write speed measured in the same run on the same disk;
#  * the server's peak memory (VmHWM of the whole `hoard dev` process) after it all;
#  * ListObjectsV2 of KEYS keys paginated at 1000 (boto3's paginator) next to the native
#    `?list&limit=1000` pages of the same keys (python urllib).
# Usage: scripts/bench-s3.sh [SIZE_MB=1024] [RUNS=3]     (KEYS=100000 in the environment)
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MB=${1:-1024}
RUNS=${2:-3}
KEYS=${KEYS:-100000}
BIN=${HOARD_BIN:-target/release/hoard}
[ -x "$BIN" ] || cargo build --release
work=$(mktemp -d "${TMPDIR:-/tmp}/hoard-bench-s3.XXXXXX")
src=/dev/shm/hoard-bench-s3-$$.bin
pid=""
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work" "$src"
}
trap cleanup EXIT
port=$((20000 + RANDOM % 20000))
s3port=$((port + 10))
HOARD_LOG=hoard=warn "$BIN" dev --data "$work/data" --port "$port" --s3-port "$s3port" 2>"$work/dev.log" &
pid=$!
for _ in $(seq 200); do curl -sf "localhost:$port/-/health" >/dev/null && break; sleep 0.05; done
native="http://127.0.0.1:$port"
s3="http://127.0.0.1:$s3port"
SIGN=(--aws-sigv4 "aws:amz:us-east-1:s3" --user hoard:hoardhoard -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
curl -sS -f -o /dev/null "${SIGN[@]}" -X PUT "$s3/bench"

head -c $((SIZE_MB << 20)) /dev/urandom >"$src"
bytes=$((SIZE_MB << 20))
mbps() { python3 -c "print(f'{$bytes / 1e6 / $1:.0f}')"; }

echo "== $(nproc) cores, $SIZE_MB MiB objects, $RUNS runs each; 3 replicas on one disk ($work)"
t=$( { /usr/bin/time -f %e dd if="$src" of="$work/dd.bin" bs=1M conv=fsync status=none; } 2>&1 )
echo "physical: dd write+fsync of one copy to the volumes' disk: $(mbps "$t") MB/s (a PUT writes 3 copies)"
rm -f "$work/dd.bin"

# One run = native PUT, S3 PUT, native GET, S3 GET of the same bytes, then both keys
# deleted (disk space stays at 2 objects × 3 replicas).
mb() { curl -sS -f -o /dev/null -w '%{time_total}' "$@"; }
declare -A res
for i in $(seq "$RUNS"); do
  res[npu]+=" $(mbps "$(mb -T "$src" "$native/bench/native-$i")")"
  res[spu]+=" $(mbps "$(mb "${SIGN[@]}" -T "$src" "$s3/bench/s3-$i")")"
  res[nge]+=" $(mbps "$(mb -L "$native/bench/native-$i")")"
  res[sge]+=" $(mbps "$(mb "${SIGN[@]}" "$s3/bench/s3-$i")")"
  curl -sS -f -o /dev/null -X DELETE "$native/bench/native-$i"
  curl -sS -f -o /dev/null -X DELETE "$native/bench/s3-$i"
done
echo "native PUT MB/s:${res[npu]}"
echo "S3 PUT     MB/s:${res[spu]}"
echo "native GET MB/s:${res[nge]}"
echo "S3 GET     MB/s:${res[sge]}"
echo "peak RSS of hoard dev (index + 3 volumes): $(grep VmHWM /proc/$pid/status | awk '{print $2/1024 " MiB"}')"

echo "== listing $KEYS keys, pages of 1000"
python3 - "$native" "$s3" "$KEYS" <<'PY'
import base64, json, sys, time, urllib.request
import boto3
from botocore.client import Config
native, endpoint, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
t = time.time()
for start in range(0, n, 1000):
    ops = [{"op": "put", "key": f"/bench/list/{i:08d}", "value": base64.b64encode(b"x").decode()}
           for i in range(start, min(n, start + 1000))]
    req = urllib.request.Request(native + "/-/batch", data=json.dumps(ops).encode(), method="POST")
    res = json.load(urllib.request.urlopen(req))
    assert all(r["status"] == 201 for r in res), res[:3]
print(f"written with the batch API in {time.time() - t:.1f} s")
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="hoard",
                  aws_secret_access_key="hoardhoard", config=Config(s3={"addressing_style": "path"}))
for label in ["first", "second"]:
    t, seen, pages = time.time(), 0, 0
    for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket="bench", Prefix="list/", PaginationConfig={"PageSize": 1000}):
        seen += len(page.get("Contents", []))
        pages += 1
    dt = time.time() - t
    assert seen == n, seen
    print(f"S3 ListObjectsV2 ({label} pass): {pages} pages, {seen} keys in {dt:.2f} s = {seen / dt:,.0f} keys/s, {1000 * dt / pages:.1f} ms/page")
t, seen, pages, start = time.time(), 0, 0, ""
while True:
    url = native + "/bench/list/?list&limit=1000" + (f"&start={urllib.request.quote(start)}" if start else "")
    page = json.load(urllib.request.urlopen(url))
    seen += len(page["keys"])
    pages += 1
    start = page["next"]
    if not start:
        break
dt = time.time() - t
print(f"native ?list&limit=1000: {pages} pages, {seen} keys in {dt:.2f} s = {seen / dt:,.0f} keys/s, {1000 * dt / pages:.1f} ms/page")
PY
