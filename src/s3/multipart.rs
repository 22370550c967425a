//! Multipart uploads.
//!
//! * An upload is a front-end entry of the index, `s3/upload/<bucket>/<key>\0<id>`
//!   (key, owner, time, the object's metadata): it replicates with the index and
//!   survives restarts.
//! * Part `n` of upload `id` is an ordinary hoard key, `/.s3-multipart/<id>/<n:05>`,
//!   written through `Store::put_with` like any value: placed, replicated, repaired,
//!   rebalanced and verified like any other key. (`.s3-multipart` is not a valid bucket
//!   name, so no bucket sees these keys.)
//! * CompleteMultipartUpload checks the part list, then streams the parts, in order,
//!   into the object's key through `Store::put_with` (memory bounded whatever the size;
//!   the copy costs one write of the object), records the ETag `md5(part md5s)-N` in
//!   the object's metadata, drops the upload entry and deletes the parts. While it
//!   copies, the answer's body sends whitespace so clients do not time out.
//! * AbortMultipartUpload drops the entry and deletes the parts.
//! * While a Complete runs, the upload is held (`s3/completing/<id>`, with a lease):
//!   another Complete, an Abort or an UploadPart of it gets `OperationAborted`, since
//!   changing the parts mid-copy could leave the object absent or corrupt.

use std::sync::Arc;

use futures_util::{StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::buckets::{caller, require, timestamp};
use super::errors::{object_key, store_error};
use super::objects::{write, MAX_OBJECT};
use crate::hex::hex;
use crate::index::{State, PAGE_BUDGET};
use crate::store::{ListRange, ObjectMeta, Store, StoreError};

/// Key prefix of the parts of uploads in progress.
pub const PARTS_PREFIX: &str = "/.s3-multipart/";
/// Highest part number (S3's limit).
pub const MAX_PARTS: i32 = 10_000;
/// Smallest part but the last (S3's limit).
pub const MIN_PART: u64 = 5 << 20;
/// Most parts or uploads one listing returns.
const MAX_LISTED: usize = 1000;

const PREFIX: &str = "s3/upload/";

/// An upload in progress.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct Upload {
    created_ms: u64,
    owner: String,
    meta: ObjectMeta,
}

fn entry(bucket: &str, key: &str, id: &str) -> String {
    format!("{PREFIX}{bucket}/{key}\0{id}")
}

pub(super) fn part_key(id: &str, n: i32) -> Vec<u8> {
    format!("{PARTS_PREFIX}{id}/{n:05}").into_bytes()
}

fn parts_of(id: &str) -> Vec<u8> {
    format!("{PARTS_PREFIX}{id}/").into_bytes()
}

/// How long a CompleteMultipartUpload holds its upload against another Complete, an
/// Abort or an UploadPart; past this (the completing server died), a retry takes over.
const COMPLETING_LEASE_MS: u64 = 15 * 60 * 1000;

fn completing(id: &str) -> String {
    format!("s3/completing/{id}")
}

/// `OperationAborted` while a CompleteMultipartUpload of upload `id` runs: changing or
/// deleting its parts then could lose the object being written.
pub(super) fn check_not_completing(store: &Store, id: &str) -> S3Result<()> {
    let held = store.frontend(&completing(id)).map_err(store_error)?;
    match held.and_then(|v| String::from_utf8(v).ok()?.parse::<u64>().ok()) {
        Some(since) if crate::clock::now_ms() < since.saturating_add(COMPLETING_LEASE_MS) => Err(
            s3_error!(OperationAborted, "this upload is being completed"),
        ),
        _ => Ok(()),
    }
}

