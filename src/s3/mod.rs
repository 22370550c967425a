//! The S3-compatible API: real S3 clients (aws-cli, boto3, rclone, s3cmd, …) against
//! the same keyspace as the native API.
//!
//! Bucket `b` is the key prefix `/b/`: object `x/y` of bucket `b` is the hoard key
//! `/b/x/y`, readable through `GET /b/x/y` on the index port and the other way round.
//! The protocol (SigV4 and presigned URLs, aws-chunked bodies, XML, routing) is the
//! s3s crate's; this module implements its `S3` trait by translating each operation
//! into calls on the store core ([`crate::store::Store`]), like every front-end:
//!
//! * [`access`] — tenancy: each operation checked against its bucket's grants.
//! * [`auth`] — users (access keys in the index, seeded from the flags).
//! * [`buckets`] — List/Create/Head/DeleteBucket, GetBucketLocation; bucket records
//!   are index entries.
//! * [`objects`] — Put/Get/Head/Delete/Copy, DeleteObjects, conditional requests.
//! * [`listing`] — ListObjects v1 and v2, ListObjectVersions (unversioned: `null`).
//! * [`multipart`] — multipart uploads (design in its module docs).
//! * [`part_copy`] — UploadPartCopy: a part copied from an existing object.
//! * [`errors`] — store errors, keys and bucket names in S3 terms.
//! * [`expect`] — `Connection: close` where botocore's `Expect: 100-continue` handling
//!   would misread the next answer.
//! * [`post`] — POST Object (browser form uploads), streamed, in front of s3s.
//! * [`sigv2`] — Signature Version 2: refused unless `--s3-allow-sigv2`, then checked
//!   (date, constant-time signature) before s3s.
//!
//! Request bodies are bounded before authentication: s3s checks a request's signature
//! before reading its body (a payload hash or aws-chunked signatures are checked as
//! the body streams), refuses unsigned requests before it, and reads XML documents
//! only after authentication (at most [`MAX_XML`]); POST forms read at most
//! [`post::MAX_FIELDS`] bytes of fields before their signature is checked.
//!
//! Operations not listed in docs/ARCHITECTURE.md's compatibility table answer
//! `NotImplemented`.

pub mod access;
pub mod auth;
pub mod buckets;
pub mod errors;
pub mod expect;
pub mod listing;
pub mod multipart;
pub mod objects;
pub mod part_copy;
pub mod post;
pub mod sigv2;

use std::sync::Arc;

use axum::error_handling::HandleError;
use s3s::dto::*;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Request, S3Response, S3Result};

use crate::store::Store;
pub use auth::Users;

/// Largest XML request document (DeleteObjects of 1000 keys, a Complete of 10,000
/// parts fit); larger ones are refused before being buffered.
pub const MAX_XML: usize = 4 << 20;

/// The S3 flags shared by `hoard server` and `hoard dev`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct S3Args {
    /// Access key of the S3 user (with --s3-secret-key).
    #[arg(long = "s3-access-key", env = "HOARD_S3_ACCESS_KEY")]
    pub access_key: Option<String>,
    /// Secret key of the S3 user.
    #[arg(
        long = "s3-secret-key",
        env = "HOARD_S3_SECRET_KEY",
        hide_env_values = true
    )]
    pub secret_key: Option<String>,
    /// File of S3 users, one `ACCESS_KEY SECRET_KEY` pair a line (`#` comments).
    #[arg(long = "s3-keys-file", env = "HOARD_S3_KEYS_FILE")]
    pub keys_file: Option<std::path::PathBuf>,
    /// Also accept virtual-hosted-style requests (`BUCKET.DOMAIN`) for this domain;
    /// path-style requests always work.
    #[arg(long = "s3-domain", env = "HOARD_S3_DOMAIN")]
    pub domain: Option<String>,
    /// Largest file of a POST Object (browser form upload), in bytes; the file is
    /// streamed to the store and refused with EntityTooLarge beyond.
    #[arg(long = "s3-max-post-size", env = "HOARD_S3_MAX_POST_SIZE", default_value_t = objects::MAX_OBJECT)]
    pub max_post_size: u64,
    /// Also accept requests signed with Signature Version 2 (refused by default: it
    /// signs no payload); their date must then be within 15 minutes of the server's.
    #[arg(long = "s3-allow-sigv2", env = "HOARD_S3_ALLOW_SIGV2")]
    pub allow_sigv2: bool,
    /// Declare the native API (HTTP, binary protocol, JSON) open: with `--auth-mode
    /// none`, anyone who reaches its ports reads and writes every S3 bucket's contents
    /// (never multipart parts). Without it, a server with S3 users and `--auth-mode
    /// none` refuses to start.
    #[arg(long = "native-open", env = "HOARD_NATIVE_OPEN")]
    pub native_open: bool,
}

