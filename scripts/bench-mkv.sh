#!/usr/bin/env bash
# Side by side with minikeyvalue, one run on one machine, one table.
#
#   usage: scripts/bench-mkv.sh MKV_BUILD_DIR
#     MKV_BUILD_DIR: the output of /work/shared/tools/build-minikeyvalue.sh (holds `mkv` and
#     `thrasher`, built from geohot/minikeyvalue's public source; hoard never contains it).
#   env: HOARD=target/release/hoard  KEYS=5000 (rebuild/rebalance population)
#        WRK_SECONDS=5  BIG=256MB  SETUPS="mkv nginx native-nofsync native dev"
#        HOARD_BEFORE=/path/to/an/older/hoard: a set-up named `NAME:before` (e.g.
#        `native-nofsync:before`) runs that binary's servers instead, for before/after in
#        one run (the load generators and limits always use HOARD).
#        VOLUME_ARGS="--runtime-threads 1": extra arguments of every `hoard volume` (one worker
#        thread, as nginx runs here with `worker_processes 1`; VOLUME_ARGS= for the
#        default of one per core). Not given to `NAME:before` set-ups (an older binary
#        may not have the option).
#        ROUNDS=1: repeat the whole sequence (limits, then every set-up) this many times
#        and print the median of each figure; the thrasher ratio is the median of each
#        round's ratio (set-ups of one round ran minutes apart, rounds further apart).
#        RESULTS_OUT=FILE: also keep every round's figures there (TSV: round, set-up,
#        metric, value), to see the spread behind the medians.
#        BENCH_DIR=/tmp: where the volumes, indexes and limits run. On a shared ext4 the
#        inode allocator's state (how many inodes were freed in the last 30 s) moves
#        small-file costs by 5x between runs; BENCH_DIR=/dev/shm (tmpfs) takes the file
#        system out of the comparison and leaves the software.
#
# Set-ups, each started fresh, index on 127.0.0.1:3000 (minikeyvalue's thrasher only talks
# to localhost:3000), 5 volumes, 3 replicas, 10 subvolumes:
#   mkv             minikeyvalue over 5 stock nginx volumes (scripts/nginx-volume.conf)
#   nginx           hoard server over 5 nginx volumes (the same configuration)
#   native-nofsync  hoard server over 5 `hoard volume --fsync=false` (nginx never fsyncs)
#   native          hoard server over 5 `hoard volume` (default: fsync on)
#   dev             `hoard dev` (one process: index + 3 volumes, fsync on)
# For each: minikeyvalue's thrasher (10,000 keys, 16 workers: PUT, GET following the
# redirect, DELETE), wrk GET of an existing and a missing key (302 / 404), a 256 MB PUT and
# GET with the index's peak RSS; for mkv / nginx / native-nofsync also an offline rebuild of
# KEYS keys (x3 replicas written straight into the volumes) and a rebalance 5 -> 3.
# CPU is per process, from /proc/PID/stat (utime + stime) before and after each workload, so
# other load on the machine does not enter it; wall-clock rates do depend on that load.
# Physical limits in the same run: a bare responder (nginx `return 204`, wrk), and raw
# small-file create / rename / unlink rates (`hoard bench baseline --small-files`).
set -euo pipefail
cd "$(dirname "$0")/.."
MKV=$(cd "${1:?usage: bench-mkv.sh MKV_BUILD_DIR}" && pwd)
HOARD=$(realpath "${HOARD:-target/release/hoard}")
KEYS=${KEYS:-5000}
WRK_SECONDS=${WRK_SECONDS:-5}
BIG=${BIG:-256MB}
SETUPS=${SETUPS:-mkv nginx native-nofsync native dev}
VOLUME_ARGS=${VOLUME_ARGS---runtime-threads 1}
ROUNDS=${ROUNDS:-1}
ROUND=1
for tool in "$MKV/mkv" "$MKV/thrasher" "$HOARD" /usr/sbin/nginx; do
  [ -x "$tool" ] || { echo "missing $tool (build-minikeyvalue.sh / cargo build --release / apt install nginx)" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "missing wrk (apt install wrk)" >&2; exit 1; }
command -v curl >/dev/null || { echo "missing curl" >&2; exit 1; }