/// Takes upload `id` for a CompleteMultipartUpload (see [`check_not_completing`]).
async fn take_for_completion(store: &Store, id: &str) -> S3Result<()> {
    check_not_completing(store, id)?;
    let now = crate::clock::now_ms().to_string().into_bytes();
    // A stale hold (its server died) is dropped first; then only one taker wins.
    if store
        .frontend(&completing(id))
        .map_err(store_error)?
        .is_some()
    {
        let _ = store.set_frontend(completing(id), None, false).await;
    }
    match store.set_frontend(completing(id), Some(now), true).await {
        Ok(()) => Ok(()),
        Err(StoreError::Exists) => Err(s3_error!(
            OperationAborted,
            "this upload is being completed"
        )),
        Err(e) => Err(store_error(e)),
    }
}

/// The upload's entry, or `NoSuchUpload`.
pub(super) fn find(store: &Store, bucket: &str, key: &str, id: &str) -> S3Result<Upload> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(s3_error!(NoSuchUpload));
    }
    let raw = store
        .frontend(&entry(bucket, key, id))
        .map_err(store_error)?
        .ok_or_else(|| s3_error!(NoSuchUpload))?;
    serde_json::from_slice(&raw).map_err(|e| s3_error!(InternalError, "upload record: {e}"))
}

