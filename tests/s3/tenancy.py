#!/usr/bin/env python3
"""Tenancy (issue 26) as S3 users and an operator see it. Run by tests/tenancy.rs:

    tenancy.py SCENARIO HOARD_BIN ADMIN_TOKEN ADMIN_URL S3_ENDPOINT [S3_ENDPOINT2]

SCENARIO is `isolation` (two keys, grants, revocation, quotas, key deletion) or
`cluster` (a key and grants created through ADMIN_URL, one index cluster member, used
at once through S3_ENDPOINT and S3_ENDPOINT2, other members). Access keys are created
with `hoard key create` against ADMIN_URL; every check asserts what a user sees.
"""
import subprocess
import sys

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

SCENARIO, HOARD, TOKEN, ADMIN = sys.argv[1:5]
ENDPOINTS = sys.argv[5:]


def hoard(*args):
    """Runs a hoard client command against the admin URL; its stdout."""
    out = subprocess.run(
        [HOARD, *args, "--url", ADMIN, "--token", TOKEN],
        capture_output=True, text=True,
    )
    assert out.returncode == 0, f"hoard {args}: {out.stdout}{out.stderr}"
    return out.stdout


def new_key(name):
    """`hoard key create NAME`: (id, secret) as printed."""
    lines = dict(
        line.split(":", 1) for line in hoard("key", "create", name).splitlines() if ":" in line
    )
    return lines["access key id"].strip(), lines["secret key"].strip()


def client(key, endpoint=None):
    return boto3.client(
        "s3",
        endpoint_url=endpoint or ENDPOINTS[0],
        region_name="us-east-1",
        aws_access_key_id=key[0],
        aws_secret_access_key=key[1],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def code_of(call, *args, **kwargs):
    """The S3 error code a call fails with (AssertionError if it succeeds)."""
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} succeeded")


def denied(call, *args, **kwargs):
    code = code_of(call, *args, **kwargs)
    assert code in ("AccessDenied", "403"), f"{call.__name__}: {code}"


def names(s3):
    return sorted(b["Name"] for b in s3.list_buckets()["Buckets"])


def multipart(s3, bucket, key, parts):
    up = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    done = []
    for i, part in enumerate(parts, start=1):
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=up, PartNumber=i, Body=part)["ETag"]
        done.append({"PartNumber": i, "ETag": etag})
    return up, done


