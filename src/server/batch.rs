//! `POST /-/batch`: many key operations in one request.
//!
//! The body is a JSON list of operations; the answer (200) is a JSON list with one
//! result per operation, in the same order:
//!
//! ```text
//! [{"op":"put","key":"/a","value":"aGVsbG8="},   → {"key":"/a","status":201,"size":5,"md5":"5d41…"}
//!  {"op":"get","key":"/a"},                       → {"key":"/a","status":200,"size":5,"md5":"5d41…",
//!                                                     "volumes":["v1:80/sv03",…],"balanced":true,
//!                                                     "url":"http://v1:80/sv03/…"}
//!  {"op":"get","key":"/s"},                       → {"key":"/s","status":200,"size":3,"md5":"…",
//!                                                     "inline":true}   (stored in the index,
//!                                                     `--inline-max`: GET /s answers 200)
//!  {"op":"unlink","key":"/b"},                    → {"key":"/b","status":404,"error":"not found"}
//!  {"op":"delete","key":"/c"}]                    → {"key":"/c","status":204}
//! ```
//!
//! * Keys are given as they are (as `?list` shows them), not percent-encoded; `put`
//!   values inline, base64 (standard alphabet, padded).
//! * Each operation goes through the store core with its normal semantics and gets the
//!   status (and error message) the single request would get — a `put` of an existing
//!   key is 403, a `get` of a missing one 404. A batch is **not a transaction**: every
//!   operation stands alone, a failed one does not undo or stop the others.
//! * Operations on the same key run in the order given; different keys run
//!   concurrently (up to [`CONCURRENCY`] at once).
//! * Bounded: at most [`MAX_OPS`] operations and [`MAX_BODY`] bytes of body (413
//!   beyond). A body that is not such a list (bad JSON, an unknown `op`, a missing
//!   field, invalid base64) is refused with 400 before any operation runs.
//! * Authentication treats the batch as a write (`POST`), whatever it contains.

use crate::store::tenancy::{Access, Principal};
use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt;

use super::error::store_status;
use super::{ApiError, App};
use crate::hex::hex;
use crate::store::{Found, StoreError};

/// The endpoint.
pub const PATH: &str = "/-/batch";
/// Most operations in one batch.
pub const MAX_OPS: usize = 1_000;
/// Longest request body.
pub const MAX_BODY: usize = 16 << 20;
/// Keys worked on at once.
pub const CONCURRENCY: usize = 16;

/// One operation of a batch, as sent.
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum Op {
    /// Where the value is and its metadata (what GET's 302 tells).
    Get { key: String },
    /// DELETE.
    Delete { key: String },
    /// UNLINK.
    Unlink { key: String },
    /// PUT of a small value given inline (base64).
    Put { key: String, value: String },
}

impl Op {
    fn key(&self) -> &str {
        match self {
            Op::Get { key } | Op::Delete { key } | Op::Unlink { key } | Op::Put { key, .. } => key,
        }
    }
}

/// The result of one operation.
#[derive(Debug, Default, serde::Serialize)]
struct Outcome {
    key: String,
    status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    md5: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volumes: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    balanced: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    /// The value is stored in the index (`--inline-max`): no volume, no `url`.
    #[serde(skip_serializing_if = "Option::is_none")]
    inline: Option<bool>,
}