# nginx's worker user must be able to read the volume directories.
WORK=$(mktemp -d "${BENCH_DIR:-/tmp}/hoard-bench-mkv.XXXXXX")
chmod 755 "$WORK"
RESULTS="$WORK/results.tsv"
PIDS=()
cleanup() {
  [ -z "${RESULTS_OUT:-}" ] || cp "$RESULTS" "$RESULTS_OUT" 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
TCK=$(getconf CLK_TCK)
PORT=3000
VPORTS=(3101 3102 3103 3104 3105)
VOLS=$(printf '127.0.0.1:%s,' "${VPORTS[@]}"); VOLS=${VOLS%,}
THREE=$(printf '127.0.0.1:%s,' "${VPORTS[@]:0:3}"); THREE=${THREE%,}

log() { echo "$(date +%T) load $(cut -d' ' -f1-3 /proc/loadavg): $*" >&2; }
record() { printf '%s\t%s\t%s\t%s\n' "$ROUND" "$1" "$2" "$3" >> "$RESULTS"; }  # round, setup, metric, value

# CPU ticks (utime + stime) of the given pids, summed.
ticks() {
  local t=0 pid f
  for pid in "$@"; do
    f=$(cut -d')' -f2- "/proc/$pid/stat" 2>/dev/null) || continue
    set -- $f
    t=$((t + ${12} + ${13}))
  done
  echo "$t"
}
# microseconds of CPU per op: ticks_delta ops
us_per() { python3 -c "import sys; print(round(int(sys.argv[1]) * 1e6 / $TCK / max(1, float(sys.argv[2]))))" "$1" "$2"; }
wait_port() {
  for _ in $(seq 200); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "nothing listens on port $1" >&2; return 1
}
wait_gone() {
  for _ in $(seq 200); do
    (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null || return 0
    sleep 0.05
  done
  echo "port $1 still busy" >&2; return 1
}
stop() {
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  PIDS=()
  wait_gone "$PORT"
  for p in "${VPORTS[@]}"; do wait_gone "$p"; done
}

# The hoard binary of set-up $1 (HOARD, or HOARD_BEFORE for `NAME:before`).
bin_of() { case $1 in *:before|*:before.ops) realpath "${HOARD_BEFORE:?set HOARD_BEFORE for $1}" ;; *) echo "$HOARD" ;; esac; }

# Starts 5 volumes of KIND (nginx | native | native-nofsync) over $WORK/$2/volN; sets VPIDS.
start_volumes() {
  local kind=$1 base=$WORK/$2 i bin va=$VOLUME_ARGS; bin=$(bin_of "$2")
  case $2 in *:before*) va= ;; esac
  VPIDS=()
  for i in 0 1 2 3 4; do
    local dir=$base/vol$i port=${VPORTS[$i]}
    mkdir -p "$dir" "$base/nginx$i/tmp"
    chmod 755 "$base" "$dir"
    case $kind in
      nginx)
        sed -e "s|@PROCESS@|master_process off; worker_processes 1;|" \
            -e "s|@PREFIX@|$base/nginx$i|g" -e "s|@TMP@|$base/nginx$i/tmp|g" \
            -e "s|@PORT@|$port|g" -e "s|@ROOT@|$dir|g" \
            scripts/nginx-volume.conf > "$base/nginx$i/nginx.conf"
        /usr/sbin/nginx -e stderr -p "$base/nginx$i" -c "$base/nginx$i/nginx.conf" 2>>"$WORK/volumes.log" & ;;
      # shellcheck disable=SC2086 # $va is a list of arguments
      native) "$bin" $va volume --dir "$dir" --port "$port" --bind 127.0.0.1 2>>"$WORK/volumes.log" & ;;
      # shellcheck disable=SC2086
      native-nofsync) "$bin" $va volume --dir "$dir" --port "$port" --bind 127.0.0.1 --fsync=false 2>>"$WORK/volumes.log" & ;;
    esac
    VPIDS+=($!); PIDS+=($!)
  done
  for p in "${VPORTS[@]}"; do wait_port "$p"; done
}

# Starts the index of set-up $1 over $WORK/$1; sets IPID (and VPIDS).
start_setup() {
  local s=$1 bin; bin=$(bin_of "$s")
  case ${s%:before} in
    mkv) start_volumes nginx "$s"
         "$MKV/mkv" -port $PORT -volumes "$VOLS" -db "$WORK/$s/db" server >"$WORK/$s.log" 2>&1 & ;;
    nginx|native|native-nofsync)
         start_volumes "${s%:before}" "$s"
         "$bin" server --port $PORT --bind 127.0.0.1 --db "$WORK/$s/db" --volumes "$VOLS" >"$WORK/$s.log" 2>&1 & ;;
    dev) VPIDS=()
         "$bin" dev --port $PORT --bind 127.0.0.1 --data "$WORK/$s/data" >"$WORK/$s.log" 2>&1 & ;;
  esac
  IPID=$!; PIDS+=($!)
  wait_port $PORT
  if [ "${s%:before}" = dev ]; then for p in 3001 3002 3003; do wait_port "$p"; done; fi
  sleep 0.5
}

