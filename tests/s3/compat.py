#!/usr/bin/env python3
"""Small S3 compatibility cases from ceph/s3-tests, with boto3 (run by
tests/s3_bounds.rs):

    compat.py S3_ENDPOINT OTHER_ACCESS OTHER_SECRET

max-keys=0 (empty, not truncated), an empty delimiter (not echoed, no grouping),
CreateBucket on an existing bucket (BucketAlreadyOwnedByYou for its creator,
BucketAlreadyExists for another user), ListObjectVersions of an unversioned bucket
(version id "null", used to empty buckets).
"""
import os
import sys

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
