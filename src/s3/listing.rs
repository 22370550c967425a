//! ListObjects (v1) and ListObjectsV2: bounded scans of the index over the bucket's
//! key range (`Store::list`), with S3's prefix, delimiter, marker / continuation token
//! / start-after and max-keys.
//!
//! A page holds at most `max-keys` (≤ 1000) entries — objects and common prefixes —
//! and costs a bounded number of index scans: when a key rolls up into a common
//! prefix, the next scan starts after every key with that prefix, so a directory of a
//! million keys costs one entry. Continuation tokens are the last entry returned
//! (base64): the next page lists only what sorts after it, which also skips a common
//! prefix already returned.

use std::sync::Arc;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::buckets::{require, timestamp};
use super::errors::{bucket_prefix, etag, store_error};
use crate::index::{prefix_end, State, PAGE_BUDGET};
use crate::store::{ListRange, ObjectMeta, Store};

/// Most entries one page returns (S3's limit).
pub const MAX_KEYS: usize = 1000;

/// One page of a listing.
#[derive(Debug, Default)]
pub struct Listed {
    /// Objects, in key order.
    pub objects: Vec<Object>,
    /// Common prefixes, in order.
    pub prefixes: Vec<String>,
    /// More entries follow.
    pub truncated: bool,
    /// The last entry returned (where the next page starts after), when truncated.
    pub last: Option<String>,
}

/// What to list.
pub struct Query<'a> {
    /// The bucket.
    pub bucket: &'a str,
    /// Keys listed start with this.
    pub prefix: &'a str,
    /// Roll keys up at the first occurrence of this after the prefix.
    pub delimiter: Option<&'a str>,
    /// List only entries sorting after this.
    pub after: Option<&'a str>,
    /// Most entries returned.
    pub max: usize,
}

/// Lists one page of `q` (see the module docs).
pub async fn list(store: &Arc<Store>, q: &Query<'_>) -> S3Result<Listed> {
    // max-keys=0: nothing, and not truncated (as S3 answers).
    if q.max == 0 {
        return Ok(Listed::default());
    }
    let base = bucket_prefix(q.bucket);
    let full_prefix = [base.as_slice(), q.prefix.as_bytes()].concat();
    // Keys cannot hold control characters, so `after` + NUL is the first key above it.
    let mut start: Option<Vec<u8>> = q
        .after
        .map(|a| [base.as_slice(), a.as_bytes(), b"\0"].concat());
    let mut out = Listed::default();
    let mut entries = 0;
    'scan: loop {
        let range = ListRange::prefix(&full_prefix, start.as_deref());
        let want = q.max + 1 - entries;
        let page = store
            .list_local(range, State::Live, want.min(MAX_KEYS + 1), PAGE_BUDGET)
            .await
            .map_err(store_error)?;
        for key in &page.keys {
            let Ok(rel) = std::str::from_utf8(&key[base.len()..]) else {
                continue;
            };
            if q.after.is_some_and(|a| rel <= a) {
                continue;
            }
            let rolled = q.delimiter.filter(|d| !d.is_empty()).and_then(|d| {
                rel[q.prefix.len()..]
                    .find(d)
                    .map(|i| &rel[..q.prefix.len() + i + d.len()])
            });
            if let Some(cp) = rolled {
                if q.after.is_some_and(|a| cp <= a) {
                    // Already returned by an earlier page: skip the whole prefix.
                } else {
                    entries += 1;
                    if entries > q.max {
                        out.truncated = true;
                        break 'scan;
                    }
                    out.prefixes.push(cp.to_string());
                    out.last = Some(cp.to_string());
                }
                match prefix_end(&[base.as_slice(), cp.as_bytes()].concat()) {
                    Some(next) => {
                        start = Some(next);
                        continue 'scan;
                    }
                    None => break 'scan,
                }
            }
            // The record may be gone since the scan: then it is not listed.
            let Some(record) = store.record(key).map_err(store_error)? else {
                continue;
            };
            entries += 1;
            if entries > q.max {
                out.truncated = true;
                break 'scan;
            }
            let meta = ObjectMeta::decode(&record.meta);
            out.objects.push(Object {
                key: Some(rel.to_string()),
                size: Some(i64::try_from(record.size).unwrap_or(i64::MAX)),
                e_tag: Some(ETag::Strong(etag(&record, &meta))),
                last_modified: Some(timestamp(record.changed_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            });
            out.last = Some(rel.to_string());
        }
        match page.next {
            Some(next) => start = Some(next),
            None => break,
        }
    }
    if !out.truncated {
        out.last = None;
    }
    Ok(out)
}

/// `max-keys` as given (default 1000, at most 1000; negative is an error).
fn max_keys(given: Option<i32>) -> S3Result<usize> {
    match given {
        None => Ok(MAX_KEYS),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok(usize::try_from(n).unwrap_or(MAX_KEYS).min(MAX_KEYS)),
    }
}

/// Characters escaped with `encoding-type=url`: all but unreserved ones and `/`.
const URL_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'/');

