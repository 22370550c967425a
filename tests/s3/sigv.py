#!/usr/bin/env python3
"""Request signatures against hoard's S3 API, with boto3 (run by tests/s3_bounds.rs):

    sigv.py S3_ENDPOINT off|on

Always: SigV4 presigned URLs work until they expire and are refused after — checked
without waiting, with URLs signed as of ten minutes ago. `off` (the default server):
SigV2 — headers (boto3's signature_version 's3') and presigned URLs (what boto3
presigns by default against a custom endpoint) — is refused with AccessDenied.
`on` (--s3-allow-sigv2): SigV2 works, a wrong secret is SignatureDoesNotMatch and a
request dated 20 minutes ago (a replay) is RequestTimeTooSkewed.
"""
import datetime
import email.utils
import os
import sys
import time
import urllib.error
import urllib.request

import boto3
import botocore.auth
from botocore.client import Config
from botocore.exceptions import ClientError

ENDPOINT, MODE = sys.argv[1], sys.argv[2]
KEY, SECRET = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]


def client(version, secret=SECRET):
    return boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                        aws_access_key_id=KEY, aws_secret_access_key=secret,
                        config=Config(signature_version=version, s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))


def fetch(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def code_of(call, **kw):
    try:
        call(**kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    return "ok"


v4 = client("s3v4")
v4.create_bucket(Bucket="sig")
v4.put_object(Bucket="sig", Key="k", Body=b"signed")

real_now = botocore.auth.get_current_datetime


def signed_ago(seconds, expires):
    """A SigV4 presigned GET signed `seconds` ago, valid `expires` seconds from then."""
    botocore.auth.get_current_datetime = lambda: real_now() - datetime.timedelta(seconds=seconds)
    try:
        return v4.generate_presigned_url("get_object", Params={"Bucket": "sig", "Key": "k"}, ExpiresIn=expires)
    finally:
        botocore.auth.get_current_datetime = real_now


assert fetch(signed_ago(0, 60)) == (200, b"signed")
assert fetch(signed_ago(600, 3600)) == (200, b"signed")
status, body = fetch(signed_ago(600, 60))
assert status == 403 and b"expired" in body, (status, body)
print("SigV4 presigned URLs expire: ok")

v2 = client("s3")
v2_url = v2.generate_presigned_url("get_object", Params={"Bucket": "sig", "Key": "k"}, ExpiresIn=300)
assert "Signature=" in v2_url and "AWSAccessKeyId=" in v2_url, v2_url
real_date = botocore.auth.HmacV1Auth._get_date


def dated_ago(seconds, call, **kw):
    """`call` signed with SigV2 as of `seconds` ago; its error code or ok."""
    botocore.auth.HmacV1Auth._get_date = lambda self: email.utils.formatdate(time.time() - seconds, usegmt=True)
    try:
        return code_of(call, **kw)
    finally:
        botocore.auth.HmacV1Auth._get_date = real_date


if MODE == "off":
    assert code_of(v2.get_object, Bucket="sig", Key="k") == "AccessDenied"
    assert code_of(v2.put_object, Bucket="sig", Key="v2", Body=b"x") == "AccessDenied"
    status, body = fetch(v2_url)
    assert status == 403 and b"Signature Version 2" in body, (status, body)
    assert code_of(v4.head_object, Bucket="sig", Key="v2") == "404"
    print("SigV2 refused: ok")
else:
    v2.put_object(Bucket="sig", Key="v2", Body=b"two")
    assert v2.get_object(Bucket="sig", Key="v2")["Body"].read() == b"two"
    assert [o["Key"] for o in v2.list_objects_v2(Bucket="sig")["Contents"]] == ["k", "v2"]
    assert fetch(v2_url) == (200, b"signed")
    assert code_of(client("s3", secret="wrong").get_object, Bucket="sig", Key="k") == "SignatureDoesNotMatch"
    assert dated_ago(600, v2.get_object, Bucket="sig", Key="k") == "ok"
    assert dated_ago(1200, v2.get_object, Bucket="sig", Key="k") == "RequestTimeTooSkewed"
    assert dated_ago(-1200, v2.get_object, Bucket="sig", Key="k") == "RequestTimeTooSkewed"
    print("SigV2 allowed, dated and checked: ok")
