#!/usr/bin/env python3
"""What boto3 users do, against hoard's S3 API. Run by tests/s3.rs:

    boto3_client.py S3_ENDPOINT NATIVE_URL WORKDIR [CHECK...]

Every check asserts what a user sees; the first failure exits non-zero with a
traceback. Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
"""
import hashlib
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import ClientError

ENDPOINT, NATIVE, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
)


def code_of(call, *args, **kwargs):
    """The S3 error code a call fails with (AssertionError if it succeeds)."""
    try:
        call(*args, **kwargs)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{call.__name__} succeeded")


def native_get(key):
    with urllib.request.urlopen(NATIVE + key) as r:  # follows the 302 to a volume
        return r.read()


def buckets_and_objects():
    s3.create_bucket(Bucket="objs")
    assert code_of(s3.create_bucket, Bucket="objs") == "BucketAlreadyOwnedByYou"
    assert code_of(s3.create_bucket, Bucket="Bad_Name") == "InvalidBucketName"
    s3.head_bucket(Bucket="objs")
    assert "objs" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert s3.get_bucket_location(Bucket="objs").get("LocationConstraint") in (None, "")
    assert code_of(s3.head_bucket, Bucket="nosuch") in ("404", "NoSuchBucket")
    assert code_of(s3.get_object, Bucket="nosuch", Key="k") == "NoSuchBucket"

    body = b"hello, hoard over S3\n" * 100
    put = s3.put_object(
        Bucket="objs", Key="dir/hello.txt", Body=body,
        ContentType="text/plain", Metadata={"color": "Blue"},
    )
    md5 = hashlib.md5(body).hexdigest()
    assert put["ETag"] == f'"{md5}"', put["ETag"]
    got = s3.get_object(Bucket="objs", Key="dir/hello.txt")
    assert got["Body"].read() == body
    assert got["ContentType"] == "text/plain"
    assert got["Metadata"] == {"color": "Blue"}, got["Metadata"]
    assert got["ETag"] == f'"{md5}"'
    assert got["ContentLength"] == len(body)
    head = s3.head_object(Bucket="objs", Key="dir/hello.txt")
    assert head["ContentLength"] == len(body) and head["ETag"] == f'"{md5}"'
    assert head["Metadata"] == {"color": "Blue"}
    # The same key through the native API, and the other way round.
    assert native_get("/objs/dir/hello.txt") == body
    req = urllib.request.Request(NATIVE + "/objs/native.bin", data=b"native bytes", method="PUT")
    urllib.request.urlopen(req).read()
    assert s3.get_object(Bucket="objs", Key="native.bin")["Body"].read() == b"native bytes"
    # Overwrite (S3 PUT replaces).
    s3.put_object(Bucket="objs", Key="native.bin", Body=b"replaced")
    assert native_get("/objs/native.bin") == b"replaced"

    # Range.
    r = s3.get_object(Bucket="objs", Key="dir/hello.txt", Range="bytes=7-11")
    assert r["Body"].read() == body[7:12]
    assert r["ResponseMetadata"]["HTTPStatusCode"] == 206
    assert r["ContentRange"] == f"bytes 7-11/{len(body)}"
    r = s3.get_object(Bucket="objs", Key="dir/hello.txt", Range="bytes=-5")
    assert r["Body"].read() == body[-5:]
    assert code_of(s3.get_object, Bucket="objs", Key="dir/hello.txt",
                   Range=f"bytes={len(body) + 10}-") == "InvalidRange"

    # Conditional requests.
    assert code_of(s3.get_object, Bucket="objs", Key="dir/hello.txt", IfNoneMatch=f'"{md5}"') == "304"
    assert code_of(s3.get_object, Bucket="objs", Key="dir/hello.txt", IfMatch='"0000"') == "PreconditionFailed"
    assert s3.get_object(Bucket="objs", Key="dir/hello.txt", IfMatch=f'"{md5}"')["Body"].read() == body
    assert code_of(s3.head_object, Bucket="objs", Key="dir/hello.txt",
                   IfModifiedSince=head["LastModified"]) == "304"

    # Missing keys.
    assert code_of(s3.get_object, Bucket="objs", Key="nope") == "NoSuchKey"
    assert code_of(s3.head_object, Bucket="objs", Key="nope") == "404"
    s3.delete_object(Bucket="objs", Key="nope")  # 204 for an absent key too

    # Copy: metadata kept (COPY) or replaced.
    s3.copy_object(Bucket="objs", Key="copy.txt", CopySource={"Bucket": "objs", "Key": "dir/hello.txt"})
    c = s3.get_object(Bucket="objs", Key="copy.txt")
    assert c["Body"].read() == body and c["Metadata"] == {"color": "Blue"} and c["ETag"] == f'"{md5}"'
    s3.copy_object(Bucket="objs", Key="copy2.txt", CopySource="objs/dir/hello.txt",
                   MetadataDirective="REPLACE", Metadata={"k": "v"}, ContentType="application/x-test")
    c = s3.head_object(Bucket="objs", Key="copy2.txt")
    assert c["Metadata"] == {"k": "v"} and c["ContentType"] == "application/x-test"
    assert code_of(s3.copy_object, Bucket="objs", Key="c3", CopySource="objs/missing") == "NoSuchKey"

    # Delete, and a bucket is deleted only when empty.
    assert code_of(s3.delete_bucket, Bucket="objs") == "BucketNotEmpty"
    out = s3.delete_objects(Bucket="objs", Delete={"Objects": [
        {"Key": k} for k in ["dir/hello.txt", "native.bin", "copy.txt", "copy2.txt", "never-existed"]]})
    assert sorted(d["Key"] for d in out["Deleted"]) == sorted(
        ["dir/hello.txt", "native.bin", "copy.txt", "copy2.txt", "never-existed"]), out
    assert not out.get("Errors")
    assert code_of(s3.get_object, Bucket="objs", Key="copy.txt") == "NoSuchKey"
    s3.delete_bucket(Bucket="objs")
    assert code_of(s3.head_bucket, Bucket="objs") in ("404", "NoSuchBucket")


