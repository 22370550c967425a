#!/usr/bin/env bash
# Scrub throughput and its effect on foreground requests (issue 25), one run, one
# machine: a `hoard dev` store (release build) holding N values of 1 MiB, then
# minikeyvalue's thrasher (PUT, GET through the redirect, DELETE) with the scrubber off
# and with it running passes back to back at RATE (default: the flag's default). Prints
# the thrasher's figures for both, and the scrubber's replicas and bytes read per second.
#
# Usage: scripts/scrub-bench.sh [--values N] [--rate RATE] [--keys K]
set -euo pipefail
cd "$(dirname "$0")/.."
values=300 rate=32MiB/s keys=2000
while [ $# -gt 0 ]; do
  case "$1" in
    --values) values="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    *) echo "scrub-bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
cargo build --release --locked -q
bin=target/release/hoard
dir=$(mktemp -d)
port=$((21000 + RANDOM % 9000))
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
start() { # $1: scrub interval, $2: scrub rate (default: --rate)
  "$bin" dev --data "$dir/data" --port "$port" --scrub-interval "$1" --scrub-max-rate "${2:-$rate}" >"$dir/dev.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$port/-/health" >/dev/null && return; sleep 0.1; done
  echo "store did not start" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
scrubbed() { curl -s "localhost:$port/-/health" | python3 -c 'import json,sys; s=json.load(sys.stdin).get("scrub") or {}; print(s.get("passes",0), s.get("objects",0))'; }

start 0
head -c $((1 << 20)) /dev/urandom >"$dir/value"
for i in $(seq "$values"); do curl -sf -XPUT --data-binary @"$dir/value" "localhost:$port/scrubbench/$i" -o /dev/null; done
echo "== $(date -u +%FT%TZ) $(nproc) cores; $values values of 1 MiB; thrasher $keys keys"
echo "== scrubber off"
"$bin" bench thrasher --url "http://localhost:$port" -n "$keys"
stop

start 1s
sleep 2
read -r p0 o0 < <(scrubbed); t0=$(date +%s.%N)
echo "== scrubber on ($rate)"
"$bin" bench thrasher --url "http://localhost:$port" -n "$keys"
read -r p1 o1 < <(scrubbed); t1=$(date +%s.%N)
rate_of() { python3 - "$@" "$values" <<'PY'
import sys
p0, o0, p1, o1, t0, t1, values = (float(x) for x in sys.argv[1:])
# objects count the pass in progress: add whole passes done meanwhile.
per_pass = 3 * values
read = (p1 - p0) * per_pass + (o1 - o0)
secs = t1 - t0
print(f"scrub: {read:.0f} replicas read in {secs:.1f} s = {read/secs:.0f} replicas/s, {read/secs:.1f} MiB/s")
PY
}
rate_of "$p0" "$o0" "$p1" "$o1" "$t0" "$t1"
stop

# The physical limit, same run: the replica files read straight from the disk (cold,
# when this user may drop the page cache, and warm), then the scrubber unthrottled.
echo "== physical limit: $((3 * values)) replica files read with cat"
find "$dir/data" -type f -path '*/volume*' ! -path '*/.hoard-tmp/*' -size +1000k >"$dir/files"
raw() { # $1: label
  local t0 t1
  t0=$(date +%s.%N); xargs -a "$dir/files" cat >/dev/null; t1=$(date +%s.%N)
  python3 -c "import sys; n, a, b = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]); print(f'$1: {n} MiB in {b-a:.2f} s = {n/(b-a):.0f} MiB/s')" "$(wc -l <"$dir/files")" "$t0" "$t1"
}
if sync && echo 3 2>/dev/null >/proc/sys/vm/drop_caches; then raw "disk, cold cache"; else echo "disk, cold cache: not measured (cannot drop the page cache as $(id -un))"; fi
raw "page cache"
start 1s 100GiB/s
sleep 2
read -r p0 o0 < <(scrubbed); t0=$(date +%s.%N)
sleep 15
read -r p1 o1 < <(scrubbed); t1=$(date +%s.%N)
echo "== scrubber unthrottled (100GiB/s), no foreground load"
rate_of "$p0" "$o0" "$p1" "$o1" "$t0" "$t1"
