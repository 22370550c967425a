#!/usr/bin/env python3
"""S3 steps of tests/overwrite.rs (issue 25), with boto3 against ENDPOINT.

  overwrite.py ENDPOINT put BUCKET KEY FILE   create the bucket if needed, PUT the file
  overwrite.py ENDPOINT presign-put BUCKET KEY print a presigned PUT URL
  overwrite.py ENDPOINT md5 BUCKET KEY         print the md5 of the object's bytes
  overwrite.py ENDPOINT md5-or-error BUCKET KEY  the same, or `error` when the GET
                                               or the reading of its body fails
  overwrite.py ENDPOINT race BUCKET KEY N      N PUTs of one key at once, each its own
                                               1 MiB value: prints the ETags
                                               acknowledged, then the one a GET finds
Credentials come from the environment (AWS_ACCESS_KEY_ID, ...).
"""
import hashlib
import sys
import threading

import boto3
from botocore.config import Config


def client(endpoint):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(
            signature_version="s3v4",
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def ensure_bucket(s3, bucket):
    try:
        s3.create_bucket(Bucket=bucket)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    except s3.exceptions.ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyExists", "BucketAlreadyOwnedByYou"):
            raise


def main():
    endpoint, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    s3 = client(endpoint)
    if cmd == "put":
        bucket, key, path = args
        ensure_bucket(s3, bucket)
        with open(path, "rb") as f:
            s3.put_object(Bucket=bucket, Key=key, Body=f.read())
    elif cmd == "presign-put":
        bucket, key = args
        print(s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=600))
    elif cmd == "md5":
        bucket, key = args
        body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        print(hashlib.md5(body).hexdigest())
    elif cmd == "md5-or-error":
        bucket, key = args
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as e:  # a broken transfer: what the caller checks for
            print("error", file=sys.stdout)
            print(repr(e), file=sys.stderr)
            return
        print(hashlib.md5(body).hexdigest())
    elif cmd == "race":
        bucket, key, n = args[0], args[1], int(args[2])
        ensure_bucket(s3, bucket)
        etags, errors = [], []
        barrier = threading.Barrier(n)

        def put(i):
            c = client(endpoint)
            body = bytes([i]) * (1 << 20)
            barrier.wait()
            try:
                etags.append(c.put_object(Bucket=bucket, Key=key, Body=body)["ETag"].strip('"'))
            except Exception as e:  # reported below: every PUT must succeed
                errors.append(repr(e))

        threads = [threading.Thread(target=put, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            sys.exit("PUTs failed: " + "; ".join(errors))
        print(" ".join(etags))
        print(s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"'))
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