def listing():
    s3.create_bucket(Bucket="lst")
    keys = ["a", "b/1", "b/2", "b/3/x", "c/1", "d", "e/f/g", "e/h", "z"]
    for k in keys:
        s3.put_object(Bucket="lst", Key=k, Body=k.encode())
    # Everything, two at a time.
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket="lst", PaginationConfig={"PageSize": 2})
    seen = [o["Key"] for p in pages for o in p.get("Contents", [])]
    assert seen == keys, seen
    # Delimiter: prefixes roll up; paginated one entry a page.
    pages = s3.get_paginator("list_objects_v2").paginate(
        Bucket="lst", Delimiter="/", PaginationConfig={"PageSize": 1})
    objs, prefixes = [], []
    for p in pages:
        objs += [o["Key"] for o in p.get("Contents", [])]
        prefixes += [c["Prefix"] for c in p.get("CommonPrefixes", [])]
    assert objs == ["a", "d", "z"], objs
    assert prefixes == ["b/", "c/", "e/"], prefixes
    # Prefix + delimiter.
    r = s3.list_objects_v2(Bucket="lst", Prefix="b/", Delimiter="/")
    assert [o["Key"] for o in r["Contents"]] == ["b/1", "b/2"]
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["b/3/"]
    assert r["KeyCount"] == 3 and not r["IsTruncated"]
    # StartAfter, MaxKeys.
    r = s3.list_objects_v2(Bucket="lst", StartAfter="b/3/x", MaxKeys=2)
    assert [o["Key"] for o in r["Contents"]] == ["c/1", "d"] and r["IsTruncated"]
    o = r["Contents"][0]
    assert o["Size"] == 3 and o["ETag"] == '"%s"' % hashlib.md5(b"c/1").hexdigest()
    # v1 with marker.
    pages = s3.get_paginator("list_objects").paginate(Bucket="lst", PaginationConfig={"PageSize": 3})
    assert [o["Key"] for p in pages for o in p.get("Contents", [])] == keys
    r = s3.list_objects(Bucket="lst", Delimiter="/", Marker="b/")
    assert [c["Prefix"] for c in r["CommonPrefixes"]] == ["c/", "e/"], r
    # Empty results.
    assert s3.list_objects_v2(Bucket="lst", Prefix="nothing")["KeyCount"] == 0
    s3.delete_objects(Bucket="lst", Delete={"Objects": [{"Key": k} for k in keys], "Quiet": True})
    assert s3.list_objects_v2(Bucket="lst")["KeyCount"] == 0
    s3.delete_bucket(Bucket="lst")