impl S3Args {
    /// The users these flags name (`dev`: the default dev user when none).
    pub fn users(&self, dev: bool) -> anyhow::Result<Users> {
        Users::from_args(
            self.access_key.as_deref(),
            self.secret_key.as_deref(),
            self.keys_file.as_deref(),
            dev,
        )
    }
}

/// What the layers in front of s3s (POST Object, SigV2) need.
pub struct Front {
    store: Arc<Store>,
    domain: Option<String>,
    max_post: u64,
    allow_sigv2: bool,
}

/// The S3 front-end over a store.
#[derive(Clone)]
pub struct Hoard {
    store: Arc<Store>,
}

impl Hoard {
    /// Reads in an index cluster wait for this node's copy to catch up first.
    async fn barrier(&self) -> S3Result<()> {
        self.store
            .read_barrier()
            .await
            .map_err(|e| errors::store_error(e.into()))
    }
}

/// The S3 API as an axum router (for `crate::net::serve`); its users are the access
/// keys of the store's index (seed them first: [`Users::seed`]).
pub fn router(
    store: Arc<Store>,
    args: &S3Args,
    limiter: Option<Arc<crate::ratelimit::RateLimiter>>,
    verbose: bool,
) -> anyhow::Result<axum::Router> {
    let front = Arc::new(Front {
        store: Arc::clone(&store),
        domain: args.domain.clone(),
        max_post: args.max_post_size,
        allow_sigv2: args.allow_sigv2,
    });
    let mut builder = S3ServiceBuilder::new(Hoard {
        store: Arc::clone(&store),
    });
    builder.set_auth(auth::IndexAuth {
        store: Arc::clone(&store),
    });
    builder.set_access(access::Tenancy { store });
    if let Some(domain) = args.domain.as_deref() {
        let host = s3s::host::SingleDomain::new(domain)
            .map_err(|e| anyhow::anyhow!("--s3-domain {domain}: {e}"))?;
        builder.set_host(host);
    }
    let mut config = s3s::config::S3Config::default();
    config.xml_max_body_size = MAX_XML;
    // POST forms never reach s3s (`post::intercept` serves them, streamed); should one
    // get through, s3s buffers nothing of its file and little of its fields.
    config.post_object_max_file_size = 0;
    config.form_max_fields_size = post::MAX_FIELDS;
    config.form_max_field_size = post::MAX_FIELDS;
    builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
        config,
    ))));
    let service = HandleError::new(builder.build(), |e: s3s::HttpError| async move {
        tracing::warn!("S3 request failed: {e:?}");
        axum::http::StatusCode::INTERNAL_SERVER_ERROR
    });
    let router = axum::Router::new()
        .fallback_service(service)
        .layer(axum::middleware::map_request(bodiless))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&front),
            sigv2::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(front, post::intercept))
        .layer(axum::middleware::from_fn_with_state(limiter, rate_limit))
        .layer(axum::middleware::from_fn(
            expect::close_after_unexpected_answer,
        ));
    Ok(crate::http::observe(router, "s3", verbose))
}

