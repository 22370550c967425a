#!/usr/bin/env bash
# Fault soak of the HA index (tests/nemesis.rs, `mixed`): a 3-member index cluster and
# its volumes in network namespaces of their own, faults injected at random from a
# seed (partitions, one-way loss, flapping links, SIGSTOP, kill -9 of one, of both
# followers and of all members, a follower wiped and rejoined under a new id, volumes
# cut off; index clocks offset by minutes), 16 clients recording every request, 4
# boto3 S3 clients (overwrite, read, delete) and 4 JSON/binary-protocol clients, each
# with their own history; each round's histories are checked (linearizability per
# key, no acknowledged write lost, one leader per term) and the report written
# (with the elections no fault provoked).
#
# Usage: scripts/nemesis.sh --minutes N [--seed S] [--out DIR] [--no-s3]
#   --no-s3 leaves the S3 clients out (a machine without Python/boto3).
#   Writes DIR/report.json (faults by kind, operations, anomalies by kind, failover
#   times as a histogram) and DIR/*.jsonl (every round's history). Needs root.
#   Release build; every fault and load loop is bounded, and the namespaces,
#   links and rules it makes are removed when it ends (or by the next run).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=5 seed="" out="target/nemesis-$(date +%Y%m%d-%H%M%S)"
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-s3) export HOARD_NEMESIS_S3=0; shift ;;
    --s3) shift ;; # the default (kept for old command lines)
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "nemesis.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "nemesis.sh: needs root (network namespaces, iptables)" >&2; exit 2; }
mkdir -p "$out"
out=$(cd "$out" && pwd)
export HOARD_NEMESIS_SECONDS=$((minutes * 60))
export HOARD_NEMESIS_REPORT="$out/report.json"
export HOARD_NEMESIS_HISTORY_DIR="$out"
[ -n "$seed" ] && export HOARD_NEMESIS_SEED="$seed"
echo "== nemesis: $minutes min, report in $out"
status=0
cargo test --release --test nemesis mixed -- --nocapture 2>&1 | tee "$out/log.txt" || status=$?
[ -f "$out/report.json" ] && cat "$out/report.json"
exit $status