/// CreateMultipartUpload.
pub async fn create(
    store: &Arc<Store>,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let owner = caller(&req);
    let input = req.input;
    require(store, &input.bucket)?;
    object_key(&input.bucket, &input.key)?;
    let meta = ObjectMeta {
        content_type: input.content_type,
        content_encoding: input.content_encoding,
        content_disposition: input.content_disposition,
        content_language: input.content_language,
        cache_control: input.cache_control,
        user: input
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        expires: super::objects::expires_text(input.expires.as_ref()),
        ..ObjectMeta::default()
    };
    let user: usize = meta.user.iter().map(|(k, v)| k.len() + v.len()).sum();
    if user > super::objects::MAX_USER_META {
        return Err(s3_error!(MetadataTooLarge));
    }
    let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let upload = Upload {
        created_ms: crate::clock::now_ms(),
        owner,
        meta,
    };
    let value = serde_json::to_vec(&upload).map_err(|e| s3_error!(InternalError, "{e}"))?;
    store
        .set_frontend(entry(&input.bucket, &input.key, &id), Some(value), true)
        .await
        .map_err(store_error)?;
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

/// UploadPart: the part is stored as its own key (see the module docs).
pub async fn upload_part(
    store: &Arc<Store>,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    find(store, &input.bucket, &input.key, &input.upload_id)?;
    check_not_completing(store, &input.upload_id)?;
    if !(1..=MAX_PARTS).contains(&input.part_number) {
        return Err(s3_error!(
            InvalidArgument,
            "part numbers are 1 to {MAX_PARTS}"
        ));
    }
    // An empty part (a zero-byte object uploaded in one part) may come without a body.
    let body = input.body.unwrap_or_else(super::objects::empty_body);
    let len = super::objects::body_len(&body, input.content_length);
    if len.is_some_and(|n| n > MAX_OBJECT) {
        return Err(s3_error!(
            EntityTooLarge,
            "a part is at most {MAX_OBJECT} bytes"
        ));
    }
    let written = write(
        store,
        part_key(&input.upload_id, input.part_number),
        body,
        len,
        ObjectMeta::default(),
    )
    .await?;
    Ok(S3Response::new(UploadPartOutput {
        e_tag: written.md5.map(|m| ETag::Strong(hex(&m))),
        ..Default::default()
    }))
}

/// A stored part: number, size, md5, time.
struct StoredPart {
    number: i32,
    size: u64,
    md5: [u8; 16],
    changed_ms: u64,
}

/// Up to `limit` parts of upload `id` numbered above `after`.
async fn stored_parts(
    store: &Arc<Store>,
    id: &str,
    after: i32,
    limit: usize,
) -> S3Result<(Vec<StoredPart>, bool)> {
    let prefix = parts_of(id);
    let start = part_key(id, after + 1);
    let page = store
        .list(
            ListRange::prefix(&prefix, Some(&start)),
            State::Live,
            limit + 1,
            PAGE_BUDGET,
        )
        .await
        .map_err(store_error)?;
    let mut parts = Vec::new();
    for key in &page.keys {
        let Some(number) = std::str::from_utf8(&key[prefix.len()..])
            .ok()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(record) = store.record(key).map_err(store_error)? else {
            continue;
        };
        let Some(md5) = record.md5 else { continue };
        parts.push(StoredPart {
            number,
            size: record.size,
            md5,
            changed_ms: record.changed_ms,
        });
    }
    let more = parts.len() > limit || page.next.is_some();
    parts.truncate(limit);
    Ok((parts, more))
}

/// ListParts.
pub async fn list_parts(
    store: &Arc<Store>,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let upload = find(store, &input.bucket, &input.key, &input.upload_id)?;
    let max = input.max_parts.map_or(MAX_LISTED, |n| {
        usize::try_from(n).unwrap_or(0).clamp(1, MAX_LISTED)
    });
    let after = input.part_number_marker.unwrap_or(0).clamp(0, MAX_PARTS);
    let (parts, more) = stored_parts(store, &input.upload_id, after, max).await?;
    let next = parts.last().map(|p| p.number);
    let owner = Owner {
        display_name: Some(upload.owner.clone()),
        id: Some(upload.owner.clone()),
    };
    Ok(S3Response::new(ListPartsOutput {
        bucket: Some(input.bucket),
        key: Some(input.key),
        upload_id: Some(input.upload_id),
        max_parts: i32::try_from(max).ok(),
        is_truncated: Some(more),
        part_number_marker: input.part_number_marker,
        next_part_number_marker: next.filter(|_| more),
        owner: Some(owner.clone()),
        initiator: Some(Initiator {
            display_name: owner.display_name,
            id: owner.id,
        }),
        parts: Some(
            parts
                .into_iter()
                .map(|p| Part {
                    e_tag: Some(ETag::Strong(hex(&p.md5))),
                    last_modified: Some(timestamp(p.changed_ms)),
                    part_number: Some(p.number),
                    size: i64::try_from(p.size).ok(),
                    ..Default::default()
                })
                .collect(),
        ),
        ..Default::default()
    }))
}

/// Deletes every part of upload `id` (page by page); failures are logged, the parts
/// left are ordinary keys an operator can delete.
async fn delete_parts(store: &Arc<Store>, id: &str) {
    let mut after = 0;
    loop {
        let parts = match stored_parts(store, id, after, MAX_LISTED).await {
            Ok((parts, _)) => parts,
            Err(e) => {
                tracing::warn!("listing the parts of upload {id}: {e:?}");
                return;
            }
        };
        let Some(last) = parts.last() else { return };
        after = last.number;
        for p in &parts {
            match store.delete(part_key(id, p.number)).await {
                Ok(()) | Err(StoreError::NotFound) => {}
                Err(e) => tracing::warn!("deleting part {} of upload {id}: {e}", p.number),
            }
        }
    }
}

/// AbortMultipartUpload.
pub async fn abort(
    store: &Arc<Store>,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    find(store, &input.bucket, &input.key, &input.upload_id)?;
    check_not_completing(store, &input.upload_id)?;
    match store
        .set_frontend(
            entry(&input.bucket, &input.key, &input.upload_id),
            None,
            false,
        )
        .await
    {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(s3_error!(NoSuchUpload)),
        Err(e) => return Err(store_error(e)),
    }
    delete_parts(store, &input.upload_id).await;
    Ok(S3Response::new(AbortMultipartUploadOutput::default()))
}

/// The S3 ETag of a multipart object: md5 of the parts' md5s, `-N`.
pub fn multipart_etag(md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in md5s {
        h.update(m);
    }
    format!("{}-{}", hex(&h.finalize()), md5s.len())
}

/// CompleteMultipartUpload (see the module docs).
pub async fn complete(
    store: &Arc<Store>,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let key = object_key(&input.bucket, &input.key)?;
    let upload = match find(store, &input.bucket, &input.key, &input.upload_id) {
        Ok(upload) => upload,
        Err(e) => return completed_before(store, &input, &key).ok_or(e),
    };
    let listed = input
        .multipart_upload
        .and_then(|m| m.parts)
        .filter(|p| !p.is_empty())
        .ok_or_else(|| s3_error!(MalformedXML, "no parts given"))?;
    if listed.len() > MAX_PARTS as usize {
        return Err(s3_error!(MalformedXML, "more than {MAX_PARTS} parts"));
    }
    let id = input.upload_id.clone();
    let numbers = listed
        .iter()
        .map(|p| p.part_number.filter(|n| (1..=MAX_PARTS).contains(n)))
        .collect::<Option<Vec<i32>>>()
        .ok_or_else(|| s3_error!(InvalidPart, "part numbers are 1 to {MAX_PARTS}"))?;
    if numbers.windows(2).any(|w| w[0] >= w[1]) {
        return Err(s3_error!(InvalidPartOrder));
    }
    let mut chosen = Vec::with_capacity(listed.len());
    for (i, (part, &number)) in listed.iter().zip(&numbers).enumerate() {
        let record = store
            .record(&part_key(&id, number))
            .map_err(store_error)?
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} was not uploaded"))?;
        let md5 = record
            .md5
            .ok_or_else(|| s3_error!(InvalidPart, "part {number} has no md5"))?;
        let given = part
            .e_tag
            .as_ref()
            .map(|e| e.value().trim_matches('"').to_string());
        if given.as_deref().is_some_and(|g| g != hex(&md5)) {
            return Err(s3_error!(InvalidPart, "part {number}: ETag does not match"));
        }
        if i + 1 < listed.len() && record.size < MIN_PART {
            return Err(s3_error!(
                EntityTooSmall,
                "part {number} is smaller than 5 MiB"
            ));
        }
        chosen.push((number, record.size, md5));
    }
    let total: u64 = chosen.iter().map(|(_, size, _)| size).sum();
    let md5s: Vec<[u8; 16]> = chosen.iter().map(|(_, _, m)| *m).collect();
    let etag = multipart_etag(&md5s);
    let meta = ObjectMeta {
        etag: Some(etag.clone()),
        upload_id: Some(input.upload_id.clone()),
        ..upload.meta
    };
    let (bucket, object) = (input.bucket.clone(), input.key.clone());
    // The bucket's quota is the store's to enforce (`Store::put_with`); asked here
    // too, so a refusal is a plain 403 rather than an error inside the 200 that the
    // completion below streams.
    store
        .check_quota(&bucket, &key, total)
        .map_err(store_error)?;
    take_for_completion(store, &id).await?;
    let store = Arc::clone(store);
    // The copy runs on its own task: a client going away cannot cut it short.
    let work = tokio::spawn(async move {
        let numbers: Vec<i32> = chosen.iter().map(|(n, _, _)| *n).collect();
        let parts_store = Arc::clone(&store);
        let parts_id = id.clone();
        let body = futures_util::stream::iter(numbers)
            .then(move |n| {
                let store = Arc::clone(&parts_store);
                let key = part_key(&parts_id, n);
                async move { store.open_local(&key, None).await.map(|o| o.body) }
            })
            .try_flatten()
            .boxed();
        let written = write(&store, key, body, Some(total), meta).await;
        if written.is_err() {
            let _ = store.set_frontend(completing(&id), None, false).await;
        }
        written?;
        match store
            .set_frontend(entry(&bucket, &object, &id), None, false)
            .await
        {
            Ok(()) | Err(StoreError::NotFound) => {}
            Err(e) => tracing::warn!("dropping completed upload {id}: {e}"),
        }
        delete_parts(&store, &id).await;
        let _ = store.set_frontend(completing(&id), None, false).await;
        Ok(CompleteMultipartUploadOutput {
            bucket: Some(bucket.clone()),
            key: Some(object.clone()),
            e_tag: Some(ETag::Strong(etag)),
            location: Some(format!("/{bucket}/{object}")),
            ..Default::default()
        })
    });
    let future = async move {
        work.await
            .unwrap_or_else(|e| Err(s3_error!(InternalError, "completing the upload: {e}")))
    };
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        future: Some(Box::pin(future)),
        ..Default::default()
    }))
}