/// Applies `encoding-type=url` to a listing's names.
fn encoder(kind: Option<&EncodingType>) -> S3Result<impl Fn(String) -> String> {
    let url = match kind {
        None => false,
        Some(k) if k.as_str() == EncodingType::URL => true,
        Some(k) => {
            return Err(s3_error!(
                InvalidArgument,
                "unknown encoding-type {}",
                k.as_str()
            ))
        }
    };
    Ok(move |s: String| {
        if url {
            utf8_percent_encode(&s, URL_ENCODE).to_string()
        } else {
            s
        }
    })
}

/// A page's entries, encoded as asked.
fn entries(listed: Listed, enc: &impl Fn(String) -> String) -> (Vec<Object>, Vec<CommonPrefix>) {
    let objects = listed
        .objects
        .into_iter()
        .map(|mut o| {
            o.key = o.key.map(enc);
            o
        })
        .collect();
    let prefixes = listed
        .prefixes
        .into_iter()
        .map(|p| CommonPrefix {
            prefix: Some(enc(p)),
        })
        .collect();
    (objects, prefixes)
}

/// ListObjectsV2.
pub async fn list_v2(
    store: &Arc<Store>,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let token = match &input.continuation_token {
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| s3_error!(InvalidArgument, "invalid continuation token"))?,
        ),
        None => None,
    };
    let after = token.clone().or_else(|| input.start_after.clone());
    let prefix = input.prefix.clone().unwrap_or_default();
    let listed = list(
        store,
        &Query {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: after.as_deref(),
            max,
        },
    )
    .await?;
    let truncated = listed.truncated;
    let next = listed
        .last
        .as_ref()
        .map(|l| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(l));
    let (contents, prefixes) = entries(listed, &enc);
    let count = contents.len() + prefixes.len();
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(input.bucket),
        prefix: Some(enc(prefix)),
        max_keys: Some(i32::try_from(max).unwrap_or(1000)),
        key_count: Some(i32::try_from(count).unwrap_or(i32::MAX)),
        continuation_token: input.continuation_token,
        is_truncated: Some(truncated),
        next_continuation_token: next,
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(&enc),
        encoding_type: input.encoding_type,
        start_after: input.start_after.map(&enc),
        ..Default::default()
    }))
}

/// ListObjects (v1).
pub async fn list_v1(
    store: &Arc<Store>,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let listed = list(
        store,
        &Query {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.marker.as_deref().filter(|m| !m.is_empty()),
            max,
        },
    )
    .await?;
    let truncated = listed.truncated;
    // NextMarker is returned with a delimiter (without one, clients use the last key).
    let next_marker = listed
        .last
        .clone()
        .filter(|_| input.delimiter.as_ref().is_some_and(|d| !d.is_empty()))
        .map(&enc);
    let (contents, prefixes) = entries(listed, &enc);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(input.bucket),
        prefix: Some(enc(prefix)),
        marker: Some(input.marker.map(&enc).unwrap_or_default()),
        max_keys: Some(i32::try_from(max).unwrap_or(1000)),
        is_truncated: Some(truncated),
        contents: Some(contents),
        common_prefixes: Some(prefixes),
        delimiter: input.delimiter.clone().filter(|d| !d.is_empty()).map(&enc),
        next_marker,
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}

/// ListObjectVersions of an unversioned bucket (hoard has no versioning): every object
/// is its only, latest version, with version id `null` (as S3 lists objects of a
/// bucket that never had versioning); no delete markers. Clients and test fixtures
/// use it to empty buckets. `key-marker` pages like ListObjects' marker;
/// `version-id-marker` can only be `null` then, and is ignored.
pub async fn list_versions(
    store: &Arc<Store>,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    let input = req.input;
    require(store, &input.bucket)?;
    let enc = encoder(input.encoding_type.as_ref())?;
    let max = max_keys(input.max_keys)?;
    let prefix = input.prefix.clone().unwrap_or_default();
    let listed = list(
        store,
        &Query {
            bucket: &input.bucket,
            prefix: &prefix,
            delimiter: input.delimiter.as_deref(),
            after: input.key_marker.as_deref().filter(|m| !m.is_empty()),
            max,
        },
    )
    .await?;
    let truncated = listed.truncated;
    let next_key = listed.last.clone().map(&enc);
    let (objects, prefixes) = entries(listed, &enc);
    let versions = objects
        .into_iter()
        .map(|o| ObjectVersion {
            key: o.key,
            size: o.size,
            e_tag: o.e_tag,
            last_modified: o.last_modified,
            is_latest: Some(true),
            version_id: Some("null".into()),
            storage_class: Some(ObjectVersionStorageClass::from_static(
                ObjectVersionStorageClass::STANDARD,
            )),
            ..Default::default()
        })
        .collect();
    Ok(S3Response::new(ListObjectVersionsOutput {
        name: Some(input.bucket),
        prefix: Some(enc(prefix)),
        key_marker: Some(input.key_marker.map(&enc).unwrap_or_default()),
        version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
        next_key_marker: next_key,
        next_version_id_marker: truncated.then(|| "null".to_string()),
        max_keys: Some(i32::try_from(max).unwrap_or(1000)),
        is_truncated: Some(truncated),
        versions: Some(versions),
        common_prefixes: Some(prefixes),
        delimiter: input.delimiter.filter(|d| !d.is_empty()).map(&enc),
        encoding_type: input.encoding_type,
        ..Default::default()
    }))
}