# minikeyvalue's thrasher (it prints "thats N/sec").
thrasher() {
  local s=$1 i0 v0 out cpu
  i0=$(ticks "$IPID"); v0=$(ticks "${VPIDS[@]}")
  log "$s: thrasher"
  # The thrasher's own CPU (user and system seconds) from its rusage.
  out=$(cd "$WORK" && python3 -c '
import resource, subprocess, sys
with open(sys.argv[2], "w") as f:
    subprocess.run([sys.argv[1]], stdout=f, stderr=subprocess.STDOUT)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
print(r.ru_utime, r.ru_stime)' "$MKV/thrasher" "$WORK/thrasher-$s.txt")
  local rate; rate=$(sed -n 's/^thats \([0-9.]*\)\/sec.*/\1/p' "$WORK/thrasher-$s.txt")
  [ -n "$rate" ] || { log "$s: thrasher FAILED: $(tail -3 "$WORK/thrasher-$s.txt")"; rate=0; }
  record "$s" "thrasher ops/s" "$rate"
  record "$s" "thrasher: index CPU µs/op" "$(us_per $(( $(ticks "$IPID") - i0 )) 10000)"
  [ ${#VPIDS[@]} -gt 0 ] && record "$s" "thrasher: volumes CPU µs/op (all 5)" "$(us_per $(( $(ticks "${VPIDS[@]}") - v0 )) 10000)"
  cpu=$(python3 -c "import sys; u,s=map(float,sys.argv[1:3]); print(round((u+s)*1e6/10000))" $out)
  record "$s" "thrasher: load generator CPU µs/op" "$cpu"
}

# wrk against URL path; records req/s and the index's (and volumes') CPU per request.
wrk_case() {
  local s=$1 name=$2 path=$3 i0 v0 rps n
  i0=$(ticks "$IPID"); v0=$(ticks "${VPIDS[@]}")
  log "$s: wrk $name"
  wrk -t2 -c100 -d"${WRK_SECONDS}s" "http://127.0.0.1:$PORT$path" > "$WORK/wrk-$s-$name.txt"
  rps=$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\)/\1/p' "$WORK/wrk-$s-$name.txt")
  n=$(sed -n 's/^[[:space:]]*\([0-9]*\) requests in.*/\1/p' "$WORK/wrk-$s-$name.txt")
  record "$s" "wrk GET $name req/s" "${rps%.*}"
  record "$s" "wrk GET $name: server CPU µs/req" "$(us_per $(( $(ticks "$IPID") - i0 + $(ticks "${VPIDS[@]}") - v0 )) "$n")"
}

# One volume driven directly: `hoard bench thrasher --volume` (PUT, GET, DELETE of 10,000
# small files in new directories, 16 connections); CPU of that volume process per request.
volume_direct() {
  local s=$1 pid=${VPIDS[0]} t0 n=10000
  log "$s: volume thrasher"
  t0=$(ticks "$pid")
  "$HOARD" bench thrasher --volume --url "http://127.0.0.1:${VPORTS[0]}" -n $n -c 16 --json \
    > "$WORK/volume-$s.json" || { log "$s: volume thrasher FAILED"; return 0; }
  record "$s" "one volume direct: CPU µs/request (PUT, GET, DELETE)" "$(us_per $(( $(ticks "$pid") - t0 )) $((3 * n)))"
  record "$s" "one volume direct: requests/s" "$(python3 -c "import json,sys; print(round(json.load(open(sys.argv[1]))['requests_per_sec']))" "$WORK/volume-$s.json")"
}

# Listing of a populated directory (`/sv00/`, ~256 entries) on one volume, with wrk.
volume_listing() {
  local s=$1 pid=${VPIDS[0]} t0 n
  t0=$(ticks "$pid")
  wrk -t1 -c8 -d"${WRK_SECONDS}s" "http://127.0.0.1:${VPORTS[0]}/sv00/" > "$WORK/wrk-$s-listing.txt"
  n=$(sed -n 's/^[[:space:]]*\([0-9]*\) requests in.*/\1/p' "$WORK/wrk-$s-listing.txt")
  local rps; rps=$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\)/\1/p' "$WORK/wrk-$s-listing.txt" | cut -d. -f1)
  s=${s%.ops}
  record "$s" "one volume: listing of /sv00/ req/s" "$rps"
  record "$s" "one volume: listing CPU µs/request" "$(us_per $(( $(ticks "$pid") - t0 )) "$n")"
}

# PUT and GET of one BIG value through the index; peak RSS of the index process.
big() {
  local s=$1 file=$WORK/big.bin put get
  [ -f "$file" ] || head -c "$(numfmt --from=iec "${BIG%B}")" /dev/urandom > "$file"
  log "$s: $BIG PUT/GET"
  put=$(curl -sS -f -o /dev/null -w '%{speed_upload}' -T "$file" "http://127.0.0.1:$PORT/big-value") || put=0
  get=$(curl -sS -f -L -o "$WORK/big.out" -w '%{speed_download}' "http://127.0.0.1:$PORT/big-value") || get=0
  cmp -s "$file" "$WORK/big.out" || { log "$s: big GET differs"; get=0; }
  rm -f "$WORK/big.out"
  record "$s" "PUT $BIG MB/s" "$(python3 -c "print(round($put / 1e6))")"
  record "$s" "GET $BIG MB/s" "$(python3 -c "print(round($get / 1e6))")"
  record "$s" "index peak RSS MiB (VmHWM)" "$(awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$IPID/status")"
}