/// A CompleteMultipartUpload repeated after the upload completed (a client retrying
/// a lost answer): as on S3, it succeeds again — with the object's ETag — while the
/// object is still the one that upload made; `None` otherwise (`NoSuchUpload`).
fn completed_before(
    store: &Store,
    input: &CompleteMultipartUploadInput,
    key: &[u8],
) -> Option<S3Response<CompleteMultipartUploadOutput>> {
    let record = store.record(key).ok()??;
    let meta = ObjectMeta::decode(&record.meta);
    if meta.upload_id.as_deref() != Some(input.upload_id.as_str()) {
        return None;
    }
    Some(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(input.bucket.clone()),
        key: Some(input.key.clone()),
        e_tag: Some(ETag::Strong(meta.etag?)),
        location: Some(format!("/{}/{}", input.bucket, input.key)),
        ..Default::default()
    }))
}

/// ListMultipartUploads: the uploads in progress in a bucket, by key then id.
pub async fn list_uploads(
    store: &Arc<Store>,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let max = input.max_uploads.map_or(MAX_LISTED, |n| {
        usize::try_from(n).unwrap_or(0).clamp(1, MAX_LISTED)
    });
    let base = format!("{PREFIX}{}/", input.bucket);
    let prefix = format!("{base}{}", input.prefix.as_deref().unwrap_or(""));
    let after = input
        .key_marker
        .as_ref()
        .map(|k| match &input.upload_id_marker {
            Some(u) => entry(&input.bucket, k, u),
            // After every upload of the key.
            None => format!("{base}{k}\u{1}"),
        });
    let entries = store
        .frontend_range(prefix, after, max + 1)
        .await
        .map_err(store_error)?;
    let truncated = entries.len() > max;
    let mut uploads = Vec::new();
    for (name, raw) in entries.into_iter().take(max) {
        let Some((key, id)) = name[base.len()..].split_once('\0') else {
            continue;
        };
        let Ok(u) = serde_json::from_slice::<Upload>(&raw) else {
            continue;
        };
        let owner = Owner {
            display_name: Some(u.owner.clone()),
            id: Some(u.owner.clone()),
        };
        uploads.push(MultipartUpload {
            initiated: Some(timestamp(u.created_ms)),
            initiator: Some(Initiator {
                display_name: owner.display_name.clone(),
                id: owner.id.clone(),
            }),
            key: Some(key.to_string()),
            owner: Some(owner),
            upload_id: Some(id.to_string()),
            ..Default::default()
        });
    }
    let last = uploads.last().map(|u| (u.key.clone(), u.upload_id.clone()));
    Ok(S3Response::new(ListMultipartUploadsOutput {
        bucket: Some(input.bucket),
        prefix: input.prefix,
        key_marker: input.key_marker,
        upload_id_marker: input.upload_id_marker,
        max_uploads: i32::try_from(max).ok(),
        is_truncated: Some(truncated),
        next_key_marker: last.clone().filter(|_| truncated).and_then(|l| l.0),
        next_upload_id_marker: last.filter(|_| truncated).and_then(|l| l.1),
        uploads: Some(uploads),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_of_known_parts() {
        // md5(md5("a") ++ md5("b")), computed independently (Python hashlib).
        let a: [u8; 16] = Md5::digest(b"a").into();
        let b: [u8; 16] = Md5::digest(b"b").into();
        assert_eq!(
            multipart_etag(&[a, b]),
            "96e024ba2074fe77e8e965ba43a704be-2"
        );
        assert_eq!(part_key("ab", 7), b"/.s3-multipart/ab/00007");
    }
}
