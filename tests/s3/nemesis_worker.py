"""S3 clients of the nemesis suite (tests/nemesis.rs): boto3, a real S3 client, against
every member of an index cluster, recording every request as one JSON line.

Usage: nemesis_worker.py OUT ACCESS SECRET BUCKET PREFIX STOPFILE ID=URL [ID=URL ...]
       (STOPFILE "final": read every key ever used, listed in OUT.keys, once through
       every member, after the faults, and append those reads to OUT)

Each of 4 threads overwrites (PUT), reads (GET) and deletes (DELETE) a few keys at a
time under PREFIX, moving to fresh keys every 12 operations per key, until STOPFILE
exists (or 20,000 requests). A line per request: client, node, key, op ("set": an
overwriting PUT of a unique value, "get", "remove": an idempotent DELETE), value id,
invoked_ns / returned_ns (CLOCK_MONOTONIC, the clock Rust's Instant reads; returned
null when the outcome is unknown) and the outcome: "Created", "Deleted", "Absent",
"Value(N)", "failed" (refused before anything was sent) or "unknown" (timeout, 5xx,
broken connection). Retries are off: every request is one attempt
(`total_max_attempts: 1` — botocore's `max_attempts` counts *retries*, and a retried
request whose first attempt was applied is a second write the history does not show:
the suite once "found" lost and resurrected S3 values that were only that).
"""

import json
import os
import random
import sys
import threading
import time

import boto3
import botocore.config
import botocore.exceptions

OUT, ACCESS, SECRET, BUCKET, PREFIX, STOPFILE = sys.argv[1:7]
NODES = [(int(n.split("=", 1)[0]), n.split("=", 1)[1]) for n in sys.argv[7:]]
THREADS = 4
KEYS_PER_GEN = 4
OPS_PER_KEY = 12
MAX_REQUESTS = 20_000

lock = threading.Lock()
# The final reads append to the history the load wrote.
out = open(OUT, "a" if STOPFILE == "final" else "w", buffering=1)
seq = [0]
values = [0]


def client(url):
    cfg = botocore.config.Config(
        retries={"total_max_attempts": 1, "mode": "standard"},
        connect_timeout=2,
        read_timeout=4,
        s3={"addressing_style": "path"},
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=ACCESS,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        config=cfg,
    )


def record(c, node, key, op, value, invoked, returned, outcome, error=None):
    line = {
        "error": error,
        "client": 100 + c,
        "node": node,
        "key": key,
        "op": op,
        "value": value,
        "invoked_ns": invoked,
        "returned_ns": returned,
        "outcome": outcome,
    }
    with lock:
        out.write(json.dumps(line) + "\n")


def classify(e):
    """failed (certainly not applied) or unknown.

    Only a connection that could not be made (refused, or its connect timed out: nothing
    was sent) and a 409 (another write of the key holds it: refused before anything is
    recorded) are certain; any other error may come after the change was applied.
    """
    if isinstance(e, botocore.exceptions.ClientError):
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500)
        return "failed" if status == 409 else "unknown"
    if type(e) in (
        botocore.exceptions.EndpointConnectionError,
        botocore.exceptions.ConnectTimeoutError,
    ):
        return "failed"
    return "unknown"


AWAY_FROM_HOME = 32


def run(c):
    rng = random.Random(c * 7919 + 17)
    clients = {node: client(url) for node, url in NODES}
    # Like tests/common/workload.rs: move on to the next member after any failure,
    # back to its own after AWAY_FROM_HOME answers elsewhere.
    home = target = c % len(NODES)
    away = 0
    for _ in range(MAX_REQUESTS // THREADS):
        if os.path.exists(STOPFILE):
            return
        with lock:
            s = seq[0]
            seq[0] += 1
        gen = s // (KEYS_PER_GEN * OPS_PER_KEY)
        key = f"{PREFIX}/g{gen}/k{s % KEYS_PER_GEN}"
        node, _ = NODES[target]
        s3 = clients[node]
        roll = rng.randrange(100)
        invoked = time.monotonic_ns()
        try:
            if roll < 40:
                with lock:
                    values[0] += 1
                    v = 10_000_000 + values[0]
                s3.put_object(Bucket=BUCKET, Key=key, Body=f"{key}|{v}".encode())
                record(c, node, key, "set", v, invoked, time.monotonic_ns(), "Created")
            elif roll < 80:
                try:
                    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
                    got = int(body.rsplit("|", 1)[1])
                    outcome = f"Value({got})"
                except botocore.exceptions.ClientError as e:
                    if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
                        outcome = "Absent"
                    else:
                        raise
                record(c, node, key, "get", None, invoked, time.monotonic_ns(), outcome)
            else:
                s3.delete_object(Bucket=BUCKET, Key=key)
                record(c, node, key, "remove", None, invoked, time.monotonic_ns(), "Deleted")
        except Exception as e:  # noqa: BLE001 - every failure is recorded
            kind = classify(e)
            op = "set" if roll < 40 else ("get" if roll < 80 else "remove")
            value = v if roll < 40 else None
            returned = time.monotonic_ns() if kind == "failed" else None
            record(c, node, key, op, value, invoked, returned, kind, f"{type(e).__name__}: {e}"[:200])
            target = (target + 1) % len(NODES)
            time.sleep(0.1)
            continue
        if target != home:
            away += 1
            if away >= AWAY_FROM_HOME:
                target, away = home, 0


def final_reads():
    """Reads every key ever used through every member, once each."""
    keys = sorted({json.loads(line)["key"] for line in open(OUT)})
    for node, url in NODES:
        s3 = client(url)
        for key in keys:
            invoked = time.monotonic_ns()
            try:
                body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
                outcome = "Value(%d)" % int(body.rsplit("|", 1)[1])
            except botocore.exceptions.ClientError as e:
                if e.response["Error"]["Code"] not in ("NoSuchKey", "404"):
                    raise
                outcome = "Absent"
            record(1000 + node, node, key, "get", None, invoked, time.monotonic_ns(), outcome)
    out.close()


def main():
    if STOPFILE == "final":
        final_reads()
        return
    s3 = client(NODES[0][1])
    deadline = time.monotonic() + 60
    while True:
        try:
            s3.create_bucket(Bucket=BUCKET)
            break
        except botocore.exceptions.ClientError as e:
            if e.response["Error"]["Code"] in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                break
            if time.monotonic() > deadline:
                raise
        except Exception:  # noqa: BLE001 - the cluster may be electing
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)
    threads = [threading.Thread(target=run, args=(c,)) for c in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()


main()