# Writes KEYS keys x 3 replicas straight into $WORK/$1/vol0..4, where placement puts them
# (the same layout as scripts/bench-ops.sh; minikeyvalue's and hoard's placement agree).
populate() {
  python3 - "$WORK/$1" "$KEYS" "$VOLS" <<'EOF'
import base64, hashlib, os, sys
work, keys, names = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
for n in range(keys):
    key = b"/ops/%d" % n
    scored = sorted(((hashlib.md5(key + v.encode()).digest(), i) for i, v in enumerate(names)), reverse=True)
    d = hashlib.md5(key).digest()
    rel = "%02x/%02x/%s" % (d[0], d[1], base64.b64encode(key).decode())
    for s, i in scored[:3]:
        path = os.path.join(work, "vol%d" % i, "sv%02X" % (int.from_bytes(s[12:16], "big") % 10), rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(key * 16)
EOF
}

# Offline rebuild (5 volumes) and rebalance (5 -> 3) of a fresh population.
ops() {
  local s=$1 t0 t1 t2 bin; bin=$(bin_of "$s")
  stop "$IPID" "${VPIDS[@]}"
  # A fresh set of directories (removing the old trees can take minutes).
  s=$s.ops
  local kind=nginx; [ "${s%%[:.]*}" = native-nofsync ] && kind=native-nofsync
  start_volumes "$kind" "$s"
  populate "$s"
  [ "$s" = mkv.ops ] || volume_listing "$s"
  log "$s: rebuild + rebalance of $KEYS keys"
  t0=$(date +%s.%N)
  if [ "$s" = mkv.ops ]; then
    "$MKV/mkv" -volumes "$VOLS" -db "$WORK/$s/db" rebuild >"$WORK/rebuild-$s.log" 2>&1
    t1=$(date +%s.%N)
    "$MKV/mkv" -volumes "$THREE" -db "$WORK/$s/db" rebalance >"$WORK/rebalance-$s.log" 2>&1
  else
    "$bin" rebuild --volumes "$VOLS" --db "$WORK/$s/db" >"$WORK/rebuild-$s.log" 2>&1
    t1=$(date +%s.%N)
    "$bin" rebalance --volumes "$THREE" --db "$WORK/$s/db" >"$WORK/rebalance-$s.log" 2>&1
  fi
  t2=$(date +%s.%N)
  local left; left=$(find "$WORK/$s"/vol[34] -type f | wc -l)
  [ "$left" = 0 ] || log "$s: $left files left on the removed volumes after rebalance"
  s=${s%.ops}
  record "$s" "rebuild files/s ($((KEYS * 3)) files)" "$(python3 -c "print(round($KEYS * 3 / ($t1 - $t0)))")"
  record "$s" "rebalance 5→3 of $KEYS keys, s" "$(python3 -c "print(round($t2 - $t1, 2))")"
  stop "${VPIDS[@]}"
}

# The physical limits: a bare HTTP responder and raw small-file operations.
limits() {
  local base=$WORK/bare pid t0 n
  mkdir -p "$base/tmp"
  cat > "$base/nginx.conf" <<EOF
daemon off; master_process off; worker_processes 1; error_log stderr warn; pid $base/nginx.pid;
events { use epoll; multi_accept on; worker_connections 4096; }
http { access_log off; client_body_temp_path $base/tmp;
  server { listen 127.0.0.1:$PORT backlog=4096; location / { return 204; } } }
EOF
  /usr/sbin/nginx -e stderr -p "$base" -c "$base/nginx.conf" 2>>"$WORK/volumes.log" &
  pid=$!; PIDS+=($pid); wait_port $PORT
  log "limits: bare responder"
  t0=$(ticks "$pid")
  wrk -t2 -c100 -d"${WRK_SECONDS}s" "http://127.0.0.1:$PORT/" > "$WORK/wrk-bare.txt"
  n=$(sed -n 's/^[[:space:]]*\([0-9]*\) requests in.*/\1/p' "$WORK/wrk-bare.txt")
  record limits "bare responder (nginx return 204) req/s" "$(sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\)/\1/p' "$WORK/wrk-bare.txt" | cut -d. -f1)"
  record limits "bare responder: server CPU µs/req" "$(us_per $(( $(ticks "$pid") - t0 )) "$n")"
  stop "$pid"
  log "limits: small files"
  "$HOARD" bench baseline --dir "$WORK" --disk-size 16MB --fsync-count 50 --small-files 5000 --json \
    > "$WORK/baseline.json"
  python3 - "$WORK/baseline.json" "$ROUND" >> "$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
f = r["small_files"]
for k in ["create_write_close", "rename", "unlink", "mkdir"]:
    print("%s\tlimits\traw %s per s (one thread)\t%d" % (sys.argv[2], k.replace("_", "+"), f[k + "_per_sec"]))
print("%s\tlimits\t4 KiB append + fdatasync per s\t%d" % (sys.argv[2], r["fsync"]["per_sec"]))
EOF
}

for p in $PORT "${VPORTS[@]}" 3001 3002 3003; do (echo > "/dev/tcp/127.0.0.1/$p") 2>/dev/null && { echo "port $p is in use" >&2; exit 1; }; done
: > "$RESULTS"
log "hoard: $HOARD; minikeyvalue: $MKV; $(nproc) cores; volumes: ${VOLUME_ARGS:-default}; in $WORK"
for ROUND in $(seq "$ROUNDS"); do
  log "round $ROUND of $ROUNDS"
  for s in $SETUPS; do rm -rf "${WORK:?}/$s" "$WORK/$s.ops"; done
  limits
  for s in $SETUPS; do
    start_setup "$s"
    curl -sS -f -X PUT --data-binary "hoard bench wrk" "http://127.0.0.1:$PORT/wrk-key" >/dev/null
    thrasher "$s"
    wrk_case "$s" existing /wrk-key
    wrk_case "$s" missing /wrk-missing
    big "$s"
    case ${s%:before} in nginx|native|native-nofsync) volume_direct "$s" ;; esac
    case ${s%:before} in
      mkv|nginx|native-nofsync) ops "$s" ;;
      *) stop "$IPID" "${VPIDS[@]}" ;;
    esac
  done
