//! Write requests: PUT, DELETE, UNLINK, translated to the store core
//! ([`crate::store::Store::put`], where the write protocol and its crash-safety steps
//! are documented, `delete`, `unlink`).
//!
//! What is HTTP's alone stays here: `Content-Length`, the statuses, and draining a
//! refused upload's body so its client reads the status rather than a broken pipe.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::{ApiError, App};
use crate::store::PutError;

/// PUT /key: stream the body to every replica; 201 once all hold it.
pub async fn put(app: &Arc<App>, key: Vec<u8>, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let body = body.into_data_stream();
    let len = match content_length(&parts.headers) {
        Ok(len) => len,
        Err(e) => {
            drain_rejected(&parts.headers, body).await;
            return Err(e);
        }
    };
    match app.store.put(key, body, len).await {
        Ok(written) => {
            let mut resp = StatusCode::CREATED.into_response();
            resp.extensions_mut()
                .insert(crate::http::BytesReceived(written.size));
            Ok(resp)
        }
        Err(PutError { error, unread }) => {
            if let Some(body) = unread {
                drain_rejected(&parts.headers, body).await;
            }
            Err(error.into())
        }
    }
}

/// Most of a rejected body read and discarded so the client sees the status.
const DRAIN_LIMIT: u64 = 16 << 20;

/// Reads and discards (a bounded amount of) a rejected upload's body, so that a client
/// still sending it gets the error status instead of a broken pipe — what nginx's
/// lingering close achieves. Clients that sent `Expect: 100-continue` have not sent the
/// body and are answered at once.
pub(super) async fn drain_rejected<S, E>(headers: &HeaderMap, mut body: S)
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
{
    if headers.contains_key(header::EXPECT) {
        return;
    }
    let drain = async {
        let mut seen = 0u64;
        while let Some(Ok(chunk)) = body.next().await {
            seen += chunk.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
}

/// DELETE /key: remove the value everywhere; 204, or 404 if absent.
pub async fn delete(app: &Arc<App>, key: Vec<u8>) -> Result<Response, ApiError> {
    app.store.delete(key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// UNLINK /key: virtual delete; 204, or 404 if absent or already unlinked.
pub async fn unlink(app: &App, key: Vec<u8>) -> Result<Response, ApiError> {
    app.store.unlink(key).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| ApiError::BadRequest("invalid Content-Length".into()))
        })
        .transpose()
}
