//! Objects: PutObject, GetObject, HeadObject, DeleteObject, DeleteObjects, CopyObject.
//!
//! Object `k` of bucket `b` is the hoard key `/b/k`: writes go through
//! `Store::put_with` (replacing, hashing, with [`ObjectMeta`]), reads through
//! `Store::open` (proxied and streamed, never redirected: S3 clients do not follow
//! redirects), deletes through `Store::delete`. An empty body is a zero-byte object
//! (`PutOptions::allow_empty`); CopyObject onto itself with `REPLACE` changes only the
//! metadata (`Store::set_meta`).

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{Stream, StreamExt, TryStreamExt};
use s3s::dto::*;
use s3s::stream::ByteStream;
use s3s::{s3_error, S3Error, S3Request, S3Response, S3Result};

use super::buckets::{require, timestamp};
use super::errors::{etag, object_key, store_error, write_error};
use crate::hex::hex;
use crate::index::Record;
use crate::store::{ObjectMeta, Opened, PutOptions, Store, StoreError};

/// Largest object one PutObject (or CopyObject) stores: S3's limit, 5 GiB.
pub const MAX_OBJECT: u64 = 5 << 30;
/// Largest user metadata (`x-amz-meta-*` names and values together): S3's limit.
pub const MAX_USER_META: usize = 2048;

/// A `Send` stream made `Sync` (s3s wants both) by putting it behind a mutex that
/// `poll_next` reaches through `&mut`, never locking.
struct SyncStream(Mutex<BoxStream<'static, Result<Bytes, std::io::Error>>>);

impl Stream for SyncStream {
    type Item = Result<Bytes, std::io::Error>;
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut()
            .0
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .poll_next_unpin(cx)
    }
}

/// An opened value's bytes as an S3 response body.
fn blob(opened: Opened) -> StreamingBlob {
    let body = opened
        .body
        .map_err(|e| std::io::Error::other(e.to_string()))
        .boxed();
    StreamingBlob::wrap(SyncStream(Mutex::new(body)))
}

/// The value stream of an opened key, as `Store::put_with` takes it.
pub fn source_stream(opened: Opened) -> BoxStream<'static, Result<Bytes, StoreError>> {
    opened.body
}

/// Reads the record of `key` and opens (a range of) that same version of its value;
/// retried if the value is replaced in between. `range` maps the size to a range.
pub async fn open_record(
    store: &Store,
    key: &[u8],
    range: impl Fn(&Record) -> S3Result<Option<std::ops::Range<u64>>>,
) -> S3Result<(Record, Option<Opened>)> {
    for _ in 0..3 {
        let record = store
            .record(key)
            .map_err(store_error)?
            .ok_or_else(|| s3_error!(NoSuchKey))?;
        let r = range(&record)?;
        let opened = match store.open_local(key, r).await {
            Ok(o) => o,
            Err(StoreError::NotFound) => return Err(s3_error!(NoSuchKey)),
            // The value changed size since the record was read: read again.
            Err(StoreError::Invalid(_)) => continue,
            Err(e) => return Err(store_error(e)),
        };
        if opened.record.changed_ms == record.changed_ms {
            return Ok((record, Some(opened)));
        }
    }
    Err(s3_error!(
        OperationAborted,
        "the object kept changing while being read; retry"
    ))
}

/// The metadata S3 clients set on a write.
pub(super) fn meta_from(
    content_type: Option<String>,
    content_encoding: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    metadata: Option<Metadata>,
) -> S3Result<ObjectMeta> {
    let user: std::collections::BTreeMap<String, String> = metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let size: usize = user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_USER_META {
        return Err(s3_error!(
            MetadataTooLarge,
            "user metadata is {size} bytes, at most {MAX_USER_META}"
        ));
    }
    Ok(ObjectMeta {
        content_type,
        content_encoding,
        content_disposition,
        content_language,
        cache_control,
        user,
        ..ObjectMeta::default()
    })
}