done

python3 - "$RESULTS" "$SETUPS" "$ROUNDS" <<'EOF'
import statistics, sys
rows, order, rounds = {}, sys.argv[2].split(), int(sys.argv[3])
for line in open(sys.argv[1]):
    r, s, metric, value = line.rstrip("\n").split("\t")
    rows.setdefault(metric, {}).setdefault(s, {})[r] = float(value)
def fmt(v):
    return str(int(v)) if v == int(v) and abs(v) >= 10 else "%.2f" % v
def median(by_round):
    return fmt(statistics.median(by_round.values())) if by_round else "—"
names = {"mkv": "minikeyvalue / nginx", "nginx": "hoard / nginx", "native-nofsync": "hoard / native --fsync=false",
         "native": "hoard / native (fsync)", "dev": "hoard dev (fsync)"}
name = lambda s: names.get(s, s) if not s.endswith(":before") else names.get(s[:-7], s[:-7]) + " (before)"
if rounds > 1:
    print("Median of %d rounds.\n" % rounds)
print("| metric | " + " | ".join(name(s) for s in order) + " |")
print("|---|" + "---|" * len(order))
for metric, vals in rows.items():
    if "limits" in vals:
        continue
    print("| %s | %s |" % (metric, " | ".join(median(vals.get(s, {})) for s in order)))
thr = rows.get("thrasher ops/s", {})
if thr.get("mkv"):
    def ratio(s):
        per_round = [thr[s][r] / thr["mkv"][r] for r in thr.get(s, {}) if thr["mkv"].get(r)]
        return "%.2f" % statistics.median(per_round) if per_round else "—"
    print("| thrasher ratio to minikeyvalue%s | %s |" % (
        " (median of the rounds' ratios)" if rounds > 1 else "", " | ".join(ratio(s) for s in order)))
print()
print("| physical limit (same run) | value |\n|---|---|")
for metric, vals in rows.items():
    if "limits" in vals:
        print("| %s | %s |" % (metric, median(vals["limits"])))
EOF
