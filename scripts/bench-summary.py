#!/usr/bin/env python3
"""Medians (and min-max) of the runs scripts/bench-all.sh wrote into OUT, as Markdown.

usage: scripts/bench-summary.py OUT
"""
import glob
import json
import os
import re
import statistics
import sys


def load(out, prefix):
    """The runs of one workload; failed runs are listed and left out."""
    runs = []
    for path in sorted(glob.glob(os.path.join(out, prefix + "-*.json"))):
        try:
            with open(path) as f:
                run = json.load(f)
        except (OSError, ValueError):
            print(f"_{os.path.basename(path)}: no report (the run did not finish)_\n")
            continue
        if run.get("errors"):
            print(f"_{os.path.basename(path)}: FAILED, left out: {run.get('first_error')}_\n")
            continue
        runs.append(run)
    return runs


def cell(values, fmt="{:.0f}"):
    if not values:
        return "-"
    med = fmt.format(statistics.median(values))
    if len(values) == 1:
        return med
    return f"{med} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def wrk(out, case):
    rows = []
    for path in sorted(glob.glob(os.path.join(out, f"wrk-{case}-*.txt"))):
        text = open(path).read()
        unit = {"us": 1e-3, "ms": 1.0, "s": 1e3}
        pct = {}
        for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
            pct[p] = float(v) * unit[u]
        rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
        errs = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
        rows.append((float(rps.group(1)) if rps else 0.0, pct.get("50"), pct.get("99"),
                     int(errs.group(1)) if errs else 0))
    return rows


def main(out):
    print(f"Medians of the runs in `{out}` (min–max in parentheses).\n")
    thr = load(out, "thrasher")
    if thr:
        print(f"### thrasher ({len(thr)} runs, {thr[0]['keys']} keys, {thr[0]['concurrency']} workers)\n")
        print("| metric | value |\n|---|---|")
        print(f"| ops/s | {cell([r['ops_per_sec'] for r in thr])} |")
        print(f"| requests/s | {cell([r['requests_per_sec'] for r in thr])} |")
        for k in ["put", "get_redirect", "get_volume", "delete"]:
            p50 = cell([r["latency"][k]["p50_ms"] for r in thr], "{:.2f}")
            p99 = cell([r["latency"][k]["p99_ms"] for r in thr], "{:.2f}")
            print(f"| {k} p50 / p99 ms | {p50} / {p99} |")
        print(f"| errors | {sum(r['errors'] for r in thr)} |\n")
    red = load(out, "redirect")
    if red:
        print(f"### get-redirect, hoard bench ({len(red)} runs, {red[0]['connections']} connections, "
              f"{red[0]['threads']} threads, {red[0]['duration_s']:.0f}s)\n")
        print("| case | req/s | p50 ms | p99 ms |\n|---|---|---|---|")
        for case in ["existing", "missing"]:
            cs = [c for r in red for c in r["cases"] if c["case"] == case]
            print(f"| {case} | {cell([c['req_per_sec'] for c in cs])} | "
                  f"{cell([c['latency']['p50_ms'] for c in cs], '{:.2f}')} | "
                  f"{cell([c['latency']['p99_ms'] for c in cs], '{:.2f}')} |")
        print()
    if glob.glob(os.path.join(out, "wrk-*.txt")):
        print("### get-redirect, wrk -t2 -c100 -d10s\n")
        print("| case | req/s | p50 ms | p99 ms | non-2xx/3xx |\n|---|---|---|---|---|")
        for case in ["existing", "missing", "health"]:
            rows = wrk(out, case)
            if rows:
                print(f"| {case} | {cell([r[0] for r in rows])} | "
                      f"{cell([r[1] for r in rows if r[1] is not None], '{:.2f}')} | "
                      f"{cell([r[2] for r in rows if r[2] is not None], '{:.2f}')} | "
                      f"{cell([r[3] for r in rows])} |")
        print()
    for prefix, title in [("large", "large, through the index"), ("baseline", "baseline")]:
        runs = load(out, prefix)
        if not runs:
            continue
        print(f"### {title} ({len(runs)} runs)\n")
        print("| transfer | MB/s | idle RSS MiB | peak RSS MiB | delta MiB |\n|---|---|---|---|---|")
        keys = [(t["op"], t["size"], t["via"]) for t in runs[0]["transfers"]]
        for op, size, via in keys:
            ts = [t for r in runs for t in r["transfers"]
                  if (t["op"], t["size"], t["via"]) == (op, size, via)]
            rss = [t["rss"] for t in ts if t.get("rss")]
            mib = lambda f: cell([x[f] / 1024 for x in rss], "{:.1f}")
            print(f"| {op.upper()} {size} {via} | {cell([t['mb_per_sec'] for t in ts])} | "
                  f"{mib('idle_kb')} | {mib('peak_kb')} | {mib('delta_kb')} |")
        disks = [r["disk"] for r in runs if r.get("disk")]
        if disks:
            print(f"| disk write {disks[0]['bytes'] >> 20}MB + fdatasync | "
                  f"{cell([d['mb_per_sec'] for d in disks])} | | | |")
        fs = [r["fsync"] for r in runs if r.get("fsync")]
        if fs:
            print(f"\nsmall append + fdatasync: {cell([f['per_sec'] for f in fs])}/s, "
                  f"p50 {cell([f['latency']['p50_ms'] for f in fs], '{:.2f}')} ms, "
                  f"p99 {cell([f['latency']['p99_ms'] for f in fs], '{:.2f}')} ms")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-out")