/// `Expires` as stored in [`ObjectMeta::expires`] (an HTTP date).
pub(super) fn expires_text(expires: Option<&Timestamp>) -> Option<String> {
    let mut out = Vec::new();
    expires?.format(TimestampFormat::HttpDate, &mut out).ok()?;
    String::from_utf8(out).ok()
}

/// [`ObjectMeta::expires`] back as a timestamp for a response.
pub(super) fn expires_of(meta: &ObjectMeta) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, meta.expires.as_deref()?).ok()
}

/// Whether an `If-Match` / `If-None-Match` condition matches `etag`.
fn matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// The conditional headers of a read, in RFC 7232's order: 412 before 304.
pub struct Conditions<'a> {
    /// `If-Match`.
    pub if_match: Option<&'a ETagCondition>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a ETagCondition>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<&'a Timestamp>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<&'a Timestamp>,
}

impl Conditions<'_> {
    /// Checks the conditions against a record's ETag and time; `not_modified` is the
    /// error for a failed `If-None-Match` / `If-Modified-Since` (304 for reads, 412
    /// for a copy source).
    pub fn check(&self, record: &Record, not_modified: fn() -> S3Error) -> S3Result<()> {
        let etag = etag(record, &ObjectMeta::decode(&record.meta));
        self.check_tag(&etag, &timestamp(record.changed_ms), not_modified)
    }

    /// [`Conditions::check`] for an ETag and time the caller already has.
    pub fn check_tag(
        &self,
        etag: &str,
        modified: &Timestamp,
        not_modified: fn() -> S3Error,
    ) -> S3Result<()> {
        if let Some(c) = self.if_match {
            if !matches(c, etag) {
                return Err(s3_error!(PreconditionFailed, "If-Match failed"));
            }
        } else if self.if_unmodified_since.is_some_and(|t| modified > t) {
            return Err(s3_error!(PreconditionFailed, "If-Unmodified-Since failed"));
        }
        if let Some(c) = self.if_none_match {
            if matches(c, etag) {
                return Err(not_modified());
            }
        } else if self.if_modified_since.is_some_and(|t| modified <= t) {
            return Err(not_modified());
        }
        Ok(())
    }
}

fn not_modified() -> S3Error {
    s3_error!(NotModified)
}

/// The bucket and key a copy reads (CopyObject, UploadPartCopy); access points are
/// not supported.
pub(super) fn copy_source(source: &CopySource) -> S3Result<(&str, &str)> {
    match source {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket, key)),
        _ => Err(s3_error!(
            NotImplemented,
            "access point copy sources are not supported"
        )),
    }
}

pub(super) fn precondition_failed() -> S3Error {
    s3_error!(PreconditionFailed, "copy source condition failed")
}

/// PutObject: streamed to the replicas through the store core's write protocol.
pub async fn put(
    store: &Arc<Store>,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let key = object_key(&input.bucket, &input.key)?;
    // A zero-byte object may come without any body.
    let body = input.body.unwrap_or_else(empty_body);
    let len = body_len(&body, input.content_length);
    if len.is_some_and(|n| n > MAX_OBJECT) {
        return Err(s3_error!(
            EntityTooLarge,
            "at most {MAX_OBJECT} bytes per PutObject; use a multipart upload"
        ));
    }
    if input.if_none_match.is_some() || input.if_match.is_some() {
        let current = store.record(&key).map_err(store_error)?;
        match (&input.if_none_match, &input.if_match, &current) {
            (Some(_), _, Some(_)) => {
                return Err(s3_error!(PreconditionFailed, "the object exists"))
            }
            (_, Some(_), None) => return Err(s3_error!(NoSuchKey)),
            (_, Some(c), Some(r)) if !matches(c, &etag(r, &ObjectMeta::decode(&r.meta))) => {
                return Err(s3_error!(PreconditionFailed, "If-Match failed"))
            }
            _ => {}
        }
    }
    let mut meta = meta_from(
        input.content_type,
        input.content_encoding,
        input.content_disposition,
        input.content_language,
        input.cache_control,
        input.metadata,
    )?;
    meta.expires = expires_text(input.expires.as_ref());
    let written = write(store, key.clone(), body, len, meta).await?;
    if let Some(want) = &input.content_md5 {
        use base64::Engine as _;
        let got = written
            .md5
            .map(|m| base64::engine::general_purpose::STANDARD.encode(m));
        if got.as_deref() != Some(want.as_str()) {
            // The value does not match what the client sent: it must not stay.
            let _ = store.delete(key).await;
            return Err(s3_error!(BadDigest, "Content-MD5 does not match the body"));
        }
    }
    Ok(S3Response::new(PutObjectOutput {
        e_tag: written.md5.map(|m| ETag::Strong(hex(&m))),
        size: i64::try_from(written.size).ok(),
        ..Default::default()
    }))
}