def write_file(path, size):
    """A file of `size` random bytes; its sha256."""
    h256 = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(left, 1 << 20))
            f.write(chunk)
            h256.update(chunk)
            left -= len(chunk)
    return h256.hexdigest()


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def multipart():
    s3.create_bucket(Bucket="mpu")
    size = 100 * (1 << 20) + 12345
    src = os.path.join(WORK, "big.bin")
    digest = write_file(src, size)
    cfg = TransferConfig(multipart_threshold=8 << 20, multipart_chunksize=8 << 20, max_concurrency=4)
    s3.upload_file(src, "mpu", "big/file.bin", Config=cfg)
    head = s3.head_object(Bucket="mpu", Key="big/file.bin")
    assert head["ContentLength"] == size
    # ETag per S3's rule: md5 of the parts' md5s, "-N".
    parts, md5s = 0, b""
    with open(src, "rb") as f:
        for chunk in iter(lambda: f.read(8 << 20), b""):
            md5s += hashlib.md5(chunk).digest()
            parts += 1
    want = '"%s-%d"' % (hashlib.md5(md5s).hexdigest(), parts)
    assert head["ETag"] == want, (head["ETag"], want)
    dst = os.path.join(WORK, "big.out")
    s3.download_file("mpu", "big/file.bin", dst, Config=cfg)
    assert sha256_of(dst) == digest
    # The completed object is an ordinary key: readable through the native API.
    h = hashlib.sha256()
    with urllib.request.urlopen(NATIVE + "/mpu/big/file.bin") as r:
        for chunk in iter(lambda: r.read(1 << 20), b""):
            h.update(chunk)
    assert h.hexdigest() == digest
    # No upload left behind, no part visible in the bucket.
    assert not s3.list_multipart_uploads(Bucket="mpu").get("Uploads")
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="mpu")["Contents"]] == ["big/file.bin"]

    # The low-level calls: list parts and uploads, errors, abort.
    up = s3.create_multipart_upload(Bucket="mpu", Key="low", ContentType="text/x-low")["UploadId"]
    p1 = s3.upload_part(Bucket="mpu", Key="low", UploadId=up, PartNumber=1, Body=b"x" * (5 << 20))
    p2 = s3.upload_part(Bucket="mpu", Key="low", UploadId=up, PartNumber=2, Body=b"tail")
    listed = s3.list_parts(Bucket="mpu", Key="low", UploadId=up)["Parts"]
    assert [(p["PartNumber"], p["Size"]) for p in listed] == [(1, 5 << 20), (2, 4)]
    ups = s3.list_multipart_uploads(Bucket="mpu")["Uploads"]
    assert [(u["Key"], u["UploadId"]) for u in ups] == [("low", up)]
    bad = {"Parts": [{"PartNumber": 1, "ETag": '"00000000000000000000000000000000"'}]}
    assert code_of(s3.complete_multipart_upload, Bucket="mpu", Key="low", UploadId=up,
                   MultipartUpload=bad) == "InvalidPart"
    order = {"Parts": [{"PartNumber": 2, "ETag": p2["ETag"]}, {"PartNumber": 1, "ETag": p1["ETag"]}]}
    assert code_of(s3.complete_multipart_upload, Bucket="mpu", Key="low", UploadId=up,
                   MultipartUpload=order) == "InvalidPartOrder"
    assert code_of(s3.upload_part, Bucket="mpu", Key="low", UploadId="feedbeef",
                   PartNumber=1, Body=b"x") == "NoSuchUpload"
    ok = {"Parts": [{"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]}
    done = s3.complete_multipart_upload(Bucket="mpu", Key="low", UploadId=up, MultipartUpload=ok)
    assert done["ETag"].endswith('-2"'), done
    got = s3.get_object(Bucket="mpu", Key="low")
    assert got["ContentType"] == "text/x-low" and got["ContentLength"] == (5 << 20) + 4
    assert got["ETag"] == done["ETag"]
    # A small part before the last is refused; abort drops the upload.
    up = s3.create_multipart_upload(Bucket="mpu", Key="small")["UploadId"]
    q1 = s3.upload_part(Bucket="mpu", Key="small", UploadId=up, PartNumber=1, Body=b"a")
    q2 = s3.upload_part(Bucket="mpu", Key="small", UploadId=up, PartNumber=2, Body=b"b")
    parts = {"Parts": [{"PartNumber": 1, "ETag": q1["ETag"]}, {"PartNumber": 2, "ETag": q2["ETag"]}]}
    assert code_of(s3.complete_multipart_upload, Bucket="mpu", Key="small", UploadId=up,
                   MultipartUpload=parts) == "EntityTooSmall"
    s3.abort_multipart_upload(Bucket="mpu", Key="small", UploadId=up)
    assert code_of(s3.list_parts, Bucket="mpu", Key="small", UploadId=up) == "NoSuchUpload"
    assert not s3.list_multipart_uploads(Bucket="mpu").get("Uploads")


def auth():
    s3.create_bucket(Bucket="auth")
    s3.put_object(Bucket="auth", Key="secret.txt", Body=b"presigned!")
    url = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "secret.txt"}, ExpiresIn=300)
    out = subprocess.run(["curl", "-sS", "-f", url], capture_output=True, check=True)
    assert out.stdout == b"presigned!", out
    # Expiry is enforced: poll (with a deadline) until the 1-second URL is refused.
    short = s3.generate_presigned_url("get_object", Params={"Bucket": "auth", "Key": "secret.txt"}, ExpiresIn=1)
    deadline = time.time() + 15
    while True:
        status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", short],
                                capture_output=True, check=True).stdout
        if status == b"403":
            break
        assert status == b"200", status
        assert time.time() < deadline, "a presigned URL never expired"
        time.sleep(0.2)
    # Unsigned, badly signed, unknown key.
    status = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                             ENDPOINT + "/auth/secret.txt"], capture_output=True, check=True).stdout
    assert status == b"403", status
    wrong = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                         aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key="wrong-secret",
                         config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    assert code_of(wrong.get_object, Bucket="auth", Key="secret.txt") == "SignatureDoesNotMatch"
    nobody = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                          aws_access_key_id="nobody", aws_secret_access_key="whatever",
                          config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))
    assert code_of(nobody.list_buckets) in ("InvalidAccessKeyId", "NotSignedUp", "AccessDenied")
    s3.delete_object(Bucket="auth", Key="secret.txt")
    s3.delete_bucket(Bucket="auth")


