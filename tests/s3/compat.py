#!/usr/bin/env python3
"""Small S3 compatibility cases from ceph/s3-tests, with boto3 (run by
tests/s3_bounds.rs):

    compat.py S3_ENDPOINT OTHER_ACCESS OTHER_SECRET

max-keys=0 (empty, not truncated), an empty delimiter (not echoed, no grouping),
CreateBucket on an existing bucket (BucketAlreadyOwnedByYou for its creator,
BucketAlreadyExists for another user), ListObjectVersions of an unversioned bucket
(version id "null", used to empty buckets), PUT with If-None-Match / If-Match,
a repeated CompleteMultipartUpload (succeeds again while the object stays), a
chunked upload without Content-Length (presigned), GetObjectAttributes, ListBuckets
with max-buckets, a prefix and continuation, Expires stored and returned.
"""
import datetime
import os
import sys
import urllib.request

import boto3
from botocore.client import Config
from botocore.exceptions import ClientError

ENDPOINT, OTHER_KEY, OTHER_SECRET = sys.argv[1], sys.argv[2], sys.argv[3]


def client(key, secret):
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def error_of(call, **kw):
    try:
        call(**kw)
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    return 200, "ok"


s3 = client(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
other = client(OTHER_KEY, OTHER_SECRET)
keys = ["bar", "baz", "cab", "foo", "dir/a", "dir/b"]
s3.create_bucket(Bucket="compat")
for k in keys:
    s3.put_object(Bucket="compat", Key=k, Body=k.encode())

for call in (s3.list_objects, s3.list_objects_v2, s3.list_object_versions):
    r = call(Bucket="compat", MaxKeys=0)
    assert r["IsTruncated"] is False, (call, r)
    assert not r.get("Contents") and not r.get("Versions") and not r.get("CommonPrefixes"), r
print("max-keys=0: ok")

for call in (s3.list_objects, s3.list_objects_v2):
    r = call(Bucket="compat", Delimiter="")
    assert "Delimiter" not in r, r
    assert [o["Key"] for o in r["Contents"]] == sorted(keys), r
    assert not r.get("CommonPrefixes"), r
print("empty delimiter: ok")

assert error_of(s3.create_bucket, Bucket="compat") == (409, "BucketAlreadyOwnedByYou")
assert error_of(other.create_bucket, Bucket="compat") == (409, "BucketAlreadyExists")
print("CreateBucket on an existing bucket: ok")

r = s3.list_object_versions(Bucket="compat")
assert [v["Key"] for v in r["Versions"]] == sorted(keys), r
assert all(v["VersionId"] == "null" and v["IsLatest"] for v in r["Versions"]), r
assert r["IsTruncated"] is False
r = s3.list_object_versions(Bucket="compat", Delimiter="/", MaxKeys=2)
assert [v["Key"] for v in r["Versions"]] == ["bar", "baz"] and r["IsTruncated"], r
r = s3.list_object_versions(Bucket="compat", Delimiter="/", KeyMarker=r["NextKeyMarker"],
                            VersionIdMarker=r["NextVersionIdMarker"])
assert [v["Key"] for v in r["Versions"]] == ["cab", "foo"], r
assert [p["Prefix"] for p in r["CommonPrefixes"]] == ["dir/"], r
# What s3-tests' cleanup does: delete every listed version, then the bucket.
versions = s3.list_object_versions(Bucket="compat")["Versions"]
s3.delete_objects(Bucket="compat", Delete={"Objects": [{"Key": v["Key"], "VersionId": v["VersionId"]} for v in versions]})
assert not s3.list_object_versions(Bucket="compat").get("Versions")
s3.delete_bucket(Bucket="compat")
print("ListObjectVersions (unversioned): ok")

s3.create_bucket(Bucket="more")
s3.put_object(Bucket="more", Key="k", Body=b"hello")
assert error_of(s3.put_object, Bucket="more", Key="k", Body=b"x", IfNoneMatch="*") == (412, "PreconditionFailed")
assert error_of(s3.put_object, Bucket="more", Key="k", Body=b"x", IfMatch='"0123"') == (412, "PreconditionFailed")
etag = s3.head_object(Bucket="more", Key="k")["ETag"]
s3.put_object(Bucket="more", Key="k", Body=b"world", IfMatch=etag)
s3.put_object(Bucket="more", Key="new", Body=b"x", IfNoneMatch="*")
assert s3.get_object(Bucket="more", Key="k")["Body"].read() == b"world"
print("PUT If-Match / If-None-Match: ok")

upload = s3.create_multipart_upload(Bucket="more", Key="mp")["UploadId"]
part = s3.upload_part(Bucket="more", Key="mp", UploadId=upload, PartNumber=1, Body=b"p" * 1000)
parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
first = s3.complete_multipart_upload(Bucket="more", Key="mp", UploadId=upload, MultipartUpload=parts)
again = s3.complete_multipart_upload(Bucket="more", Key="mp", UploadId=upload, MultipartUpload=parts)
assert first["ETag"] == again["ETag"] and first["ETag"].endswith('-1"'), (first, again)
s3.put_object(Bucket="more", Key="mp", Body=b"replaced")
assert error_of(s3.complete_multipart_upload, Bucket="more", Key="mp", UploadId=upload,
                MultipartUpload=parts) == (404, "NoSuchUpload")
print("CompleteMultipartUpload repeated: ok")

url = s3.generate_presigned_url("put_object", Params={"Bucket": "more", "Key": "chunked"}, ExpiresIn=300)
# No Content-Length: a body of unknown length, sent chunked.
req = urllib.request.Request(url, data=iter([b"c" * 70000, b"d" * 30000]), method="PUT")
with urllib.request.urlopen(req) as r:
    assert r.status == 200, r.status
body = s3.get_object(Bucket="more", Key="chunked")["Body"].read()
assert body == b"c" * 70000 + b"d" * 30000, len(body)
print("chunked upload without Content-Length: ok")

attrs = s3.get_object_attributes(Bucket="more", Key="k", ObjectAttributes=["ETag", "ObjectSize", "StorageClass"])
assert attrs["ObjectSize"] == 5 and attrs["StorageClass"] == "STANDARD", attrs
assert attrs["ETag"].strip('"') == s3.head_object(Bucket="more", Key="k")["ETag"].strip('"'), attrs
attrs = s3.get_object_attributes(Bucket="more", Key="chunked", ObjectAttributes=["ObjectSize"])
assert attrs["ObjectSize"] == 100000 and "ETag" not in attrs, attrs
mp_upload = s3.create_multipart_upload(Bucket="more", Key="mp2")["UploadId"]
p1 = s3.upload_part(Bucket="more", Key="mp2", UploadId=mp_upload, PartNumber=1, Body=b"q" * (5 << 20))
p2 = s3.upload_part(Bucket="more", Key="mp2", UploadId=mp_upload, PartNumber=2, Body=b"r")
s3.complete_multipart_upload(Bucket="more", Key="mp2", UploadId=mp_upload, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": p1["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
attrs = s3.get_object_attributes(Bucket="more", Key="mp2", ObjectAttributes=["ObjectParts", "ObjectSize"])
assert attrs["ObjectParts"]["TotalPartsCount"] == 2 and attrs["ObjectSize"] == (5 << 20) + 1, attrs
print("GetObjectAttributes: ok")

for b in ("page-a", "page-b", "page-c"):
    s3.create_bucket(Bucket=b)
names, token = [], None
while True:
    kw = {"MaxBuckets": 2, "Prefix": "page-"}
    if token:
        kw["ContinuationToken"] = token
    r = s3.list_buckets(**kw)
    names += [b["Name"] for b in r["Buckets"]]
    assert len(r["Buckets"]) <= 2, r
    token = r.get("ContinuationToken")
    if not token:
        break
assert names == ["page-a", "page-b", "page-c"], names
assert {"more", "page-a"} <= {b["Name"] for b in s3.list_buckets()["Buckets"]}
print("ListBuckets pages: ok")

when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
s3.put_object(Bucket="more", Key="exp", Body=b"x", Expires=when)
head = s3.head_object(Bucket="more", Key="exp")
assert head["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT", head
got = s3.get_object(Bucket="more", Key="exp")
assert got["ResponseMetadata"]["HTTPHeaders"]["expires"] == "Wed, 02 Jan 2030 03:04:05 GMT", got
print("Expires: ok")