/// The body of a request that came without one: no bytes.
pub(super) fn empty_body() -> StreamingBlob {
    StreamingBlob::wrap(futures_util::stream::empty::<Result<Bytes, std::io::Error>>())
}

/// Stores `body` under `key` (replacing, hashed, with `meta`; an empty body is a
/// zero-byte object): the one write path of the S3 front-end.
pub async fn write<S, E>(
    store: &Arc<Store>,
    key: Vec<u8>,
    body: S,
    len: Option<u64>,
    meta: ObjectMeta,
) -> S3Result<crate::store::Written>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    let opts = PutOptions {
        replace: true,
        md5: true,
        meta: meta.encode(),
        allow_empty: true,
        origin: None,
    };
    store
        .put_with(key, body, len, opts)
        .await
        .map_err(|e| write_error(e.error))
}

/// GetObject: the value (or a range of it) streamed through the index server.
pub async fn get(
    store: &Arc<Store>,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let key = object_key(&input.bucket, &input.key)?;
    let conditions = Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    };
    let range = |record: &Record| -> S3Result<Option<std::ops::Range<u64>>> {
        conditions.check(record, not_modified)?;
        match &input.range {
            // No range of an empty object is satisfiable (S3 answers 416 too).
            Some(_) if record.size == 0 => Err(s3_error!(
                InvalidRange,
                "the object is empty: no range of it is satisfiable"
            )),
            Some(r) => Ok(Some(r.check(record.size)?)),
            None => Ok(None),
        }
    };
    let (record, opened) = open_record(store, &key, range).await?;
    let opened = opened.ok_or_else(|| s3_error!(InternalError))?;
    let meta = ObjectMeta::decode(&record.meta);
    let r = opened.range.clone();
    let content_range = input.range.as_ref().map(|_| {
        format!(
            "bytes {}-{}/{}",
            r.start,
            r.end.saturating_sub(1),
            record.size
        )
    });
    let output = GetObjectOutput {
        accept_ranges: Some("bytes".into()),
        content_length: i64::try_from(r.end - r.start).ok(),
        content_range,
        content_type: input
            .response_content_type
            .or(meta.content_type.clone())
            .or_else(|| Some("binary/octet-stream".into())),
        content_encoding: input
            .response_content_encoding
            .or(meta.content_encoding.clone()),
        content_disposition: input
            .response_content_disposition
            .or(meta.content_disposition.clone()),
        content_language: input
            .response_content_language
            .or(meta.content_language.clone()),
        cache_control: input.response_cache_control.or(meta.cache_control.clone()),
        expires: input.response_expires.or_else(|| expires_of(&meta)),
        e_tag: Some(ETag::Strong(etag(&record, &meta))),
        last_modified: Some(timestamp(record.changed_ms)),
        metadata: (!meta.user.is_empty()).then(|| meta.user.clone().into_iter().collect()),
        body: Some(blob(opened)),
        ..Default::default()
    };
    Ok(S3Response::new(output))
}

/// The record of object `object` in `bucket` (which must exist), or `NoSuchKey`.
fn object_record(store: &Store, bucket: &str, object: &str) -> S3Result<Record> {
    require(store, bucket)?;
    let key = object_key(bucket, object)?;
    store
        .record(&key)
        .map_err(store_error)?
        .ok_or_else(|| s3_error!(NoSuchKey))
}

