#!/usr/bin/env python3
"""Turns a ceph/s3-tests JUnit XML result (scripts/s3-tests.sh) into
docs/S3-COMPATIBILITY.md: tests grouped by the S3 feature their name names, each group
with its counts and a verdict — supported (all pass), partial, not supported (none).

    s3-compat-report.py RESULTS.xml S3TESTS_COMMIT > docs/S3-COMPATIBILITY.md
"""
import datetime
import re
import sys
import xml.etree.ElementTree as ET

# First match wins: (feature, pattern over the test's name).
GROUPS = [
    ("Versioning, delete markers", r"versioning|versioned|version_id|delete_marker"),
    ("Lifecycle", r"lifecycle|_lc_"),
    ("Object lock, retention, legal hold", r"object_lock|retention|legal_hold"),
    ("Server-side encryption", r"sse|encrypt|kms"),
    ("Bucket policies, IAM", r"policy|iam|sts|role|session"),
    ("ACLs, ownership", r"acl|grant|canned|owner|ownership"),
    ("CORS", r"cors"),
    ("Tagging", r"tagging|tags?_|_tag"),
    ("Static website", r"website|routing"),
    ("Bucket logging", r"logging"),
    ("Checksums (CRC/SHA trailers)", r"checksum"),
    ("Storage classes, restore", r"storage_class|restore|transition"),
    ("Notifications, S3 Select, append", r"notification|select|append"),
    ("POST Object (browser forms)", r"post_object"),
    ("Multipart uploads", r"multipart|upload_part|abort_multipart|list_uploads"),
    ("CopyObject, UploadPartCopy", r"copy"),
    ("GetObjectAttributes", r"attributes"),
    ("ListObjectsV2", r"listv2|list_objects_v2"),
    ("ListObjects, ListBuckets", r"list|buckets_"),
    ("Range GET", r"range"),
    ("Conditional requests", r"if_match|ifmatch|if_none|ifnonematch|cond|modified|precondition"),
    ("Anonymous and presigned access", r"anon|public|unauthenticated|presigned|expires|expiry"),
    ("Buckets", r"bucket"),
    ("Objects", r"object|get|put|delete|head|metadata|key"),
]


def group_of(name, classname):
    if "test_headers" in classname:
        return "Request headers and signatures (test_headers.py)"
    for feature, pattern in GROUPS:
        if re.search(pattern, name):
            return feature
    return "Other"


def main():
    results, commit = sys.argv[1], sys.argv[2]
    tree = ET.parse(results)
    groups = {}
    for case in tree.iter("testcase"):
        name, classname = case.get("name", ""), case.get("classname", "")
        if case.find("skipped") is not None:
            outcome = "skipped"
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        else:
            outcome = "passed"
        g = groups.setdefault(group_of(name, classname), {"passed": [], "failed": [], "skipped": []})
        g[outcome].append(name)
    total = {k: sum(len(g[k]) for g in groups.values()) for k in ("passed", "failed", "skipped")}
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    print("# S3 compatibility")
    print()
    print(f"ceph/s3-tests (commit `{commit}`: `s3tests/functional/test_s3.py` and "
          f"`test_headers.py`, every test, none skipped by marker) against `hoard dev`, "
          f"run by `scripts/s3-tests.sh` on {when}. The suite is written for Ceph's RGW and "
          "tests much that hoard does not offer (versioning, ACLs, policies, lifecycle, "
          "encryption…); groups are by the feature a test's name names, so a few tests "
          "land in a neighbouring group. A group is *supported* when all its tests pass, "
          "*partial* when some do, *not supported* when none do. What each supported "
          "operation does, and hoard's answer to the others, is in docs/ARCHITECTURE.md, "
          "\"The S3 API\".")
    print()
    print(f"**{total['passed']} passed, {total['failed']} failed, {total['skipped']} skipped** "
          f"of {sum(total.values())}.")
    print()
    print("| feature | passed | failed | verdict |")
    print("|---|---|---|---|")

    def verdict(g):
        p, f = len(g["passed"]), len(g["failed"])
        if p and not f:
            return "supported"
        if p:
            return "partial"
        return "not supported"

    order = sorted(groups.items(), key=lambda kv: (["supported", "partial", "not supported"].index(verdict(kv[1])), kv[0]))
    order = [(f, g) for f, g in order if g["passed"] or g["failed"]]
    for feature, g in order:
        print(f"| {feature} | {len(g['passed'])} | {len(g['failed'])} | {verdict(g)} |")
    print()
    print("## Failing tests of supported or partly supported features")
    print()
    for feature, g in order:
        if g["failed"] and g["passed"]:
            failed = sorted(g["failed"])
            names = ", ".join(f"`{n}`" for n in failed[:15])
            more = f" and {len(failed) - 15} more" if len(failed) > 15 else ""
            print(f"* **{feature}**: {names}{more}")
    print()


if __name__ == "__main__":
    main()