def isolation():
    bob_key = new_key("bob")
    alice, bob = client(new_key("alice")), client(bob_key)
    bob_id = bob_key[0]
    alice.create_bucket(Bucket="alice-b")
    bob.create_bucket(Bucket="bob-b")
    alice.put_object(Bucket="alice-b", Key="secret.txt", Body=b"alice's")
    bob.put_object(Bucket="bob-b", Key="mine.txt", Body=b"bob's")

    # Each sees and touches only their own bucket.
    assert names(alice) == ["alice-b"], names(alice)
    assert names(bob) == ["bob-b"], names(bob)
    denied(bob.get_object, Bucket="alice-b", Key="secret.txt")
    denied(bob.head_object, Bucket="alice-b", Key="secret.txt")
    denied(bob.list_objects_v2, Bucket="alice-b")
    denied(bob.head_bucket, Bucket="alice-b")
    denied(bob.put_object, Bucket="alice-b", Key="x", Body=b"x")
    denied(bob.delete_object, Bucket="alice-b", Key="secret.txt")
    denied(bob.delete_objects, Bucket="alice-b", Delete={"Objects": [{"Key": "secret.txt"}]})
    denied(bob.delete_bucket, Bucket="alice-b")
    denied(bob.create_multipart_upload, Bucket="alice-b", Key="mp")
    # Copies: reading another's source, or writing into another's bucket.
    denied(bob.copy_object, Bucket="bob-b", Key="stolen",
           CopySource={"Bucket": "alice-b", "Key": "secret.txt"})
    denied(bob.copy_object, Bucket="alice-b", Key="planted",
           CopySource={"Bucket": "bob-b", "Key": "mine.txt"})
    up, _ = multipart(bob, "bob-b", "mp", [b"p" * 5])
    denied(bob.upload_part_copy, Bucket="bob-b", Key="mp", UploadId=up, PartNumber=2,
           CopySource={"Bucket": "alice-b", "Key": "secret.txt"})
    # Alice's multipart upload is hers: bob can neither list nor complete nor abort it.
    aup, aparts = multipart(alice, "alice-b", "big", [b"a" * (5 << 20), b"b"])
    denied(bob.list_parts, Bucket="alice-b", Key="big", UploadId=aup)
    denied(bob.upload_part, Bucket="alice-b", Key="big", UploadId=aup, PartNumber=3, Body=b"z")
    denied(bob.complete_multipart_upload, Bucket="alice-b", Key="big", UploadId=aup,
           MultipartUpload={"Parts": aparts})
    denied(bob.abort_multipart_upload, Bucket="alice-b", Key="big", UploadId=aup)
    denied(bob.list_multipart_uploads, Bucket="alice-b")
    alice.complete_multipart_upload(Bucket="alice-b", Key="big", UploadId=aup,
                                    MultipartUpload={"Parts": aparts})
    assert alice.get_object(Bucket="alice-b", Key="secret.txt")["Body"].read() == b"alice's"
    assert code_of(alice.create_bucket, Bucket="bob-b") == "BucketAlreadyExists"

    # A read grant: bob reads and lists, copies out, but still cannot write.
    hoard("bucket", "allow", "--read", "alice-b", "--key", bob_id)
    assert names(bob) == ["alice-b", "bob-b"], names(bob)
    assert bob.get_object(Bucket="alice-b", Key="secret.txt")["Body"].read() == b"alice's"
    keys = [o["Key"] for o in bob.list_objects_v2(Bucket="alice-b")["Contents"]]
    assert keys == ["big", "secret.txt"], keys
    bob.copy_object(Bucket="bob-b", Key="copied", CopySource={"Bucket": "alice-b", "Key": "secret.txt"})
    denied(bob.put_object, Bucket="alice-b", Key="x", Body=b"x")
    # A write grant: now bob writes, deletes and uploads in parts too.
    hoard("bucket", "allow", "--write", "alice-b", "--key", bob_id)
    bob.put_object(Bucket="alice-b", Key="from-bob", Body=b"hi")
    up, parts = multipart(bob, "alice-b", "bob-mp", [b"c" * (5 << 20), b"d"])
    bob.complete_multipart_upload(Bucket="alice-b", Key="bob-mp", UploadId=up,
                                  MultipartUpload={"Parts": parts})
    bob.delete_object(Bucket="alice-b", Key="from-bob")
    denied(bob.delete_bucket, Bucket="alice-b")  # not the owner
    # Revoked: denied again at once.
    hoard("bucket", "deny", "--write", "alice-b", "--key", bob_id)
    hoard("bucket", "deny", "--read", "alice-b", "--key", bob_id)
    denied(bob.get_object, Bucket="alice-b", Key="secret.txt")
    denied(bob.put_object, Bucket="alice-b", Key="x", Body=b"x")
    assert names(bob) == ["bob-b"], names(bob)

    # Quotas: objects and bytes, on PUT, copy and multipart completion.
    hoard("bucket", "quota", "bob-b", "--max-objects", "3", "--max-bytes", str(6 << 20))
    listed = hoard("bucket", "list")
    assert "bob-b  owner " + bob_id + "  2 objects" in listed, listed
    bob.put_object(Bucket="bob-b", Key="third", Body=b"3")  # mine.txt, copied, third
    assert code_of(bob.put_object, Bucket="bob-b", Key="fourth", Body=b"4") == "QuotaExceeded"
    bob.put_object(Bucket="bob-b", Key="third", Body=b"overwrite: no new object")
    assert code_of(bob.copy_object, Bucket="bob-b", Key="fourth",
                   CopySource={"Bucket": "bob-b", "Key": "mine.txt"}) == "QuotaExceeded"
    bob.delete_object(Bucket="bob-b", Key="third")
    up, parts = multipart(bob, "bob-b", "huge", [b"e" * (5 << 20), b"f" * (2 << 20)])
    assert code_of(bob.complete_multipart_upload, Bucket="bob-b", Key="huge", UploadId=up,
                   MultipartUpload={"Parts": parts}) == "QuotaExceeded"
    assert code_of(bob.head_object, Bucket="bob-b", Key="huge") == "404"
    hoard("bucket", "quota", "bob-b")  # no limits
    bob.complete_multipart_upload(Bucket="bob-b", Key="huge", UploadId=up,
                                  MultipartUpload={"Parts": parts})
    bob.put_object(Bucket="bob-b", Key="fourth", Body=b"4")

    # A deleted key is refused.
    hoard("key", "delete", bob_id)
    assert code_of(bob.list_buckets) == "InvalidAccessKeyId"
    assert bob_id not in hoard("key", "list")
    print("isolation: ok")


def cluster():
    # Created through one member, used at once through another.
    carol = new_key("carol")
    via1, via2 = client(carol, ENDPOINTS[0]), client(carol, ENDPOINTS[1])
    via1.create_bucket(Bucket="carol-b")
    via1.put_object(Bucket="carol-b", Key="k", Body=b"v")
    assert via2.get_object(Bucket="carol-b", Key="k")["Body"].read() == b"v"
    dave = new_key("dave")
    dave_id = dave[0]
    dave2 = client(dave, ENDPOINTS[1])
    assert names(dave2) == [], names(dave2)
    denied(dave2.get_object, Bucket="carol-b", Key="k")
    hoard("bucket", "allow", "--read", "carol-b", "--key", dave_id)
    assert dave2.get_object(Bucket="carol-b", Key="k")["Body"].read() == b"v"
    hoard("bucket", "deny", "--read", "carol-b", "--key", dave_id)
    denied(client(dave, ENDPOINTS[0]).get_object, Bucket="carol-b", Key="k")
    denied(dave2.get_object, Bucket="carol-b", Key="k")
    hoard("key", "delete", dave_id)
    assert code_of(dave2.list_buckets) == "InvalidAccessKeyId"
    print("cluster: ok")


{"isolation": isolation, "cluster": cluster}[SCENARIO]()