/// `--rate-limit` (per client, shared with the other front-ends): beyond it, S3's
/// `SlowDown` (503), which S3 clients retry with backoff, before anything of the
/// request is read.
async fn rate_limit(
    axum::extract::State(limiter): axum::extract::State<Option<Arc<crate::ratelimit::RateLimiter>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(limiter) = &limiter {
        if let Err(wait) = limiter.take(crate::ratelimit::peer_ip(&req)) {
            let e = s3s::s3_error!(SlowDown, "Please reduce your request rate.");
            let mut res = errors::error_response(&e);
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(crate::ratelimit::retry_after(wait)),
            );
            return res;
        }
    }
    next.run(req).await
}

/// A request with neither `Content-Length` nor `Transfer-Encoding` has no body (HTTP/1.1)
/// — said explicitly, since the server's body wrappers hide the size hint s3s relies on
/// to tell so (it refuses bodies of unknown length).
///
/// POST bodies are XML documents (DeleteObjects, CompleteMultipartUpload): one declared
/// larger than [`MAX_XML`] is refused here, before anything buffers it.
async fn bodiless(
    req: axum::extract::Request,
) -> Result<axum::extract::Request, axum::response::Response> {
    use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
    use axum::response::IntoResponse as _;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if req.method() == axum::http::Method::POST && declared.is_some_and(|n| n > MAX_XML as u64) {
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>MaxMessageLengthExceeded</Code>\
             <Message>XML documents are at most {MAX_XML} bytes</Message></Error>"
        );
        // Read (a bounded part of) the body first, so the client sees the answer.
        let (parts, body) = req.into_parts();
        crate::http::drain_rejected(&parts.headers, body.into_data_stream()).await;
        let mut res = (axum::http::StatusCode::BAD_REQUEST, xml).into_response();
        res.headers_mut().insert(
            CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/xml"),
        );
        return Err(res);
    }
    if req.headers().contains_key(CONTENT_LENGTH) || req.headers().contains_key(TRANSFER_ENCODING) {
        return Ok(req);
    }
    let (parts, _) = req.into_parts();
    Ok(axum::extract::Request::from_parts(
        parts,
        axum::body::Body::empty(),
    ))
}

/// Serves the S3 API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: axum::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    options: crate::net::ServeOptions,
) -> anyhow::Result<()> {
    crate::net::serve(listener, router, shutdown, options).await
}

#[async_trait::async_trait]
impl s3s::S3 for Hoard {
    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.barrier().await?;
        buckets::list(&self.store, req).await
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        buckets::create(&self.store, req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.barrier().await?;
        buckets::head(&self.store, req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.barrier().await?;
        buckets::delete(&self.store, req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.barrier().await?;
        buckets::location(&self.store, req).await
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        objects::put(&self.store, req).await
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        self.barrier().await?;
        objects::get(&self.store, req).await
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        self.barrier().await?;
        objects::head(&self.store, req).await
    }

    async fn get_object_attributes(
        &self,
        req: S3Request<GetObjectAttributesInput>,
    ) -> S3Result<S3Response<GetObjectAttributesOutput>> {
        self.barrier().await?;
        objects::attributes(&self.store, req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        objects::delete(&self.store, req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        objects::delete_many(&self.store, req).await
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        self.barrier().await?;
        objects::copy(&self.store, req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.barrier().await?;
        listing::list_v1(&self.store, req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.barrier().await?;
        listing::list_v2(&self.store, req).await
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        self.barrier().await?;
        listing::list_versions(&self.store, req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        multipart::create(&self.store, req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        multipart::upload_part(&self.store, req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.barrier().await?;
        part_copy::upload_part_copy(&self.store, req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.barrier().await?;
        multipart::complete(&self.store, req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        multipart::abort(&self.store, req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.barrier().await?;
        multipart::list_parts(&self.store, req).await
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        self.barrier().await?;
        multipart::list_uploads(&self.store, req).await
    }
}