/// Answers `/-/batch`.
pub async fn handle(app: &Arc<App>, req: Request) -> Response {
    if req.method() != Method::POST {
        let mut resp = (StatusCode::METHOD_NOT_ALLOWED, "use POST\n").into_response();
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return resp;
    }
    let who = super::tenancy::principal(app, req.headers());
    match read_ops(req).await {
        Ok(ops) => axum::Json(run(app, &who, ops).await).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Reads and checks the whole batch (bounded) before anything runs.
async fn read_ops(req: Request) -> Result<Vec<(Op, Option<bytes::Bytes>)>, ApiError> {
    let too_large = || ApiError::TooLarge(format!("a batch body is at most {MAX_BODY} bytes"));
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let (parts, body) = req.into_parts();
    let mut body = body.into_data_stream();
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        crate::http::drain_rejected(&parts.headers, body).await;
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading body: {e}")))?;
        if buf.len() + chunk.len() > MAX_BODY {
            crate::http::drain_rejected(&parts.headers, body).await;
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    let ops: Vec<Op> = serde_json::from_slice(&buf).map_err(|e| {
        ApiError::BadRequest(format!(
            "a batch is a JSON list of {{\"op\": \"get|put|delete|unlink\", \"key\": …}}: {e}"
        ))
    })?;
    if ops.len() > MAX_OPS {
        return Err(ApiError::TooLarge(format!(
            "{} operations: a batch holds at most {MAX_OPS}",
            ops.len()
        )));
    }
    ops.into_iter()
        .enumerate()
        .map(|(i, op)| {
            let value = match &op {
                Op::Put { value, .. } => Some(
                    base64::engine::general_purpose::STANDARD
                        .decode(value)
                        .map(bytes::Bytes::from)
                        .map_err(|e| {
                            ApiError::BadRequest(format!("operation {i}: value is not base64: {e}"))
                        })?,
                ),
                _ => None,
            };
            Ok((op, value))
        })
        .collect()
}

/// Runs the operations: those of one key in order, keys concurrently.
async fn run(
    app: &Arc<App>,
    who: &Principal,
    ops: Vec<(Op, Option<bytes::Bytes>)>,
) -> Vec<Outcome> {
    let mut groups: Vec<Vec<(usize, Op, Option<bytes::Bytes>)>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for (i, (op, value)) in ops.into_iter().enumerate() {
        let g = *group_of.entry(op.key().to_string()).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push((i, op, value));
    }
    let total = groups.iter().map(Vec::len).sum();
    let mut results: Vec<Outcome> = (0..total).map(|_| Outcome::default()).collect();
    let mut done = futures_util::stream::iter(groups)
        .map(|group| async move {
            let mut out = Vec::with_capacity(group.len());
            for (i, op, value) in group {
                out.push((i, one(app, who, op, value).await));
            }
            out
        })
        .buffer_unordered(CONCURRENCY);
    while let Some(group) = done.next().await {
        for (i, outcome) in group {
            results[i] = outcome;
        }
    }
    results
}

/// Runs one operation through the store core.
async fn one(app: &Arc<App>, who: &Principal, op: Op, value: Option<bytes::Bytes>) -> Outcome {
    let key = op.key().to_string();
    let bytes = key.clone().into_bytes();
    let mut outcome = Outcome {
        key,
        ..Outcome::default()
    };
    let result: Result<StatusCode, StoreError> = async {
        crate::key::check(&bytes)?;
        let access = match op {
            Op::Get { .. } => Access::Read,
            _ => Access::Write,
        };
        app.store.authorize(who, &bytes, access)?;
        match op {
            Op::Get { .. } => {
                crate::key::check_writable(&bytes)?;
                // Linearizable in an index cluster, like a single GET.
                let at = match app.store.find(&bytes).await?.ok_or(StoreError::NotFound)? {
                    Found::At(at) => at,
                    // Stored in the index (`--inline-max`): no URL; GET /key answers 200.
                    Found::Inline(record) => {
                        outcome.size = Some(record.size);
                        outcome.md5 = record.md5_hex();
                        outcome.inline = Some(true);
                        return Ok(StatusCode::OK);
                    }
                };
                outcome.url = Some(super::read::public_url(app, &at));
                outcome.size = Some(at.record.size);
                outcome.md5 = at.record.md5_hex();
                outcome.volumes = Some(at.record.volumes);
                outcome.balanced = Some(at.balanced);
                Ok(StatusCode::OK)
            }
            Op::Delete { .. } => {
                app.store.delete(bytes).await?;
                Ok(StatusCode::NO_CONTENT)
            }
            Op::Unlink { .. } => {
                app.store.unlink(bytes).await?;
                Ok(StatusCode::NO_CONTENT)
            }
            Op::Put { .. } => {
                let value = value.unwrap_or_default();
                let len = value.len() as u64;
                let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(value)]);
                let written = app
                    .store
                    .put(bytes, body, Some(len))
                    .await
                    .map_err(|e| e.error)?;
                outcome.size = Some(written.size);
                outcome.md5 = written.md5.map(|m| hex(&m));
                Ok(StatusCode::CREATED)
            }
        }
    }
    .await;
    match result {
        Ok(status) => outcome.status = status.as_u16(),
        Err(e) => {
            outcome.status = store_status(&e).as_u16();
            outcome.error = Some(e.to_string());
        }
    }
    outcome
}
