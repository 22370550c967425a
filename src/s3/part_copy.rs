//! UploadPartCopy: a part of a multipart upload copied from an existing object (or a
//! byte range of it, `x-amz-copy-source-range`), as boto3's `copy()` and aws-cli's
//! `s3 cp s3://… s3://…` do for large objects.
//!
//! The copy is the store core's, as for CopyObject: the source range is opened with
//! `Store::open` (streamed from one of its replicas through this server, memory bounded
//! by the stream's buffers) and written as the part's key through `Store::put_with` —
//! no bytes through the client, and the part is an ordinary part (see
//! [`super::multipart`]) that CompleteMultipartUpload treats like an uploaded one.

use std::ops::Range;
use std::sync::Arc;

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::buckets::{require, timestamp};
use super::errors::object_key;
use super::multipart::{check_not_completing, find, part_key, MAX_PARTS};
use super::objects::{
    copy_source, open_record, precondition_failed, source_stream, write, Conditions, MAX_OBJECT,
};
use crate::hex::hex;
use crate::index::Record;
use crate::store::{ObjectMeta, Store};

/// Parses `x-amz-copy-source-range` (`bytes=FIRST-LAST`, both given, inclusive) against
/// a source of `size` bytes: the byte range to copy, end exclusive.
pub fn source_range(header: &str, size: u64) -> S3Result<Range<u64>> {
    let invalid = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where \
             first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = header
        .trim()
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(invalid)?;
    let parse = |n: &str| {
        if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid());
        }
        n.parse::<u64>().map_err(|_| invalid())
    };
    let (first, last) = (parse(first)?, parse(last)?);
    if first > last {
        return Err(invalid());
    }
    if last >= size {
        return Err(s3_error!(
            InvalidArgument,
            "Range specified is not valid for source object of size: {size}"
        ));
    }
    Ok(first..last + 1)
}

/// UploadPartCopy (see the module docs).
pub async fn upload_part_copy(
    store: &Arc<Store>,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let input = req.input;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    require(store, src_bucket)?;
    require(store, &input.bucket)?;
    find(store, &input.bucket, &input.key, &input.upload_id)?;
    check_not_completing(store, &input.upload_id)?;
    if !(1..=MAX_PARTS).contains(&input.part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers are 1 to {MAX_PARTS}"
        ));
    }
    let source = object_key(src_bucket, src_key)?;
    let conditions = Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let range = |record: &Record| -> S3Result<Option<Range<u64>>> {
        conditions.check(record, precondition_failed)?;
        let r = match &input.copy_source_range {
            Some(h) => source_range(h, record.size)?,
            None => 0..record.size,
        };
        if r.end - r.start > MAX_OBJECT {
            return Err(s3_error!(
                InvalidRequest,
                "a part is at most {MAX_OBJECT} bytes: copy the source in ranges"
            ));
        }
        Ok(Some(r))
    };
    let (_, opened) = open_record(store, &source, range).await?;
    let opened = opened.ok_or_else(|| s3_error!(InternalError))?;
    let len = opened.range.end - opened.range.start;
    let written = write(
        store,
        part_key(&input.upload_id, input.part_number),
        source_stream(opened),
        Some(len),
        ObjectMeta::default(),
    )
    .await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: written.md5.map(|m| ETag::Strong(hex(&m))),
            last_modified: Some(timestamp(crate::clock::now_ms())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::source_range;

    #[test]
    fn copy_source_ranges() {
        assert_eq!(source_range("bytes=0-9", 10).unwrap(), 0..10);
        assert_eq!(source_range("bytes=5-5", 10).unwrap(), 5..6);
        for bad in [
            "bytes=0-10",
            "bytes=9-3",
            "bytes=-5",
            "bytes=3-",
            "0-3",
            "bytes=a-b",
            "bytes=+1-2",
            "bytes=1-2,4-5",
        ] {
            assert!(source_range(bad, 10).is_err(), "{bad}");
        }
        assert!(source_range("bytes=0-0", 0).is_err());
    }
}
