//! Tenancy for S3 requests: s3s calls [`Tenancy`] for every operation, after the
//! signature and before the operation, with the bucket and key it names — one place
//! for all of them. The decision itself is the store's ([`Store::authorize_bucket`]),
//! the same rule the native front-ends use. Copies also need read access to their
//! source (checked once the input is parsed). ListBuckets shows only the buckets the
//! key may read (`super::buckets::list`).

use std::sync::Arc;

use axum::http::Method;
use s3s::access::{S3Access, S3AccessContext};
use s3s::dto::{CopyObjectInput, CopySource, UploadPartCopyInput};
use s3s::path::S3Path;
use s3s::{s3_error, S3Request, S3Result};

use super::errors::store_error;
use crate::store::tenancy::{Access, Principal};
use crate::store::Store;

/// The S3 front-end's access check.
pub struct Tenancy {
    /// The store, whose rule decides.
    pub store: Arc<Store>,
}

/// The principal of a request signed with `credentials` (none: anonymous).
pub fn principal(credentials: Option<&s3s::auth::Credentials>) -> Principal {
    credentials.map_or(Principal::Anonymous, |c| {
        Principal::Key(c.access_key.clone())
    })
}

/// What an operation on a bucket's path needs (`None`: decided by the operation
/// itself — CreateBucket answers `BucketAlreadyExists` to others).
fn bucket_access(op: &str, method: &Method) -> Option<Access> {
    match op {
        "CreateBucket" => None,
        "DeleteBucket" => Some(Access::Own),
        _ if *method == Method::GET || *method == Method::HEAD => Some(Access::Read),
        _ => Some(Access::Write),
    }
}

impl Tenancy {
    async fn check_bucket(&self, who: &Principal, bucket: &str, access: Access) -> S3Result<()> {
        self.store
            .read_barrier()
            .await
            .map_err(|e| store_error(e.into()))?;
        self.store
            .authorize_bucket(who, bucket, access)
            .map(drop)
            .map_err(store_error)
    }

    async fn check_source(&self, who: &Principal, source: &CopySource) -> S3Result<()> {
        match source {
            CopySource::Bucket { bucket, .. } => self.check_bucket(who, bucket, Access::Read).await,
            CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => {
                Err(s3_error!(NotImplemented, "access points are not supported"))
            }
        }
    }
}

#[async_trait::async_trait]
impl S3Access for Tenancy {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let who = principal(cx.credentials());
        if who == Principal::Anonymous {
            return Err(s3_error!(AccessDenied, "Signature required"));
        }
        let (bucket, access) = match cx.s3_path() {
            S3Path::Root => return Ok(()),
            S3Path::Bucket { bucket } => match bucket_access(cx.s3_op().name(), cx.method()) {
                Some(access) => (bucket.to_string(), access),
                None => return Ok(()),
            },
            S3Path::Object { bucket, .. } => {
                let read = *cx.method() == Method::GET || *cx.method() == Method::HEAD;
                let access = if read { Access::Read } else { Access::Write };
                (bucket.to_string(), access)
            }
        };
        self.check_bucket(&who, &bucket, access).await
    }

    async fn copy_object(&self, req: &mut S3Request<CopyObjectInput>) -> S3Result<()> {
        let who = principal(req.credentials.as_ref());
        self.check_source(&who, &req.input.copy_source).await
    }

    async fn upload_part_copy(&self, req: &mut S3Request<UploadPartCopyInput>) -> S3Result<()> {
        let who = principal(req.credentials.as_ref());
        self.check_source(&who, &req.input.copy_source).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_map_to_accesses() {
        assert_eq!(bucket_access("CreateBucket", &Method::PUT), None);
        assert_eq!(
            bucket_access("DeleteBucket", &Method::DELETE),
            Some(Access::Own)
        );
        assert_eq!(
            bucket_access("ListObjectsV2", &Method::GET),
            Some(Access::Read)
        );
        assert_eq!(
            bucket_access("HeadBucket", &Method::HEAD),
            Some(Access::Read)
        );
        assert_eq!(
            bucket_access("DeleteObjects", &Method::POST),
            Some(Access::Write)
        );
    }
}