def restart_before():
    """Half an upload, before the index server restarts."""
    s3.create_bucket(Bucket="rst")
    up = s3.create_multipart_upload(Bucket="rst", Key="across", Metadata={"phase": "one"})["UploadId"]
    p1 = s3.upload_part(Bucket="rst", Key="across", UploadId=up, PartNumber=1, Body=b"1" * (5 << 20))
    with open(os.path.join(WORK, "upload"), "w") as f:
        f.write(f"{up} {p1['ETag']}")


def restart_after():
    """The same upload, finished after the restart."""
    with open(os.path.join(WORK, "upload")) as f:
        up, e1 = f.read().split()
    assert "rst" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="rst")["Uploads"]] == [up]
    p2 = s3.upload_part(Bucket="rst", Key="across", UploadId=up, PartNumber=2, Body=b"2")
    parts = {"Parts": [{"PartNumber": 1, "ETag": e1}, {"PartNumber": 2, "ETag": p2["ETag"]}]}
    s3.complete_multipart_upload(Bucket="rst", Key="across", UploadId=up, MultipartUpload=parts)
    got = s3.get_object(Bucket="rst", Key="across")
    assert got["Body"].read() == b"1" * (5 << 20) + b"2"
    assert got["Metadata"] == {"phase": "one"}


CHECKS = {"objects": buckets_and_objects, "listing": listing, "multipart": multipart, "auth": auth,
          "restart_before": restart_before, "restart_after": restart_after}

for name in sys.argv[4:] or ["objects", "listing", "multipart", "auth"]:
    t = time.time()
    CHECKS[name]()
    print(f"boto3 {name}: ok ({time.time() - t:.1f}s)", flush=True)
