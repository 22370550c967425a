#!/usr/bin/env bash
# Runs ceph/s3-tests (the S3 conformance suite Garage and s3s run) against `hoard dev`
# and writes docs/S3-COMPATIBILITY.md: per group of operations, how many of its tests
# pass, and whether hoard supports it fully, partly or not.
#
# Usage: scripts/s3-tests.sh [--s3-tests DIR] [-k EXPR] [--out FILE] [--keep]
#
#   --s3-tests DIR  a checkout of ceph/s3-tests (default: cloned at the pinned commit
#                   below into .cache/s3-tests — needs github.com)
#   -k EXPR         only the tests pytest's -k selects (default: all of test_s3.py and
#                   test_headers.py, about 30 min on 2 cores)
#   --out FILE      the report (default docs/S3-COMPATIBILITY.md; with -k, the report
#                   goes to target/s3-tests/report.md unless --out is given)
#   --keep          keep the store's data and log in target/s3-tests/
#
# Everything it makes is under .cache/ (the checkout, a Python venv with the suite's
# requirements from PyPI) and target/s3-tests/ (config, results, the store). The store
# is a release build of hoard, `hoard dev` on free ports, with the suite's users (main,
# alt, tenant, iam…) as S3 users. Run by hand; CI runs the small subset in
# tests/s3/compat.py (tests/s3_bounds.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
PIN=8f0ae7b  # ceph/s3-tests main, 2026-12 ("Merge pull request #739")
tests="" filter="" out="" keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --s3-tests) tests="$2"; shift 2 ;;
    -k) filter="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "s3-tests.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
work=$root/target/s3-tests
mkdir -p "$work" .cache
if [ -z "$tests" ]; then
  tests=.cache/s3-tests
  if [ ! -d "$tests/.git" ]; then
    git clone -q https://github.com/ceph/s3-tests "$tests"
  fi
  git -C "$tests" checkout -q "$PIN"
fi
tests=$(cd "$tests" && pwd)
[ -n "$out" ] || { [ -n "$filter" ] && out=$work/report.md || out=$root/docs/S3-COMPATIBILITY.md; }

venv=.cache/s3-tests-venv
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q boto3 botocore munch isodate requests pytz httplib2 lxml pytest pyyaml gevent
fi

cargo build --release --locked -q
bin=$root/target/release/hoard

# The suite's sample config, pointed at the store; every user in it is an S3 user.
port=$(python3 -c 'import socket
for p in range(27000, 40000, 7):
    try:
        ss = [socket.socket() for _ in range(7)]
        for i, s in enumerate(ss): s.bind(("127.0.0.1", p + i))
        [s.close() for s in ss]; print(p); break
    except OSError: [s.close() for s in ss]')
python3 - "$tests/s3tests.conf.SAMPLE" "$work/s3tests.conf" "$work/keys" "$work/main" "$((port + 4))" <<'PY'
import configparser, sys
sample, conf, keys, main, s3port = sys.argv[1:]
text = open(sample).read().replace("host = localhost", "host = 127.0.0.1").replace("port = 8000", f"port = {s3port}")
open(conf, "w").write(text)
c = configparser.ConfigParser()
c.read(conf)
users = [(c.get(s, "access_key"), c.get(s, "secret_key")) for s in c.sections() if c.has_option(s, "access_key")]
main_user = (c.get("s3 main", "access_key"), c.get("s3 main", "secret_key"))
open(keys, "w").write("".join(f"{k} {v}\n" for k, v in users if (k, v) != main_user))
open(main, "w").write(f"{main_user[0]}\n{main_user[1]}\n")
PY
rm -rf "$work/data"
{ read -r access; read -r secret; } <"$work/main"
HOARD_S3_ACCESS_KEY=$access HOARD_S3_SECRET_KEY=$secret "$bin" dev --data "$work/data" --port "$port" \
  --s3-keys-file "$work/keys" >"$work/dev.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; [ "$keep" = 1 ] || rm -rf "$work/data"; }
trap cleanup EXIT
for _ in $(seq 100); do curl -sf "127.0.0.1:$port/-/health" >/dev/null && break; sleep 0.1; done

echo "== s3-tests $(git -C "$tests" rev-parse --short HEAD) against hoard $("$bin" --version | head -1), $(date -u +%FT%TZ)"
args=(-q -p no:cacheprovider --junitxml="$work/results.xml")
[ -n "$filter" ] && args+=(-k "$filter")
(cd "$tests" && S3TEST_CONF=$work/s3tests.conf "$root/$venv/bin/python" -m pytest \
  s3tests/functional/test_s3.py s3tests/functional/test_headers.py "${args[@]}" | tail -3) || true
python3 scripts/s3-compat-report.py "$work/results.xml" "$(git -C "$tests" rev-parse --short HEAD)" >"$out"
echo "report: $out"
