#!/usr/bin/env python3
"""S3 operations for tests/sites_skew.rs, one process per batch:

    sites_ops.py S3_ENDPOINT < ops.json > results.json

ops: a JSON list of {"op": "put" or "multipart" (one part), "key", "body", "ct",
"meta": {...}},
{"op": "delete", "key"}, {"op": "mkbucket"} or {"op": "state", "key"}, all in bucket
"skew". Each result is {"ok": bool, "error": str} — and for "state": {"exists",
"body" (hex md5), "size", "ct", "meta", "etag"}. Credentials come from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import hashlib
import json
import sys

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

BUCKET = "skew"
s3 = boto3.client(
    "s3",
    endpoint_url=sys.argv[1],
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
)


def run(op):
    kind = op["op"]
    if kind == "mkbucket":
        try:
            s3.create_bucket(Bucket=BUCKET)
        except ClientError as e:
            if e.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise
        return {}
    if kind == "put":
        s3.put_object(
            Bucket=BUCKET,
            Key=op["key"],
            Body=op["body"].encode(),
            ContentType=op["ct"],
            Metadata=op["meta"],
        )
        return {}
    if kind == "multipart":
        up = s3.create_multipart_upload(
            Bucket=BUCKET, Key=op["key"], ContentType=op["ct"], Metadata=op["meta"]
        )
        part = s3.upload_part(
            Bucket=BUCKET,
            Key=op["key"],
            UploadId=up["UploadId"],
            PartNumber=1,
            Body=op["body"].encode(),
        )
        s3.complete_multipart_upload(
            Bucket=BUCKET,
            Key=op["key"],
            UploadId=up["UploadId"],
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        )
        return {}
    if kind == "delete":
        s3.delete_object(Bucket=BUCKET, Key=op["key"])
        return {}
    if kind == "state":
        try:
            got = s3.get_object(Bucket=BUCKET, Key=op["key"])
        except ClientError as e:
            if e.response["Error"]["Code"] == "NoSuchKey":
                return {"exists": False}
            raise
        body = got["Body"].read()
        return {
            "exists": True,
            "md5": hashlib.md5(body).hexdigest(),
            "body": body.decode(errors="replace"),
            "ct": got.get("ContentType"),
            "meta": got.get("Metadata", {}),
            "etag": got.get("ETag"),
        }
    raise ValueError(f"unknown op {kind}")


out = []
for op in json.load(sys.stdin):
    try:
        r = run(op)
        r["ok"] = True
    except Exception as e:  # the test decides what a failure means
        r = {"ok": False, "error": f"{type(e).__name__}: {e}"}
    out.append(r)
json.dump(out, sys.stdout)