/// HeadObject.
pub async fn head(
    store: &Arc<Store>,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let input = req.input;
    let record = object_record(store, &input.bucket, &input.key)?;
    let meta = ObjectMeta::decode(&record.meta);
    let tag = etag(&record, &meta);
    let modified = timestamp(record.changed_ms);
    Conditions {
        if_match: input.if_match.as_ref(),
        if_none_match: input.if_none_match.as_ref(),
        if_modified_since: input.if_modified_since.as_ref(),
        if_unmodified_since: input.if_unmodified_since.as_ref(),
    }
    .check_tag(&tag, &modified, not_modified)?;
    let expires = expires_of(&meta);
    Ok(S3Response::new(HeadObjectOutput {
        accept_ranges: Some("bytes".into()),
        content_length: i64::try_from(record.size).ok(),
        content_type: meta
            .content_type
            .or_else(|| Some("binary/octet-stream".into())),
        content_encoding: meta.content_encoding,
        content_disposition: meta.content_disposition,
        content_language: meta.content_language,
        expires,
        cache_control: meta.cache_control,
        e_tag: Some(ETag::Strong(tag)),
        last_modified: Some(modified),
        metadata: (!meta.user.is_empty()).then(|| meta.user.into_iter().collect()),
        ..Default::default()
    }))
}

/// DeleteObject: 204 whether or not the object existed (S3 semantics).
pub async fn delete(
    store: &Arc<Store>,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let key = object_key(&input.bucket, &input.key)?;
    match store.delete(key).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(S3Response::new(DeleteObjectOutput::default())),
        Err(e) => Err(store_error(e)),
    }
}

/// Most keys one DeleteObjects names (S3's limit).
pub const MAX_DELETE: usize = 1000;

/// DeleteObjects: each key deleted through the store core; per-key errors reported.
pub async fn delete_many(
    store: &Arc<Store>,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let objects = input.delete.objects;
    if objects.len() > MAX_DELETE {
        return Err(s3_error!(
            MalformedXML,
            "at most {MAX_DELETE} keys per DeleteObjects"
        ));
    }
    let quiet = input.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for obj in objects {
        let result = match object_key(&input.bucket, &obj.key) {
            Ok(key) => match store.delete(key).await {
                Ok(()) | Err(StoreError::NotFound) => Ok(()),
                Err(e) => Err(store_error(e)),
            },
            Err(e) => Err(e),
        };
        match result {
            Ok(()) if quiet => {}
            Ok(()) => deleted.push(DeletedObject {
                key: Some(obj.key),
                ..Default::default()
            }),
            Err(e) => errors.push(Error {
                code: Some(e.code().as_str().to_string()),
                key: Some(obj.key),
                message: e.message().map(str::to_string),
                version_id: None,
            }),
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: Some(errors),
        ..Default::default()
    }))
}

/// CopyObject: the source is read from its volumes and written to the target's
/// through the store core, inside the server (no bytes through the client).
pub async fn copy(
    store: &Arc<Store>,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let input = req.input;
    let (src_bucket, src_key) = copy_source(&input.copy_source)?;
    require(store, src_bucket)?;
    require(store, &input.bucket)?;
    let source = object_key(src_bucket, src_key)?;
    let target = object_key(&input.bucket, &input.key)?;
    let conditions = Conditions {
        if_match: input.copy_source_if_match.as_ref(),
        if_none_match: input.copy_source_if_none_match.as_ref(),
        if_modified_since: input.copy_source_if_modified_since.as_ref(),
        if_unmodified_since: input.copy_source_if_unmodified_since.as_ref(),
    };
    let check = |record: &Record| -> S3Result<Option<std::ops::Range<u64>>> {
        conditions.check(record, precondition_failed)?;
        if record.size > MAX_OBJECT {
            return Err(s3_error!(
                InvalidRequest,
                "the source is larger than 5 GiB: copy it with UploadPartCopy"
            ));
        }
        Ok(None)
    };
    let replace = input
        .metadata_directive
        .as_ref()
        .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
    if source == target {
        if !replace {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to \
                 itself without changing the object's metadata"
            ));
        }
        let mut meta = meta_from(
            input.content_type,
            input.content_encoding,
            input.content_disposition,
            input.content_language,
            input.cache_control,
            input.metadata,
        )?;
        meta.expires = expires_text(input.expires.as_ref());
        return replace_meta(store, &source, check, meta).await;
    }
    let (record, opened) = open_record(store, &source, check).await?;
    let opened = opened.ok_or_else(|| s3_error!(InternalError))?;
    let meta = if replace {
        ObjectMeta {
            expires: expires_text(input.expires.as_ref()),
            ..meta_from(
                input.content_type,
                input.content_encoding,
                input.content_disposition,
                input.content_language,
                input.cache_control,
                input.metadata,
            )?
        }
    } else {
        // The copy is one part: its ETag is its md5, whatever the source's was.
        ObjectMeta {
            etag: None,
            ..ObjectMeta::decode(&record.meta)
        }
    };
    let written = write(
        store,
        target,
        source_stream(opened),
        Some(record.size),
        meta,
    )
    .await?;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: written.md5.map(|m| ETag::Strong(hex(&m))),
            last_modified: Some(timestamp(crate::clock::now_ms())),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// CopyObject of an object onto itself with `REPLACE`: only its metadata changes
