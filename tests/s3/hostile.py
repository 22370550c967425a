#!/usr/bin/env python3
"""Hostile input against hoard's S3 API: malformed, oversized and abusive requests —
signed (so they reach the parsers and handlers) and unsigned — each expecting one
clean S3 error, with the server answering a normal request after every case. Run by
tests/hostile_s3.rs:

    hostile.py S3_ENDPOINT
"""
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

import boto3
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.client import Config
from botocore.credentials import Credentials

ENDPOINT = sys.argv[1]
HOST = urllib.parse.urlparse(ENDPOINT).netloc
CREDS = Credentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])
s3 = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def send(method, path, body=b"", headers=None, sign=True):
    """Status and body of one request (`path` already percent-encoded)."""
    req = AWSRequest(method=method, url=ENDPOINT + path, data=body, headers=headers or {})
    if sign:
        req.headers["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        SigV4Auth(CREDS, "s3", "us-east-1").add_auth(req)
    prepared = req.prepare()
    r = urllib.request.Request(prepared.url, data=body if body else None, method=method,
                               headers=dict(prepared.headers))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def raw(data):
    """Status of a raw request (0: connection closed without an answer)."""
    with socket.create_connection(tuple(HOST.rsplit(":", 1)), timeout=30) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    try:
        return int(out.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0


nobody = boto3.client("s3", endpoint_url=ENDPOINT, region_name="us-east-1",
                      aws_access_key_id="nobody", aws_secret_access_key="whatever",
                      config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def via_boto3(call):
    """Status and error code of a boto3 call, as (status, body)."""
    from botocore.exceptions import ClientError
    try:
        r = call()
        return r["ResponseMetadata"]["HTTPStatusCode"], b""
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"].encode()


def alive():
    s3.list_buckets()


s3.create_bucket(Bucket="hostile")
s3.put_object(Bucket="hostile", Key="victim", Body=b"still here")

delete_xml = lambda n: ("<Delete>" + "".join(
    f"<Object><Key>k{i}</Key></Object>" for i in range(n)) + "</Delete>").encode()
big_xml = b"<Delete>" + b"<Object><Key>" + b"x" * (5 << 20) + b"</Key></Object></Delete>"

CASES = [
    # (name, thunk returning (status, body), expected status, expected code or None)
    ("unsigned request", lambda: send("GET", "/hostile/victim", sign=False), 403, b"AccessDenied"),
    ("garbage authorization", lambda: send("GET", "/", headers={"Authorization": "AWS4-HMAC-SHA256 nonsense"}, sign=False), 400, None),
    ("unknown access key", lambda: via_boto3(lambda: nobody.list_buckets()), 403, None),
    ("presigned with huge expiry", lambda: send("GET", "/hostile/victim?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=999999999999&X-Amz-SignedHeaders=host&X-Amz-Signature=00", sign=False), 400, None),
    ("malformed XML", lambda: send("POST", "/hostile?delete", b"<Delete><Object><Key>a</Key></Obj"), 400, b"MalformedXML"),
    ("not XML at all", lambda: send("POST", "/hostile?delete", b"\x00\xff" * 100), 400, None),
    ("1001 keys in DeleteObjects", lambda: send("POST", "/hostile?delete", delete_xml(1001)), 400, b"MalformedXML"),
    ("XML over the limit", lambda: send("POST", "/hostile?delete", big_xml), 400, b"MaxMessageLengthExceeded"),
    ("dot segment key", lambda: via_boto3(lambda: s3.put_object(Bucket="hostile", Key="a/../b", Body=b"x")), 400, b"InvalidArgument"),
    ("dot key", lambda: via_boto3(lambda: s3.put_object(Bucket="hostile", Key=".", Body=b"x")), 400, b"InvalidArgument"),
    ("control character key", lambda: via_boto3(lambda: s3.put_object(Bucket="hostile", Key="a\x01b", Body=b"x")), 400, b"InvalidArgument"),
    ("double slash key", lambda: via_boto3(lambda: s3.put_object(Bucket="hostile", Key="a//b", Body=b"x")), 200, None),
    ("key too long", lambda: send("PUT", "/hostile/" + "k" * 1100, b"x"), 400, b"KeyTooLongError"),
    ("metadata too large", lambda: send("PUT", "/hostile/meta", b"x", {"x-amz-meta-big": "v" * 3000}), 400, b"MetadataTooLarge"),
    ("zero-byte object", lambda: send("PUT", "/hostile/empty", b"", {"Content-Length": "0"}), 200, None),
    ("range of an empty object", lambda: send("GET", "/hostile/empty", headers={"Range": "bytes=0-0"}), 416, b"InvalidRange"),
    ("part copy range past the end", lambda: part_copy("bytes=0-999999"), 400, b"InvalidArgument"),
    ("part copy garbage range", lambda: part_copy("bytes=zz"), 400, b"InvalidArgument"),
    ("part copy open range", lambda: part_copy("bytes=3-"), 400, b"InvalidArgument"),
    ("self-copy of a missing key", lambda: send("PUT", "/hostile/gone", headers={"x-amz-copy-source": "/hostile/gone", "x-amz-metadata-directive": "REPLACE"}), 404, b"NoSuchKey"),
    ("bad continuation token", lambda: send("GET", "/hostile?list-type=2&continuation-token=%25%25%25"), 400, b"InvalidArgument"),
    ("negative max-keys", lambda: send("GET", "/hostile?list-type=2&max-keys=-1"), 400, None),
    ("bad encoding-type", lambda: send("GET", "/hostile?list-type=2&encoding-type=rot13"), 400, b"InvalidArgument"),
    ("unsatisfiable range", lambda: send("GET", "/hostile/victim", headers={"Range": "bytes=100-200"}), 416, b"InvalidRange"),
    ("garbage range", lambda: send("GET", "/hostile/victim", headers={"Range": "bytes=zz"}), 400, None),
    ("no such upload", lambda: send("PUT", "/hostile/k?partNumber=1&uploadId=0123456789abcdef", b"x"), 404, b"NoSuchUpload"),
    ("upload id with slashes", lambda: send("PUT", "/hostile/k?partNumber=1&uploadId=..%2F..%2Fx", b"x"), 404, b"NoSuchUpload"),
    ("part number 0", lambda: upload_part(0), 400, None),
    ("part number 10001", lambda: upload_part(10001), 400, None),
    ("complete with no parts", lambda: complete(b"<CompleteMultipartUpload></CompleteMultipartUpload>"), 400, b"MalformedXML"),
    ("complete with a missing part", lambda: complete(b"<CompleteMultipartUpload><Part><PartNumber>7</PartNumber><ETag>\"00\"</ETag></Part></CompleteMultipartUpload>"), 400, b"InvalidPart"),
    ("invalid bucket name", lambda: send("PUT", "/-bad-"), 400, b"InvalidBucketName"),
    ("bucket of the reserved namespace", lambda: send("PUT", "/.s3-multipart"), 400, b"InvalidBucketName"),
    ("copy from a missing bucket", lambda: send("PUT", "/hostile/c", headers={"x-amz-copy-source": "/nosuchbucket/x"}), 404, b"NoSuchBucket"),
    ("copy source traversal", lambda: send("PUT", "/hostile/c", headers={"x-amz-copy-source": "/hostile/../../etc/passwd"}), 400, None),
    ("object onto itself", lambda: send("PUT", "/hostile/victim", headers={"x-amz-copy-source": "/hostile/victim"}), 400, b"InvalidRequest"),
    ("delete a non-empty bucket", lambda: send("DELETE", "/hostile"), 409, b"BucketNotEmpty"),
    ("unsupported operation", lambda: send("GET", "/hostile?acl"), 501, b"NotImplemented"),
    ("header flood", lambda: (raw(b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-A%d: %s\r\n" % (i, b"v" * 1000) for i in range(200)) + b"\r\n"), b""), 431, None),
    ("not HTTP", lambda: (raw(b"\x16\x03\x01\x02\x00garbage\r\n\r\n"), b""), 400, None),
]

UPLOAD = {}


def upload_part(n):
    if "id" not in UPLOAD:
        UPLOAD["id"] = s3.create_multipart_upload(Bucket="hostile", Key="mpu")["UploadId"]
    return send("PUT", f"/hostile/mpu?partNumber={n}&uploadId={UPLOAD['id']}", b"x")


def part_copy(source_range):
    if "id" not in UPLOAD:
        UPLOAD["id"] = s3.create_multipart_upload(Bucket="hostile", Key="mpu")["UploadId"]
    return send("PUT", f"/hostile/mpu?partNumber=1&uploadId={UPLOAD['id']}", headers={
        "x-amz-copy-source": "/hostile/victim", "x-amz-copy-source-range": source_range})


def complete(xml):
    if "id" not in UPLOAD:
        UPLOAD["id"] = s3.create_multipart_upload(Bucket="hostile", Key="mpu")["UploadId"]
    return send("POST", f"/hostile/mpu?uploadId={UPLOAD['id']}", xml)


failures = []
for name, thunk, want, code in CASES:
    status, body = thunk()
    ok = status == want and (code is None or code in body)
    print(f"{'ok  ' if ok else 'FAIL'} {status} {name}", flush=True)
    if not ok:
        failures.append(f"{name}: got {status} {body[:300]!r}, want {want} {code!r}")
    alive()

assert s3.get_object(Bucket="hostile", Key="victim")["Body"].read() == b"still here"
if failures:
    print("\n".join(failures))
    sys.exit(1)
