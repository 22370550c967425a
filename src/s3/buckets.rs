//! Buckets: bucket `b` is the key prefix `/b/`. Its record (creation time, owner)
//! is a front-end entry of the index (`s3/bucket/b`), so it replicates with an index
//! cluster and survives restarts.

use std::sync::Arc;

use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result};

use super::errors::{bucket_prefix, check_bucket_name, store_error};
use crate::index::State;
use crate::store::tenancy::Access;
pub use crate::store::tenancy::Bucket;
use crate::store::{ListRange, Store, StoreError};

/// Most buckets ListBuckets returns.
pub const MAX_BUCKETS: usize = 10_000;

const PREFIX: &str = "s3/bucket/";

fn entry(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// The bucket's record, or `NoSuchBucket`.
pub fn require(store: &Store, bucket: &str) -> S3Result<Bucket> {
    let raw = store
        .frontend(&entry(bucket))
        .map_err(store_error)?
        .ok_or_else(|| s3_error!(NoSuchBucket, "no such bucket: {bucket}"))?;
    Bucket::decode(&raw).ok_or_else(|| s3_error!(InternalError, "unreadable bucket record"))
}

/// The access key a request was signed with (`anonymous` without one).
pub fn caller<T>(req: &S3Request<T>) -> String {
    req.credentials
        .as_ref()
        .map_or_else(|| "anonymous".to_string(), |c| c.access_key.clone())
}

/// The time of a record or entry, as S3 shows it.
pub fn timestamp(ms: u64) -> Timestamp {
    // Whole seconds: HTTP dates have no finer resolution, and conditional requests
    // compare against them.
    Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(ms / 1000))
}

/// ListBuckets: the buckets the caller may read, in name order, those starting with
/// `prefix` when given; pages of `max-buckets` (1 to [`MAX_BUCKETS`], the default)
/// with a continuation token (the last name listed) when more follow.
pub async fn list(
    store: &Arc<Store>,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let owner = caller(&req);
    let input = req.input;
    let max = match input.max_buckets {
        None => MAX_BUCKETS,
        Some(n) if n >= 1 => usize::try_from(n).unwrap_or(MAX_BUCKETS).min(MAX_BUCKETS),
        Some(_) => {
            return Err(s3_error!(
                InvalidArgument,
                "max-buckets must be 1 to {MAX_BUCKETS}"
            ))
        }
    };
    let prefix = input.prefix.clone().unwrap_or_default();
    let after = input
        .continuation_token
        .as_ref()
        .map(|t| format!("{PREFIX}{t}"));
    // One more than a page: whether another page follows.
    let mut buckets = readable(store, &owner, format!("{PREFIX}{prefix}"), after, max + 1).await?;
    let more = buckets.len() > max;
    buckets.truncate(max);
    let next = more
        .then(|| buckets.last().and_then(|b| b.name.clone()))
        .flatten();
    Ok(S3Response::new(ListBucketsOutput {
        buckets: Some(buckets),
        continuation_token: next,
        prefix: input.prefix,
        owner: Some(Owner {
            display_name: Some(owner.clone()),
            id: Some(owner),
        }),
    }))
}

/// Up to `want` buckets named `prefix…` after `after` that access key `id` may read,
/// read from the index a bounded chunk at a time.
async fn readable(
    store: &Store,
    id: &str,
    prefix: String,
    mut after: Option<String>,
    want: usize,
) -> S3Result<Vec<s3s::dto::Bucket>> {
    const CHUNK: usize = 1000;
    let mut out = Vec::new();
    loop {
        let entries = store
            .frontend_range(prefix.clone(), after.clone(), CHUNK)
            .await
            .map_err(store_error)?;
        let done = entries.len() < CHUNK;
        after = entries.last().map(|(name, _)| name.clone());
        for (name, raw) in entries {
            let Some(b) = Bucket::decode(&raw).filter(|b| b.allows(id, Access::Read)) else {
                continue;
            };
            out.push(s3s::dto::Bucket {
                name: name.strip_prefix(PREFIX).map(str::to_string),
                creation_date: Some(timestamp(b.created_ms)),
                ..Default::default()
            });
            if out.len() == want {
                return Ok(out);
            }
        }
        if done {
            return Ok(out);
        }
    }
}

/// CreateBucket: when it exists, `BucketAlreadyOwnedByYou` to its creator and
/// `BucketAlreadyExists` to any other user (409 both).
pub async fn create(
    store: &Arc<Store>,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let name = req.input.bucket.clone();
    check_bucket_name(&name)?;
    let record = Bucket::new(&caller(&req), crate::clock::now_ms());
    let value = record.encode();
    match store.set_frontend(entry(&name), Some(value), true).await {
        Ok(()) => Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{name}")),
        })),
        Err(StoreError::Exists) => {
            let existing = store
                .frontend(&entry(&name))
                .map_err(store_error)?
                .and_then(|raw| Bucket::decode(&raw));
            match existing {
                Some(b) if b.owner != record.owner => Err(s3_error!(
                    BucketAlreadyExists,
                    "the bucket {name} exists and belongs to another user"
                )),
                _ => Err(s3_error!(BucketAlreadyOwnedByYou)),
            }
        }
        Err(e) => Err(store_error(e)),
    }
}

/// HeadBucket.
pub async fn head(
    store: &Arc<Store>,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    require(store, &req.input.bucket)?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

/// DeleteBucket: `BucketNotEmpty` while a key under `/bucket/` is live.
pub async fn delete(
    store: &Arc<Store>,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let name = &req.input.bucket;
    require(store, name)?;
    let range = ListRange::prefix(&bucket_prefix(name), None);
    let page = store
        .list_local(range, State::Live, 1, crate::index::PAGE_BUDGET)
        .await
        .map_err(store_error)?;
    if !page.keys.is_empty() {
        return Err(s3_error!(BucketNotEmpty));
    }
    match store.set_frontend(entry(name), None, false).await {
        Ok(()) | Err(StoreError::NotFound) => Ok(S3Response::new(DeleteBucketOutput {})),
        Err(e) => Err(store_error(e)),
    }
}

/// GetBucketLocation: hoard has one region; S3 answers an empty constraint for the
/// default one.
pub async fn location(
    store: &Arc<Store>,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    require(store, &req.input.bucket)?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}