/// (`Store::set_meta`), the value stays where it is. The ETag becomes the value's md5
/// (a copy is one part), as S3's does.
async fn replace_meta(
    store: &Arc<Store>,
    key: &[u8],
    check: impl Fn(&Record) -> S3Result<Option<std::ops::Range<u64>>>,
    meta: ObjectMeta,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let record = store
        .record(key)
        .map_err(store_error)?
        .ok_or_else(|| s3_error!(NoSuchKey))?;
    check(&record)?;
    match store.set_meta(key, &record, meta.encode()).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(s3_error!(NoSuchKey)),
        Err(e) => return Err(store_error(e)),
    }
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(ETag::Strong(etag(&record, &meta))),
            last_modified: Some(timestamp(record.changed_ms)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

/// The length of an upload's body: from the body itself when it knows it exactly,
/// else from `Content-Length`.
pub(super) fn body_len(body: &StreamingBlob, content_length: Option<ContentLength>) -> Option<u64> {
    body.remaining_length()
        .exact()
        .map(|n| n as u64)
        .or(content_length.and_then(|n| u64::try_from(n).ok()))
}

/// GetObjectAttributes: the ETag, size, storage class and (for a multipart object)
/// its part count — whichever were asked for; no checksums (none are stored).
pub async fn attributes(
    store: &Arc<Store>,
    req: S3Request<GetObjectAttributesInput>,
) -> S3Result<S3Response<GetObjectAttributesOutput>> {
    let input = req.input;
    let record = object_record(store, &input.bucket, &input.key)?;
    let meta = ObjectMeta::decode(&record.meta);
    // One header, `x-amz-object-attributes: ETag,ObjectSize`: split what s3s passes on.
    let wanted = |a: &str| {
        input
            .object_attributes
            .iter()
            .flat_map(|o| o.as_str().split(','))
            .any(|o| o.trim() == a)
    };
    let tag = etag(&record, &meta);
    // A multipart object's ETag ends in `-N`, N its number of parts.
    let parts = tag
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse::<i32>().ok())
        .filter(|_| meta.upload_id.is_some() || meta.etag.is_some());
    Ok(S3Response::new(GetObjectAttributesOutput {
        e_tag: wanted(ObjectAttributes::ETAG).then(|| ETag::Strong(tag.clone())),
        object_size: wanted(ObjectAttributes::OBJECT_SIZE)
            .then(|| i64::try_from(record.size).ok())
            .flatten(),
        storage_class: wanted(ObjectAttributes::STORAGE_CLASS)
            .then(|| StorageClass::from_static(StorageClass::STANDARD)),
        object_parts: parts
            .filter(|_| wanted(ObjectAttributes::OBJECT_PARTS))
            .map(|n| GetObjectAttributesParts {
                total_parts_count: Some(n),
                ..Default::default()
            }),
        last_modified: Some(timestamp(record.changed_ms)),
        ..Default::default()
    }))
}
